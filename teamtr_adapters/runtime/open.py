"""Opening a team's model: its base (resolved and checked against the identity in the manifest) and a
TeamModel holding its pinned versions. The one place that does it: the trainer, the swap gate, `align`,
`adapter diff` and `load_team` all come here, and a changed base is always a `BaseMismatchError`.

`registry` is any object with the `Registry` methods used (`manifest`, `team_spec`, `pins`,
`version_path`); runtime never imports the registry package.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..errors import BaseMismatchError
from .base import BaseRef, resolve_base


def check_base(team: str, manifest: Mapping[str, Any], base: BaseRef, ref: str | None = None) -> BaseRef:
    """`base` if it has the identity recorded in the team's manifest, else `BaseMismatchError`."""
    want = manifest["base"]
    if base.identity["hash"] != want.get("hash"):
        raise BaseMismatchError(f"team {team!r} was made for base {want.get('name')} ({want.get('hash')}), but "
                                f"{ref or base.name!r} now resolves to {base.name} ({base.identity['hash']})")
    return base


def team_base(registry: Any, team: str) -> BaseRef:
    """The team's base model (`base_ref` of its manifest, else its spec's `base`), resolved and checked."""
    manifest = registry.manifest(team)
    ref = manifest.get("base_ref") or registry.team_spec(team).base
    return check_base(team, manifest, resolve_base(ref), ref)


def open_team_model(registry: Any, team: str, *, base: BaseRef | None = None, device: str = "auto",
                    dtype: str = "auto", pins: Mapping[str, str] | None = None,
                    extra: Mapping[str, Path] | None = None) -> tuple[Any, dict[str, str]]:
    """(TeamModel over the team's base with every pinned version loaded, the pins). `pins` overrides the
    manifest's; `extra` adds more versions (id -> adapter dir), e.g. a swap candidate."""
    from .team_model import TeamModel

    base = check_base(team, registry.manifest(team), base) if base is not None else team_base(registry, team)
    pins = dict(pins if pins is not None else registry.pins(team))
    tm = TeamModel(base, device=device, dtype=dtype)
    for vid in dict.fromkeys(pins.values()):
        if vid not in (extra or {}):
            tm.ensure_adapter(vid, registry.version_path(vid))
    for vid, path in (extra or {}).items():
        tm.ensure_adapter(vid, path)
    return tm, pins
