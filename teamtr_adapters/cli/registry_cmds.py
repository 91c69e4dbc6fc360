"""`team`, `adapter`, `registry` and `history` commands: thin wrappers over `Registry`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import IntegrityError
from ..registry import Registry
from .home import check_adapter_meta, open_registry
from .render import JsonOpt, console, emit, table

team_app = typer.Typer(help="Create and inspect teams.", no_args_is_help=False)
adapter_app = typer.Typer(help="Inspect, import, export and alias adapter versions.", no_args_is_help=False)
registry_app = typer.Typer(help="Check and clean the registry.", no_args_is_help=False)


def register(app: typer.Typer) -> None:
    app.add_typer(team_app, name="team")
    app.add_typer(adapter_app, name="adapter")
    app.add_typer(registry_app, name="registry")
    app.command("history")(history)


def short(vid: str | None) -> str:
    return (vid or "")[:12]


def _version_name(reg: Registry, vid: str, lineage: str | None = None) -> str:
    """A version's name: `vN` when it belongs to `lineage` (the role's own), else `LINEAGE:vN`; a collected
    version's short id."""
    try:
        info = reg.version(vid)
    except Exception:  # a collected version: its id is all that is left
        return short(vid)
    return info.name if lineage is not None and info.lineage == lineage else info.ref


def when(ts: str | None) -> str:
    """`2026-11-30T10:46:00+00:00` -> `2026-11-30 10:46` (the JSON keeps the full stamp)."""
    return (ts or "")[:16].replace("T", " ")


