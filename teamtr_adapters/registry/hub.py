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
printed or logged here. A push is one commit whose parent is the commit this registry last synced the
team with on that branch (its last push or pull there, from the local history), so a push never reverts
a commit it has not seen (`ConflictError`, nothing committed); it uploads only files whose bytes changed,
refuses to overwrite another team's bundle unless forced, and tags the team revision. A pull checks the
Hub's listing (paths, sizes) before downloading anything, reads the manifest and spec with bounded size
and depth, checks the base, downloads exactly the manifest's adapter files (one role's with `role=`),
and verifies every hash and safetensors header before anything enters the local registry. The bounds
are `LIMITS` (docs/hub.md, "Limits").
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

from ..errors import (ConflictError, IncompatibleAdapterError, InputError, IntegrityError, InvalidNameError,
                      NotFoundError, SpecError, TeamTRError, UnsafeAdapterError)
from ..spec import NAME_RE, TeamSpec, parse_spec
from . import bounded, fsutil
from .store import Registry, VersionInfo, content_hashes, lineage_of
from .validate import CONFIG, PICKLE_SUFFIXES, WEIGHTS, check_adapter_dir, check_compatible

BUNDLE_FORMAT = "teamtr-bundle/1"
MANIFEST, SPEC, CARD = "manifest.json", "team.toml", "README.md"
META_FILES = (CARD, SPEC, MANIFEST)
HUB_MANAGED = (".gitattributes",)  # written by the Hub itself on repo creation
ADAPTER_FILES = (WEIGHTS, CONFIG)
CHAIN_KEYS = ("id", "lineage", "name", "made_by", "parent", "created", "metrics", "context", "repo", "commit")
MAX_CHAIN = 256
# Bounds on what a pull reads; a bundle over any of them is refused before the file is downloaded (sizes
# come from the Hub's tree listing) or parsed (nesting is counted on the raw bytes). Pushes check their own
# bundle against the same bounds, so that every pushed bundle can be pulled. See docs/hub.md, "Limits".
LIMITS: dict[str, int] = {
    "manifest_bytes": 4 << 20,        # manifest.json
    "spec_bytes": 256 << 10,          # team.toml
    "card_bytes": 1 << 20,            # README.md
    "gitattributes_bytes": 64 << 10,  # .gitattributes
    "config_bytes": 64 << 10,         # adapters/<role>/adapter_config.json
    "weights_bytes": 8 << 30,         # adapters/<role>/adapter_model.safetensors
    "header_bytes": 16 << 20,         # the JSON header of a safetensors file
    "depth": 32,                      # nesting of every JSON and TOML document
    "record_bytes": 64 << 10,         # each role's config, metrics and context, and each lineage_chain entry (JSON)
    "chain": MAX_CHAIN,               # lineage_chain entries per role
    "roles": 64,                      # roles per bundle
    "tree_entries": 1024,             # files and folders in the repo at the pulled commit
    "string": 256,                    # names, made_by, created, repo, commit and other short strings
}
REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
REV_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
COMMIT_RE = re.compile(r"[0-9a-f]{40}")
VERSION_NAME_RE = re.compile(r"v[1-9][0-9]{0,8}")
# every pattern here is used with fullmatch: `re.match(...$)` would accept a trailing newline


