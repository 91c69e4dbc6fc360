"""Serve a registry team through vLLM's OpenAI-compatible API (`teamtr-adapters serve`).

Every pinned role is a LoRA module of one or more `vllm serve --enable-lora` replicas under two names:

- `TEAM/ROLE` (e.g. `math-trio/solver`): the role's *current* pin. Agent code calls
  `model="math-trio/solver"` and gets whatever version the team pins now;
- `ROLE@VERSION` (e.g. `solver@v3`): one immutable version, for clients that must not move.

`TeamServer.sync()` makes the replicas serve the manifest's pins. `TeamServer.run()` polls the team's
manifest revision (`--poll` seconds) and syncs on every change, so a `swap`, `rollback`, `team rollback`,
`train` commit or `hub pull` made by any process is served without a restart: the new version is first
loaded under `ROLE@VERSION` on every replica (or none), checked (listed everywhere; a probe that it does
not answer as the bare base), and only then is `TEAM/ROLE` moved to its files in place on every replica
(or none); the replaced `ROLE@OLD` is then unloaded. A failed sync keeps the previous version served and
says why; the next change of the manifest tries again.

What moves to a server is the version's adapter dir (its registry path, content-addressed): the replicas
must see the registry at the same path (one machine, or a shared filesystem); weights are never merged.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from .errors import TeamTRError
from .registry import Registry
from .runtime.replicas import ReplicaSet


def team_name(team: str, role: str) -> str:
    """The moving served name of a role: `TEAM/ROLE`."""
    return f"{team}/{role}"


def version_name(role: str, name: str) -> str:
    """The fixed served name of one version: `ROLE@VERSION` (the version's name in its lineage, e.g. v3)."""
    return f"{role}@{name}"


@dataclass
class Served:
    version: str  # the version id (content hash)
    name: str  # its name in the lineage (v3)


class TeamServer:
    """Keeps vLLM replicas serving a team's pins (see the module docstring)."""

    def __init__(self, registry: Registry, team: str, replicas: ReplicaSet, *, probe: bool = True,
                 say: Callable[[str], None] = lambda line: None) -> None:
        self.reg, self.team, self.replicas, self.probe, self.say = registry, team, replicas, probe, say
        self.current: dict[str, Served] = {}
        self.revision: int | None = None

    def names(self) -> dict[str, str]:
        """Every served name -> its version id."""
        out = {}
        for role, s in self.current.items():
            out[team_name(self.team, role)] = s.version
            out[version_name(role, s.name)] = s.version
        return out

    def sync(self) -> list[str]:
        """Serve the manifest's pins on every replica; returns one line per role moved."""
        manifest = self.reg.manifest(self.team)
        moved = []
        for role, pin in manifest["roles"].items():
            cur = self.current.get(role)
            if cur is not None and cur.version == pin["id"]:
                continue
            path = self.reg.version_path(pin["id"])
            fixed, moving = version_name(role, pin["name"]), team_name(self.team, role)
            self.replicas.load(fixed, path, move=True)
            try:
                self.replicas.check(fixed, path, probe=self.probe)
            except BaseException:
                self.replicas.unload(fixed)
                raise
            self.replicas.load(moving, path, move=True)
            self.replicas.check(moving, path, probe=False)
            if cur is not None and cur.name != pin["name"]:
                self.replicas.unload(version_name(role, cur.name))
            self.current[role] = Served(pin["id"], pin["name"])
            moved.append(f"{moving} -> {fixed}" + (f" (was {role}@{cur.name})" if cur else ""))
        self.revision = manifest["revision"]
        return moved

    def poll(self) -> list[str]:
        """Sync when the manifest's revision changed since the last sync; a failed sync keeps the served
        versions and reports the error (one line), then tries again at the next change."""
        revision = self.reg.manifest(self.team)["revision"]
        if revision == self.revision:
            return []
        try:
            return self.sync()
        except TeamTRError as e:
            self.revision = revision  # do not retry the same failing revision in a loop
            return [f"error: revision {revision} not served, the previous versions stay: {e}"]

    def run(self, poll_s: float = 2.0, until: Callable[[], bool] = lambda: False) -> None:
        """Poll and sync until `until()` (or an interrupt)."""
        while not until():
            for line in self.poll():
                self.say(line)
            time.sleep(poll_s)
