"""The local registry: immutable content-addressed adapter versions, lineages with human names and
aliases, team manifests, and an append-only history.

Layout under `$TEAMTR_HOME` (default `~/.teamtr`):
```
versions/<id>/      adapter_model.safetensors, adapter_config.json (canonical JSON), teamtr.json -- nothing else
lineages/<name>.json  {"versions": [{"name": "v1", "id": ..., "created": ..., "meta_sha256": ...}],
                       "aliases": {...}, "next": 2}
teams/<team>/       spec.toml, manifest.json (and pending.json while a pin move is being committed)
history.jsonl       one JSON event per line, append-only
locks/  tmp/
```
A version's id is sha256 over the sha256 of its two adapter files; the sha256 of its teamtr.json is recorded
in each lineage entry that names it, so `verify` covers every stored byte.

The protocol that keeps writers, readers and gc safe together (docs/architecture.md, "registry"):
- `locks/registry.lock` is a registry-wide shared/exclusive lock. Every operation takes it shared (writers of
  versions, aliases, manifests and history, and readers, so a name is never resolved to a version that gc is
  removing); `gc` takes it exclusive, so it sees no write in flight.
- Finer locks serialise writers of one file: `lineage-<name>`, `team-<name>`, `history-log` (in that order,
  always after the registry lock).
- Versions are written in `tmp/add-*`, fsynced and renamed into `versions/` while the registry lock is held
  shared; long-lived scratch dirs (`Registry.scratch`) hold an owner lock (`tmp/<dir>/.owner`) instead. gc
  removes a tmp entry only when no live process can be using it.
- A pin move writes `teams/<team>/pending.json` (the new manifest and its history event) first, then the
  manifest, then the history line, then removes the journal; a journal left by a killed process is replayed
  (rolled forward) by the next process that opens the team, so manifest and history never disagree.
"""
from __future__ import annotations

import functools
import getpass
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Literal, cast

from ..errors import (ConflictError, InputError, IntegrityError, InvalidNameError, NotFoundError, TeamTRError)
from ..spec import TeamSpec, check_name, parse_spec
from ..types import GcReport, HistoryEvent, Pin, TeamManifest, VerifyReport
from . import fsutil
from .validate import CONFIG, META, PICKLE_SUFFIXES, WEIGHTS, check_adapter_dir, check_compatible

LINEAGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}(\.[A-Za-z0-9][A-Za-z0-9_-]{0,63})?")
VERSION_NAME_RE = re.compile(r"v([1-9][0-9]*)")
HEX_RE = re.compile(r"[0-9a-f]{8,64}")
ID_RE = re.compile(r"[0-9a-f]{64}")
TEAM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # as spec.check_name
STORED_FILES = (WEIGHTS, CONFIG, META)
MANIFEST = "manifest.json"
SPEC = "spec.toml"
PENDING = "pending.json"
HISTORY = "history.jsonl"
# tmp/ entries made only while the registry lock is held shared: whatever gc (exclusive) finds is a leftover.
LOCKED_TMP_PREFIXES = ("add-", "gc-")
# tmp/ entries that follow neither rule (no owner lock, another prefix) are removed once this old.
TMP_GRACE_S = 3600.0
VERIFY_HINT = "run `teamtr-adapters registry verify`"


def default_home() -> Path:
    """`$TEAMTR_HOME`, default `~/.teamtr`."""
    return Path(os.environ.get("TEAMTR_HOME") or Path.home() / ".teamtr").expanduser()


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_lineage(name: str) -> str:
    if not isinstance(name, str) or not LINEAGE_RE.fullmatch(name):
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
    config = hashlib.sha256(fsutil.canonical_json(fsutil.read_json(src / CONFIG)).encode()).hexdigest()
    files = {WEIGHTS: weights, CONFIG: config}
    return files, hashlib.sha256(f"{weights}\n{config}\n".encode()).hexdigest()


# -- shapes of the stored JSON files (a damaged file is reported, never a traceback) --------------------
def _is_str(x: Any, pattern: re.Pattern | None = None) -> bool:
    return isinstance(x, str) and (pattern is None or pattern.fullmatch(x) is not None)


def lineage_problems(doc: Any) -> list[str]:
    """What is wrong with the shape of a lineage document (empty when it is well formed)."""
    if not isinstance(doc, dict):
        return ["not a JSON object"]
    out = []
    versions, aliases, nxt = doc.get("versions"), doc.get("aliases"), doc.get("next")
    if not isinstance(versions, list):
        return ["'versions' is not a list"]
    numbers = []
    for i, e in enumerate(versions):
        if not isinstance(e, dict) or not _is_str(e.get("name"), VERSION_NAME_RE) or not _is_str(e.get("id"), ID_RE):
            out.append(f"entry {i + 1} is not {{name: vN, id: <sha256>}}")
            continue
        if e.get("meta_sha256") is not None and not _is_str(e["meta_sha256"], ID_RE):
            out.append(f"entry {e['name']}: meta_sha256 is not a sha256")
        numbers.append(int(e["name"][1:]))
    if len(set(numbers)) != len(numbers):
        out.append("a version name is used twice")
    if not isinstance(aliases, dict) or not all(_is_str(k) and _is_str(v) for k, v in aliases.items()):
        out.append("'aliases' is not a map of names")
    if not isinstance(nxt, int) or isinstance(nxt, bool) or nxt < 1 or (numbers and nxt <= max(numbers)):
        out.append("'next' is not a number above every version name")
    return out