def full_name(name: Any, what: str) -> str:
    """`check_name` with `fullmatch` (a role named "critic\\n" is refused)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidNameError(f"invalid {what} {name!r}: use letters, digits, '_' and '-' (no '/', '..', spaces or paths)")
    return name


def full_lineage(name: Any) -> str:
    """A lineage name, NAME or TEAM.ROLE, each part checked with fullmatch."""
    parts = name.split(".") if isinstance(name, str) else []
    if not 1 <= len(parts) <= 2 or not all(NAME_RE.fullmatch(p) for p in parts):
        raise InvalidNameError(f"invalid lineage {name!r}: use NAME or TEAM.ROLE (letters, digits, '_', '-')")
    return name


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
    if not REPO_RE.fullmatch(repo) or ".." in repo:
        raise InputError(f"invalid Hub repo {repo!r} in {ref!r}: expected ORG/REPO[@REV][#ROLE]")
    if revision and (not REV_RE.fullmatch(revision) or ".." in revision):
        raise InputError(f"invalid revision {revision!r} in {ref!r}")
    if role:
        full_name(role, "role name")
    return HubRef(repo, revision or None, role or None)


def _check_branch(branch: str) -> str:
    if not REV_RE.fullmatch(branch) or ".." in branch:
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
            raise ConflictError(f"Hub repo {repo} refused a conflicting request ({status}): "
                                f"{str(e).splitlines()[0]}") from None
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
    if not COMMIT_RE.fullmatch(path.name):
        raise TeamTRError(f"unexpected Hub cache layout at {path}")
    return path


def _offline_error() -> tuple[type[BaseException], ...]:
    """Errors that mean "the Hub cannot be reached" (then the local Hub cache serves the pull)."""
    import httpx2
    from huggingface_hub.errors import OfflineModeIsEnabled

    return (httpx2.ConnectError, httpx2.TimeoutException, OfflineModeIsEnabled)


def _safe_repo_path(path: Any) -> bool:
    return (isinstance(path, str) and 0 < len(path) <= 1024 and not path.startswith("/") and "\\" not in path
            and not any(ord(c) < 32 or ord(c) == 127 for c in path)
            and all(part not in ("", ".", "..") for part in path.split("/")))


def remote_tree(api: Any, repo: str, commit: str, where: str) -> dict[str, int]:
    """Path -> size of every file of `repo` at `commit`, from the Hub's tree listing (nothing is downloaded).
    Refuses more than LIMITS["tree_entries"] entries and any absolute, `..` or otherwise unsafe path."""
    from huggingface_hub.hf_api import RepoFile

    sizes: dict[str, int] = {}
    with hub_errors(repo):
        for n, entry in enumerate(api.list_repo_tree(repo, revision=commit, recursive=True), 1):
            if n > LIMITS["tree_entries"]:
                raise InputError(f"bundle {where}: the repo holds more than {LIMITS['tree_entries']} files and "
                                 "folders; refused before downloading")
            if not _safe_repo_path(entry.path):
                raise _unsafe(where, f"the repo lists an unsafe path {entry.path!r} (absolute, '..' or empty parts)")
            if isinstance(entry, RepoFile):
                sizes[entry.path] = int(entry.size)
    return sizes


def _size_limit(path: str) -> int | None:
    """The size limit of a bundle file, or None for a path a bundle never holds."""
    top = {MANIFEST: "manifest_bytes", SPEC: "spec_bytes", CARD: "card_bytes", ".gitattributes": "gitattributes_bytes"}
    if path in top:
        return LIMITS[top[path]]
    parts = path.split("/")
    if len(parts) == 3 and parts[0] == "adapters" and parts[2] in ADAPTER_FILES:
        return LIMITS["weights_bytes" if parts[2] == WEIGHTS else "config_bytes"]
    return None


def _check_size(path: str, size: int, where: str) -> None:
    limit = _size_limit(path)
    if limit is not None and size > limit:
        raise InputError(f"bundle {where}: {path} is {size} bytes, over the {limit}-byte limit; refused before "
                         "downloading")


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


# Licenses of bases we know; another base's card says "other" (the adapters follow their base's terms).
BASE_LICENSES = {"HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0"}


def model_card(manifest: dict[str, Any], repo: str, evaluation: dict[str, Any] | None = None) -> str:
    """README.md, built with `huggingface_hub.ModelCard`/`ModelCardData`: Hub metadata (library_name, base_model,
    license, pipeline_tag, tags, and the team's held-out accuracy as an eval result when `evaluation` is known),
    a table of the roles, and a usage snippet that runs as written."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    base = manifest["base"]
    hub_base = base["name"] if "/" in base["name"] and not base["name"].startswith(("/", ".")) else None
    team = manifest["team"]
    results = None
    if evaluation:
        results = [EvalResult(task_type="text-generation", task_name="team answer accuracy",
                              dataset_type=evaluation["task"], dataset_name=f"{evaluation['task']} (held-out split)",
                              dataset_split="heldout", metric_type="accuracy", metric_name="accuracy",
                              metric_value=float(evaluation["accuracy"]))]
    data = ModelCardData(library_name="peft", base_model=hub_base, license=BASE_LICENSES.get(base["name"], "other"),
                         pipeline_tag="text-generation", tags=["peft", "lora", "teamtr-adapters", "multi-agent"],
                         model_name=f"{team} ({repo})" if results else None, eval_results=results)
    rows = []
    for role, r in manifest["roles"].items():
        parent = (r.get("parent") or "")[:12] or "-"
        rows.append(f"| {role} | `{r['lineage']}:{r['name']}` | `{r['id'][:12]}` | `{r['files'][WEIGHTS][:16]}` "
                    f"| {r.get('made_by') or '-'} | `{parent}` | {len(r['lineage_chain'])} |")
    first = next(iter(manifest["roles"]))
    load_base = json.dumps(hub_base) if hub_base else '"PATH/TO/BASE"  # this team\'s base is a local model'
    ev = ([f"Held-out accuracy of the team: {float(evaluation['accuracy']):.3f} on {evaluation['n']} prompts"
           f"{' x ' + str(evaluation['k']) + ' samples' if evaluation.get('k', 1) > 1 else ''} of "
           f"`{evaluation['task']}` (run `{evaluation['run']}`).", ""] if evaluation else [])
    body = "\n".join([
        f"# {team}: a teamtr-adapters team bundle", "",
        f"{len(manifest['roles'])} LoRA agents over one frozen base, `{base['name']}` (identity `{base['hash']}`), "
        f"team revision {manifest['team_revision']}. Every file's sha256 is in `{MANIFEST}`; the spec is `{SPEC}`.", "",
        *ev,
        "| role | version | id | sha256 (adapter_model.safetensors) | made by | parent | ancestors |",
        "|---|---|---|---|---|---|---|", *rows, "",
        "Pull the whole team into a local registry, or load one agent with PEFT:", "",
        "```bash", f"teamtr-adapters hub pull {repo}", "```", "",
        "```python", "from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
        f"base_model = AutoModelForCausalLM.from_pretrained({load_base})",
        f"tokenizer = AutoTokenizer.from_pretrained({json.dumps(hub_base) if hub_base else 'PATH/TO/BASE'})",
        f'model = PeftModel.from_pretrained(base_model, "{repo}", subfolder="adapters/{first}")', "```", ""])
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def known_evaluation(registry: Registry, team: str, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The team's held-out accuracy when a training run measured it on exactly these pins (`train --eval N`):
    the newest run of a pinned version whose summary's `pins_after` equals the team's pins; else None."""
    pins = {role: r["id"] for role, r in manifest["roles"].items()}
    runs = {run for vid in pins.values() if (run := registry.version(vid).meta.get("run")) is not None}
    for run in sorted(runs, reverse=True):
        try:
            summary = json.loads((registry.home / "runs" / str(run) / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        after = summary.get("eval_after") if isinstance(summary, dict) else None
        if isinstance(after, dict) and summary.get("pins_after") == pins and after.get("accuracy") is not None:
            return {"task": registry.team_spec(team).task.name, "accuracy": after["accuracy"], "n": after.get("n"),
                    "k": after.get("k", 1), "run": run}
    return None


def build_bundle(registry: Registry, team: str, repo: str) -> dict[str, bytes]:
    """Every file of the team's bundle: repo path -> bytes."""
    manifest = bundle_manifest(registry, team)
    files = {CARD: model_card(manifest, repo, known_evaluation(registry, team, manifest)).encode(), SPEC: registry.team_spec(team).to_toml().encode(),
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


def last_synced(registry: Registry, team: str, repo: str, branch: str) -> str | None:
    """The commit of `repo@branch` this registry last synced team `team` with: the commit of its last push
    there, or of its last whole-team pull of that branch into `team` (from the local history)."""
    for e in reversed(registry.history()):
        if e.get("team") != team or e.get("repo") != repo or e.get("role"):
            continue
        if e.get("event") == "push" and e.get("branch") == branch:
            return e.get("commit")
        # pulls record the Hub revision as `hub_revision` (older histories: `revision`, a string)
        if e.get("event") == "pull" and e.get("hub_revision", e.get("revision")) == branch:
            return e.get("commit")
    return None


def _remote_team(api: Any, repo: str, commit: str, size: int) -> str | None:
    """The team named by the bundle manifest at `commit`, or None when it is not a readable bundle manifest."""
    from huggingface_hub import hf_hub_download

    if size > LIMITS["manifest_bytes"]:
        return None
    with hub_errors(repo), _quiet_progress():
        path = Path(hf_hub_download(repo, MANIFEST, revision=commit))
    try:
        m = bounded.load_json(path, MANIFEST, LIMITS["manifest_bytes"], LIMITS["depth"])
    except InputError:
        return None
    team = m.get("team") if isinstance(m, dict) and m.get("format") == BUNDLE_FORMAT else None
    return team if isinstance(team, str) else None


def push_team(registry: Registry, team: str, repo: str, *, branch: str = "main", tag: str | None = None,
              private: bool = False, force: bool = False) -> dict[str, Any]:
    """Push a team's bundle as one commit on `branch` of Hub repo `repo` and tag it; a summary dict.

    The commit's parent is the commit this registry last synced `team` with on that branch (its last push
    there, or its last pull of it), so a push never reverts a commit it has not seen: when the branch has
    moved since, the push is refused with `ConflictError` (exit 5) and nothing is committed. A branch that
    holds another team's bundle, or files that are no bundle, is not overwritten either. `force=True`
    takes the branch head as parent instead and replaces whatever the branch holds.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.hf_api import RepoFile

    href = parse_hub_ref(repo)
    if href.revision or href.role:
        raise InputError(f"push takes a plain ORG/REPO (use --revision BRANCH), not {repo!r}")
    repo, branch = href.repo, _check_branch(branch)
    revision = registry.manifest(team)["revision"]
    tag = tag or f"{team}-r{revision}"
    if not REV_RE.fullmatch(tag) or ".." in tag or "/" in tag:
        raise InputError(f"invalid tag name {tag!r}")
    files = build_bundle(registry, team, repo)
    _check_own_bundle(files, f"{repo} (to push)")
    api = HfApi()
    with hub_errors(repo):
        api.create_repo(repo, private=private, exist_ok=True)
        refs = api.list_repo_refs(repo)
        branches = {b.name: b.target_commit for b in refs.branches}
        tags = {t.name: t.target_commit for t in refs.tags}
        created_branch = branch not in branches
        if created_branch:  # branched from main's head as read above: a commit made there since is not lost
            start = branches.get("main") or _sha(api.repo_info(repo).sha, repo)
            api.create_branch(repo, branch=branch, revision=start, exist_ok=True)
            head = _sha(api.repo_info(repo, revision=branch).sha, repo)
            created_branch = head == start
        else:
            head = branches[branch]
        remote = {f.path: f for f in api.list_repo_tree(repo, revision=head, recursive=True) if isinstance(f, RepoFile)}
    content = sorted(p for p in remote if p not in HUB_MANAGED)
    synced = head if created_branch else last_synced(registry, team, repo, branch)
    if not force:
        remote_team = _remote_team(api, repo, head, remote[MANIFEST].size) if MANIFEST in remote else None
        if content and remote_team != team:
            what = f"holds team {remote_team!r}" if remote_team else f"holds files that are not a {BUNDLE_FORMAT} bundle"
            raise InputError(f"push refused: {repo}@{branch} {what}; pass --force to replace it with team {team!r}. "
                             "Nothing was committed")
        if synced != head and (content or synced is not None):
            if synced is None:
                why = (f"holds a bundle of {team} (commit {head[:12]}) that this registry has never pushed or pulled. "
                       f"Nothing was committed; pull it first (hub pull {repo}@{branch})")
            else:
                why = (f"moved: it is at {head[:12]}, but this registry last synced {team} with it at {synced[:12]} "
                       "(someone else pushed). Nothing was committed; pull the new revision, then push again")
            raise ConflictError(f"push refused: {repo}@{branch} {why}, or pass --force to overwrite it")
    parent = head
    changed = [p for p, data in sorted(files.items()) if not _unchanged(remote.get(p), data)]
    stale = sorted(p for p in remote if p not in files and p not in HUB_MANAGED)
    if tag in tags and (changed or stale or tags[tag] != parent):
        raise ConflictError(f"tag {tag} already exists on {repo} at {tags[tag][:12]}; pass --tag to name this push. "
                            "Nothing was committed")
    commit = parent
    if changed or stale:
        ops = [CommitOperationAdd(p, files[p]) for p in changed] + [CommitOperationDelete(p) for p in stale]
        try:
            with hub_errors(repo):  # the Hub refuses the commit (409/412) unless `parent` is still the head
                commit = api.create_commit(repo, ops, commit_message=f"teamtr: {team} revision {revision}",
                                           commit_description=f"Team bundle {BUNDLE_FORMAT}, tag {tag}.",
                                           revision=branch, parent_commit=parent).oid
        except ConflictError:
            raise ConflictError(f"push refused: {repo}@{branch} moved while pushing (expected parent {parent[:12]}; "
                                "someone else pushed). Nothing was committed; pull the new revision, then push again") from None
    # From here on the commit has landed: whatever fails, the result says so.
    tag_error = None
    if tag not in tags:
        tag_error = _create_tag(api, repo, tag, commit, f"{team} revision {revision}")
    result = {"team": team, "team_revision": revision, "repo": repo, "branch": branch, "commit": commit,
              "parent": parent, "tag": None if tag_error else tag, "tag_error": tag_error, "forced": force,
              "uploaded": changed, "deleted": stale, "unchanged": len(files) - len(changed),
              "url": f"{_endpoint()}/{repo}/tree/{commit}"}
    try:
        registry.append_history({"event": "push", "team": team, "revision": revision, "repo": repo, "branch": branch,
                                 "commit": commit, "parent": parent, "tag": result["tag"], "forced": force})
    except OSError as e:
        raise TeamTRError(f"pushed {team} to {repo}@{branch} as commit {commit[:12]}, but could not record the push "
                          f"in the local history ({e}); the next push will ask you to pull first") from None
    return result


def _sha(sha: str | None, repo: str) -> str:
    """A commit sha from the Hub's repo info (the Hub sends one for every revision that exists)."""
    if not sha:
        raise TeamTRError(f"{repo}: the Hub answered without a commit sha; try again")
    return sha


def _create_tag(api: Any, repo: str, tag: str, commit: str, message: str) -> str | None:
    """Tag `commit`; None on success (or if the tag already names it), else why it could not be created."""
    try:
        with hub_errors(repo):
            api.create_tag(repo, tag=tag, revision=commit, tag_message=message)
        return None
    except TeamTRError as e:
        try:
            with hub_errors(repo):
                now = {t.name: t.target_commit for t in api.list_repo_refs(repo).tags}
        except TeamTRError:
            now = {}
        if now.get(tag) == commit:
            return None
        taken = f" (it names {now[tag][:12]})" if tag in now else ""
        return f"the commit landed, but tag {tag} could not be created{taken}: {e}"


def _check_own_bundle(files: dict[str, bytes], where: str) -> None:
    """A bundle about to be pushed must be one that a pull accepts (sizes, depth, records)."""
    for path, data in files.items():
        _check_size(path, len(data), where)
    try:
        manifest = bounded.loads_json(files[MANIFEST], f"bundle {where}: {MANIFEST}", LIMITS["depth"])
    except InputError as e:
        raise InputError(f"cannot push: {e}") from None
    _check_manifest(manifest, where)


# -- fetching and verifying ------------------------------------------------------------------------
@dataclass(frozen=True)
class RemoteBundle:
    """A bundle's metadata fetched at one resolved commit (`sizes`: the Hub's tree listing, None offline)."""

    repo: str
    revision: str
    commit: str
    manifest: dict[str, Any]
    spec: TeamSpec
    sizes: dict[str, int] | None = None

    @property
    def where(self) -> str:
        return f"{self.repo}@{self.commit[:12]}"


def _unsafe(where: str, what: str) -> UnsafeAdapterError:
    return UnsafeAdapterError(f"bundle {where}: {what}; refused, nothing imported")


def _short(value: Any, what: str, optional: bool = True) -> None:
    """A short single-line string (or None when optional)."""
    if value is None and optional:
        return
    if not isinstance(value, str) or len(value) > LIMITS["string"] or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InputError(f"{what} must be a single-line string of at most {LIMITS['string']} characters")


def _record(value: Any, what: str) -> None:
    """A JSON object of at most LIMITS["record_bytes"] bytes (config, metrics, context, chain entries)."""
    if not isinstance(value, dict):
        raise InputError(f"{what} must be an object")
    try:
        size = bounded.json_size(value)
    except (ValueError, TypeError):
        raise InputError(f"{what} holds a value that is not JSON") from None
    if size > LIMITS["record_bytes"]:
        raise InputError(f"{what} is {size} bytes of JSON, over the {LIMITS['record_bytes']}-byte limit")


def _check_chain(chain: Any, role: str) -> None:
    if not isinstance(chain, list) or not all(isinstance(x, dict) for x in chain):
        raise InputError(f"role {role}: config, metrics and context must be objects, lineage_chain a list of objects")
    if len(chain) > LIMITS["chain"]:
        raise InputError(f"role {role}: lineage_chain has {len(chain)} entries, over the limit of {LIMITS['chain']}")
    for i, link in enumerate(chain):
        what = f"role {role}: lineage_chain[{i}]"
        if set(link) - set(CHAIN_KEYS):
            raise InputError(f"{what} has unknown keys {sorted(set(link) - set(CHAIN_KEYS))[:5]}")
        if not (isinstance(link.get("id"), str) and SHA256_RE.fullmatch(link["id"])):
            raise InputError(f"{what}: malformed id")
        if link.get("parent") is not None and not (isinstance(link["parent"], str) and SHA256_RE.fullmatch(link["parent"])):
            raise InputError(f"{what}: malformed parent")
        for key in ("lineage", "name", "made_by", "created", "repo", "commit"):
            _short(link.get(key), f"{what}.{key}")
        for key in ("metrics", "context"):
            if link.get(key) is not None:
                _record(link[key], f"{what}.{key}")
        _record(link, what)


def _check_manifest(m: Any, where: str) -> dict[str, Any]:
    """Validate an untrusted bundle manifest: safe names (fullmatch) and paths, well-formed hashes, bounded
    records and lineage chains."""
    if not isinstance(m, dict) or m.get("format") != BUNDLE_FORMAT:
        raise InputError(f"{where} is not a teamtr bundle ({MANIFEST} format is not {BUNDLE_FORMAT})")
    try:
        full_name(m.get("team"), "team name")
        base = m.get("base")
        if not isinstance(base, dict) or not all(isinstance(base.get(k), str) for k in ("name", "hash")):
            raise InputError("manifest base must be {name, hash}")
        _short(base["name"], "base name", optional=False)
        _short(base["hash"], "base hash", optional=False)
        if not (isinstance(m.get("spec_hash"), str) and SHA256_RE.fullmatch(m["spec_hash"])):
            raise InputError("malformed spec_hash")
        if m.get("team_revision") is not None and not (isinstance(m["team_revision"], int) and m["team_revision"] >= 0):
            raise InputError("team_revision must be a non-negative integer")
        roles = m.get("roles")
        if not isinstance(roles, dict) or not roles:
            raise InputError("manifest has no roles")
        if len(roles) > LIMITS["roles"]:
            raise InputError(f"manifest has {len(roles)} roles, over the limit of {LIMITS['roles']}")
        for role, entry in roles.items():
            full_name(role, "role name")
            if not isinstance(entry, dict):
                raise InputError(f"role {role}: entry must be an object")
            full_lineage(entry.get("lineage"))
            if not (isinstance(entry.get("name"), str) and VERSION_NAME_RE.fullmatch(entry["name"])):
                raise InputError(f"role {role}: malformed version name (expected v1, v2, ...)")
            for key in ("id", "parent"):
                value = entry.get(key)
                if not (isinstance(value, str) and SHA256_RE.fullmatch(value)) and not (key == "parent" and value is None):
                    raise InputError(f"role {role}: malformed {key}")
            for key in ("made_by", "created"):
                _short(entry.get(key), f"role {role}: {key}")
            chain = entry.get("lineage_chain") or []
            records = [entry.get(k) or {} for k in ("config", "metrics", "context")]
            if not all(isinstance(x, dict) for x in records):
                raise InputError(f"role {role}: config, metrics and context must be objects, lineage_chain a list of objects")
            for key, record in zip(("config", "metrics", "context"), records):
                _record(record, f"role {role}: {key}")
            _check_chain(chain, role)
            files = entry.get("files")
            if not isinstance(files, dict):
                raise InputError(f"role {role}: manifest must list {', '.join(ADAPTER_FILES)}")
            for name, digest in files.items():
                if not isinstance(name, str) or "/" in name or "\\" in name or ".." in name or not _safe_repo_path(name):
                    raise _unsafe(where, f"manifest lists an unsafe path {f'adapters/{role}/{name}'!r} "
                                         "(absolute, '..' or nested paths are not allowed)")
                if not isinstance(digest, str) or not SHA256_RE.fullmatch(digest):
                    raise InputError(f"role {role}: malformed sha256 for {name}")
            if set(files) != set(ADAPTER_FILES):
                raise InputError(f"role {role}: manifest must list exactly {', '.join(ADAPTER_FILES)}")
    except InputError as e:
        if isinstance(e, UnsafeAdapterError):
            raise
        raise InputError(f"bundle {where}: invalid {MANIFEST}: {e}") from None
    return m


def _resolve_online(repo: str, revision: str) -> tuple[str, dict[str, int]] | None:
    """(commit, path -> size) for `repo@revision` from the Hub, or None when the Hub cannot be reached."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return None
    api = HfApi()
    try:
        with hub_errors(repo):
            commit = api.repo_info(repo, revision=revision).sha
    except TeamTRError as e:
        if isinstance(e.__context__, _offline_error()):
            return None
        raise
    if not isinstance(commit, str) or not COMMIT_RE.fullmatch(commit):
        raise TeamTRError(f"the Hub answered an invalid commit id for {repo}@{revision}")
    return commit, remote_tree(api, repo, commit, f"{repo}@{commit[:12]}")


def _remember_ref(snap: Path, revision: str, commit: str) -> None:
    """Record `revision -> commit` in the Hub cache's refs/ (as snapshot_download does), so an offline pull
    of that branch or tag finds the snapshot."""
    if COMMIT_RE.fullmatch(revision):
        return
    ref = snap.parent.parent / "refs" / revision
    try:
        if not ref.is_file() or ref.read_text() != commit:
            fsutil.atomic_write_text(ref, commit)
    except OSError:
        pass  # only an offline convenience


def fetch_bundle(repo: str, revision: str | None = None) -> RemoteBundle:
    """Resolve the revision, check the Hub's listing of the bundle (paths, sizes), download only its card,
    spec and manifest, and validate them; every later download uses the resolved commit."""
    revision = revision or "main"
    online = _resolve_online(repo, revision)
    if online is not None:
        commit, sizes = online
        where = f"{repo}@{commit[:12]}"
        for f in (MANIFEST, SPEC):
            if f not in sizes:
                raise InputError(f"{repo}@{revision} is not a teamtr bundle (no {f})")
        for f in META_FILES + HUB_MANAGED:
            if f in sizes:
                _check_size(f, sizes[f], where)
        snap = _snapshot(repo, commit, [f for f in META_FILES if f in sizes])
        _remember_ref(snap, revision, commit)
    else:
        sizes = None
        snap = _snapshot(repo, revision, list(META_FILES))
        where = f"{repo}@{snap.name[:12]}"
    for f in (MANIFEST, SPEC):
        _check_entry(snap, f, where)
        if not (snap / f).is_file():
            raise InputError(f"{repo}@{revision} is not a teamtr bundle (no {f})")
    manifest = bounded.load_json(snap / MANIFEST, f"bundle {where}: {MANIFEST}", LIMITS["manifest_bytes"], LIMITS["depth"])
    _check_manifest(manifest, where)
    text = bounded.load_toml_text(snap / SPEC, f"bundle {where}: {SPEC}", LIMITS["spec_bytes"], LIMITS["depth"])
    try:
        spec = parse_spec(text, f"{where}/{SPEC}")
        spec_hash = spec.spec_hash()
    except SpecError:
        raise
    except (ValueError, TypeError, RecursionError) as e:  # a spec that parses but cannot be hashed
        raise InputError(f"bundle {where}: {SPEC} is not a valid team spec ({str(e).splitlines()[0][:200]})") from None
    if spec_hash != manifest.get("spec_hash"):
        raise IntegrityError(f"bundle {where}: {SPEC} does not match the spec hash in {MANIFEST}; refused")
    if set(spec.role_names) != set(manifest["roles"]) or spec.name != manifest["team"]:
        raise InputError(f"bundle {where}: {SPEC} and {MANIFEST} name different teams or roles")
    bundle = RemoteBundle(repo, revision, snap.name, manifest, spec, sizes)
    if sizes is not None:
        _check_listing(bundle)
    return bundle


def _expected_files(bundle: RemoteBundle, roles: list[str]) -> dict[str, str]:
    return {f"adapters/{r}/{name}": digest for r in roles for name, digest in bundle.manifest["roles"][r]["files"].items()}


def _check_listing(bundle: RemoteBundle) -> None:
    """Every file the Hub lists must be a bundle file the manifest names, within its size limit: checked
    before any adapter is downloaded (an unlisted or oversized file is never downloaded)."""
    assert bundle.sizes is not None
    allowed = set(_expected_files(bundle, list(bundle.manifest["roles"]))) | set(META_FILES) | set(HUB_MANAGED)
    for path, size in sorted(bundle.sizes.items()):
        if path not in allowed:
            if Path(path).suffix.lower() in PICKLE_SUFFIXES:
                raise _unsafe(bundle.where, f"{path} is a pickle file (only safetensors are loaded)")
            raise _unsafe(bundle.where, f"{path} is not in the manifest")
        _check_size(path, size, bundle.where)


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
    if path.is_file():
        _check_size(rel, path.stat().st_size, where)


def _files_in(snap: Path) -> Iterator[str]:
    """Every non-directory entry under `snap` (symlinked dirs included, never followed), as repo paths."""
    for root, dirs, files in os.walk(snap):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            yield Path(root, name).relative_to(snap).as_posix()


def verify_snapshot(snap: Path, bundle: RemoteBundle, roles: list[str]) -> None:
    """Check the downloaded files of `roles` (and the top level) against the manifest, raising on any problem:
    safe entries, sizes, sha256, then the adapter files' own structure (config JSON bounded, safetensors
    header checked by the safetensors library), all before anything is staged or parsed further."""
    where = bundle.where
    expected = _expected_files(bundle, roles)
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
    for role in roles:
        folder = snap / "adapters" / role
        try:
            config = bounded.load_json(folder / CONFIG, f"adapters/{role}/{CONFIG}", LIMITS["config_bytes"], LIMITS["depth"])
            if not isinstance(config, dict):
                raise InputError(f"adapters/{role}/{CONFIG} is not a JSON object")
            bounded.check_safetensors(folder / WEIGHTS, f"adapters/{role}/{WEIGHTS}", LIMITS["weights_bytes"],
                                      LIMITS["header_bytes"], LIMITS["depth"])
        except InputError as e:
            raise _unsafe(where, str(e)) from None


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
    """Download exactly the manifest's files of `roles` at the resolved commit (sizes were checked from the
    listing) and verify them."""
    patterns = sorted(_expected_files(bundle, roles)) + [f for f in META_FILES if bundle.sizes is None or f in bundle.sizes]
    snap = _snapshot(bundle.repo, bundle.commit, patterns)
    verify_snapshot(snap, bundle, roles)
    return snap


def pull_team(registry: Registry, ref: str, *, name: str | None = None, base: Any = None) -> dict[str, Any]:
    """Pull a whole bundle into team `name` (default: the bundle's team): created, or re-pinned when a
    local team of that name has the same spec. Nothing is imported unless every check passes. The
    history event records the commit, which a later push takes as its parent (see `last_synced`).
    One registry transaction (one commit in a Hub-backed registry)."""
    with registry.hold(write=True):
        return _pull_team(registry, ref, name=name, base=base)


def _pull_team(registry: Registry, ref: str, *, name: str | None = None, base: Any = None) -> dict[str, Any]:
    href = parse_hub_ref(ref)
    if name is not None:
        full_name(name, "team name")
    bundle = fetch_bundle(href.repo, href.revision)
    team = name or bundle.manifest["team"]
    exists = team in registry.list_teams()
    base_ref = local_base(registry, bundle, team, base)
    local_ref = registry.manifest(team)["base_ref"] if exists else (base if isinstance(base, str) else None)
    spec = bundle.spec.replace(name=team, base=local_ref or bundle.spec.base)
    if exists and registry.manifest(team)["spec_hash"] != spec.spec_hash():
        raise ConflictError(f"local team {team!r} exists with a different spec; pull with --as NEW_NAME")
    roles = list(bundle.manifest["roles"])
    snap = _download_verified(bundle, roles)
    event = {"event": "pull", "repo": bundle.repo, "hub_revision": bundle.revision, "commit": bundle.commit,
             "remote_team_revision": bundle.manifest.get("team_revision")}
    # one hold of the registry lock from the imports to the pins: gc cannot remove the not-yet-pinned versions
    with registry.hold(), tempfile.TemporaryDirectory(prefix="teamtr-pull-") as tmp:
        staged = {r: _stage_role(snap, bundle, r, base_ref, Path(tmp)) for r in roles}
        pins = {r: _import_role(registry, bundle, r, staged[r], lineage_of(team, r)).id for r in roles}
        if exists and registry.pins(team) == pins:
            manifest = registry.manifest(team)  # already up to date: no new revision, but the sync point moves
            registry.append_history({"team": team, "revision": manifest["revision"], "unchanged": True, **event})
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
    One registry transaction (one commit in a Hub-backed registry).
    """
    with registry.hold(write=True):
        return _pull_role(registry, ref, role=role, lineage=lineage, base=base)


def _pull_role(registry: Registry, ref: str, *, role: str | None = None, lineage: str | None = None,
               base: Any = None) -> VersionInfo:
    href = parse_hub_ref(ref)
    if lineage is not None:
        full_lineage(lineage)
    bundle = fetch_bundle(href.repo, href.revision)
    role = href.role or role
    roles = bundle.manifest["roles"]
    if role is None or role not in roles:
        what = f"has no role {role!r}" if role else "holds several roles: name one with #ROLE"
        raise NotFoundError(f"bundle {bundle.where} {what} (roles: {', '.join(roles)})")
    target = full_lineage(lineage or roles[role]["lineage"])
    base_ref = local_base(registry, bundle, bundle.manifest["team"], base)
    snap = _download_verified(bundle, [role])
    with tempfile.TemporaryDirectory(prefix="teamtr-pull-") as tmp:
        info = _import_role(registry, bundle, role, _stage_role(snap, bundle, role, base_ref, Path(tmp)), target)
    registry.append_history({"event": "pull", "repo": bundle.repo, "hub_revision": bundle.revision,
                             "commit": bundle.commit, "role": role, "lineage": info.lineage, "version": info.id})
    return info
