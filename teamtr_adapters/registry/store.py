"""The local registry: immutable content-addressed adapter versions, lineages with human names and
aliases, team manifests, and an append-only history.

Layout under `$TEAMTR_HOME` (default `~/.teamtr`):
```
versions/<id>/      adapter_model.safetensors, adapter_config.json (canonical JSON), teamtr.json
lineages/<name>.json  {"versions": [{"name": "v1", "id": ..., "created": ...}], "aliases": {...}, "next": 2}
teams/<team>/       spec.toml, manifest.json
history.jsonl       one JSON event per line, append-only
locks/  tmp/
```
A version's id is sha256 over the sha256 of its two adapter files. Versions are written to `tmp/`,
fsynced and renamed into `versions/` under the lineage lock, so a killed process never leaves a
partial version visible; every small JSON file is replaced atomically.
"""
from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, cast

from ..errors import (ConflictError, InputError, IntegrityError, InvalidNameError, NotFoundError)
from ..spec import TeamSpec, check_name, parse_spec
from ..types import GcReport, HistoryEvent, Pin, TeamManifest, VerifyReport
from . import fsutil
from .validate import CONFIG, META, WEIGHTS, check_adapter_dir, check_compatible

LINEAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}(\.[A-Za-z0-9][A-Za-z0-9_-]{0,63})?$")
VERSION_NAME_RE = re.compile(r"^v([1-9][0-9]*)$")
HEX_RE = re.compile(r"^[0-9a-f]{8,64}$")


def default_home() -> Path:
    """`$TEAMTR_HOME`, default `~/.teamtr`."""
    return Path(os.environ.get("TEAMTR_HOME") or Path.home() / ".teamtr").expanduser()


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_lineage(name: str) -> str:
    if not isinstance(name, str) or not LINEAGE_RE.match(name):
        raise InvalidNameError(f"invalid lineage {name!r}: use NAME or TEAM.ROLE (letters, digits, '_', '-')")
    return name


def lineage_of(team: str, role: str) -> str:
    return f"{team}.{role}"


@dataclass(frozen=True)
class VersionInfo:
    """One stored version: its content id, the lineage and human name it is known by, its dir and metadata."""

    id: str
    lineage: str
    name: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.lineage}:{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "lineage": self.lineage, "name": self.name, "path": str(self.path), "meta": self.meta}


def content_hashes(src: Path) -> tuple[dict[str, str], str]:
    """(sha256 of each adapter file, version id). The config is hashed in its canonical JSON form."""
    weights = fsutil.sha256_file(src / WEIGHTS)
    config = hashlib.sha256(fsutil.canonical_json(json.loads((src / CONFIG).read_text())).encode()).hexdigest()
    files = {WEIGHTS: weights, CONFIG: config}
    return files, hashlib.sha256(f"{weights}\n{config}\n".encode()).hexdigest()


