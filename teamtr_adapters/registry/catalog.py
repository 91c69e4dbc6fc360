"""Read-side views a user of W&B or MLflow expects, over the registry files (no torch): training runs,
two versions' metrics side by side, deprecated versions, a team's lineage tree, natural module order.

Deprecations live in `$TEAMTR_HOME/deprecated.json` ({version id: {reason, ts, user}}), written atomically under
the registry's lock and recorded in history (`deprecate` / `undeprecate` events)."""
from __future__ import annotations

import getpass
import json
import re
from pathlib import Path
from typing import Any, TypedDict

from ..errors import NotFoundError
from . import fsutil
from .store import Registry, VersionInfo, lineage_of, now

DEPRECATED = "deprecated.json"


def natural_key(text: str) -> list[Any]:
    """Sort key that orders embedded numbers by value: layers.2 before layers.10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


# -- runs --------------------------------------------------------------------------------------------------
class RunRow(TypedDict):
    run: str
    method: str | None
    team: str | None
    roles: list[str]
    updates: int
    finished: bool
    accuracy_before: float | None
    accuracy_after: float | None
    accuracy_change: float | None
    change_ci95: list[float] | None
    tokens: int | None
    path: str


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def list_runs(home: Path) -> list[RunRow]:
    """Training runs under `home/runs`, oldest first (run ids start with their start time)."""
    runs = home / "runs"
    out: list[RunRow] = []
    if not runs.is_dir():
        return out
    for d in sorted(p for p in runs.iterdir() if p.is_dir()):
        config, summary = _read(d / "config.json"), _read(d / "summary.json")
        lines = []
        if (d / "updates.jsonl").is_file():
            for line in (d / "updates.jsonl").read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    continue
        if not config and not summary and not lines:
            continue
        ch = summary.get("eval_change") or {}
        out.append({"run": d.name, "method": summary.get("method") or (config.get("train") or {}).get("method"),
                    "team": summary.get("team") or config.get("team"),
                    "roles": list(dict.fromkeys(str(r.get("role")) for r in lines if isinstance(r, dict))),
                    "updates": int(summary.get("updates", len(lines))), "finished": bool(summary),
                    "accuracy_before": ch.get("before"), "accuracy_after": ch.get("after"),
                    "accuracy_change": ch.get("change"), "change_ci95": ch.get("ci95"),
                    "tokens": summary.get("tokens"), "path": str(d)})
    return out


# -- compare -----------------------------------------------------------------------------------------------
def compare(a: VersionInfo, b: VersionInfo) -> list[dict[str, Any]]:
    """Rows {key, a, b, change} over both versions' metrics (then how they were made): `change` = b - a for
    numbers, None otherwise."""
    rows = []
    ma: dict[str, Any] = a.meta.get("metrics") or {}
    mb: dict[str, Any] = b.meta.get("metrics") or {}
    for key in sorted(set(ma) | set(mb), key=natural_key):
        x: Any = ma.get(key)
        y: Any = mb.get(key)
        num = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y))
        rows.append({"key": f"metrics.{key}", "a": x, "b": y, "change": (y - x) if num else None})
    for key in ("made_by", "created", "parent", "run"):
        rows.append({"key": key, "a": a.meta.get(key), "b": b.meta.get(key), "change": None})
    la, lb = (a.meta.get("config") or {}).get("lora") or {}, (b.meta.get("config") or {}).get("lora") or {}
    for key in sorted(set(la) | set(lb)):
        rows.append({"key": f"lora.{key}", "a": la.get(key), "b": lb.get(key), "change": None})
    return rows


# -- deprecation -------------------------------------------------------------------------------------------
def deprecated(registry: Registry) -> dict[str, dict[str, Any]]:
    """{version id: {reason, ts, user}} of the deprecated versions."""
    doc = _read(registry.home / DEPRECATED)
    return {k: v for k, v in doc.items() if isinstance(v, dict)}


def deprecate(registry: Registry, ref: str, reason: str = "", undo: bool = False) -> VersionInfo:
    """Mark (or with `undo`, unmark) a version deprecated; recorded in history. Its files stay. One registry
    transaction (one commit in a Hub-backed registry)."""
    with registry.hold(write=True):
        return _deprecate(registry, ref, reason, undo)


def _deprecate(registry: Registry, ref: str, reason: str, undo: bool) -> VersionInfo:
    info = registry.resolve(ref)
    registry.home.mkdir(parents=True, exist_ok=True)
    with registry._lock("deprecated", "all"):
        doc = deprecated(registry)
        if undo:
            if doc.pop(info.id, None) is None:
                raise NotFoundError(f"{info.ref} is not deprecated")
        else:
            doc[info.id] = {"reason": reason, "ts": now(), "user": getpass.getuser()}
        fsutil.atomic_write_json(registry.home / DEPRECATED, doc)
    registry.append_history({"event": "undeprecate" if undo else "deprecate", "version": info.id,
                             "lineage": info.lineage, "name": info.name, "reason": reason})
    return info


# -- lineage -----------------------------------------------------------------------------------------------
def team_lineage(registry: Registry, team: str) -> dict[str, Any]:
    """Per role, its lineage's versions as a forest (parent -> children), each node with how it was made and
    the other agents' versions whose rollouts produced its data, and the pinned / aliased / deprecated marks."""
    manifest = registry.manifest(team)
    dep = deprecated(registry)
    roles: dict[str, Any] = {}
    for role, pin in manifest["roles"].items():
        lineage = pin.get("lineage") or lineage_of(team, role)
        versions = registry.list_versions(lineage)
        aliases = registry.aliases(lineage)
        ids = {v.id for v in versions}
        nodes: dict[str, dict[str, Any]] = {v.id: {"name": v.name, "id": v.id, "made_by": v.meta.get("made_by"), "parent": v.meta.get("parent"),
                        "run": v.meta.get("run"), "pinned": v.id == pin["id"],
                        "aliases": sorted(a for a, n in aliases.items() if n == v.name),
                        "deprecated": v.id in dep,
                        "trained_with": {r: [_name(registry, x) for x in str(vids).split(",") if x]
                                         for r, vids in (v.meta.get("context") or {}).items()},
                        "children": []} for v in versions}
        roots: list[dict[str, Any]] = []
        for v in versions:
            parent = v.meta.get("parent")
            (nodes[parent]["children"] if parent in ids else roots).append(nodes[v.id])
        roles[role] = {"lineage": lineage, "pinned": pin["name"], "versions": roots}
    return {"team": team, "revision": manifest["revision"], "roles": roles}


def _name(registry: Registry, vid: str) -> str:
    try:
        return registry.version(vid).ref
    except Exception:  # a collected version
        return vid[:12]
