"""The Hub-backed registry: a Hugging Face Hub model repo is the source of truth, `$TEAMTR_HOME` its cache.

`HubRegistry` is the local `Registry` (the registry interface) run over a mirror of the repo under
`$TEAMTR_HOME/hub/<endpoint>/<org>/<repo>/<branch>/`, in the local registry's own layout. The repo holds the
same layout, plus a generated model card:
```
README.md                    model card (huggingface_hub.ModelCard): teams, roles, pinned versions, lineages
versions/<id>/               one immutable version, uploaded once: adapter_model.safetensors, adapter_config.json,
                             teamtr.json; loads with PeftModel.from_pretrained(base, REPO, subfolder="versions/<id>")
lineages/<lineage>.json      names and aliases
teams/<team>/spec.toml, teams/<team>/manifest.json
history.jsonl                append-only events
deprecated.json              deprecation marks (when any)
```
Every registry call runs as one transaction, and a `hold()` (e.g. the trainer's new versions and pin move,
a gated swap's import and pin move) makes several calls one transaction:
- begin: one `repo_info` call gives the branch head. When it is the commit the mirror holds, nothing else is
  fetched; otherwise one recursive tree listing, and a download of each small file whose bytes differ
  (versions' teamtr.json once per version). Weights are not fetched.
- body: the local registry code runs on the mirror (listing and showing read only the small files).
  A version's adapter files are downloaded the first time something loads it (`version_path`), into
  `versions/<id>/` (keyed by content id: never fetched again), and refused unless they hash to the id.
- end: if the body changed nothing, nothing is sent. Otherwise ONE `create_commit` with
  `parent_commit=<the head read at begin>`: new version folders, changed small files, removed ones, and the
  regenerated model card; its title says what happened (`train math-trio critic -> v3 (run ...)`). A writer
  whose head is stale gets ConflictError (exit 5): the commit is refused as a whole by the Hub, the mirror
  is restored to the head it read (from the copies in `.hub/objects/`), and running the command again
  re-reads. So history stays append-only and totally ordered: each append is part of a commit whose parent
  is the commit the writer read, so concurrent appends are ordered by the branch's commit order (the loser
  of a race re-reads the winner's lines and appends after them); version numbers come from the lineage file
  under the same rule, so no two writers ever commit the same vN.
- `HF_HUB_OFFLINE=1`: reads are served from the mirror (a version whose weights were never downloaded is
  reported as not cached); every write is refused before it starts with one line (InputError, exit 2).
- A repo that does not exist: reads give one line (NotFoundError, exit 2); the first write creates it
  (private) and commits on its initial commit.

Processes sharing one `$TEAMTR_HOME` take the mirror's lock exclusively for a transaction (reads too: a
read may refresh the mirror). Nothing here imports torch.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

from ..errors import ConflictError, InputError, IntegrityError, NotFoundError, TeamTRError
from . import fsutil
from .catalog import DEPRECATED
from .hub import _quiet_progress, hub_errors, parse_hub_ref
from .store import (HISTORY, ID_RE, LINEAGE_RE, MANIFEST, PENDING, SPEC, TEAM_RE, VERIFY_HINT, Registry,
                    content_hashes, default_home)
from .validate import CONFIG, META, WEIGHTS

CARD = "README.md"
STATE = ".hub/state.json"
OBJECTS = ".hub/objects"
MAX_SMALL_FILE = 64 << 20  # a lineage, manifest, spec or history file larger than this is refused


def git_blob_id(data: bytes) -> str:
    """The git blob id of `data` (what the Hub lists as a regular file's oid)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def _status(e: BaseException) -> int | None:
    response = getattr(e, "response", None)
    return getattr(response, "status_code", None)


def _writer(fn):
    """A registry method that writes: refused offline before it starts; a missing repo is created at commit."""
    @functools.wraps(fn)
    def wrapper(self: "HubRegistry", *args: Any, **kwargs: Any) -> Any:
        self.check_writable()
        tx = self._tx
        prev = getattr(tx, "write", False)
        tx.write = True
        try:
            return fn(self, *args, **kwargs)
        finally:
            tx.write = prev
    return wrapper


class HubRegistry(Registry):
    """A registry whose source of truth is the Hub repo `hf://ORG/REPO[@BRANCH]`; `cache_home` (default
    `$TEAMTR_HOME`) holds the read-through cache. Same interface as `Registry`."""

    def __init__(self, location: str, cache_home: str | Path | None = None) -> None:
        ref = parse_hub_ref(location if location.startswith("hf://") else f"hf://{location}")
        if ref.role:
            raise InputError(f"a registry is a repo, not a role: drop '#{ref.role}' from {location!r}")
        self.repo, self.branch = ref.repo, ref.revision or "main"
        self.url = f"hf://{self.repo}" + (f"@{self.branch}" if self.branch != "main" else "")
        self.cache_home = Path(cache_home).expanduser() if cache_home else default_home()
        org, name = self.repo.split("/")
        where = hashlib.sha256(_endpoint().encode()).hexdigest()[:10]
        super().__init__(self.cache_home / "hub" / where / org / name / quote(self.branch, safe=""))
        self._tx = threading.local()

    def __repr__(self) -> str:
        return f"HubRegistry({self.url!r}, cache={str(self.home)!r})"

    @property
    def location(self) -> str:
        return self.url

    # -- the transaction -------------------------------------------------------------------------------
    def check_writable(self) -> None:
        if _offline():
            raise InputError(f"HF_HUB_OFFLINE=1: the Hub registry {self.url} is read-only offline (reads come from "
                             f"the cache in {self.cache_home}); unset HF_HUB_OFFLINE to write")

    @contextmanager
    def registry_lock(self, exclusive: bool = False) -> Iterator[None]:
        tx = self._tx
        if getattr(tx, "depth", 0):
            tx.depth += 1
            try:
                yield
            finally:
                tx.depth -= 1
            return
        if self.cache_home.exists() and not self.cache_home.is_dir():
            raise InputError(f"registry cache {self.cache_home} is not a directory (check TEAMTR_HOME)")
        with fsutil.rw_lock(self.home / "locks" / "hub.lock", True):
            tx.depth = 1
            try:
                self._begin(write=getattr(tx, "write", False))
                try:
                    yield
                except BaseException:
                    self._restore()
                    raise
                self._finish()
            finally:
                tx.depth = 0

    @contextmanager
    def hold(self, write: bool = False) -> Iterator[None]:
        """Several calls as one transaction: one read of the head at the start, one commit at the end."""
        if not write:
            with self.registry_lock():
                yield
            return
        self.check_writable()
        tx = self._tx
        prev = getattr(tx, "write", False)
        tx.write = True
        try:
            with self.registry_lock():
                yield
        finally:
            tx.write = prev

    # -- state of the mirror ---------------------------------------------------------------------------
    def _load_state(self) -> dict[str, Any] | None:
        try:
            state = fsutil.read_json(self.home / STATE)
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) and isinstance(state.get("files"), dict) else None

    def _save_state(self) -> None:
        fsutil.atomic_write_json(self.home / STATE, self._state)

    def _tracked(self) -> dict[str, Path]:
        """The small mutable files of the mirror (repo path -> local path)."""
        out: dict[str, Path] = {}
        for top in ("lineages", "teams"):
            d = self.home / top
            for p in sorted(d.rglob("*")) if d.is_dir() else []:
                if p.is_file() and not p.name.startswith(".") and p.name != PENDING:
                    out[p.relative_to(self.home).as_posix()] = p
        for name in (HISTORY, DEPRECATED):
            if (self.home / name).is_file():
                out[name] = self.home / name
        return out

    @staticmethod
    def _is_tracked(path: str) -> bool:
        """A small mutable file of the registry layout (names checked: nothing else is ever written here)."""
        parts = path.split("/")
        return (path in (HISTORY, DEPRECATED)
                or (len(parts) == 2 and parts[0] == "lineages" and parts[1].endswith(".json")
                    and LINEAGE_RE.fullmatch(parts[1][:-len(".json")]) is not None)
                or (len(parts) == 3 and parts[0] == "teams" and TEAM_RE.fullmatch(parts[1]) is not None
                    and parts[2] in (MANIFEST, SPEC)))

    def _local_versions(self) -> set[str]:
        d = self.home / "versions"
        return {p.name for p in d.iterdir() if p.is_dir() and ID_RE.fullmatch(p.name)} if d.is_dir() else set()

    def _keep(self, data: bytes) -> str:
        """Keep a copy of a committed small file (restores the mirror after a refused write, offline too)."""
        oid = git_blob_id(data)
        path = self.home / OBJECTS / oid
        if not path.is_file():
            fsutil.write_file_synced(self._mkparent(path), data)
        return oid

    @staticmethod
    def _mkparent(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _prune_objects(self) -> None:
        keep = set(self._state["files"].values())
        d = self.home / OBJECTS
        for p in d.iterdir() if d.is_dir() else []:
            if p.name not in keep:
                p.unlink(missing_ok=True)

    # -- Hub calls -------------------------------------------------------------------------------------
    def _api(self):
        from huggingface_hub import HfApi

        return HfApi()

    def _remote_head(self) -> str | None:
        """The branch head, or None when the repo (or the branch) does not exist."""
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        try:
            with hub_errors(self.repo):
                try:
                    return self._api().repo_info(self.repo, revision=self.branch).sha
                except (RepositoryNotFoundError, RevisionNotFoundError):
                    return None
        except TeamTRError as e:
            if isinstance(e, (ConflictError, InputError)):
                raise
            raise TeamTRError(f"{self.url}: {e}") from None

    def _missing(self) -> NotFoundError:
        return NotFoundError(f"no Hub registry at {self.url}: the repo {self.repo} (branch {self.branch}) does not "
                             f"exist at {_endpoint()} or your token cannot see it; a first write (e.g. "
                             f"`team init ... --registry {self.url}`) creates it")

    def _download(self, path: str, dest: Path, limit: int | None = None) -> bytes | None:
        """GET `path` at the head this transaction read into `dest` (streamed); returns the bytes when small."""
        from huggingface_hub import constants
        from huggingface_hub.file_download import hf_hub_url
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        url = hf_hub_url(self.repo, path, revision=self._head, endpoint=constants.ENDPOINT)
        size = 0
        with hub_errors(self.repo), _quiet_progress():
            with get_session().stream("GET", url, headers=build_hf_headers(), follow_redirects=True) as r:
                if r.status_code >= 400:
                    r.read()
                hf_raise_for_status(r)
                with open(self._mkparent(dest), "wb") as f:
                    for chunk in r.iter_bytes():
                        size += len(chunk)
                        if limit is not None and size > limit:
                            raise IntegrityError(f"{self.url}: {path} is over {limit} bytes; refused")
                        f.write(chunk)
                    f.flush()
                    os.fsync(f.fileno())
        return dest.read_bytes() if limit is not None else None

    # -- begin: read the head, refresh the mirror --------------------------------------------------------
    def _begin(self, write: bool) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        state = self._load_state()
        if _offline():
            if state is None:
                raise NotFoundError(f"{self.url} is not in the local cache ({self.home}) and HF_HUB_OFFLINE=1: "
                                    "run a command once online to fill it")
            self._state = state
            self._head = state["commit"]
            if state.get("dirty"):
                self._restore()
            return
        head = self._remote_head()
        if head is None and not write:
            raise self._missing()
        if state is not None and state.get("commit") == head and not state.get("dirty"):
            self._state, self._head = state, head
        else:
            self._sync(head, state)
        self._state["dirty"] = True  # until the transaction ends cleanly (a kill mid-way is repaired on begin)
        self._save_state()

    def _sync(self, head: str | None, state: dict[str, Any] | None) -> None:
        """Make the mirror's small files and version folders those of `head` (None: an empty registry)."""
        from huggingface_hub.hf_api import RepoFile

        self._head = head
        remote: dict[str, Any] = {}
        versions: set[str] = set()
        if head is not None:
            with hub_errors(self.repo):
                entries = list(self._api().list_repo_tree(self.repo, revision=head, recursive=True))
            for e in entries:
                if not isinstance(e, RepoFile):
                    continue
                parts = e.path.split("/")
                if self._is_tracked(e.path):
                    remote[e.path] = e
                elif len(parts) == 3 and parts[0] == "versions" and ID_RE.fullmatch(parts[1]) and parts[2] == META:
                    versions.add(parts[1])
        files: dict[str, str] = {}
        local = self._tracked()
        for path, e in sorted(remote.items()):
            dest = self.home / path
            data = dest.read_bytes() if path in local else None
            same = data is not None and (
                hashlib.sha256(data).hexdigest() == e.lfs.sha256 if e.lfs else git_blob_id(data) == e.blob_id)
            if not same:
                tmp = self.home / ".hub" / "incoming"
                data = self._download(path, tmp, MAX_SMALL_FILE)
                assert data is not None
                self._mkparent(dest)
                os.replace(tmp, dest)
            assert data is not None
            files[path] = self._keep(data)
        for path, p in local.items():
            if path not in remote:
                p.unlink()
        for p in (self.home / "teams").glob(f"*/{PENDING}"):
            p.unlink()
        for vid in sorted(versions):
            if not (self.home / "versions" / vid / META).is_file():
                tmp = self.home / ".hub" / "incoming"
                self._download(f"versions/{vid}/{META}", tmp, MAX_SMALL_FILE)
                os.replace(tmp, self._mkparent(self.home / "versions" / vid / META))
        for vid in self._local_versions() - versions:
            shutil.rmtree(self.home / "versions" / vid)
        self._state = {"repo": self.repo, "branch": self.branch, "endpoint": _endpoint(), "commit": head,
                       "files": files, "versions": sorted(versions), "dirty": False}
        self._save_state()
        self._prune_objects()

    # -- end: one commit, or a clean refusal --------------------------------------------------------------
    def _changes(self) -> tuple[dict[str, bytes], list[str], list[str], list[str]]:
        """(changed or new small files, removed small files, new version ids, removed version ids)."""
        before = self._state["files"]
        changed: dict[str, bytes] = {}
        tracked = self._tracked()
        for path, p in tracked.items():
            data = p.read_bytes()
            if before.get(path) != git_blob_id(data):
                changed[path] = data
        removed = sorted(set(before) - set(tracked))
        local, known = self._local_versions(), set(self._state["versions"])
        return changed, removed, sorted(local - known), sorted(known - local)

    def _finish(self) -> None:
        changed, removed, added, gone = self._changes()
        if not (changed or removed or added or gone):
            self._state["dirty"] = False
            self._save_state()
            return
        try:
            self.check_writable()
            oid = self._hub_commit(changed, removed, added, gone)
        except BaseException:
            self._restore()
            raise
        for data in changed.values():
            self._keep(data)
        files = {p: oid_ for p, oid_ in self._state["files"].items() if p not in removed}
        files.update({p: git_blob_id(d) for p, d in changed.items()})
        self._state.update(commit=oid, files=files, dirty=False,
                           versions=sorted((set(self._state["versions"]) | set(added)) - set(gone)))
        self._save_state()
        self._prune_objects()
        self._head = oid

    def _hub_commit(self, changed: dict[str, bytes], removed: list[str], added: list[str], gone: list[str]) -> str:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete
        from huggingface_hub.errors import HfHubHTTPError

        api = self._api()
        if self._head is None:  # the first write: create the repo (or the branch)
            with hub_errors(self.repo):
                api.create_repo(self.repo, private=True, exist_ok=True)
                if self.branch != "main":
                    api.create_branch(self.repo, branch=self.branch, exist_ok=True)
            head = self._remote_head()
            if head is None:
                raise TeamTRError(f"{self.url}: the Hub did not create the repo")
            # This writer read an empty registry: commit on the new head only if it still holds none (a writer
            # that created the repo first may have committed already), then parent_commit guards the rest.
            with hub_errors(self.repo):
                paths = [e.path for e in api.list_repo_tree(self.repo, revision=head, recursive=True)]
            if any(self._is_tracked(p) or p.startswith("versions/") for p in paths):
                raise self._conflict()
            self._head = head
        ops: list[Any] = []
        for vid in added:
            d = self.home / "versions" / vid
            for f in (WEIGHTS, CONFIG, META):
                ops.append(CommitOperationAdd(f"versions/{vid}/{f}", str(d / f)))
        ops += [CommitOperationAdd(p, data) for p, data in sorted(changed.items())]
        ops += [CommitOperationDelete(p) for p in removed]
        ops += [CommitOperationDelete(f"versions/{vid}/", is_folder=True) for vid in gone]
        title, description = self._message(changed, added, gone)
        ops.append(CommitOperationAdd(CARD, self.model_card().encode()))
        try:
            with _quiet_progress():
                info = api.create_commit(self.repo, ops, commit_message=title, commit_description=description,
                                         revision=self.branch, parent_commit=self._head)
        except HfHubHTTPError as e:
            if _status(e) in (409, 412):
                raise self._conflict() from None
            with hub_errors(self.repo):
                raise
        return info.oid

    def _conflict(self) -> ConflictError:
        return ConflictError(f"{self.url} changed since this command read it (another writer committed first; read "
                             f"{str(self._head)[:12] if self._head else 'no repo'}); nothing was written: run the "
                             "command again, it re-reads the registry")

    # -- restoring the mirror after a refused or failed transaction ------------------------------------------
    def _restore(self) -> None:
        """Put the mirror back to the commit it read (no network needed)."""
        state = getattr(self, "_state", None)
        if state is None:
            return
        for path, p in self._tracked().items():
            if path not in state["files"]:
                p.unlink(missing_ok=True)
        for p in (self.home / "teams").glob(f"*/{PENDING}"):
            p.unlink(missing_ok=True)
        for path, oid in state["files"].items():
            dest = self.home / path
            try:
                same = git_blob_id(dest.read_bytes()) == oid
            except OSError:
                same = False
            if not same:
                obj = self.home / OBJECTS / oid
                if not obj.is_file():  # cannot restore here: the next online begin refreshes from the Hub
                    state["dirty"] = True
                    self._save_state()
                    return
                tmp = self._mkparent(dest).with_name(f".{dest.name}.restore.tmp")
                fsutil.write_file_synced(tmp, obj.read_bytes())
                os.replace(tmp, dest)
        for vid in self._local_versions() - set(state["versions"]):
            shutil.rmtree(self.home / "versions" / vid, ignore_errors=True)
        state["dirty"] = False
        self._save_state()

    # -- commit messages and the model card ---------------------------------------------------------------
    def _new_events(self, changed: dict[str, bytes]) -> list[dict[str, Any]]:
        data = changed.get(HISTORY)
        if data is None:
            return []
        old_oid = self._state["files"].get(HISTORY)
        old = (self.home / OBJECTS / old_oid).read_bytes() if old_oid else b""
        tail = data[len(old):] if data.startswith(old) else data
        out = []
        for line in tail.splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict):
                out.append(ev)
        return out

    def _message(self, changed: dict[str, bytes], added: list[str], gone: list[str]) -> tuple[str, str]:
        parts: list[str] = []
        for ev in self._new_events(changed):
            kind, team = ev.get("event", "event"), ev.get("team")
            before, after = ev.get("pins_before") or {}, ev.get("pins_after") or {}
            moved = [r for r in after if before.get(r) != after[r]] if before else list(after)
            names = []
            for r in moved:
                names.append(f"{r} -> {self._name_of(after[r])}" if before else r)
            text = " ".join(str(x) for x in (kind, team) if x)
            if names:
                text += " " + ", ".join(names)
            if ev.get("run"):
                text += f" (run {ev['run']})"
            if kind == "gc":
                text = f"gc {str(ev.get('version'))[:12]}"
            if kind in ("deprecate", "undeprecate"):
                text = f"{kind} {ev.get('lineage')}:{ev.get('name')}"
            parts.append(text)
        if not parts:
            for vid in added:
                parts.append(f"add {self._name_of(vid)}")
            for path in changed:
                if path.startswith("lineages/") and not added:
                    parts.append(f"update {path[len('lineages/'):-len('.json')]} (aliases)")
        title = "; ".join(dict.fromkeys(parts)) or "update registry"
        if len(title) > 200:
            title = title[:197] + "..."
        desc = (f"teamtr-adapters registry commit: {len(added)} new version(s), {len(changed)} small file(s) "
                f"changed, {len(gone)} version(s) removed.")
        return title, desc

    def _name_of(self, vid: str) -> str:
        try:
            meta = fsutil.read_json(self.home / "versions" / vid / META)
            return f"{meta['lineage']}:{meta['name']}"
        except (OSError, ValueError, KeyError, TypeError):
            return vid[:12]

    def model_card(self) -> str:
        """README.md of the registry repo (huggingface_hub.ModelCard): teams, roles, pins and lineages."""
        from huggingface_hub import ModelCard, ModelCardData

        bases: list[str] = []
        lines = [f"# teamtr-adapters registry `{self.repo}`", "",
                 "A [teamtr-adapters](https://github.com/) registry kept on the Hub: multi-agent LLM teams as "
                 "versioned LoRA adapters over one frozen base. Open it with `--registry hf://" + self.repo +
                 "` (or `TEAMTR_REGISTRY`).", "", "## Teams", ""]
        teams = [p.name for p in self._team_dirs() if (p / MANIFEST).is_file()]
        if not teams:
            lines.append("No teams yet.")
        for team in teams:
            try:
                m = self._read_manifest(team)
            except TeamTRError:
                continue
            base = m["base"].get("name", "?")
            if base not in bases:
                bases.append(base)
            lines += [f"### {team}", "", f"Revision {m['revision']}, base `{base}`.", "",
                      "| role | pinned | version id |", "|---|---|---|"]
            lines += [f"| {r} | `{p['lineage']}:{p['name']}` | `{p['id'][:12]}` |" for r, p in m["roles"].items()]
            lines.append("")
        lines += ["## Lineages", "", "| lineage | versions (parent) | aliases |", "|---|---|---|"]
        for lin in self.lineages():
            try:
                doc = self._read_lineage(lin)
            except TeamTRError:
                continue
            by_id = {e["id"]: e["name"] for e in doc["versions"]}
            chain = []
            for e in doc["versions"]:
                if e.get("collected"):
                    continue
                try:
                    meta = fsutil.read_json(self.home / "versions" / e["id"] / META)
                except (OSError, ValueError):
                    meta = {}
                parent = meta.get("parent") if isinstance(meta, dict) else None
                made = meta.get("made_by", "?") if isinstance(meta, dict) else "?"
                chain.append(f"{e['name']} ({made}" + (f", from {by_id.get(parent, str(parent)[:12])}" if parent else "")
                             + ")")
            aliases = ", ".join(f"{a} -> {n}" for a, n in sorted(doc["aliases"].items())) or "-"
            lines.append(f"| `{lin}` | {', '.join(chain) or '-'} | {aliases} |")
        lines += ["", "## Loading one version", "", "```python",
                  "from peft import PeftModel", "from transformers import AutoModelForCausalLM", "",
                  f"base = AutoModelForCausalLM.from_pretrained({bases[0] if bases else 'BASE'!r})",
                  f"model = PeftModel.from_pretrained(base, {self.repo!r}, subfolder=\"versions/<version id>\")",
                  "```", ""]
        hub_bases = [b for b in bases if "/" in b and not b.startswith(("/", "."))]
        data = ModelCardData(library_name="peft", base_model=hub_bases or None,
                             tags=["teamtr-adapters", "lora", "peft", "multi-agent"])
        return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))

    # -- lazily fetched weights -------------------------------------------------------------------------
    def _fetch(self, vid: str) -> str | None:
        """Download version `vid`'s adapter files if the cache lacks them; a problem line when the Hub's bytes
        do not hash to the id (nothing is cached then)."""
        d = self.home / "versions" / vid
        if not ID_RE.fullmatch(vid) or not d.is_dir() or ((d / WEIGHTS).is_file() and (d / CONFIG).is_file()):
            return None
        if vid not in self._state["versions"]:
            return None
        if _offline():
            raise NotFoundError(f"version {vid[:12]} of {self.url} is not in the local cache and HF_HUB_OFFLINE=1 "
                                "(its weights were never downloaded here)")
        tmp = Path(tempfile.mkdtemp(dir=self._dir("tmp"), prefix="add-fetch-"))
        try:
            self._download(f"versions/{vid}/{WEIGHTS}", tmp / WEIGHTS)
            data = self._download(f"versions/{vid}/{CONFIG}", tmp / CONFIG, 1 << 20)
            try:
                config = json.loads(data or b"")
                fsutil.write_file_synced(tmp / CONFIG, fsutil.canonical_json(config).encode())
                got = content_hashes(tmp)[1]
            except (ValueError, OSError, UnicodeDecodeError, RecursionError):
                got = None
            if got != vid:
                return (f"version {vid[:12]}: the adapter files {self.url} serves do not hash to its id "
                        "(changed on the Hub); not cached")
            for f in (CONFIG, WEIGHTS):
                os.replace(tmp / f, d / f)
            fsutil.fsync_dir(d)
            return None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _content_problems(self, vid: str) -> list[str]:
        with self.registry_lock():
            problem = self._fetch(vid)
            return [problem] if problem else super()._content_problems(vid)

    def version_path(self, vid: str, verify: bool = True) -> Path:
        with self.registry_lock():
            if not verify and ID_RE.fullmatch(str(vid)) and (self.home / "versions" / str(vid)).is_dir():
                problem = self._fetch(vid)
                if problem:
                    raise IntegrityError(f"refusing to load: {problem}; {VERIFY_HINT}")
            return super().version_path(vid, verify)

    def lineages(self) -> list[str]:
        with self.registry_lock():
            return super().lineages()

    # -- writes (refused offline before they start) -------------------------------------------------------
    add_version = _writer(Registry.add_version)
    set_alias = _writer(Registry.set_alias)
    create_team = _writer(Registry.create_team)
    update_pins = _writer(Registry.update_pins)
    append_history = _writer(Registry.append_history)

    @_writer
    def init_team(self, spec: Any, base: Any = None) -> Any:
        """As `Registry.init_team`, in one commit (every role's v1, the spec, the manifest, the init event)."""
        with self.hold(write=True):
            return super().init_team(spec, base)

    def gc(self, dry_run: bool = True) -> Any:
        """As `Registry.gc`; removing is one commit (the version folders and their history events)."""
        with self.hold(write=not dry_run):  # the cache is filled first: gc decides on the repo's state
            return super().gc(dry_run)
