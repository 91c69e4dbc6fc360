"""Team bundles on the Hugging Face Hub: build, push, pull and verify.

A bundle is one Hub model repo:
```
README.md                         model card (library_name: peft, base_model, tags, table of roles)
team.toml                         the team spec
manifest.json                     roles -> version (lineage, name, id), sha256 of every file, lineage chain, base
adapters/<role>/adapter_model.safetensors, adapters/<role>/adapter_config.json
```
Each `adapters/<role>/` folder loads with `PeftModel.from_pretrained(base, repo, subfolder="adapters/<role>")`.

All Hub traffic goes through `huggingface_hub`, so `HF_ENDPOINT`, `HF_TOKEN` (or the token saved by
`hf auth login`), `HF_HOME`/`HF_HUB_CACHE` and `HF_HUB_OFFLINE` work as usual; the token is never read,
printed or logged here. A push is one commit made with the parent commit it expects (a concurrent push
makes it fail with `ConflictError`), uploads only files whose bytes changed, and tags the team revision.
A pull downloads the manifest first, checks the base, downloads the adapters (one role's folder with
`role=`), refuses unsafe content and verifies every hash before anything enters the local registry.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import (ConflictError, IncompatibleAdapterError, InputError, IntegrityError, NotFoundError,
                      TeamTRError, UnsafeAdapterError)
from ..spec import TeamSpec, check_name, parse_spec
from . import fsutil
from .store import Registry, VersionInfo, check_lineage, content_hashes, lineage_of
from .validate import CONFIG, PICKLE_SUFFIXES, WEIGHTS, check_adapter_dir, check_compatible

BUNDLE_FORMAT = "teamtr-bundle/1"
MANIFEST, SPEC, CARD = "manifest.json", "team.toml", "README.md"
META_FILES = (CARD, SPEC, MANIFEST)
HUB_MANAGED = (".gitattributes",)  # written by the Hub itself on repo creation
ADAPTER_FILES = (WEIGHTS, CONFIG)
CHAIN_KEYS = ("id", "lineage", "name", "made_by", "parent", "created", "metrics", "context", "repo", "commit")
MAX_CHAIN = 256
REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
REV_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


# -- references ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HubRef:
    """`[hf://]ORG/REPO[@REV][#ROLE]`, parsed and checked."""

    repo: str
    revision: str | None = None
    role: str | None = None

    def __str__(self) -> str:
        return f"hf://{self.repo}" + (f"@{self.revision}" if self.revision else "") + (f"#{self.role}" if self.role else "")


def is_hub_ref(ref: str) -> bool:
    return isinstance(ref, str) and ref.startswith("hf://")


def parse_hub_ref(ref: str) -> HubRef:
    """Parse `[hf://]ORG/REPO[@REV][#ROLE]` (raises `InputError` on anything else)."""
    text = ref[len("hf://"):] if is_hub_ref(ref) else ref
    text, _, role = text.partition("#")
    repo, _, revision = text.partition("@")
    if not REPO_RE.match(repo) or ".." in repo:
        raise InputError(f"invalid Hub repo {repo!r} in {ref!r}: expected ORG/REPO[@REV][#ROLE]")
    if revision and (not REV_RE.match(revision) or ".." in revision):
        raise InputError(f"invalid revision {revision!r} in {ref!r}")
    if role:
        check_name(role, "role name")
    return HubRef(repo, revision or None, role or None)


def _check_branch(branch: str) -> str:
    if not REV_RE.match(branch) or ".." in branch:
        raise InputError(f"invalid branch name {branch!r}")
    return branch


# -- Hub access ------------------------------------------------------------------------------------
def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


@contextmanager
def hub_errors(repo: str) -> Iterator[None]:
    """Turn `huggingface_hub` and network errors into one-line `TeamTRError`s."""
    import httpx2
    from huggingface_hub.errors import (HfHubHTTPError, HFValidationError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RemoteEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    try:
        yield
    except HFValidationError as e:
        raise InputError(f"invalid Hub reference {repo!r}: {str(e).splitlines()[0]}") from None
    except RevisionNotFoundError:
        raise NotFoundError(f"Hub repo {repo} has no such revision (branch, tag or commit)") from None
    except RepositoryNotFoundError:
        raise NotFoundError(f"no Hub repo {repo} at {_endpoint()} (or it is private and your token cannot see it)") from None
    except RemoteEntryNotFoundError:
        raise NotFoundError(f"Hub repo {repo} is not a teamtr bundle (no {MANIFEST})") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status in (401, 403):
            raise InputError(f"the Hub at {_endpoint()} refused access to {repo} ({status}): set HF_TOKEN or run "
                             "`hf auth login` with a token that can write there") from None
        if status in (409, 412):
            raise ConflictError(f"Hub repo {repo} changed concurrently ({status}); nothing was changed, try again") from None
        raise TeamTRError(f"Hub error on {repo}: {str(e).splitlines()[0]}") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        raise NotFoundError(f"{repo} is not (completely) in the local Hub cache and the Hub cannot be reached "
                            "(HF_HUB_OFFLINE=1 or no network)") from None
    except httpx2.HTTPError as e:
        raise TeamTRError(f"cannot reach the Hub at {_endpoint()}: {e}") from None


@contextmanager
def _quiet_progress() -> Iterator[None]:
    """Silence huggingface_hub's tqdm bars (the CLI has its own output)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def _snapshot(repo: str, revision: str, patterns: list[str] | None) -> Path:
    """Download (or find in the cache) the files matching `patterns` at `revision`; the snapshot dir."""
    from huggingface_hub import snapshot_download

    with hub_errors(repo), _quiet_progress():
        path = Path(snapshot_download(repo, revision=revision, allow_patterns=patterns))
    if not COMMIT_RE.match(path.name):
        raise TeamTRError(f"unexpected Hub cache layout at {path}")
    return path