def manifest_problems(m: Any, team: str) -> list[str]:
    """What is wrong with the shape of a team manifest (empty when it is well formed)."""
    if not isinstance(m, dict):
        return ["not a JSON object"]
    out = []
    if m.get("team") != team:
        out.append(f"names team {m.get('team')!r}")
    rev = m.get("revision")
    if not isinstance(rev, int) or isinstance(rev, bool) or rev < 1:
        out.append("'revision' is not a positive number")
    roles = m.get("roles")
    if not isinstance(roles, dict) or not roles:
        return out + ["'roles' is not a map of pins"]
    for role, pin in roles.items():
        if not (isinstance(pin, dict) and _is_str(pin.get("lineage"), LINEAGE_RE)
                and _is_str(pin.get("name"), VERSION_NAME_RE) and _is_str(pin.get("id"), ID_RE)):
            out.append(f"role {role!r}: pin is not {{lineage, name, id}}")
    order = m.get("order")
    if order is not None and (not isinstance(order, list) or sorted(map(str, order)) != sorted(roles)):
        out.append("'order' does not list the roles")
    if not isinstance(m.get("base"), dict) or not _is_str(m.get("spec_hash")) or not _is_str(m.get("base_ref")):
        out.append("'base', 'base_ref' or 'spec_hash' missing")
    return out


def _json_line(raw: bytes) -> dict[str, Any] | None:
    try:
        e = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return e if isinstance(e, dict) else None


def pin_event(event: dict[str, Any], **owned: Any) -> dict[str, Any]:
    """A pin move's history event: the registry's own keys (team, revision, pins) win; a caller's value for one
    of them (e.g. a Hub revision passed as "revision") is kept as "event_<key>"."""
    out = dict(event)
    for key, value in owned.items():
        if key in out and out[key] != value:
            out[f"event_{key}"] = out[key]
        out[key] = value
    return out


def _locked(fn):
    """Run a Registry method with the registry lock held shared (reads and ordinary writes)."""
    @functools.wraps(fn)
    def wrapper(self: "Registry", *args: Any, **kwargs: Any) -> Any:
        with self.registry_lock():
            return fn(self, *args, **kwargs)
    return wrapper


