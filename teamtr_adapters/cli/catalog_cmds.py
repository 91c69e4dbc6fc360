"""`runs list`, `adapter compare`, `adapter deprecate` and `team lineage`: thin wrappers over `registry.catalog`."""
from __future__ import annotations

from typing import Any, Optional

import typer
from rich.text import Text
from rich.tree import Tree

from .home import open_registry
from .registry_cmds import adapter_app, short, team_app
from .render import JsonOpt, console, emit, table

runs_app = typer.Typer(help="Training runs under $TEAMTR_HOME/runs.", no_args_is_help=False)


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")
    adapter_app.command("compare")(adapter_compare)
    adapter_app.command("deprecate")(adapter_deprecate)
    team_app.command("lineage")(team_lineage)


def _num(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec) if isinstance(v, float) else str(v)


@runs_app.command("list")
def runs_list(team: Optional[str] = typer.Option(None, "--team", "-t", help="Only this team's runs."),
              as_json: bool = JsonOpt) -> None:
    """List training runs: method, team, updates and the held-out accuracy change (with its 95% CI)."""
    from ..registry.catalog import list_runs

    rows = [r for r in list_runs(open_registry().home) if team is None or r["team"] == team]
    emit(rows, as_json, _render_runs)


def _render_runs(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console.print("no training runs yet: `teamtr-adapters train ROLE` starts one "
                      "(add `--eval N` to measure the held-out accuracy change)", highlight=False)
        return

    def change(r: dict[str, Any]) -> str:
        if r["accuracy_change"] is None:
            return "-"
        ci = r["change_ci95"]
        return f"{r['accuracy_change']:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")

    # run ids are TEAM-METHOD-TIME: the team and method columns only when an id does not say them
    implicit = all(r["run"].startswith(f"{r['team']}-{r['method']}-") for r in rows)
    cols = ["run"] + ([] if implicit else ["method", "team"]) + ["roles", "upd", "accuracy", "change [95% CI]"]
    console.print(table(
        "training runs" + (" (ids: TEAM-METHOD-TIME)" if implicit else ""), cols,
        [[r["run"] + ("" if r["finished"] else " (unfinished)")] + ([] if implicit else [r["method"], r["team"]])
         + [", ".join(r["roles"]), r["updates"],
            "-" if r["accuracy_before"] is None else f"{r['accuracy_before']:.3f}->{r['accuracy_after']:.3f}",
            change(r)] for r in rows],
        wrap=("roles", "change [95% CI]"), right=("upd",),
        caption="accuracy: held-out, measured by `train --eval N` before and after the run (paired: same prompts, "
                "same seeds); curves: teamtr-adapters report RUN"))


def adapter_compare(a: str = typer.Argument(..., help="A version reference (LINEAGE:vN, LINEAGE:ALIAS, an id)."),
                    b: str = typer.Argument(..., help="Another version reference."),
                    as_json: bool = JsonOpt) -> None:
    """Two versions' metrics side by side (B - A for numbers), then how each was made."""
    from ..registry.catalog import compare

    reg = open_registry(read=True)
    x, y = reg.resolve(a), reg.resolve(b)
    data = {"a": {"ref": x.ref, "id": x.id}, "b": {"ref": y.ref, "id": y.id}, "rows": compare(x, y)}
    emit(data, as_json, _render_compare)


def _render_compare(d: dict[str, Any]) -> None:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, str) and len(v) == 64:
            return short(v)
        return "-" if v is None else str(v)

    rows = [[r["key"], cell(r["a"]), cell(r["b"]), "" if r["change"] is None else f"{r['change']:+.4g}"]
            for r in d["rows"]]
    console.print(table(f"A = {d['a']['ref']} ({short(d['a']['id'])}), B = {d['b']['ref']} ({short(d['b']['id'])})",
                        ["key", "A", "B", "B - A"], rows, right=("B - A",), wrap=("A", "B")))


def adapter_deprecate(ref: str = typer.Argument(..., help="The version to deprecate (LINEAGE:vN or an id)."),
                      reason: str = typer.Option("", "--reason", help="Why (shown in lists and refusals)."),
                      undo: bool = typer.Option(False, "--undo", help="Lift the deprecation."),
                      as_json: bool = JsonOpt) -> None:
    """Mark a version deprecated: flagged in `adapter list`, refused by `swap` unless --force. Files are kept."""
    from ..registry.catalog import deprecate

    info = deprecate(open_registry(), ref, reason, undo=undo)
    emit({"ref": info.ref, "id": info.id, "deprecated": not undo, "reason": reason}, as_json,
         lambda d: console.print(f"{'un' if undo else ''}deprecated {d['ref']} ({short(d['id'])})"
                                 + (f": {reason}" if reason else ""), highlight=False, markup=False))


def team_lineage(team: str = typer.Argument(..., help="The team."), as_json: bool = JsonOpt) -> None:
    """Which versions of which agents produced which: each role's versions as a tree (parent -> child)."""
    from ..registry.catalog import team_lineage as lineage

    emit(lineage(open_registry(read=True), team), as_json, _render_lineage)


def _render_lineage(d: dict[str, Any]) -> None:
    root = Tree(Text(f"team {d['team']} (revision {d['revision']})", style="bold"))
    for role, r in d["roles"].items():
        branch = root.add(Text(f"{role}  [{r['lineage']}, pinned {r['pinned']}]"))
        for node in r["versions"]:
            _add(branch, node)
    console.print(root)


def _add(branch: Tree, node: dict[str, Any]) -> None:
    label = Text(node["name"], style="bold" if node["pinned"] else "")
    label.append(f" {short(node['id'])} {node['made_by'] or '?'}")
    if node["run"]:
        label.append(f" (run {node['run']})")
    if node["trained_with"]:
        label.append("; trained with " + ", ".join(f"{r} {' '.join(v.split(':')[-1] for v in vs)}"
                                                    for r, vs in node["trained_with"].items()))
    marks = (["PINNED"] if node["pinned"] else []) + node["aliases"] + (["DEPRECATED"] if node["deprecated"] else [])
    if marks:
        label.append(f"  [{', '.join(marks)}]", style="yellow" if not node["deprecated"] else "red")
    sub = branch.add(label)
    for child in node["children"]:
        _add(sub, child)