# -- building a bundle -----------------------------------------------------------------------------
def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _portable(meta: dict[str, Any]) -> dict[str, Any]:
    """The parts of a version's metadata that travel (no local paths)."""
    return {k: meta[k] for k in CHAIN_KEYS if meta.get(k) is not None}


def lineage_chain(registry: Registry, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Ancestors of a version, nearest first, through parents known locally and chains recorded by pulls."""
    chain: list[dict[str, Any]] = []
    while len(chain) < MAX_CHAIN:
        if "lineage_chain" in meta:
            chain += meta["lineage_chain"]
            break
        parent = meta.get("parent")
        if not parent:
            break
        try:
            meta = registry.version(parent).meta
        except (NotFoundError, IntegrityError):
            chain.append({"id": parent})
            break
        chain.append(_portable(meta))
    return chain[:MAX_CHAIN]


def bundle_manifest(registry: Registry, team: str) -> dict[str, Any]:
    """The bundle manifest of a local team: a pure function of its pinned versions and spec."""
    manifest = registry.manifest(team)
    roles = {}
    for role, pin in manifest["roles"].items():
        path = registry.version_path(pin["id"])  # IntegrityError if the stored bytes changed
        meta = registry.version(pin["id"]).meta
        roles[role] = {"lineage": pin["lineage"], "name": pin["name"], "id": pin["id"],
                       "files": {f: fsutil.sha256_file(path / f) for f in ADAPTER_FILES},
                       "made_by": meta.get("made_by"), "parent": meta.get("parent"), "created": meta.get("created"),
                       "config": meta.get("config") or {}, "metrics": meta.get("metrics") or {},
                       "context": meta.get("context") or {}, "lineage_chain": lineage_chain(registry, meta)}
    return {"format": BUNDLE_FORMAT, "team": team, "team_revision": manifest["revision"],
            "spec_hash": manifest["spec_hash"], "base": manifest["base"], "base_ref": manifest["base_ref"],
            "roles": roles}


def model_card(manifest: dict[str, Any], repo: str) -> str:
    """README.md: YAML metadata for the Hub (library_name, base_model, tags) and a table of the roles."""
    base = manifest["base"]
    meta = ["library_name: peft"]
    if "/" in base["name"]:  # the Hub only accepts Hub ids as base_model
        meta.append(f"base_model: {json.dumps(base['name'])}")
    meta += ["tags:", "- peft", "- lora", "- teamtr-adapters", "- multi-agent"]
    rows = []
    for role, r in manifest["roles"].items():
        parent = (r.get("parent") or "")[:12] or "-"
        rows.append(f"| {role} | `{r['lineage']}:{r['name']}` | `{r['id'][:12]}` | `{r['files'][WEIGHTS][:16]}` "
                    f"| {r.get('made_by') or '-'} | `{parent}` | {len(r['lineage_chain'])} |")
    first = next(iter(manifest["roles"]))
    return "\n".join([
        "---", *meta, "---", "",
        f"# {manifest['team']}: a teamtr-adapters team bundle", "",
        f"{len(manifest['roles'])} LoRA agents over one frozen base, `{base['name']}` (identity `{base['hash']}`), "
        f"team revision {manifest['team_revision']}. Every file's sha256 is in `{MANIFEST}`; the spec is `{SPEC}`.", "",
        "| role | version | id | sha256 (adapter_model.safetensors) | made by | parent | ancestors |",
        "|---|---|---|---|---|---|---|", *rows, "",
        "Pull the whole team into a local registry, or load one agent with PEFT:", "",
        "```bash", f"teamtr-adapters hub pull {repo}", "```", "",
        "```python", "from peft import PeftModel",
        f'model = PeftModel.from_pretrained(base_model, "{repo}", subfolder="adapters/{first}")', "```", ""])


def build_bundle(registry: Registry, team: str, repo: str) -> dict[str, bytes]:
    """Every file of the team's bundle: repo path -> bytes."""
    manifest = bundle_manifest(registry, team)
    files = {CARD: model_card(manifest, repo).encode(), SPEC: registry.team_spec(team).to_toml().encode(),
             MANIFEST: fsutil.canonical_json(manifest).encode()}
    for role, entry in manifest["roles"].items():
        src = registry.version_path(entry["id"], verify=False)
        for f in ADAPTER_FILES:
            data = (src / f).read_bytes()
            if sha256_bytes(data) != entry["files"][f]:
                raise IntegrityError(f"version {entry['id'][:12]}: {f} changed while building the bundle")
            files[f"adapters/{role}/{f}"] = data
    return files


# -- push ------------------------------------------------------------------------------------------
def _unchanged(remote: Any, data: bytes) -> bool:
    """Whether a remote file (a `RepoFile`) already holds exactly `data`."""
    from huggingface_hub.utils.sha import git_hash

    if remote is None or remote.size != len(data):
        return False
    if remote.lfs is not None:
        return remote.lfs.sha256 == sha256_bytes(data)
    return remote.blob_id == git_hash(data)


def push_team(registry: Registry, team: str, repo: str, *, branch: str = "main", tag: str | None = None,
              private: bool = False) -> dict[str, Any]:
    """Push a team's bundle as one commit on `branch` of Hub repo `repo` and tag it; a summary dict."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.hf_api import RepoFile

    href = parse_hub_ref(repo)
    if href.revision or href.role:
        raise InputError(f"push takes a plain ORG/REPO (use --revision BRANCH), not {repo!r}")
    repo, branch = href.repo, _check_branch(branch)
    revision = registry.manifest(team)["revision"]
    tag = tag or f"{team}-r{revision}"
    if not REV_RE.match(tag) or ".." in tag or "/" in tag:
        raise InputError(f"invalid tag name {tag!r}")
    files = build_bundle(registry, team, repo)
    api = HfApi()
    with hub_errors(repo):
        api.create_repo(repo, private=private, exist_ok=True)
        refs = api.list_repo_refs(repo)
        if branch not in {b.name for b in refs.branches}:
            api.create_branch(repo, branch=branch, exist_ok=True)
        parent = api.repo_info(repo, revision=branch).sha
        tags = {t.name: t.target_commit for t in refs.tags}
        remote = {f.path: f for f in api.list_repo_tree(repo, revision=parent, recursive=True) if isinstance(f, RepoFile)}
    changed = [p for p, data in sorted(files.items()) if not _unchanged(remote.get(p), data)]
    stale = sorted(p for p in remote if p not in files and p not in HUB_MANAGED)
    if tag in tags and (changed or stale or tags[tag] != parent):
        raise ConflictError(f"tag {tag} already exists on {repo} at {tags[tag][:12]}; pass --tag to name this push")
    commit = parent
    if changed or stale:
        ops = [CommitOperationAdd(p, files[p]) for p in changed] + [CommitOperationDelete(p) for p in stale]
        try:
            with hub_errors(repo):
                commit = api.create_commit(repo, ops, commit_message=f"teamtr: {team} revision {revision}",
                                           commit_description=f"Team bundle {BUNDLE_FORMAT}, tag {tag}.",
                                           revision=branch, parent_commit=parent).oid
        except ConflictError:
            raise ConflictError(f"push refused: {repo}@{branch} moved while pushing (expected parent {parent[:12]}; "
                                "someone else pushed). Nothing was committed; pull the new revision, then push again") from None
    with hub_errors(repo):
        if tag not in tags:
            api.create_tag(repo, tag=tag, revision=commit, tag_message=f"{team} revision {revision}")
    result = {"team": team, "team_revision": revision, "repo": repo, "branch": branch, "commit": commit,
              "parent": parent, "tag": tag, "uploaded": changed, "deleted": stale,
              "unchanged": len(files) - len(changed), "url": f"{_endpoint()}/{repo}/tree/{commit}"}
    registry.append_history({"event": "push", "team": team, "revision": revision, "repo": repo, "branch": branch,
                             "commit": commit, "tag": tag})
    return result


# -- fetching and verifying ------------------------------------------------------------------------
@dataclass(frozen=True)
class RemoteBundle:
    """A bundle's metadata fetched at one resolved commit."""

    repo: str
    revision: str
    commit: str
    manifest: dict[str, Any]
    spec: TeamSpec

    @property
    def where(self) -> str:
        return f"{self.repo}@{self.commit[:12]}"


def _unsafe(where: str, what: str) -> UnsafeAdapterError:
    return UnsafeAdapterError(f"bundle {where}: {what}; refused, nothing imported")


def _check_manifest(m: Any, where: str) -> dict[str, Any]:
    """Validate an untrusted bundle manifest: safe names and paths, well-formed hashes."""
    if not isinstance(m, dict) or m.get("format") != BUNDLE_FORMAT:
        raise InputError(f"{where} is not a teamtr bundle ({MANIFEST} format is not {BUNDLE_FORMAT})")
    try:
        check_name(m.get("team"), "team name")
        base = m.get("base")
        if not isinstance(base, dict) or not all(isinstance(base.get(k), str) for k in ("name", "hash")):
            raise InputError("manifest base must be {name, hash}")
        roles = m.get("roles")
        if not isinstance(roles, dict) or not roles:
            raise InputError("manifest has no roles")
        for role, entry in roles.items():
            check_name(role, "role name")
            if not isinstance(entry, dict):
                raise InputError(f"role {role}: entry must be an object")
            check_lineage(entry.get("lineage"))
            for key in ("id", "parent"):
                value = entry.get(key)
                if not (isinstance(value, str) and SHA256_RE.match(value)) and not (key == "parent" and value is None):
                    raise InputError(f"role {role}: malformed {key}")
            chain = entry.get("lineage_chain") or []
            records = [entry.get(k) or {} for k in ("config", "metrics", "context")]
            if not isinstance(chain, list) or not all(isinstance(x, dict) for x in records + chain):
                raise InputError(f"role {role}: config, metrics and context must be objects, lineage_chain a list of objects")
            files = entry.get("files")
            if not isinstance(files, dict) or set(ADAPTER_FILES) - set(files):
                raise InputError(f"role {role}: manifest must list {', '.join(ADAPTER_FILES)}")
            for name, digest in files.items():
                if not isinstance(name, str) or not FILE_RE.match(name) or ".." in name:
                    raise _unsafe(where, f"manifest lists an unsafe path {f'adapters/{role}/{name}'!r} "
                                         "(absolute, '..' or nested paths are not allowed)")
                if not isinstance(digest, str) or not SHA256_RE.match(digest):
                    raise InputError(f"role {role}: malformed sha256 for {name}")
    except InputError as e:
        if isinstance(e, UnsafeAdapterError):
            raise
        raise InputError(f"bundle {where}: invalid {MANIFEST}: {e}") from None
    return m


def fetch_bundle(repo: str, revision: str | None = None) -> RemoteBundle:
    """Download only the bundle's card, spec and manifest; validate them; pin the resolved commit."""
    revision = revision or "main"
    snap = _snapshot(repo, revision, list(META_FILES))
    where = f"{repo}@{snap.name[:12]}"
    for f in (MANIFEST, SPEC):
        _check_entry(snap, f, where)
        if not (snap / f).is_file():
            raise InputError(f"{repo}@{revision} is not a teamtr bundle (no {f})")
    try:
        manifest = json.loads((snap / MANIFEST).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"bundle {where}: {MANIFEST} is not valid JSON ({e})") from None
    _check_manifest(manifest, where)
    spec = parse_spec((snap / SPEC).read_text(), f"{where}/{SPEC}")
    if spec.spec_hash() != manifest.get("spec_hash"):
        raise IntegrityError(f"bundle {where}: {SPEC} does not match the spec hash in {MANIFEST}; refused")
    if set(spec.role_names) != set(manifest["roles"]) or spec.name != manifest["team"]:
        raise InputError(f"bundle {where}: {SPEC} and {MANIFEST} name different teams or roles")
    return RemoteBundle(repo, revision, snap.name, manifest, spec)


def _check_entry(snap: Path, rel: str, where: str) -> None:
    """Refuse a symlink leaving the Hub cache's blob store and anything that looks like a pickle."""
    path = snap / rel
    if path.is_symlink():
        blobs = os.path.realpath(snap.parent.parent / "blobs")
        target = os.path.realpath(path)
        if os.path.commonpath([blobs, target]) != blobs or not os.path.isfile(target):
            raise _unsafe(where, f"{rel} is a symlink to {target}, outside the Hub cache")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise _unsafe(where, f"{rel} is a pickle file (only safetensors are loaded)")
    if path.is_file() and path.suffix != ".safetensors":
        with open(path, "rb") as f:
            head = f.read(4)
        if (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head == b"PK\x03\x04":
            raise _unsafe(where, f"{rel} holds pickle/zip data (only safetensors are loaded)")


def _files_in(snap: Path) -> Iterator[str]:
    """Every non-directory entry under `snap` (symlinked dirs included, never followed), as repo paths."""
    for root, dirs, files in os.walk(snap):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            yield Path(root, name).relative_to(snap).as_posix()


def verify_snapshot(snap: Path, bundle: RemoteBundle, roles: list[str]) -> None:
    """Check the downloaded files of `roles` (and the top level) against the manifest, raising on any problem."""
    where = bundle.where
    expected = {f"adapters/{r}/{name}": digest for r in roles
                for name, digest in bundle.manifest["roles"][r]["files"].items()}
    allowed = set(expected) | set(META_FILES) | set(HUB_MANAGED)
    scopes = tuple(f"adapters/{r}/" for r in roles)
    for rel in sorted(_files_in(snap)):
        if "/" in rel and not rel.startswith(scopes) and len(roles) < len(bundle.manifest["roles"]):
            continue  # another role's folder, cached by an earlier pull and not asked for now
        _check_entry(snap, rel, where)
        if rel not in allowed:
            raise _unsafe(where, f"{rel} is not in the manifest")
    for rel, digest in expected.items():
        if not (snap / rel).is_file():
            raise IntegrityError(f"bundle {where}: {rel} is missing")
        got = fsutil.sha256_file(snap / rel)
        if got != digest:
            raise IntegrityError(f"bundle {where}: {rel} sha256 {got[:12]} does not match the manifest "
                                 f"({digest[:12]}); refused, nothing imported")


def _stage_role(snap: Path, bundle: RemoteBundle, role: str, base: Any, tmp: Path) -> Path:
    """Copy one role's verified adapter into a plain dir and check it is the version the manifest names."""
    entry = bundle.manifest["roles"][role]
    out = tmp / role
    out.mkdir()
    for f in ADAPTER_FILES:
        shutil.copyfile(snap / "adapters" / role / f, out / f)
    check_adapter_dir(out)
    if content_hashes(out)[1] != entry["id"]:
        raise IntegrityError(f"bundle {bundle.where}: adapters/{role} does not hash to version id {entry['id'][:12]}")
    check_compatible(out, base)
    return out


# -- bases -----------------------------------------------------------------------------------------
def local_base(registry: Registry, bundle: RemoteBundle, team: str | None, base: Any = None) -> Any:
    """The base the user has: `base` (a BaseRef or a ref), else local team `team`'s, else the spec's,
    resolved here; refused unless its identity matches the bundle's."""
    from ..runtime.base import BaseRef, resolve_base

    wanted = bundle.manifest["base"]
    if isinstance(base, BaseRef):
        ref, source = base, str(base.path)
    else:
        source = base or (registry.manifest(team)["base_ref"] if team in registry.list_teams() else bundle.spec.base)
        try:
            ref = resolve_base(source)
        except InputError as e:
            raise NotFoundError(f"bundle {bundle.where} needs base {wanted['name']} ({wanted['hash']}), but "
                                f"{source!r} is not available here ({e}); pass --base with a local copy") from None
    if ref.identity["hash"] != wanted["hash"]:
        raise IncompatibleAdapterError(
            f"bundle {bundle.where} was made for base {wanted['name']} ({wanted['hash']}), but your base "
            f"{ref.name} (from {source!r}) is {ref.identity['hash']}; refused, nothing imported (pass --base)")
    return ref


# -- pull ------------------------------------------------------------------------------------------
def _import_role(registry: Registry, bundle: RemoteBundle, role: str, staged: Path, lineage: str) -> VersionInfo:
    entry = bundle.manifest["roles"][role]
    return registry.add_version(
        lineage, staged, made_by="pull", base=bundle.manifest["base"], parent=entry.get("parent"),
        config=entry.get("config"), metrics=entry.get("metrics"), context=entry.get("context"),
        extra={"repo": bundle.repo, "revision": bundle.revision, "commit": bundle.commit,
               "remote": {k: entry.get(k) for k in ("lineage", "name", "made_by", "created")},
               "lineage_chain": entry.get("lineage_chain") or []})


def _download_verified(bundle: RemoteBundle, roles: list[str]) -> Path:
    whole = len(roles) == len(bundle.manifest["roles"])
    snap = _snapshot(bundle.repo, bundle.commit, None if whole else [f"adapters/{r}/*" for r in roles] + list(META_FILES))
    verify_snapshot(snap, bundle, roles)
    return snap


def pull_team(registry: Registry, ref: str, *, name: str | None = None, base: Any = None) -> dict[str, Any]:
    """Pull a whole bundle into team `name` (default: the bundle's team): created, or re-pinned when a
    local team of that name has the same spec. Nothing is imported unless every check passes."""
    href = parse_hub_ref(ref)
    bundle = fetch_bundle(href.repo, href.revision)
    team = check_name(name, "team name") if name else bundle.manifest["team"]
    exists = team in registry.list_teams()
    base_ref = local_base(registry, bundle, team, base)
    local_ref = registry.manifest(team)["base_ref"] if exists else (base if isinstance(base, str) else None)
    spec = bundle.spec.replace(name=team, base=local_ref or bundle.spec.base)
    if exists and registry.manifest(team)["spec_hash"] != spec.spec_hash():
        raise ConflictError(f"local team {team!r} exists with a different spec; pull with --as NEW_NAME")
    roles = list(bundle.manifest["roles"])
    snap = _download_verified(bundle, roles)
    with tempfile.TemporaryDirectory(prefix="teamtr-pull-") as tmp:
        staged = {r: _stage_role(snap, bundle, r, base_ref, Path(tmp)) for r in roles}
        pins = {r: _import_role(registry, bundle, r, staged[r], lineage_of(team, r)).id for r in roles}
    event = {"event": "pull", "repo": bundle.repo, "revision": bundle.revision, "commit": bundle.commit,
             "remote_team_revision": bundle.manifest.get("team_revision")}
    if exists and registry.pins(team) == pins:
        manifest = registry.manifest(team)  # already up to date: no new revision
    elif exists:
        manifest = registry.update_pins(team, pins, event)
    else:
        manifest = registry.create_team(spec, pins, bundle.manifest["base"], event)
    return {"team": team, "created": not exists, "repo": bundle.repo, "revision": bundle.revision,
            "commit": bundle.commit, "team_revision": manifest["revision"],
            "roles": {r: {"ref": f"{p['lineage']}:{p['name']}", "id": p["id"]} for r, p in manifest["roles"].items()}}


def pull_role(registry: Registry, ref: str, *, role: str | None = None, lineage: str | None = None,
              base: Any = None) -> VersionInfo:
    """Pull one agent of a bundle (`hf://ORG/REPO[@REV][#ROLE]`) as a new version, without pinning it.

    Only `adapters/<role>/` is downloaded. It goes into `lineage` (default: the lineage named in the
    bundle). `base` (a BaseRef or a ref) is what the adapter must fit; by default the base of the local
    team the bundle is named after, or the bundle spec's base. The swap command pins the result.
    """
    href = parse_hub_ref(ref)
    bundle = fetch_bundle(href.repo, href.revision)
    role = href.role or role
    roles = bundle.manifest["roles"]
    if role not in roles:
        what = f"has no role {role!r}" if role else "holds several roles: name one with #ROLE"
        raise NotFoundError(f"bundle {bundle.where} {what} (roles: {', '.join(roles)})")
    target = check_lineage(lineage or roles[role]["lineage"])
    base_ref = local_base(registry, bundle, bundle.manifest["team"], base)
    snap = _download_verified(bundle, [role])
    with tempfile.TemporaryDirectory(prefix="teamtr-pull-") as tmp:
        info = _import_role(registry, bundle, role, _stage_role(snap, bundle, role, base_ref, Path(tmp)), target)
    registry.append_history({"event": "pull", "repo": bundle.repo, "revision": bundle.revision,
                             "commit": bundle.commit, "role": role, "lineage": info.lineage, "version": info.id})
    return info