def flatten(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested metadata as readable `(dotted.key, value)` rows: lists joined with commas, floats to 4 digits."""
    if isinstance(d, dict):
        if not d:
            return [(prefix, "-")] if prefix else []
        return [row for k, v in d.items() for row in flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(d, (list, tuple)):
        return [(prefix, ", ".join(str(x) for x in d) or "-")]
    if isinstance(d, float):
        return [(prefix, f"{d:.4g}")]
    return [(prefix, "-" if d is None or d == "" else str(d))]


def team_base(reg: Registry, team: str):
    """The team's base model, resolved and checked against the identity in its manifest."""
    from ..runtime.open import team_base as resolve_team_base

    return resolve_team_base(reg, team)


# -- team ------------------------------------------------------------------------------------------
@team_app.command("init")
def team_init(
    template: str = typer.Argument(..., help="A built-in template name (e.g. math-trio) or a spec .toml file."),
    name: Optional[str] = typer.Option(None, "--name", help="Team name (default: the spec's)."),
    base: Optional[str] = typer.Option(None, "--base", help="Base model: 'embedded', a local dir or a Hub id."),
    as_json: bool = JsonOpt,
) -> None:
    """Create a team with a fresh LoRA v1 for every role."""
    from ..runtime.base import resolve_base
    from ..spec import check_name, load_spec

    spec = load_spec(template)
    if name:
        spec = spec.replace(name=check_name(name, "team name"))
    if base:
        spec = spec.replace(base=base)
    reg = open_registry()
    manifest = reg.init_team(spec, resolve_base(spec.base))
    emit(manifest, as_json, lambda m: _render_manifest(reg, m, f"created team {m['team']}"))


@team_app.command("list")
def team_list(as_json: bool = JsonOpt) -> None:
    """List the teams in the registry."""
    reg = open_registry(read=True)
    data = [reg.manifest(t) for t in reg.list_teams()]
    emit(data, as_json, _render_team_list)


def _render_team_list(d: list[dict[str, Any]]) -> None:
    if not d:
        console.print("no teams yet: create one with `teamtr-adapters team init math-trio` "
                      "(or `hub pull ORG/REPO`)", highlight=False)
        return
    console.print(table(
        "teams", ["team", "rev", "roles", "base"],
        [[m["team"], m["revision"], ", ".join(f"{r} {p['name']}" for r, p in m["roles"].items()), m["base"]["name"]]
         for m in d], wrap=("roles", "base"), right=("rev",)))


@team_app.command("show")
def team_show(team: str, as_json: bool = JsonOpt) -> None:
    """Show a team's spec summary and pinned versions."""
    reg = open_registry(read=True)
    manifest = reg.manifest(team)
    spec = reg.team_spec(team)
    data = {**manifest, "spec": spec.to_dict()}
    emit(data, as_json, lambda m: _render_manifest(reg, m, f"team {team}"))


def _render_manifest(reg: Registry, m: dict[str, Any], title: str) -> None:
    rows = []
    for role, pin in m["roles"].items():
        meta = reg.version(pin["id"]).meta
        lineage = pin["lineage"]
        rows.append([role, pin["name"] if lineage == f"{m['team']}.{role}" else f"{lineage}:{pin['name']}",
                     meta.get("made_by"), _version_name(reg, meta["parent"], lineage) if meta.get("parent") else "",
                     short(pin["id"])])
    console.print(table(f"{title} (revision {m['revision']}, base {m['base']['name']} {m['base']['hash']})",
                        ["role", "version", "made by", "parent", "id"], rows))


# -- adapter ---------------------------------------------------------------------------------------
@adapter_app.command("list")
def adapter_list(lineage: Optional[str] = typer.Argument(None, help="Only this lineage (e.g. math-trio.solver)."),
                 as_json: bool = JsonOpt) -> None:
    """List stored versions with their aliases and key metrics."""
    from ..registry.catalog import deprecated

    reg = open_registry(read=True)
    dep = deprecated(reg)
    data = []
    aliases: dict[str, dict[str, str]] = {}
    for v in reg.list_versions(lineage):
        if v.lineage not in aliases:
            aliases[v.lineage] = reg.aliases(v.lineage)
        data.append({"ref": v.ref, "lineage": v.lineage, "name": v.name, "id": v.id,
                     "made_by": v.meta.get("made_by"), "created": v.meta.get("created"),
                     "parent": v.meta.get("parent"),
                     "aliases": sorted(a for a, n in aliases[v.lineage].items() if n == v.name),
                     "metrics": v.meta.get("metrics") or {}, "deprecated": v.id in dep})
    emit(data, as_json, lambda d: _render_versions(reg, d))


KEY_METRICS = (("reward_before", "R"), ("d_tok_mean", "D_tok"), ("d_tok_after", "D_tok"), ("backtracks", "bt"))


def key_metrics(metrics: dict[str, Any]) -> str:
    """The few metrics worth a column: the rollout reward an update started from, its measured D_tok."""
    out = []
    for k, label in KEY_METRICS:
        v = metrics.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append(f"{label} {v:.3g}" if isinstance(v, float) else f"{label} {v}")
    return " ".join(out)


def _render_versions(reg: Registry, d: list[dict[str, Any]]) -> None:
    if not d:
        console.print("no versions yet: `teamtr-adapters team init math-trio` creates a team with a v1 per role; "
                      "`adapter import DIR LINEAGE` adds a PEFT adapter", highlight=False)
        return
    rows = [[x["lineage"], x["name"], x["made_by"], _version_name(reg, x["parent"], x["lineage"]) if x["parent"] else "",
             when(x["created"])[5:], ", ".join(x["aliases"] + (["DEPRECATED"] if x.get("deprecated") else [])),
             key_metrics(x["metrics"])] for x in d]
    console.print(table("versions (ids: adapter show REF or --json)",
                        ["lineage", "ver", "by", "parent", "created", "tags", "metrics"], rows,
                        wrap=("tags", "metrics")))


@adapter_app.command("show")
def adapter_show(ref: str = typer.Argument(..., help="LINEAGE:vN, LINEAGE:ALIAS or a version id."),
                 as_json: bool = JsonOpt) -> None:
    """Show one version's metadata and lineage."""
    reg = open_registry(read=True)
    info = reg.resolve(ref)
    data = {**info.to_dict(), "aliases": [a for a, n in reg.aliases(info.lineage).items() if n == info.name]}
    emit(data, as_json, lambda d: _render_version(reg, d))


def _render_version(reg: Registry, d: dict[str, Any]) -> None:
    meta = dict(d["meta"])
    base = meta.pop("base", None) or {}
    parent = meta.pop("parent", None)
    rows = [["id", d["id"]], ["path", d["path"]], ["aliases", ", ".join(d["aliases"]) or "-"],
            ["made by", meta.pop("made_by", None) or "-"], ["created", meta.pop("created", None) or "-"],
            ["parent", f"{_version_name(reg, parent, d['lineage'])} ({short(parent)})" if parent else "-"],
            ["base", f"{base.get('name', '?')} ({base.get('hash', '?')})" if base else "-"]]
    for k in ("id", "files", "lineage", "name"):
        meta.pop(k, None)
    context = meta.pop("context", None) or {}
    rows += [[k, v] for k, v in flatten(meta)]
    rows += [[f"context.{role}", ", ".join(_version_name(reg, vid) for vid in str(vids).split(",") if vid)]
             for role, vids in context.items()]
    console.print(table(f"{d['lineage']}:{d['name']}", ["field", "value"], rows, wrap=("value",)))


@adapter_app.command("import")
def adapter_import(
    src: Path = typer.Argument(..., help="A PEFT adapter dir (adapter_model.safetensors + adapter_config.json)."),
    lineage: str = typer.Argument(..., help="Lineage to add it to, e.g. my-solver or math-trio.solver."),
    team: Optional[str] = typer.Option(None, "--team", help="Check it against this team's base."),
    base: Optional[str] = typer.Option(None, "--base", help="Check it against this base (default: embedded)."),
    as_json: bool = JsonOpt,
) -> None:
    """Validate an external PEFT adapter and add it as a new version."""
    from ..runtime.base import resolve_base

    check_adapter_meta(src)
    reg = open_registry()
    base_ref = team_base(reg, team) if team else resolve_base(base)
    info = reg.import_adapter(src, lineage, base_ref)
    emit(info.to_dict(), as_json, lambda d: console.print(f"imported {info.ref} ({short(info.id)})"))


@adapter_app.command("export")
def adapter_export(ref: str, dest: Path, as_json: bool = JsonOpt) -> None:
    """Copy a version out as a plain PEFT adapter dir."""
    out = open_registry().export(ref, dest)
    emit({"ref": ref, "path": str(out)}, as_json, lambda d: console.print(f"exported {ref} to {out}"))


@adapter_app.command("alias")
def adapter_alias(ref: str = typer.Argument(..., help="LINEAGE:vN"), alias: str = typer.Argument(...),
                  as_json: bool = JsonOpt) -> None:
    """Point ALIAS of the version's lineage at it (e.g. `adapter alias math-trio.solver:v3 best`)."""
    reg = open_registry()
    info = reg.resolve(ref)
    reg.set_alias(info.lineage, alias, info.name)
    emit({"lineage": info.lineage, "alias": alias, "name": info.name}, as_json,
         lambda d: console.print(f"{info.lineage}:{alias} -> {info.name}"))


# -- registry --------------------------------------------------------------------------------------
@registry_app.command("verify")
def registry_verify(as_json: bool = JsonOpt) -> None:
    """Recompute every version's hashes; exit 4 if anything is corrupt or dangling."""
    reg = open_registry(read=True)
    report: dict[str, Any] = {"home": str(reg.home), **reg.verify()}
    emit(report, as_json, lambda r: console.print(
        f"{r['versions']} versions in {r['home']}: " + ("ok" if r["ok"] else "\n".join(r["problems"]))
        + (f" ({len(r['unhashed_meta'])} version(s) stored before teamtr.json was hashed: their adapter files "
           f"are checked, their teamtr.json is not)" if r.get("unhashed_meta") else ""),
        markup=False, highlight=False))
    if not report["ok"]:
        raise IntegrityError(f"{len(report['problems'])} problem(s) found")


@registry_app.command("gc")
def registry_gc(yes: bool = typer.Option(False, "--yes", help="Really delete (default is a dry run)."),
                as_json: bool = JsonOpt) -> None:
    """Remove versions no manifest, alias or history event pins (dry run unless --yes)."""
    report = open_registry().gc(dry_run=not yes)
    verb = "would remove" if report["dry_run"] else "removed"
    emit(report, as_json, lambda r: console.print(
        f"{verb} {len(r['remove'])} version(s), {r['bytes']} bytes, {len(r['stale_tmp'])} leftover temp dir(s) and "
        f"{len(r['stale_files'])} temp file(s); kept {r['keep']}"
        + (f" and {r['live_tmp']} temp dir(s) in use" if r["live_tmp"] else "")
        + (" (dry run: add --yes)" if r["dry_run"] else ""), markup=False, highlight=False))


# -- history ---------------------------------------------------------------------------------------
def history(team: Optional[str] = typer.Option(None, "--team", help="Only this team."),
            role: Optional[str] = typer.Option(None, "--role", help="Only events that moved this role."),
            as_json: bool = JsonOpt) -> None:
    """Show the append-only history: who held each role when, and why it changed."""
    reg = open_registry(read=True)
    events = reg.history(team)
    if role:
        events = [e for e in events if (e.get("pins_before") or {}).get(role) != (e.get("pins_after") or {}).get(role)]
    emit(events, as_json, lambda evs: _render_history(reg, evs))


def _render_history(reg: Registry, evs: list[dict[str, Any]]) -> None:
    if not evs:
        console.print("no history yet: `teamtr-adapters team init math-trio` records the first event", highlight=False)
        return
    console.print(table(
        "history", ["when", "event", "team", "rev", "changes", "by"],
        [[when(e.get("ts")), e.get("event"), e.get("team"), e.get("revision", e.get("revision_at")), _changes(reg, e),
          e.get("user")] for e in evs], wrap=("changes", "by"), right=("rev",)))


def _changes(reg: Registry, e: dict[str, Any]) -> str:
    before, after = e.get("pins_before") or {}, e.get("pins_after") or {}
    team = e.get("team")
    parts = []
    for r, v in after.items():
        if before.get(r) != v:
            lineage = f"{team}.{r}"
            old = f"{_version_name(reg, before[r], lineage)} -> " if r in before else ""
            parts.append(f"{r} {old}{_version_name(reg, v, lineage)}")
    event = e.get("event") or ""
    if event == "gc":
        parts.append(f"removed {short(e.get('version'))}")
    if event.startswith("swap-") and e.get("candidate"):  # a refused or inconclusive swap moves no pin
        cand = _version_name(reg, e["candidate"], f"{team}.{e.get('role')}")
        reasons = "; ".join((e.get("report") or {}).get("reasons") or [])
        parts.append(f"{e.get('role')} kept, candidate {cand}" + (f": {reasons}" if reasons else ""))
    if event in ("deprecate", "undeprecate") and e.get("name"):
        parts.append(f"{e.get('lineage')}:{e['name']} {event}d" + (f": {e['reason']}" if e.get("reason") else ""))
    if e.get("forced"):
        parts.append("FORCED")
    return "; ".join(parts)
