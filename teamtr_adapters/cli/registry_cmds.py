"""`team`, `adapter`, `registry` and `history` commands: thin wrappers over `Registry`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import IncompatibleAdapterError, IntegrityError
from ..registry import Registry
from .render import JsonOpt, console, emit, table

team_app = typer.Typer(help="Create and inspect teams.", no_args_is_help=True)
adapter_app = typer.Typer(help="Inspect, import, export and alias adapter versions.", no_args_is_help=True)
registry_app = typer.Typer(help="Check and clean the registry.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(team_app, name="team")
    app.add_typer(adapter_app, name="adapter")
    app.add_typer(registry_app, name="registry")
    app.command("history")(history)


def short(vid: str | None) -> str:
    return (vid or "")[:12]


def _version_name(reg: Registry, vid: str) -> str:
    try:
        return reg.version(vid).ref
    except Exception:  # a collected version: its id is all that is left
        return short(vid)


def team_base(reg: Registry, team: str):
    """The team's base model, resolved and checked against the identity in its manifest."""
    from ..runtime.base import resolve_base

    manifest = reg.manifest(team)
    base = resolve_base(manifest["base_ref"])
    if base.identity["hash"] != manifest["base"]["hash"]:
        raise IncompatibleAdapterError(
            f"team {team!r} was made for base {manifest['base']['name']} ({manifest['base']['hash']}), "
            f"but {manifest['base_ref']!r} now resolves to {base.name} ({base.identity['hash']})")
    return base


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
    reg = Registry()
    manifest = reg.init_team(spec, resolve_base(spec.base))
    emit(manifest, as_json, lambda m: _render_manifest(reg, m, f"created team {m['team']}"))


@team_app.command("list")
def team_list(as_json: bool = JsonOpt) -> None:
    """List the teams in the registry."""
    reg = Registry()
    data = [reg.manifest(t) for t in reg.list_teams()]
    emit(data, as_json, lambda d: console.print(table(
        "teams", ["team", "revision", "base", "roles"],
        [[m["team"], m["revision"], m["base"]["name"], ", ".join(f"{r}={p['name']}" for r, p in m["roles"].items())]
         for m in d])))


@team_app.command("show")
def team_show(team: str, as_json: bool = JsonOpt) -> None:
    """Show a team's spec summary and pinned versions."""
    reg = Registry()
    manifest = reg.manifest(team)
    spec = reg.team_spec(team)
    data = {**manifest, "spec": spec.to_dict()}
    emit(data, as_json, lambda m: _render_manifest(reg, m, f"team {team}"))


def _render_manifest(reg: Registry, m: dict[str, Any], title: str) -> None:
    rows = []
    for role, pin in m["roles"].items():
        meta = reg.version(pin["id"]).meta
        rows.append([role, f"{pin['lineage']}:{pin['name']}", short(pin["id"]), meta.get("made_by"),
                     meta.get("parent") and short(meta["parent"])])
    console.print(table(f"{title} (revision {m['revision']}, base {m['base']['name']} {m['base']['hash']})",
                        ["role", "version", "id", "made by", "parent"], rows))


# -- adapter ---------------------------------------------------------------------------------------
@adapter_app.command("list")
def adapter_list(lineage: Optional[str] = typer.Argument(None, help="Only this lineage (e.g. math-trio.solver)."),
                 as_json: bool = JsonOpt) -> None:
    """List stored versions."""
    reg = Registry()
    data = [{"ref": v.ref, "id": v.id, "made_by": v.meta.get("made_by"), "created": v.meta.get("created"),
             "parent": v.meta.get("parent")} for v in reg.list_versions(lineage)]
    emit(data, as_json, lambda d: console.print(table(
        "versions", ["version", "id", "made by", "parent", "created"],
        [[x["ref"], short(x["id"]), x["made_by"], short(x["parent"]), x["created"]] for x in d])))


@adapter_app.command("show")
def adapter_show(ref: str = typer.Argument(..., help="LINEAGE:vN, LINEAGE:ALIAS or a version id."),
                 as_json: bool = JsonOpt) -> None:
    """Show one version's metadata and lineage."""
    reg = Registry()
    info = reg.resolve(ref)
    data = {**info.to_dict(), "aliases": [a for a, n in reg.aliases(info.lineage).items() if n == info.name]}
    emit(data, as_json, lambda d: console.print(table(
        d["lineage"] + ":" + d["name"], ["field", "value"],
        [["id", d["id"]], ["path", d["path"]], ["aliases", ", ".join(d["aliases"])]]
        + [[k, v] for k, v in d["meta"].items() if k not in ("id", "files")])))


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

    reg = Registry()
    base_ref = team_base(reg, team) if team else resolve_base(base)
    info = reg.import_adapter(src, lineage, base_ref)
    emit(info.to_dict(), as_json, lambda d: console.print(f"imported {info.ref} ({short(info.id)})"))


@adapter_app.command("export")
def adapter_export(ref: str, dest: Path, as_json: bool = JsonOpt) -> None:
    """Copy a version out as a plain PEFT adapter dir."""
    out = Registry().export(ref, dest)
    emit({"ref": ref, "path": str(out)}, as_json, lambda d: console.print(f"exported {ref} to {out}"))


@adapter_app.command("alias")
def adapter_alias(ref: str = typer.Argument(..., help="LINEAGE:vN"), alias: str = typer.Argument(...),
                  as_json: bool = JsonOpt) -> None:
    """Point ALIAS of the version's lineage at it (e.g. `adapter alias math-trio.solver:v3 best`)."""
    reg = Registry()
    info = reg.resolve(ref)
    reg.set_alias(info.lineage, alias, info.name)
    emit({"lineage": info.lineage, "alias": alias, "name": info.name}, as_json,
         lambda d: console.print(f"{info.lineage}:{alias} -> {info.name}"))


# -- registry --------------------------------------------------------------------------------------
@registry_app.command("verify")
def registry_verify(as_json: bool = JsonOpt) -> None:
    """Recompute every version's hashes; exit 4 if anything is corrupt or dangling."""
    reg = Registry()
    report = {"home": str(reg.home), **reg.verify()}
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
    report = Registry().gc(dry_run=not yes)
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
    reg = Registry()
    events = reg.history(team)
    if role:
        events = [e for e in events if (e.get("pins_before") or {}).get(role) != (e.get("pins_after") or {}).get(role)]
    emit(events, as_json, lambda evs: console.print(table(
        "history", ["when", "event", "team", "rev", "changes", "by"],
        [[e["ts"], e.get("event"), e.get("team"), e.get("revision"), _changes(reg, e), e.get("user")] for e in evs])))


def _changes(reg: Registry, e: dict[str, Any]) -> str:
    before, after = e.get("pins_before") or {}, e.get("pins_after") or {}
    parts = [f"{r}: {_version_name(reg, before[r]) + ' -> ' if r in before else ''}{_version_name(reg, v)}"
             for r, v in after.items() if before.get(r) != v]
    if e.get("event") == "gc":
        parts.append(f"removed {short(e.get('version'))}")
    if e.get("forced"):
        parts.append("FORCED")
    return "; ".join(parts)
