"""Rollback: restore earlier pins exactly (by version id), replayed from the team's history.

`rollback_role` undoes a role's last change (the holders form an undo stack) or restores its pin at a
revision; `rollback_team` restores every pin of a revision. Every rollback is itself a history event.
"""
from __future__ import annotations

from ..errors import InputError, NotFoundError
from ..types import TeamManifest
from .store import Registry


def pins_at(registry: Registry, team: str, revision: int) -> dict[str, str]:
    """The team's pins (role -> version id) right after manifest revision `revision`."""
    for e in registry.history(team):
        if e.get("revision") == revision and e.get("pins_after"):
            return dict(e["pins_after"])
    known = sorted({e["revision"] for e in registry.history(team) if e.get("pins_after") and "revision" in e})
    raise NotFoundError(f"team {team!r} has no revision {revision} in its history (revisions: "
                        f"{', '.join(map(str, known)) or 'none'})")


def holder_stack(registry: Registry, team: str, role: str) -> list[str]:
    """The role's holders as an undo stack, replayed from history: every pin change pushes the new
    holder, except a plain `rollback ROLE` (an undo), which pops; the last entry is the current holder."""
    stack: list[str] = []
    for e in registry.history(team):
        after = (e.get("pins_after") or {}).get(role)
        if after is None:
            continue
        before = (e.get("pins_before") or {}).get(role)
        if not stack or before is None:
            stack = [after]
        elif before != after:
            if e.get("event") == "rollback" and e.get("undo") and len(stack) > 1 and stack[-2] == after:
                stack.pop()
            else:
                stack.append(after)
    return stack


def rollback_role(registry: Registry, team: str, role: str, to_revision: int | None = None) -> TeamManifest:
    """Restore `role`'s previous holder (an undo of its last change), or its pin at `to_revision`."""
    registry.team_spec(team).role(role)
    current = registry.pins(team)[role]
    if to_revision is None:
        stack = holder_stack(registry, team, role)
        if len(stack) < 2:
            raise InputError(f"{team}/{role} has no earlier holder to roll back to")
        target, event = stack[-2], {"event": "rollback", "role": role, "undo": True}
    else:
        at = pins_at(registry, team, to_revision).get(role)
        if at is None:
            raise NotFoundError(f"revision {to_revision} of team {team!r} pins no role {role!r}")
        target, event = at, {"event": "rollback", "role": role, "to_revision": to_revision}
    if target == current:
        raise InputError(f"{team}/{role} already holds {registry.version(current).ref}; nothing to roll back")
    return registry.update_pins(team, {role: target}, event)


def rollback_team(registry: Registry, team: str, revision: int) -> TeamManifest:
    """Restore every pin of `team` exactly as it was at manifest revision `revision`."""
    target = pins_at(registry, team, revision)
    current = registry.pins(team)
    changes = {r: v for r, v in target.items() if r in current and current[r] != v}
    if not changes:
        raise InputError(f"team {team!r} already holds the pins of revision {revision}; nothing to roll back")
    return registry.update_pins(team, changes, {"event": "team-rollback", "to_revision": revision})