class Registry:
    """A local adapter registry rooted at `home` (default `$TEAMTR_HOME` or `~/.teamtr`)."""

    def __init__(self, home: str | Path | None = None) -> None:
        self.home = Path(home).expanduser() if home else default_home()

    # -- paths -------------------------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        d = self.home / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _lineage_path(self, lineage: str) -> Path:
        return self.home / "lineages" / f"{check_lineage(lineage)}.json"

    def _team_dir(self, team: str) -> Path:
        return self.home / "teams" / check_name(team, "team name")

    def _lock(self, kind: str, name: str):
        return fsutil.lock(self.home / "locks" / f"{kind}-{name}")

    # -- versions ----------------------------------------------------------------------------------
    def _read_lineage(self, lineage: str) -> dict[str, Any]:
        path = self._lineage_path(lineage)
        if not path.is_file():
            return {"lineage": lineage, "versions": [], "aliases": {}, "next": 1}
        return fsutil.read_json(path)

    def lineages(self) -> list[str]:
        d = self.home / "lineages"
        return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []

    def add_version(self, lineage: str, src_dir: str | Path, *, made_by: str, base: dict[str, str],
                    parent: str | None = None, config: dict[str, Any] | None = None,
                    metrics: dict[str, Any] | None = None, context: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> VersionInfo:
        """Copy a PEFT adapter dir in as the next version `vN` of `lineage` (identical bytes are stored once)."""
        check_lineage(lineage)
        src = Path(src_dir)
        adapter_config = check_adapter_dir(src)
        files, vid = content_hashes(src)
        tmp = Path(tempfile.mkdtemp(dir=self._dir("tmp"), prefix="add-"))
        try:
            fsutil.write_file_synced(tmp / CONFIG, fsutil.canonical_json(adapter_config).encode())
            shutil.copyfile(src / WEIGHTS, tmp / WEIGHTS)
            with open(tmp / WEIGHTS, "rb+") as f:
                os.fsync(f.fileno())
            if content_hashes(tmp) != (files, vid):
                raise IntegrityError(f"{src}: adapter files changed while being copied; try again")
            with self._lock("lineage", lineage):
                doc = self._read_lineage(lineage)
                for entry in doc["versions"]:
                    if entry["id"] == vid and not entry.get("collected"):
                        return self._info(vid, lineage, entry["name"])
                name = f"v{doc['next']}"
                target = self._dir("versions") / vid
                if not target.is_dir():
                    meta = {"id": vid, "lineage": lineage, "name": name, "created": now(), "made_by": made_by,
                            "parent": parent, "base": base, "files": files, "config": config or {},
                            "metrics": metrics or {}, "context": context or {}, **(extra or {})}
                    fsutil.write_file_synced(tmp / META, fsutil.canonical_json(meta).encode())
                    fsutil.fsync_dir(tmp)
                    os.rename(tmp, target)
                    fsutil.fsync_dir(target.parent)
                doc["versions"].append({"name": name, "id": vid, "created": now()})
                doc["next"] += 1
                fsutil.atomic_write_json(self._lineage_path(lineage), doc)
            return self._info(vid, lineage, name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def import_adapter(self, src_dir: str | Path, lineage: str, base: Any,
                       extra: dict[str, Any] | None = None) -> VersionInfo:
        """Validate an external PEFT adapter dir (safe files, fits `base`, a BaseRef) and add it."""
        src = Path(src_dir)
        check_lineage(lineage)
        if not src.exists() and not src.is_symlink():
            raise NotFoundError(f"{src}: no such adapter dir")
        check_adapter_dir(src)
        check_compatible(src, base)
        return self.add_version(lineage, src, made_by="import", base=base.identity,
                                extra={"source": str(src.resolve()), **(extra or {})})

    def _meta(self, vid: str) -> dict[str, Any]:
        path = self.home / "versions" / vid / META
        try:
            return fsutil.read_json(path)
        except (OSError, json.JSONDecodeError):
            raise IntegrityError(f"version {vid[:12]}: metadata missing or unreadable; run `registry verify`") from None

    def _info(self, vid: str, lineage: str, name: str) -> VersionInfo:
        return VersionInfo(id=vid, lineage=lineage, name=name, path=self.home / "versions" / vid, meta=self._meta(vid))

    def version(self, vid: str) -> VersionInfo:
        """A version by its full id, named as in the lineage it was first added to."""
        if not (self.home / "versions" / vid).is_dir():
            raise NotFoundError(f"no version with id {vid[:12]}")
        meta = self._meta(vid)
        for entry in self._read_lineage(meta["lineage"])["versions"]:
            if entry["id"] == vid:
                return self._info(vid, meta["lineage"], entry["name"])
        return self._info(vid, meta["lineage"], meta["name"])

    def list_versions(self, lineage: str | None = None) -> list[VersionInfo]:
        out = []
        for lin in [lineage] if lineage else self.lineages():
            doc = self._read_lineage(lin)
            if lineage and not doc["versions"]:
                raise NotFoundError(f"no lineage {lineage!r}")
            out += [self._info(e["id"], lin, e["name"]) for e in doc["versions"] if not e.get("collected")]
        return out

    def aliases(self, lineage: str) -> dict[str, str]:
        return dict(self._read_lineage(lineage)["aliases"])

    def set_alias(self, lineage: str, alias: str, ref: str) -> VersionInfo:
        """Point `alias` of `lineage` at the version `ref` (a name, alias or id in that lineage)."""
        check_name(alias, "alias")
        if VERSION_NAME_RE.match(alias) or alias == "latest":
            raise InvalidNameError(f"alias {alias!r} would shadow a version name")
        with self._lock("lineage", lineage):
            info = self.resolve(ref, lineage)
            doc = self._read_lineage(lineage)
            doc["aliases"][alias] = info.name
            fsutil.atomic_write_json(self._lineage_path(lineage), doc)
        return info

    def resolve(self, ref: str, lineage: str | None = None) -> VersionInfo:
        """Resolve `lineage:vN`, `lineage:alias`, `vN`/`alias`/`latest` within `lineage`, or an id prefix."""
        if not isinstance(ref, str) or not ref:
            raise NotFoundError("empty version reference")
        if ":" in ref:
            lineage, _, ref = ref.partition(":")
        if lineage is None:
            if HEX_RE.match(ref):
                return self._by_id_prefix(ref, None)
            raise NotFoundError(f"cannot resolve {ref!r}: use LINEAGE:vN, LINEAGE:ALIAS or a version id")
        doc = self._read_lineage(lineage)
        live = [e for e in doc["versions"] if not e.get("collected")]
        if not doc["versions"]:
            raise NotFoundError(f"no lineage {lineage!r}")
        name = doc["aliases"].get(ref, ref)
        if name == "latest" and live:
            name = live[-1]["name"]
        for e in live:
            if e["name"] == name:
                return self._info(e["id"], lineage, e["name"])
        if HEX_RE.match(ref):
            return self._by_id_prefix(ref, lineage)
        known = ", ".join([e["name"] for e in live] + sorted(doc["aliases"]))
        raise NotFoundError(f"lineage {lineage!r} has no version or alias {ref!r} (known: {known or 'none'})")

    def _by_id_prefix(self, prefix: str, lineage: str | None) -> VersionInfo:
        d = self.home / "versions"
        hits = sorted(p.name for p in d.glob(f"{prefix}*")) if d.is_dir() else []
        if len(hits) != 1:
            raise NotFoundError(f"version id {prefix!r} " + ("is ambiguous" if hits else "not found"))
        info = self.version(hits[0])
        if lineage and info.lineage != lineage:
            for e in self._read_lineage(lineage)["versions"]:
                if e["id"] == info.id:
                    return self._info(info.id, lineage, e["name"])
        return info

    def verify_version(self, vid: str) -> list[str]:
        """Problems with one stored version (empty when its bytes match its id)."""
        d = self.home / "versions" / vid
        problems = []
        for f in (WEIGHTS, CONFIG, META):
            if not (d / f).is_file() or (d / f).is_symlink():
                problems.append(f"version {vid[:12]}: {f} missing")
        if problems:
            return problems
        try:
            files, computed = content_hashes(d)
            meta = fsutil.read_json(d / META)
        except (OSError, ValueError) as e:
            return [f"version {vid[:12]}: unreadable ({e})"]
        if computed != vid:
            bad = [f for f, h in files.items() if meta.get("files", {}).get(f) != h] or [WEIGHTS]
            problems.append(f"version {vid[:12]}: {', '.join(bad)} does not match its recorded sha256")
        if meta.get("id") != vid:
            problems.append(f"version {vid[:12]}: teamtr.json names another id")
        return problems

    def version_path(self, vid: str, verify: bool = True) -> Path:
        """The dir of version `vid`, after checking its bytes still match its id (IntegrityError if not)."""
        d = self.home / "versions" / vid
        if not d.is_dir():
            raise NotFoundError(f"no version with id {vid[:12]}")
        if verify:
            problems = self.verify_version(vid)
            if problems:
                raise IntegrityError(f"refusing to load: {problems[0]}; run `teamtr-adapters registry verify`")
        return d

    def export(self, ref: str, dest: str | Path, lineage: str | None = None) -> Path:
        """Copy a version out as a plain PEFT adapter dir (plus its teamtr.json) into `dest` (new or empty)."""
        info = self.resolve(ref, lineage)
        src = self.version_path(info.id)
        dest = Path(dest)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise InputError(f"export target {dest} exists and is not an empty dir")
        dest.mkdir(parents=True, exist_ok=True)
        for f in (WEIGHTS, CONFIG, META):
            shutil.copyfile(src / f, dest / f)
        return dest

    # -- teams -------------------------------------------------------------------------------------
    def list_teams(self) -> list[str]:
        d = self.home / "teams"
        return sorted(p.name for p in d.iterdir() if (p / "manifest.json").is_file()) if d.is_dir() else []

    def manifest(self, team: str) -> TeamManifest:
        path = self._team_dir(team) / "manifest.json"
        if not path.is_file():
            known = ", ".join(self.list_teams()) or "none; create one with `team init`"
            raise NotFoundError(f"no team {team!r} (teams: {known})")
        manifest: TeamManifest = fsutil.read_json(path)
        order = manifest.get("order") or sorted(manifest["roles"])
        manifest["roles"] = {r: manifest["roles"][r] for r in order}
        return manifest

    def team_spec(self, team: str) -> TeamSpec:
        self.manifest(team)
        path = self._team_dir(team) / "spec.toml"
        return parse_spec(path.read_text(), str(path))

    def pins(self, team: str) -> dict[str, str]:
        return {role: pin["id"] for role, pin in self.manifest(team)["roles"].items()}

    def create_team(self, spec: TeamSpec, pins: dict[str, str], base: dict[str, str], event: dict[str, Any]) -> TeamManifest:
        """Write a new team's spec and manifest from already-stored versions (used by init and pull)."""
        tdir = self._team_dir(spec.name)
        with self._lock("team", spec.name):
            if (tdir / "manifest.json").is_file():
                raise ConflictError(f"team {spec.name!r} already exists")
            if set(pins) != set(spec.role_names):
                raise InputError(f"pins must cover exactly the roles {spec.role_names}")
            roles = {role: self._pin(pins[role]) for role in spec.role_names}
            manifest: TeamManifest = {"team": spec.name, "revision": 1, "spec_hash": spec.spec_hash(), "base": base,
                        "base_ref": spec.base, "roles": roles, "order": spec.role_names, "updated": now()}
            tdir.mkdir(parents=True, exist_ok=True)
            fsutil.atomic_write_text(tdir / "spec.toml", spec.to_toml())
            fsutil.atomic_write_json(tdir / "manifest.json", manifest)
            self.append_history({"team": spec.name, "revision": 1,
                                 "pins_after": {r: p["id"] for r, p in roles.items()}, **event})
        return manifest

    def _pin(self, vid: str) -> Pin:
        info = self.version(vid)
        return {"lineage": info.lineage, "name": info.name, "id": info.id}

    def init_team(self, spec: TeamSpec, base: Any = None) -> TeamManifest:
        """Create team `spec.name` with a fresh LoRA `v1` for every role (imports torch)."""
        from ..runtime.base import resolve_base
        from ..runtime.lora import init_adapters

        if (self._team_dir(spec.name) / "manifest.json").is_file():
            raise ConflictError(f"team {spec.name!r} already exists")
        base = base or resolve_base(spec.base)
        seeds = {r: int(hashlib.sha256(f"{spec.name}/{r}".encode()).hexdigest()[:8], 16) for r in spec.role_names}
        with tempfile.TemporaryDirectory(dir=self._dir("tmp"), prefix="init-") as tmp:
            dirs = init_adapters(base, spec.lora, seeds, Path(tmp))
            pins = {}
            for role, d in dirs.items():
                info = self.add_version(lineage_of(spec.name, role), d, made_by="init", base=base.identity,
                                        config={"lora": spec.to_dict()["lora"], "seed": seeds[role]})
                pins[role] = info.id
        return self.create_team(spec, pins, base.identity, {"event": "init", "base": base.identity})

    def update_pins(self, team: str, changes: dict[str, str], event: dict[str, Any]) -> TeamManifest:
        """Atomically move the team's pins (role -> version id) and append the history event."""
        with self._lock("team", team):
            manifest = self.manifest(team)
            before = {r: p["id"] for r, p in manifest["roles"].items()}
            for role, vid in changes.items():
                if role not in manifest["roles"]:
                    raise NotFoundError(f"team {team!r} has no role {role!r} (roles: {', '.join(manifest['roles'])})")
                self.version_path(vid)
                manifest["roles"][role] = self._pin(vid)
            manifest["revision"] += 1
            manifest["updated"] = now()
            fsutil.atomic_write_json(self._team_dir(team) / "manifest.json", manifest)
            self.append_history({"team": team, "revision": manifest["revision"], "pins_before": before,
                                 "pins_after": {r: p["id"] for r, p in manifest["roles"].items()}, **event})
        return manifest

    # -- history -----------------------------------------------------------------------------------
    def append_history(self, event: dict[str, Any]) -> HistoryEvent:
        event = {"ts": now(), "user": getpass.getuser(), "host": socket.gethostname(), **event}
        self.home.mkdir(parents=True, exist_ok=True)
        with self._lock("history", "log"):
            fsutil.append_line(self.home / "history.jsonl", json.dumps(event, sort_keys=True, default=str))
        return cast(HistoryEvent, event)

    def history(self, team: str | None = None) -> list[HistoryEvent]:
        """Events in order (a torn last line left by a killed writer is skipped)."""
        path = self.home / "history.jsonl"
        if team is not None:
            self.manifest(team)
        if not path.is_file():
            return []
        events: list[HistoryEvent] = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue
            if team is None or e.get("team") == team:
                events.append(e)
        return events

    # -- maintenance -------------------------------------------------------------------------------
    def _version_ids(self) -> list[str]:
        d = self.home / "versions"
        return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []

    def verify(self) -> VerifyReport:
        """Recompute every version's hashes and check that every name, alias and pin points somewhere."""
        problems: list[str] = []
        ids = self._version_ids()
        for vid in ids:
            problems += self.verify_version(vid)
        known = set(ids)
        named: set[str] = set()
        for lin in self.lineages():
            doc = self._read_lineage(lin)
            for e in doc["versions"]:
                if not e.get("collected"):
                    named.add(e["id"])
                    if e["id"] not in known:
                        problems.append(f"lineage {lin}: {e['name']} points to missing version {e['id'][:12]}")
        for team in self.list_teams():
            for role, pin in self.manifest(team)["roles"].items():
                if pin["id"] not in known:
                    problems.append(f"team {team}: role {role} pins missing version {pin['id'][:12]}")
        return {"ok": not problems, "versions": len(ids), "unnamed": sorted(known - named), "problems": problems}

    def _reachable(self) -> set[str]:
        keep: set[str] = set()
        for team in self.list_teams():
            keep |= set(self.pins(team).values())
        for lin in self.lineages():
            doc = self._read_lineage(lin)
            by_name = {e["name"]: e["id"] for e in doc["versions"]}
            keep |= {by_name[n] for n in doc["aliases"].values() if n in by_name}
        key: Literal["pins_before", "pins_after"]
        for e in self.history():
            for key in ("pins_before", "pins_after"):
                keep |= set((e.get(key) or {}).values())
        return keep

    def gc(self, dry_run: bool = True) -> GcReport:
        """Remove versions no manifest, alias or history event pins, and stale temp dirs (dry run by default)."""
        with self._lock("gc", "all"):
            keep = self._reachable()
            doomed = [vid for vid in self._version_ids() if vid not in keep]
            stale_tmp = sorted(p.name for p in (self.home / "tmp").iterdir()) if (self.home / "tmp").is_dir() else []
            freed = sum(f.stat().st_size for vid in doomed for f in (self.home / "versions" / vid).iterdir())
            if not dry_run:
                for vid in doomed:
                    self._collect(vid)
                for name in stale_tmp:
                    shutil.rmtree(self.home / "tmp" / name, ignore_errors=True)
        return {"dry_run": dry_run, "remove": doomed, "keep": len(keep), "bytes": freed, "stale_tmp": stale_tmp}

    def _collect(self, vid: str) -> None:
        meta = self._meta(vid)
        for lin in self.lineages():
            with self._lock("lineage", lin):
                doc = self._read_lineage(lin)
                hit = [e for e in doc["versions"] if e["id"] == vid]
                for e in hit:
                    e["collected"] = now()
                if hit:
                    fsutil.atomic_write_json(self._lineage_path(lin), doc)
        trash = self._dir("tmp") / f"gc-{vid}"
        os.rename(self.home / "versions" / vid, trash)
        shutil.rmtree(trash)
        self.append_history({"event": "gc", "version": vid, "lineage": meta.get("lineage")})