class Registry:
    """A local adapter registry rooted at `home` (default `$TEAMTR_HOME` or `~/.teamtr`)."""

    def __init__(self, home: str | Path | None = None) -> None:
        self.home = Path(home).expanduser() if home else default_home()

    # -- paths and locks ---------------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        d = self.home / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.home))
        except ValueError:
            return str(path)

    def _lineage_path(self, lineage: str) -> Path:
        return self.home / "lineages" / f"{check_lineage(lineage)}.json"

    def _team_dir(self, team: str) -> Path:
        return self.home / "teams" / check_name(team, "team name")

    def _lock(self, kind: str, name: str):
        return fsutil.lock(self.home / "locks" / f"{kind}-{name}")

    @contextmanager
    def registry_lock(self, exclusive: bool = False) -> Iterator[None]:
        """The registry-wide lock: shared for every read and write, exclusive for gc. Reentrant in a thread."""
        if self.home.exists() and not self.home.is_dir():
            raise InputError(f"registry home {self.home} is not a directory (check TEAMTR_HOME)")
        if not exclusive and not self.home.exists():
            yield  # nothing stored yet: nothing to protect, and a read must not create the home
            return
        cm = fsutil.rw_lock(self.home / "locks" / "registry.lock", exclusive)
        try:
            cm.__enter__()
        except PermissionError as e:
            raise InputError(f"cannot lock registry {self.home}: {e.strerror}") from None
        try:
            yield
        except BaseException as e:
            if not cm.__exit__(type(e), e, e.__traceback__):
                raise
        else:
            cm.__exit__(None, None, None)

    @property
    def location(self) -> str:
        """Where this registry lives: its directory here, `hf://ORG/REPO[@BRANCH]` for the Hub backend."""
        return str(self.home)

    def check_writable(self) -> None:
        """Raise (one line) when this registry cannot be written now, before a long job that ends in a write
        (the Hub backend refuses writes offline); nothing to check for a local directory."""

    def hold(self, write: bool = False):
        """Hold the registry lock shared across several calls, e.g. `add_version` then `update_pins` or
        `set_alias`: gc cannot run in between, so it never sees the new version unreachable and removes it.
        The Hub backend makes the calls one transaction (one commit); `write=True` says they will write (refused
        offline up front; a missing Hub repo is created instead of reported)."""
        if write:
            self.check_writable()
        return self.registry_lock()

    @contextmanager
    def scratch(self, prefix: str = "work-") -> Iterator[Path]:
        """A private dir under `tmp/` for work that ends in `add_version` (training output, unpacked bundles).
        It carries an owner lock, so `gc` never removes it while this process lives; it is removed on exit."""
        if prefix.startswith(LOCKED_TMP_PREFIXES) or "/" in prefix:
            raise ValueError(f"scratch prefix {prefix!r} is reserved or not a plain name")
        with self.registry_lock():
            d = Path(tempfile.mkdtemp(dir=self._dir("tmp"), prefix=prefix))
            fd = fsutil.claim_dir(d)
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)
            os.close(fd)

    def _load_json(self, path: Path, what: str) -> Any:
        try:
            return fsutil.read_json(path)
        except FileNotFoundError:
            raise
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            kind = "unreadable" if isinstance(e, OSError) else "damaged (not valid JSON)"
            raise IntegrityError(f"{what}: {self._rel(path)} is {kind}; {VERIFY_HINT}") from None

    # -- versions ----------------------------------------------------------------------------------
    def _read_lineage(self, lineage: str) -> dict[str, Any]:
        path = self._lineage_path(lineage)
        try:
            doc = self._load_json(path, f"lineage {lineage}")
        except FileNotFoundError:
            return {"lineage": lineage, "versions": [], "aliases": {}, "next": 1}
        problems = lineage_problems(doc)
        if problems:
            raise IntegrityError(f"lineage {lineage}: {self._rel(path)} is damaged ({problems[0]}); {VERIFY_HINT}")
        return doc

    def lineages(self) -> list[str]:
        d = self.home / "lineages"
        return sorted(p.stem for p in d.glob("*.json") if LINEAGE_RE.fullmatch(p.stem)) if d.is_dir() else []

    def add_version(self, lineage: str, src_dir: str | Path, *, made_by: str, base: dict[str, str],
                    parent: str | None = None, config: dict[str, Any] | None = None,
                    metrics: dict[str, Any] | None = None, context: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> VersionInfo:
        """Copy a PEFT adapter dir in as the next version `vN` of `lineage` (identical bytes are stored once)."""
        check_lineage(lineage)
        src = Path(src_dir)
        adapter_config = check_adapter_dir(src)
        files, vid = content_hashes(src)
        with self.registry_lock():
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
                    if target.is_dir():  # stored already (under another lineage): name it here too
                        damaged = self._content_problems(vid)
                        if damaged:
                            raise IntegrityError(f"cannot add {src}: {damaged[0]}; {VERIFY_HINT}")
                        recorded = self._recorded_meta_hashes(vid)
                        meta_hash = next(iter(recorded.values()), None) or fsutil.sha256_file(target / META)
                    else:
                        meta = {"id": vid, "lineage": lineage, "name": name, "created": now(), "made_by": made_by,
                                "parent": parent, "base": base, "files": files, "config": config or {},
                                "metrics": metrics or {}, "context": context or {}, **(extra or {})}
                        meta_bytes = fsutil.canonical_json(meta).encode()
                        fsutil.write_file_synced(tmp / META, meta_bytes)
                        fsutil.fsync_dir(tmp)
                        os.rename(tmp, target)
                        fsutil.fsync_dir(target.parent)
                        meta_hash = fsutil.sha256_bytes(meta_bytes)
                    doc["versions"].append({"name": name, "id": vid, "created": now(), "meta_sha256": meta_hash})
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
            meta = self._load_json(path, f"version {vid[:12]}")
        except FileNotFoundError:
            raise IntegrityError(f"version {vid[:12]}: {META} missing; {VERIFY_HINT}") from None
        if not isinstance(meta, dict) or not _is_str(meta.get("lineage"), LINEAGE_RE) or not _is_str(meta.get("name")):
            raise IntegrityError(f"version {vid[:12]}: {META} is damaged (no lineage or name); {VERIFY_HINT}")
        return meta

    def _info(self, vid: str, lineage: str, name: str) -> VersionInfo:
        return VersionInfo(id=vid, lineage=lineage, name=name, path=self.home / "versions" / vid, meta=self._meta(vid))

    @_locked
    def version(self, vid: str) -> VersionInfo:
        """A version by its full id, named as in the lineage it was first added to."""
        if not _is_str(vid, ID_RE) or not (self.home / "versions" / vid).is_dir():
            raise NotFoundError(f"no version with id {str(vid)[:12]}")
        meta = self._meta(vid)
        for entry in self._read_lineage(meta["lineage"])["versions"]:
            if entry["id"] == vid and not entry.get("collected"):
                return self._info(vid, meta["lineage"], entry["name"])
        return self._info(vid, meta["lineage"], meta["name"])

    @_locked
    def list_versions(self, lineage: str | None = None) -> list[VersionInfo]:
        out = []
        for lin in [lineage] if lineage else self.lineages():
            doc = self._read_lineage(lin)
            if lineage and not doc["versions"]:
                raise NotFoundError(f"no lineage {lineage!r}")
            out += [self._info(e["id"], lin, e["name"]) for e in doc["versions"] if not e.get("collected")]
        return out

    @_locked
    def aliases(self, lineage: str) -> dict[str, str]:
        return dict(self._read_lineage(lineage)["aliases"])

    @_locked
    def set_alias(self, lineage: str, alias: str, ref: str) -> VersionInfo:
        """Point `alias` of `lineage` at the version `ref` (a name, alias or id in that lineage)."""
        check_name(alias, "alias")
        if VERSION_NAME_RE.fullmatch(alias) or alias == "latest":
            raise InvalidNameError(f"alias {alias!r} would shadow a version name")
        with self._lock("lineage", lineage):
            info = self.resolve(ref, lineage)
            doc = self._read_lineage(lineage)
            doc["aliases"][alias] = info.name
            fsutil.atomic_write_json(self._lineage_path(lineage), doc)
        return info

    @_locked
    def resolve(self, ref: str, lineage: str | None = None) -> VersionInfo:
        """Resolve `lineage:vN`, `lineage:alias`, `vN`/`alias`/`latest` within `lineage`, or an id prefix."""
        if not isinstance(ref, str) or not ref:
            raise NotFoundError("empty version reference")
        if ":" in ref:
            lineage, _, ref = ref.partition(":")
        if lineage is None:
            if HEX_RE.fullmatch(ref):
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
        if HEX_RE.fullmatch(ref):
            return self._by_id_prefix(ref, lineage)
        if ref in doc["aliases"]:
            raise IntegrityError(f"lineage {lineage}: alias {ref!r} points to {name}, which is not stored; {VERIFY_HINT}")
        known = ", ".join([e["name"] for e in live] + sorted(doc["aliases"]))
        raise NotFoundError(f"lineage {lineage!r} has no version or alias {ref!r} (known: {known or 'none'})")

    def _by_id_prefix(self, prefix: str, lineage: str | None) -> VersionInfo:
        d = self.home / "versions"
        hits = sorted(p.name for p in d.glob(f"{prefix}*") if ID_RE.fullmatch(p.name)) if d.is_dir() else []
        if len(hits) != 1:
            raise NotFoundError(f"version id {prefix!r} " + ("is ambiguous" if hits else "not found"))
        info = self.version(hits[0])
        if lineage and info.lineage != lineage:
            for e in self._read_lineage(lineage)["versions"]:
                if e["id"] == info.id and not e.get("collected"):
                    return self._info(info.id, lineage, e["name"])
        return info

    # -- integrity of one version ------------------------------------------------------------------
    def _recorded_meta_hashes(self, vid: str, hint: str | None = None, *, strict: bool = False) -> dict[str, str]:
        """lineage -> the sha256 of teamtr.json recorded by each live lineage entry naming `vid`. The lineage
        `hint` (the one in teamtr.json) is read first and usually settles it; damaged lineages are skipped
        unless `strict`."""
        names = self.lineages()
        order = ([hint] if hint in names else []) + [n for n in names if n != hint]
        out: dict[str, str] = {}
        for lin in order:
            try:
                doc = self._read_lineage(lin)
            except IntegrityError:
                if strict:
                    raise
                continue
            for e in doc["versions"]:
                if e["id"] == vid and not e.get("collected") and e.get("meta_sha256"):
                    out[lin] = e["meta_sha256"]
            if out and lin == hint:
                break
        return out

    def _content_problems(self, vid: str) -> list[str]:
        """Problems with the files of one version dir: exactly the three stored files, adapter bytes match the
        id, teamtr.json parses and records this id and these file hashes."""
        d = self.home / "versions" / vid
        short = vid[:12]
        problems = []
        try:
            entries = sorted(os.listdir(d))
        except OSError as e:
            return [f"version {short}: unreadable ({e.strerror})"]
        for name in entries:
            if name not in STORED_FILES:
                why = "a pickle file, never loaded" if Path(name).suffix.lower() in PICKLE_SUFFIXES else "not stored"
                problems.append(f"version {short}: unexpected file {name} ({why}); a version holds only "
                                f"{', '.join(STORED_FILES)}")
        for f in STORED_FILES:
            p = d / f
            if p.is_symlink() or not p.is_file():
                problems.append(f"version {short}: {f} missing")
        if problems:
            return problems
        try:
            files, computed = content_hashes(d)
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            return [f"version {short}: unreadable ({type(e).__name__})"]
        try:
            meta = fsutil.read_json(d / META)
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            meta = None
        if computed != vid:
            recorded = meta.get("files", {}) if isinstance(meta, dict) and isinstance(meta.get("files"), dict) else {}
            bad = [f for f, h in files.items() if recorded.get(f) != h] or [WEIGHTS]
            problems.append(f"version {short}: {', '.join(bad)} does not match its recorded sha256")
        if not isinstance(meta, dict):
            problems.append(f"version {short}: {META} is damaged (not a JSON object)")
        else:
            if meta.get("id") != vid:
                problems.append(f"version {short}: {META} names another id")
            if computed == vid and meta.get("files") != files:
                problems.append(f"version {short}: {META} records other file hashes than the stored files")
            if not _is_str(meta.get("lineage"), LINEAGE_RE) or not _is_str(meta.get("name")):
                problems.append(f"version {short}: {META} has no valid lineage or name")
        return problems

    def verify_version(self, vid: str, recorded: dict[str, str] | None = None) -> list[str]:
        """Problems with one stored version (empty when every byte matches what the registry recorded).
        `recorded`: lineage -> sha256 of teamtr.json (looked up in the lineages when None)."""
        problems = self._content_problems(vid)
        if problems:
            return problems
        meta_path = self.home / "versions" / vid / META
        if recorded is None:
            try:
                hint = fsutil.read_json(meta_path).get("lineage")
            except (OSError, ValueError, AttributeError):
                hint = None
            recorded = self._recorded_meta_hashes(vid, hint if isinstance(hint, str) else None)
        if recorded:
            actual = fsutil.sha256_file(meta_path)
            for lin, h in sorted(recorded.items()):
                if h != actual:
                    problems.append(f"version {vid[:12]}: {META} does not match the sha256 recorded in lineage {lin}")
                    break
        return problems

    @_locked
    def version_path(self, vid: str, verify: bool = True) -> Path:
        """The dir of version `vid`, after checking its bytes still match what was recorded (IntegrityError if
        not: changed bytes, an edited teamtr.json, an extra file such as a pickle)."""
        d = self.home / "versions" / vid
        if not _is_str(vid, ID_RE) or not d.is_dir():
            raise NotFoundError(f"no version with id {str(vid)[:12]}")
        if verify:
            problems = self.verify_version(vid)
            if problems:
                raise IntegrityError(f"refusing to load: {problems[0]}; {VERIFY_HINT}")
        return d

    @_locked
    def export(self, ref: str, dest: str | Path, lineage: str | None = None) -> Path:
        """Copy a version out as a plain PEFT adapter dir (plus its teamtr.json) into `dest` (new or empty)."""
        info = self.resolve(ref, lineage)
        src = self.version_path(info.id)
        dest = Path(dest)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise InputError(f"export target {dest} exists and is not an empty dir")
        dest.mkdir(parents=True, exist_ok=True)
        for f in STORED_FILES:
            shutil.copyfile(src / f, dest / f)
        return dest

    # -- teams -------------------------------------------------------------------------------------
    def _team_dirs(self, valid: bool = True) -> list[Path]:
        """Dirs under teams/ (only those with a valid team name unless `valid` is False)."""
        d = self.home / "teams"
        dirs = sorted(p for p in d.iterdir() if p.is_dir()) if d.is_dir() else []
        return [p for p in dirs if TEAM_RE.fullmatch(p.name)] if valid else dirs

    @_locked
    def list_teams(self) -> list[str]:
        names = []
        for p in self._team_dirs():
            if (p / PENDING).is_file():
                self._settle(p.name)
            if (p / MANIFEST).is_file():
                names.append(p.name)
        return names

    def _read_manifest(self, team: str) -> dict[str, Any]:
        path = self._team_dir(team) / MANIFEST
        try:
            manifest = self._load_json(path, f"team {team}")
        except FileNotFoundError:
            known = ", ".join(self.list_teams()) or "none; create one with `team init`"
            raise NotFoundError(f"no team {team!r} (teams: {known})") from None
        problems = manifest_problems(manifest, team)
        if problems:
            raise IntegrityError(f"team {team}: {self._rel(path)} is damaged ({problems[0]}); {VERIFY_HINT}")
        order = manifest.get("order") or sorted(manifest["roles"])
        manifest["roles"] = {r: manifest["roles"][r] for r in order}
        return manifest

    @_locked
    def manifest(self, team: str) -> TeamManifest:
        self._settle(team)
        return cast(TeamManifest, self._read_manifest(team))

    @_locked
    def team_spec(self, team: str) -> TeamSpec:
        """The team's spec, checked against the spec hash its manifest recorded."""
        manifest = self.manifest(team)
        spec, problem = self._load_spec(team, manifest)
        if problem or spec is None:
            raise IntegrityError(f"team {team}: {problem}; {VERIFY_HINT}")
        return spec

    def _load_spec(self, team: str, manifest: dict[str, Any]) -> tuple[TeamSpec | None, str | None]:
        path = self._team_dir(team) / SPEC
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            return None, f"{SPEC} missing"
        except (OSError, UnicodeDecodeError) as e:
            return None, f"{SPEC} is unreadable ({type(e).__name__})"
        try:
            spec = parse_spec(text, self._rel(path))
        except (TeamTRError, ValueError, TypeError, RecursionError) as e:
            return None, f"{SPEC} does not parse ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        if spec.spec_hash() != manifest["spec_hash"]:
            return None, f"{SPEC} does not match the manifest's spec_hash (changed after the team was made)"
        return spec, None

    def pins(self, team: str) -> dict[str, str]:
        return {role: pin["id"] for role, pin in self.manifest(team)["roles"].items()}

    def create_team(self, spec: TeamSpec, pins: dict[str, str], base: dict[str, str], event: dict[str, Any]) -> TeamManifest:
        """Write a new team's spec and manifest from already-stored versions (used by init and pull)."""
        tdir = self._team_dir(spec.name)
        with self.registry_lock(), self._lock("team", spec.name):
            self._settle_locked(spec.name)
            if (tdir / MANIFEST).is_file():
                raise ConflictError(f"team {spec.name!r} already exists")
            if set(pins) != set(spec.role_names):
                raise InputError(f"pins must cover exactly the roles {spec.role_names}")
            roles = {role: self._pin(pins[role]) for role in spec.role_names}
            manifest: TeamManifest = {"team": spec.name, "revision": 1, "spec_hash": spec.spec_hash(), "base": base,
                        "base_ref": spec.base, "roles": roles, "order": spec.role_names, "updated": now()}
            tdir.mkdir(parents=True, exist_ok=True)
            fsutil.atomic_write_text(tdir / SPEC, spec.to_toml())
            self._commit(spec.name, manifest, pin_event(event, team=spec.name, revision=1,
                                                        pins_after={r: p["id"] for r, p in roles.items()}))
        return manifest

    def _pin(self, vid: str) -> Pin:
        info = self.version(vid)
        return {"lineage": info.lineage, "name": info.name, "id": info.id}

    def init_team(self, spec: TeamSpec, base: Any = None) -> TeamManifest:
        """Create team `spec.name` with a fresh LoRA `v1` for every role (imports torch)."""
        from ..runtime.base import resolve_base
        from ..runtime.lora import init_adapters

        if spec.name in self.list_teams():
            raise ConflictError(f"team {spec.name!r} already exists")
        base = base or resolve_base(spec.base)
        seeds = {r: int(hashlib.sha256(f"{spec.name}/{r}".encode()).hexdigest()[:8], 16) for r in spec.role_names}
        with self.scratch("init-") as tmp:
            dirs = init_adapters(base, spec.lora, seeds, tmp)
            pins = {}
            for role, d in dirs.items():
                info = self.add_version(lineage_of(spec.name, role), d, made_by="init", base=base.identity,
                                        config={"lora": spec.to_dict()["lora"], "seed": seeds[role]})
                pins[role] = info.id
        return self.create_team(spec, pins, base.identity, {"event": "init", "base": base.identity})

    def update_pins(self, team: str, changes: dict[str, str], event: dict[str, Any]) -> TeamManifest:
        """Move the team's pins (role -> version id): the new manifest and its history event are committed
        together (journal, manifest, history line), so a crash at any point leaves them consistent."""
        with self.registry_lock(), self._lock("team", team):
            self._settle_locked(team)
            manifest = self._read_manifest(team)
            before = {r: p["id"] for r, p in manifest["roles"].items()}
            for role, vid in changes.items():
                if role not in manifest["roles"]:
                    raise NotFoundError(f"team {team!r} has no role {role!r} (roles: {', '.join(manifest['roles'])})")
                self.version_path(vid)
                manifest["roles"][role] = self._pin(vid)
            manifest["revision"] += 1
            manifest["updated"] = now()
            self._commit(team, manifest, pin_event(event, team=team, revision=manifest["revision"], pins_before=before,
                                                   pins_after={r: p["id"] for r, p in manifest["roles"].items()}))
        return cast(TeamManifest, manifest)

    # -- the pin journal ---------------------------------------------------------------------------
    def _commit(self, team: str, manifest: Any, event: dict[str, Any]) -> None:
        """Caller holds the team lock. Journal first: from then on the move completes, now or on replay."""
        journal = {"manifest": manifest, "event": self._stamp(event)}
        fsutil.atomic_write_json(self._team_dir(team) / PENDING, journal)
        self._replay(team, journal, check_history=False)

    def _replay(self, team: str, journal: dict[str, Any], *, check_history: bool = True) -> None:
        tdir = self._team_dir(team)
        fsutil.atomic_write_json(tdir / MANIFEST, journal["manifest"])
        self._append(journal["event"], unless_present=check_history)
        (tdir / PENDING).unlink(missing_ok=True)  # should it come back after a power cut, replaying it is a no-op

    def _settle_locked(self, team: str) -> None:
        """Caller holds the team lock: complete a pin move a killed process left journaled."""
        path = self._team_dir(team) / PENDING
        try:
            journal = self._load_json(path, f"team {team}")
        except FileNotFoundError:
            return
        if (not isinstance(journal, dict) or manifest_problems(journal.get("manifest"), team)
                or not isinstance(journal.get("event"), dict) or not _is_str(journal["event"].get("id"))):
            raise IntegrityError(f"team {team}: {self._rel(path)} is damaged; {VERIFY_HINT}")
        self._replay(team, journal)

    def _settle(self, team: str) -> None:
        if not (self._team_dir(team) / PENDING).is_file():
            return
        try:
            with self._lock("team", team):
                self._settle_locked(team)
        except OSError as e:
            raise IntegrityError(f"team {team}: an interrupted pin move (teams/{team}/{PENDING}) cannot be "
                                 f"completed here ({e.strerror}); open the registry with write access") from None

    def _settle_all(self) -> None:
        for p in self._team_dirs():
            if (p / PENDING).is_file():
                self._settle(p.name)

    # -- history -----------------------------------------------------------------------------------
    @staticmethod
    def _stamp(event: dict[str, Any]) -> dict[str, Any]:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
        return {"ts": now(), "user": user, "host": socket.gethostname(), "id": uuid.uuid4().hex, **event}

    def _append(self, event: dict[str, Any], *, unless_present: bool = False) -> None:
        line = json.dumps(event, sort_keys=True, default=str)
        marker = f'"id": "{event["id"]}"'.encode() if unless_present else None
        with self._lock("history", "log"):
            fsutil.append_line(self.home / HISTORY, line, unless_contains=marker)

    @_locked
    def append_history(self, event: dict[str, Any]) -> HistoryEvent:
        event = self._stamp(event)
        self.home.mkdir(parents=True, exist_ok=True)
        self._append(event)
        return cast(HistoryEvent, event)

    def _scan_history(self) -> tuple[list[dict[str, Any]], list[int]]:
        """(events, numbers of damaged lines). A last line without a newline that does not parse is a write
        a killed process left unfinished: skipped, and cut by the next append."""
        path = self.home / HISTORY
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return [], []
        except OSError as e:
            raise IntegrityError(f"{HISTORY} is unreadable ({e.strerror})") from None
        lines = data.split(b"\n")
        tail = lines.pop()
        events, bad = [], []
        for n, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            ev = _json_line(raw)
            if ev is None:
                bad.append(n)
            else:
                events.append(ev)
        if tail.strip() and (ev := _json_line(tail)) is not None:
            events.append(ev)
        return events, bad

    @_locked
    def history(self, team: str | None = None) -> list[HistoryEvent]:
        """Events in order; IntegrityError when a line is damaged (a torn last line is skipped)."""
        if team is not None:
            self.manifest(team)
        else:
            self._settle_all()
        events, bad = self._scan_history()
        if bad:
            raise IntegrityError(f"{HISTORY} line {bad[0]} is damaged ({len(bad)} damaged line(s)); {VERIFY_HINT}")
        return [cast(HistoryEvent, e) for e in events if team is None or e.get("team") == team]

    # -- maintenance -------------------------------------------------------------------------------
    def _version_ids(self) -> list[str]:
        d = self.home / "versions"
        return sorted(p.name for p in d.iterdir() if p.is_dir() and ID_RE.fullmatch(p.name)) if d.is_dir() else []

    def _structure(self) -> dict[str, Any]:
        """Read every manifest, spec, the history and every lineage without hashing: the documents that parse,
        and a problem line for each that does not. Manifests and history are read under all team locks (a
        consistent cut: no pin move half done), before the lineages, so that whatever they name was already
        named in the lineages read after them."""
        problems: list[str] = []
        manifests: dict[str, dict[str, Any]] = {}
        problems += [f"teams/{p.name}: not a team dir (invalid name)" for p in self._team_dirs(valid=False)
                     if not TEAM_RE.fullmatch(p.name)]
        with ExitStack() as stack:
            for tdir in self._team_dirs():
                stack.enter_context(self._lock("team", tdir.name))
            for tdir in self._team_dirs():
                team = tdir.name
                try:
                    self._settle_locked(team)
                except IntegrityError as e:
                    problems.append(str(e).removesuffix(f"; {VERIFY_HINT}"))
                except OSError as e:
                    problems.append(f"team {team}: an interrupted pin move ({PENDING}) cannot be completed "
                                    f"({e.strerror})")
                if not (tdir / MANIFEST).is_file():
                    continue  # a `team init` killed before its commit: not a team yet
                try:
                    manifests[team] = self._read_manifest(team)
                except (IntegrityError, InputError) as e:
                    problems.append(str(e).removesuffix(f"; {VERIFY_HINT}"))
                    continue
                _, problem = self._load_spec(team, manifests[team])
                if problem:
                    problems.append(f"team {team}: {problem}")
            events, bad = self._scan_history()
        problems += [f"{HISTORY} line {n} is damaged (not a JSON object)" for n in bad[:5]]
        if len(bad) > 5:
            problems.append(f"{HISTORY}: {len(bad) - 5} more damaged lines")
        docs: dict[str, dict[str, Any]] = {}
        ldir = self.home / "lineages"
        for p in sorted(ldir.iterdir()) if ldir.is_dir() else []:
            if p.name.startswith(".") and p.name.endswith(".tmp"):
                continue  # a temp file of a killed writer: gc removes it
            if p.suffix != ".json" or not LINEAGE_RE.fullmatch(p.stem):
                problems.append(f"lineages/{p.name}: not a lineage file")
                continue
            try:
                docs[p.stem] = self._read_lineage(p.stem)
            except IntegrityError as e:
                problems.append(str(e).removesuffix(f"; {VERIFY_HINT}"))
        return {"problems": problems, "lineages": docs, "manifests": manifests, "events": events}

    @_locked
    def verify(self) -> VerifyReport:
        """Check every stored file: version bytes against their id, teamtr.json against the hash its lineage
        recorded, no extra files; lineages, aliases, parents, manifests, specs and the history parse and
        point at stored versions; each team's pin events match its manifest revision."""
        s = self._structure()
        problems = s["problems"]
        vdir = self.home / "versions"
        for p in sorted(vdir.iterdir()) if vdir.is_dir() else []:
            if not (p.is_dir() and not p.is_symlink() and ID_RE.fullmatch(p.name)):
                problems.append(f"versions/{p.name}: not a version dir")
        ids = self._version_ids()
        known = set(ids)
        recorded: dict[str, dict[str, str]] = {}
        named: set[str] = set()
        ever: set[str] = set()  # every id any lineage has named, collected ones included
        for lin, doc in s["lineages"].items():
            live = {}
            for e in doc["versions"]:
                ever.add(e["id"])
                if e.get("collected"):
                    continue
                live[e["name"]] = e["id"]
                named.add(e["id"])
                if e["id"] not in known:
                    problems.append(f"lineage {lin}: {e['name']} points to missing version {e['id'][:12]}")
                elif e.get("meta_sha256"):
                    recorded.setdefault(e["id"], {})[lin] = e["meta_sha256"]
            for alias, name in sorted(doc["aliases"].items()):
                if name not in live:
                    problems.append(f"lineage {lin}: alias {alias} points to {name}, which is not stored")
        metas: dict[str, dict[str, Any]] = {}
        for vid in ids:
            vp = self.verify_version(vid, recorded.get(vid, {}))
            problems += vp
            if not vp:
                metas[vid] = fsutil.read_json(vdir / vid / META)
        for vid, meta in metas.items():
            parent = meta.get("parent")
            if parent and meta.get("made_by") != "pull" and parent not in known and parent not in ever:
                problems.append(f"version {vid[:12]}: parent {str(parent)[:12]} is neither stored nor in any lineage")
        pin_events: dict[str, list[dict[str, Any]]] = {}
        missing_from_history: set[tuple[str, str]] = set()
        for e in s["events"]:
            for key in ("pins_before", "pins_after"):
                pins = e.get(key)
                for vid in (pins.values() if isinstance(pins, dict) else []):
                    if vid not in known:
                        missing_from_history.add((str(e.get("team")), str(vid)))
            if isinstance(e.get("pins_after"), dict) and isinstance(e.get("revision"), int):
                pin_events.setdefault(str(e.get("team")), []).append(e)
        for team, vid in sorted(missing_from_history):
            problems.append(f"history: team {team} pins version {vid[:12]}, which is not stored (rollback to it fails)")
        for team, m in s["manifests"].items():
            for role, pin in m["roles"].items():
                if pin["id"] not in known:
                    problems.append(f"team {team}: role {role} pins missing version {pin['id'][:12]}")
                doc = s["lineages"].get(pin["lineage"])
                names = {e["name"]: e["id"] for e in (doc or {}).get("versions", []) if not e.get("collected")}
                if doc is not None and names.get(pin["name"]) != pin["id"]:
                    problems.append(f"team {team}: role {role} pins {pin['lineage']}:{pin['name']}, "
                                    f"which its lineage does not name {pin['id'][:12]}")
            evs = pin_events.get(team, [])
            revs = sorted({e["revision"] for e in evs})
            if revs != list(range(1, m["revision"] + 1)):
                problems.append(f"team {team}: manifest revision {m['revision']} but {len(revs)} pin events "
                                f"in {HISTORY}")
            elif evs and evs[-1].get("pins_after") != {r: p["id"] for r, p in m["roles"].items()}:
                problems.append(f"team {team}: the last pin event in {HISTORY} does not match the manifest")
        unhashed = sorted(vid for vid in named & known if vid not in recorded)
        return {"ok": not problems, "versions": len(ids), "unnamed": sorted(known - named),
                "unhashed_meta": unhashed, "problems": problems}

    def _reachable(self, s: dict[str, Any]) -> set[str]:
        keep: set[str] = set()
        for m in s["manifests"].values():
            keep |= {p["id"] for p in m["roles"].values()}
        for doc in s["lineages"].values():
            by_name = {e["name"]: e["id"] for e in doc["versions"] if not e.get("collected")}
            keep |= {by_name[n] for n in doc["aliases"].values() if n in by_name}
        for e in s["events"]:
            for key in ("pins_before", "pins_after"):
                pins = e.get(key)
                keep |= set(pins.values()) if isinstance(pins, dict) else set()
        return keep

    def _stale_tmp(self) -> tuple[list[Path], int]:
        """(tmp entries no live process can be using, number of live ones). Caller holds the registry lock
        exclusive, so no `add-`/`gc-` entry is in use; a scratch dir is in use while its owner lock is held;
        anything else is left alone for TMP_GRACE_S."""
        stale, live = [], 0
        cutoff = time.time() - TMP_GRACE_S
        candidates = sorted((self.home / "tmp").iterdir()) if (self.home / "tmp").is_dir() else []
        legacy = sorted(p for p in self.home.glob(".train-*") if p.is_dir())  # scratch dirs of older versions
        for p in candidates + legacy:
            try:
                old = p.lstat().st_mtime < cutoff
            except FileNotFoundError:
                continue
            owned = fsutil.owner_alive(p) if p.is_dir() and not p.is_symlink() else None
            if owned:
                live += 1
            elif owned is False or old or (p.parent.name == "tmp" and p.name.startswith(LOCKED_TMP_PREFIXES)):
                stale.append(p)
            else:
                live += 1
        return stale, live

    def _stale_temp_files(self) -> list[Path]:
        """`.X.json.*.tmp` files of atomic writes a killed process left (none is in flight under gc's lock)."""
        dirs = [self.home, self.home / "lineages", *self._team_dirs()]
        return sorted(p for d in dirs if d.is_dir() for p in d.glob(".*.tmp") if p.is_file())

    def gc(self, dry_run: bool = True) -> GcReport:
        """Remove versions no manifest, alias or history event pins, leftover temp dirs and temp files (dry run
        by default). Holds the registry lock exclusive; refuses (IntegrityError) when a lineage, manifest, spec or
        the history is damaged, since what it keeps is computed from them."""
        report = {"dry_run": dry_run, "remove": [], "keep": 0, "bytes": 0, "stale_tmp": [], "stale_files": [],
                  "live_tmp": 0}
        if not self.home.is_dir():
            if self.home.exists():
                raise InputError(f"registry home {self.home} is not a directory (check TEAMTR_HOME)")
            return cast(GcReport, report)
        with self.registry_lock(exclusive=True):
            s = self._structure()
            if s["problems"]:
                raise IntegrityError(f"gc refused, the registry is damaged: {s['problems'][0]} "
                                     f"({len(s['problems'])} problem(s)); {VERIFY_HINT}")
            keep = self._reachable(s)
            doomed = [vid for vid in self._version_ids() if vid not in keep]
            stale_tmp, live = self._stale_tmp()
            stale_files = self._stale_temp_files()
            freed = sum(f.stat().st_size for vid in doomed for f in (self.home / "versions" / vid).iterdir()
                        if f.is_file())
            if not dry_run:
                for vid in doomed:
                    self._collect(vid, s["lineages"])
                for p in stale_tmp:
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)
                for p in stale_files:
                    p.unlink(missing_ok=True)
        report.update(remove=doomed, keep=len(keep), bytes=freed, live_tmp=live,
                      stale_tmp=[self._rel(p) for p in stale_tmp], stale_files=[self._rel(p) for p in stale_files])
        return cast(GcReport, report)

    def _collect(self, vid: str, docs: dict[str, dict[str, Any]]) -> None:
        lineages = sorted(lin for lin, doc in docs.items() if any(e["id"] == vid for e in doc["versions"]))
        for lin in lineages:
            with self._lock("lineage", lin):
                doc = self._read_lineage(lin)
                hit = [e for e in doc["versions"] if e["id"] == vid and not e.get("collected")]
                for e in hit:
                    e["collected"] = now()
                if hit:
                    fsutil.atomic_write_json(self._lineage_path(lin), doc)
        trash = self._dir("tmp") / f"gc-{vid}"
        shutil.rmtree(trash, ignore_errors=True)  # left by a gc killed while deleting
        os.rename(self.home / "versions" / vid, trash)
        fsutil.fsync_dir(self.home / "versions")
        shutil.rmtree(trash)
        self.append_history({"event": "gc", "version": vid, "lineage": lineages[0] if lineages else None})
