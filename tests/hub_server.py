"""A small Hugging Face Hub-compatible HTTP server for tests (stdlib only).

It implements the routes that `huggingface_hub` uses for a push/pull round trip: whoami-v2, repos/create,
validate-yaml, model info (with revision), refs, preupload (always "regular": no LFS, no Xet), the NDJSON
commit with its `parentCommit` check, tag and branch creation, tree listing, commit listing, and
resolve (GET/HEAD with X-Repo-Commit, ETag and size headers).

State lives on disk under `root/<namespace>/<name>/`: `repo.json`, `refs.json` (branches and tags),
`commits/<id>.json` (git-like snapshots: parents and a full path -> blob id tree) and `objects/<blob id>`
(blob ids are git blob sha1s, as on the Hub for regular files). Tests may use `HubState` directly to
play a concurrent writer or to inspect what a push uploaded (`HubServer.commit_log`).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

USER = "tester"
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def iso_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class HubError(Exception):
    """An HTTP error answer: status, Hub error code (X-Error-Code) and message."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}


def _safe_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise HubError(400, f"invalid path in repo: {path!r}")
    return path


class HubState:
    """Repos, commits, branches and tags on disk; every method is safe to call from several threads."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.lock = threading.RLock()

    # -- storage ------------------------------------------------------------------------------------
    def _repo_dir(self, repo_id: str) -> Path:
        ns, _, name = repo_id.partition("/")
        if not ns or not name or "/" in name or ".." in repo_id:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return self.root / ns / name

    def exists(self, repo_id: str) -> bool:
        return (self._repo_dir(repo_id) / "repo.json").is_file()

    def repo(self, repo_id: str) -> dict[str, Any]:
        if not self.exists(repo_id):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return json.loads((self._repo_dir(repo_id) / "repo.json").read_text())

    def refs(self, repo_id: str) -> dict[str, dict[str, str]]:
        self.repo(repo_id)
        return json.loads((self._repo_dir(repo_id) / "refs.json").read_text())

    def _write_refs(self, repo_id: str, refs: dict) -> None:
        path = self._repo_dir(repo_id) / "refs.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(refs, indent=1))
        os.replace(tmp, path)

    def commit_doc(self, repo_id: str, commit_id: str) -> dict[str, Any]:
        path = self._repo_dir(repo_id) / "commits" / f"{commit_id}.json"
        if not path.is_file():
            raise HubError(404, f"Invalid rev id: {commit_id}", "RevisionNotFound")
        return json.loads(path.read_text())

    def blob(self, repo_id: str, oid: str) -> bytes:
        return (self._repo_dir(repo_id) / "objects" / oid).read_bytes()

    def blob_size(self, repo_id: str, oid: str) -> int:
        return (self._repo_dir(repo_id) / "objects" / oid).stat().st_size

    def _put_blob(self, repo_id: str, data: bytes) -> str:
        oid = git_blob_id(data)
        path = self._repo_dir(repo_id) / "objects" / oid
        if not path.exists():
            path.write_bytes(data)
        return oid

    # -- revisions ----------------------------------------------------------------------------------
    def resolve(self, repo_id: str, rev: str) -> str:
        """Branch, tag or full commit id -> commit id (RevisionNotFound otherwise)."""
        refs = self.refs(repo_id)
        if rev in refs["branches"]:
            return refs["branches"][rev]
        if rev in refs["tags"]:
            return refs["tags"][rev]
        if COMMIT_RE.match(rev) and (self._repo_dir(repo_id) / "commits" / f"{rev}.json").is_file():
            return rev
        raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def tree(self, repo_id: str, rev: str) -> tuple[str, dict[str, str]]:
        commit_id = self.resolve(repo_id, rev)
        return commit_id, self.commit_doc(repo_id, commit_id)["tree"]

    def files(self, repo_id: str, rev: str = "main") -> dict[str, bytes]:
        """Every file of `rev` with its bytes (for assertions in tests)."""
        _, tree = self.tree(repo_id, rev)
        return {p: self.blob(repo_id, oid) for p, oid in tree.items()}

    # -- writes -------------------------------------------------------------------------------------
    def create_repo(self, repo_id: str, private: bool = False) -> bool:
        """Create a repo with an initial commit holding `.gitattributes`; False if it already exists."""
        with self.lock:
            if self.exists(repo_id):
                return False
            d = self._repo_dir(repo_id)
            for sub in ("commits", "objects"):
                (d / sub).mkdir(parents=True, exist_ok=True)
            (d / "repo.json").write_text(json.dumps({"private": private, "created": iso_now()}))
            self._write_refs(repo_id, {"branches": {}, "tags": {}})
            first = self._new_commit(repo_id, [], {".gitattributes": self._put_blob(repo_id, GITATTRIBUTES)},
                                     "initial commit", "")
            self._write_refs(repo_id, {"branches": {"main": first}, "tags": {}})
            return True

    def _new_commit(self, repo_id: str, parents: list[str], tree: dict[str, str], title: str, message: str) -> str:
        doc = {"parents": parents, "tree": dict(sorted(tree.items())), "title": title, "message": message,
               "date": iso_now(), "author": USER, "nonce": time.time_ns()}
        commit_id = hashlib.sha1(json.dumps(doc, sort_keys=True).encode()).hexdigest()
        doc["id"] = commit_id
        (self._repo_dir(repo_id) / "commits" / f"{commit_id}.json").write_text(json.dumps(doc, indent=1))
        return commit_id

    def commit(self, repo_id: str, branch: str, adds: dict[str, bytes], deletes: list[str] = (),
               title: str = "update", message: str = "", parent: str | None = None,
               deleted_folders: list[str] = (), check_paths: bool = True) -> str:
        """Apply one commit to `branch`; HubError 412 when `parent` is given and is not the branch head, as on
        the Hub. `check_paths=False` stores paths the Hub would refuse (`..`, absolute): a hostile server."""
        with self.lock:
            refs = self.refs(repo_id)
            if branch not in refs["branches"]:
                raise HubError(404, f"Invalid rev id: {branch} (commits go to a branch)", "RevisionNotFound")
            head = refs["branches"][branch]
            if parent is not None and parent != head:
                raise HubError(412, f"A commit has happened since: {branch} is at {head}, not at the parent "
                                    f"commit {parent}. Please refresh and try again.")
            tree = dict(self.commit_doc(repo_id, head)["tree"])
            for path in deletes:
                if tree.pop(_safe_path(path), None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            for folder in deleted_folders:
                prefix = _safe_path(folder.rstrip("/")) + "/"
                tree = {p: o for p, o in tree.items() if not p.startswith(prefix)}
            for path, data in adds.items():
                tree[_safe_path(path) if check_paths else path] = self._put_blob(repo_id, data)
            new = self._new_commit(repo_id, [head], tree, title, message)
            refs["branches"][branch] = new
            self._write_refs(repo_id, refs)
            return new

    def reset_branch(self, repo_id: str, branch: str, commit_id: str) -> None:
        """Force-move `branch` to an existing commit (test setup only; the Hub API has no such route here)."""
        with self.lock:
            self.commit_doc(repo_id, commit_id)
            refs = self.refs(repo_id)
            refs["branches"][branch] = commit_id
            self._write_refs(repo_id, refs)

    def create_ref(self, repo_id: str, kind: str, name: str, rev: str) -> str:
        """Create branch or tag `name` at `rev`; 409 when it exists."""
        with self.lock:
            refs = self.refs(repo_id)
            key = "branches" if kind == "branch" else "tags"
            if name in refs[key]:
                raise HubError(409, f"{kind.capitalize()} {name} already exists")
            if not name or ".." in name or name.startswith("/"):
                raise HubError(400, f"invalid {kind} name {name!r}")
            refs[key][name] = self.resolve(repo_id, rev)
            self._write_refs(repo_id, refs)
            return refs[key][name]


class HubServer:
    """The Hub on a free loopback port: `start()`, `url`, `stop()`; `tokens` are the accepted tokens."""

    def __init__(self, root: Path, tokens: tuple[str, ...] = ("hf_test_token",)) -> None:
        self.state = HubState(root)
        self.tokens = set(tokens)
        self.commit_log: list[dict[str, Any]] = []  # one entry per accepted commit request
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.before_commit: Callable[[str, str], None] | None = None  # one-shot hook (repo_id, branch)
        self.before_tag: Callable[[str, str], None] | None = None  # one-shot hook (repo_id, tag name)
        # token -> event: requests bearing that token wait until the next commit lands (forces an interleaving)
        self.held: dict[str, threading.Event] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> "HubServer":
        server = self

        class Handler(_Handler):
            hub = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet unless debugging
        if os.environ.get("HUB_SERVER_DEBUG"):
            super().log_message(fmt, *args)

    # -- plumbing -----------------------------------------------------------------------------------
    def _body(self) -> bytes:
        """Read (drain) the whole request body, Content-Length or chunked."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _token_ok(self, required: bool) -> bool:
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        if token is not None and token not in self.hub.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        if required and token is None:
            raise HubError(401, "You must be authenticated to access this resource (no token sent)")
        return token is not None

    def _readable(self, repo_id: str) -> dict[str, Any]:
        repo = self.hub.state.repo(repo_id)
        if repo["private"] and not self._token_ok(False):
            raise HubError(401, "Repository not found", "RepoNotFound")
        return repo

    def _dispatch(self) -> None:
        body = self._body()
        split = urlsplit(self.path)
        self.query = parse_qs(split.query)
        self.hub.requests.append((self.command, split.path))
        parts = [unquote(p) for p in split.path.split("/")[1:]]
        auth = self.headers.get("Authorization", "")
        gate = self.hub.held.get(auth[7:]) if auth.startswith("Bearer ") else None
        if gate is not None:
            gate.wait(timeout=120)
        try:
            self._token_ok(False)  # like the Hub: a token that is sent must be valid, even for reads
            self._route(parts, body)
        except HubError as e:
            headers = {"X-Error-Message": str(e), **e.headers}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._json({"error": str(e)}, e.status, headers)

    do_GET = do_POST = do_HEAD = _dispatch

    # -- routes -------------------------------------------------------------------------------------
    def _route(self, p: list[str], body: bytes) -> None:
        m = self.command
        if p[:2] == ["api", "whoami-v2"] and m == "GET":
            self._token_ok(True)
            return self._json({"type": "user", "id": "1", "name": USER, "fullname": "Test User", "orgs": [],
                               "auth": {"type": "access_token",
                                        "accessToken": {"displayName": "test", "role": "write"}}})
        if p[:2] == ["api", "agent-harnesses"] and m == "GET":  # the client's agent detection
            return self._json({"standardEnvVars": [], "harnesses": {}})
        if p[:3] == ["api", "repos", "create"] and m == "POST":
            return self._create_repo(json.loads(body or b"{}"))
        if p[:2] == ["api", "validate-yaml"] and m == "POST":
            return self._validate_yaml(json.loads(body or b"{}"))
        if len(p) >= 4 and p[:2] == ["api", "models"]:
            repo_id, rest = f"{p[2]}/{p[3]}", p[4:]
            return self._model_api(m, repo_id, rest, body)
        if len(p) >= 5 and p[2] == "resolve" and m in ("GET", "HEAD"):
            return self._resolve(f"{p[0]}/{p[1]}", p[3], "/".join(p[4:]))
        raise HubError(404, f"no route for {m} {self.path}")

    def _model_api(self, m: str, repo_id: str, rest: list[str], body: bytes) -> None:
        state = self.hub.state
        if not rest and m == "GET":
            return self._model_info(repo_id, "main")
        if rest[:1] == ["revision"] and m == "GET":
            return self._model_info(repo_id, "/".join(rest[1:]))
        if rest == ["refs"] and m == "GET":
            self._readable(repo_id)
            refs = state.refs(repo_id)
            return self._json({
                "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": c} for n, c in refs["branches"].items()],
                "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": c} for n, c in refs["tags"].items()],
                "converts": [], "pullRequests": []})
        if rest[:1] == ["tree"] and m == "GET":
            return self._tree(repo_id, rest[1], "/".join(rest[2:]))
        if rest[:1] == ["commits"] and m == "GET":
            return self._commits(repo_id, "/".join(rest[1:]))
        if rest[:1] in (["preupload"], ["commit"], ["tag"], ["branch"]):
            self._token_ok(True)
            state.repo(repo_id)
            rev = "/".join(rest[1:])
            if rest[0] == "preupload" and m == "POST":
                return self._preupload(repo_id, rev, json.loads(body or b"{}"))
            if rest[0] == "commit" and m == "POST":
                return self._commit(repo_id, rev, body)
            if rest[0] in ("tag", "branch") and m == "POST":
                payload = json.loads(body or b"{}")
                if rest[0] == "tag":
                    hook, self.hub.before_tag = self.hub.before_tag, None
                    if hook is not None:
                        hook(repo_id, payload.get("tag", ""))
                    state.create_ref(repo_id, "tag", payload.get("tag", ""), rev)
                else:
                    state.create_ref(repo_id, "branch", rev, payload.get("startingPoint") or "main")
                return self._json({})
        raise HubError(404, f"no route for {m} /api/models/{repo_id}/{'/'.join(rest)}")

    def _create_repo(self, payload: dict) -> None:
        self._token_ok(True)
        if payload.get("type", "model") not in (None, "model"):
            raise HubError(400, "this test Hub serves model repos only")
        ns = payload.get("organization") or USER
        repo_id = f"{ns}/{payload.get('name', '')}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        url = f"{self.hub.url}/{repo_id}"
        answer = {"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]}
        if not self.hub.state.create_repo(repo_id, private):
            msg = "You already created this model repo"
            return self._json({**answer, "error": msg}, 409, {"X-Error-Message": msg})
        self._json(answer)

    def _validate_yaml(self, payload: dict) -> None:
        content = payload.get("content", "")
        if content.startswith("---") and "\n---" not in content[3:]:
            return self._json({"errors": [{"message": "unterminated YAML front matter"}], "warnings": []}, 400)
        self._json({"errors": [], "warnings": []})

    def _model_info(self, repo_id: str, rev: str) -> None:
        repo = self._readable(repo_id)
        commit_id, tree = self.hub.state.tree(repo_id, rev)
        doc = self.hub.state.commit_doc(repo_id, commit_id)
        info: dict[str, Any] = {"_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id,
                                "modelId": repo_id, "author": repo_id.split("/")[0], "sha": commit_id,
                                "lastModified": doc["date"], "createdAt": repo["created"], "private": repo["private"],
                                "disabled": False, "gated": False, "tags": [],
                                "siblings": [{"rfilename": p} for p in sorted(tree)]}
        if "README.md" in tree:
            card = self.hub.state.blob(repo_id, tree["README.md"]).decode(errors="replace")
            lib = re.search(r"^library_name:\s*(\S+)\s*$", card.split("\n---", 1)[0], re.M)
            if lib:
                info["library_name"] = lib.group(1)
        self._json(info)

    def _tree(self, repo_id: str, rev: str, path: str) -> None:
        self._readable(repo_id)
        _, tree = self.hub.state.tree(repo_id, rev)
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        files, dirs = [], set()
        for p, oid in sorted(tree.items()):
            if not p.startswith(prefix):
                continue
            rel = p[len(prefix):].split("/")
            for i in range(1, len(rel)):
                dirs.add(prefix + "/".join(rel[:i]))
            if recursive or len(rel) == 1:
                files.append({"type": "file", "oid": oid, "size": self.hub.state.blob_size(repo_id, oid), "path": p})
        if prefix and not files and not dirs:
            raise HubError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        shown = sorted(d for d in dirs if recursive or "/" not in d[len(prefix):])
        entries = [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
                   for d in shown]
        self._json(files + entries)  # files first: a hostile path is reported as the file it is

    def _commits(self, repo_id: str, rev: str) -> None:
        self._readable(repo_id)
        commit_id, out = self.hub.state.resolve(repo_id, rev), []
        while commit_id:
            doc = self.hub.state.commit_doc(repo_id, commit_id)
            out.append({"id": doc["id"], "title": doc["title"], "message": doc["message"],
                        "authors": [{"user": doc["author"], "avatar": ""}], "date": doc["date"]})
            commit_id = doc["parents"][0] if doc["parents"] else None
        self._json(out)

    def _preupload(self, repo_id: str, rev: str, payload: dict) -> None:
        try:
            _, tree = self.hub.state.tree(repo_id, rev)
        except HubError:
            tree = {}  # a branch that does not exist yet
        self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                               "oid": tree.get(f["path"])} for f in payload.get("files", [])],
                    "commitOid": None})

    def _commit(self, repo_id: str, branch: str, body: bytes) -> None:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the commit payload must start with a header line")
        header = lines[0]["value"]
        adds: dict[str, bytes] = {}
        deletes, folders = [], []
        for op in lines[1:]:
            key, value = op.get("key"), op.get("value", {})
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, "file content must be base64")
                adds[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                deletes.append(value["path"])
            elif key == "deletedFolder":
                folders.append(value["path"])
            else:
                raise HubError(422, f"operation {key!r} is not supported by this test Hub (regular files only)")
        hook, self.hub.before_commit = self.hub.before_commit, None
        if hook is not None:
            hook(repo_id, branch)
        commit_id = self.hub.state.commit(repo_id, branch, adds, deletes, header.get("summary", ""),
                                          header.get("description", ""), header.get("parentCommit"), folders)
        self.hub.commit_log.append({"repo": repo_id, "branch": branch, "commit": commit_id,
                                    "parent": header.get("parentCommit"), "added": sorted(adds),
                                    "deleted": sorted(deletes + folders)})
        for gate in list(self.hub.held.values()):
            gate.set()
        self._json({"success": True, "commitOid": commit_id, "commitUrl": f"{self.hub.url}/{repo_id}/commit/{commit_id}",
                    "hookOutput": "", "pullRequestUrl": None})

    def _resolve(self, repo_id: str, rev: str, path: str) -> None:
        self._readable(repo_id)
        commit_id, tree = self.hub.state.tree(repo_id, rev)
        commit_header = {"X-Repo-Commit": commit_id}
        if path not in tree:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", commit_header)
        oid = tree[path]
        data = self.hub.state.blob(repo_id, oid)
        headers = {**commit_header, "ETag": f'"{oid}"', "X-Linked-Etag": f'"{oid}"',
                   "X-Linked-Size": str(len(data)), "Accept-Ranges": "bytes"}
        start = self._range_start(self.headers.get("Range"))
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            return self._send(206, data[start:], headers, "application/octet-stream")
        self._send(200, data, headers, "application/octet-stream")

    @staticmethod
    def _range_start(header: str | None) -> int:
        m = re.match(r"^bytes=(\d+)-$", header or "")
        return int(m.group(1)) if m else 0
