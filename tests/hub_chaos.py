"""Hostile Hub bundles and push races, shared by tests/test_hub_hostile.py, tests/chaos/test_hub.py and
benchmarks/chaos/hub.py (no pytest here).

A hostile bundle is made from a valid pushed one (`valid`, the files of a commit) by one `HostileCase`,
then committed to the loopback Hub with `HubState` directly, so that it can hold what the real Hub would
refuse to store (`..` or absolute paths) and what a careless or malicious pusher could store (everything
else). Every case must be refused by `hub pull` with one `error:` line and its exit code, the registry
byte-identical, and the files it names never downloaded.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

W, C = "adapter_model.safetensors", "adapter_config.json"
ROOT = Path(__file__).resolve().parent.parent


def registry_snapshot(home: Path) -> dict[str, str]:
    """Path -> sha256 of every file of a registry home (lock files aside): equal snapshots, equal registries."""
    if not home.exists():
        return {}
    return {p.relative_to(home).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(home.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def retrain(reg, role: str, shift: float = 0.5, team: str = "tiny-duo") -> str:
    """Pin a new version of `role` whose LoRA B weights are shifted (a stand-in for a training update)."""
    from safetensors.numpy import load_file, save_file

    pin = reg.manifest(team)["roles"][role]
    src = reg.version_path(pin["id"])
    out = reg.home.parent / f"retrained-{reg.home.name}-{role}"
    out.mkdir(exist_ok=True)
    tensors = load_file(src / W)
    save_file({k: (v + shift).astype(v.dtype) if "lora_B" in k else v for k, v in tensors.items()}, str(out / W))
    (out / C).write_bytes((src / C).read_bytes())
    info = reg.add_version(pin["lineage"], out, made_by="train", base=reg.manifest(team)["base"],
                           parent=pin["id"], metrics={"reward": shift})
    reg.update_pins(team, {role: info.id}, {"event": "train", "role": role})
    return info.id


# -- building hostile bundles ------------------------------------------------------------------------
def version_id(weights: bytes, config: bytes) -> str:
    """The registry's version id of (weights, config) bytes (as `store.content_hashes`)."""
    canon = json.dumps(json.loads(config), sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    w, c = hashlib.sha256(weights).hexdigest(), hashlib.sha256(canon.encode()).hexdigest()
    return hashlib.sha256(f"{w}\n{c}\n".encode()).hexdigest()


def safetensors_bytes(header: Any, data: bytes) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def split_safetensors(blob: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


class Bundle:
    """A mutable copy of a valid bundle's files; `files()` re-serializes the manifest."""

    def __init__(self, valid: dict[str, bytes]) -> None:
        self.raw = dict(valid)
        self.manifest = json.loads(valid["manifest.json"])
        self.deletes: list[str] = []
        self.raw_manifest: bytes | None = None

    def set_adapter(self, role: str, weights: bytes | None = None, config: bytes | None = None,
                    fix_id: bool = True) -> None:
        """Replace a role's files and list their sha256 in the manifest (and the matching id, when computable)."""
        entry = self.manifest["roles"][role]
        for name, data in ((W, weights), (C, config)):
            if data is not None:
                self.raw[f"adapters/{role}/{name}"] = data
                entry["files"][name] = hashlib.sha256(data).hexdigest()
        if fix_id:
            entry["id"] = version_id(self.raw[f"adapters/{role}/{W}"], self.raw[f"adapters/{role}/{C}"])

    def rename_role(self, old: str, new: str, move_files: bool = True) -> None:
        roles = self.manifest["roles"]
        roles[new] = roles.pop(old)
        for name in (W, C) if move_files else ():
            self.raw[f"adapters/{new}/{name}"] = self.raw.pop(f"adapters/{old}/{name}")
            self.deletes.append(f"adapters/{old}/{name}")

    def files(self) -> dict[str, bytes]:
        out = dict(self.raw)
        out["manifest.json"] = self.raw_manifest if self.raw_manifest is not None else json.dumps(self.manifest).encode()
        return out


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _with_params(b: Bundle, line: str) -> None:
    """Set the spec's `[task] params` (replacing what `to_toml` wrote: a `params = ` line or a `[task.params]`
    table)."""
    out, skipping = [], False
    for x in b.raw["team.toml"].decode().split("\n"):
        if x.startswith("["):
            skipping = x.strip() == "[task.params]"
        if skipping or x.startswith("params = "):
            continue
        out.append(x)
        if x.strip() == "[task]":
            out.append(line)
    assert line in out
    b.raw["team.toml"] = "\n".join(out).encode()


@dataclass
class HostileCase:
    name: str
    build: Callable[[Bundle, bool], None]   # (bundle, full) -> mutates the bundle
    code: int                               # the exit code of the refusal
    message: str                            # a fragment of the one error line
    never_downloaded: tuple[str, ...] = ()  # repo paths that must never be fetched
    unchecked_paths: bool = False           # store paths the real Hub would refuse
    limits: dict[str, int] = field(default_factory=dict)  # LIMITS overrides for this case (in-process only)


def _big_metrics(b: Bundle, full: bool) -> None:
    b.manifest["roles"]["critic"]["metrics"] = {"blob": "x" * ((50 if full else 5) << 20)}


def _long_chain(b: Bundle, full: bool) -> None:
    link = {"id": "a" * 64, "lineage": "x.y", "name": "v1", "made_by": "train"}
    b.manifest["roles"]["critic"]["lineage_chain"] = [link] * (1_000_000 if full else 300)


def _header(mutate: Callable[[dict, bytes], tuple[Any, bytes]]) -> Callable[[Bundle, bool], None]:
    def build(b: Bundle, full: bool) -> None:
        header, data = split_safetensors(b.raw[f"adapters/critic/{W}"])
        header, data = mutate(copy.deepcopy(header), data)
        b.set_adapter("critic", weights=safetensors_bytes(header, data))
    return build


def _first_tensor(h: dict) -> str:
    return sorted(k for k in h if k != "__metadata__")[0]


def _drop_shape(h: dict, d: bytes) -> tuple[dict, bytes]:
    del h[_first_tensor(h)]["shape"]
    return h, d


def _offsets(h: dict, d: bytes, start: int, end: int) -> tuple[dict, bytes]:
    h[_first_tensor(h)]["data_offsets"] = [start, end]
    return h, d


def _many_files(b: Bundle, full: bool) -> None:
    for i in range(1100):
        b.raw[f"extra/f{i}.txt"] = b"x"


def _listed_extra(b: Bundle, full: bool) -> None:
    b.raw["adapters/critic/extra.json"] = b"{}"
    b.manifest["roles"]["critic"]["files"]["extra.json"] = hashlib.sha256(b"{}").hexdigest()


def _tamper(b: Bundle, full: bool) -> None:
    w = bytearray(b.raw[f"adapters/critic/{W}"])
    w[-1] ^= 0xFF
    b.raw[f"adapters/critic/{W}"] = bytes(w)


CASES: list[HostileCase] = [
    # JSON that would crash or flood the parser
    HostileCase("manifest nested 100k deep",
                lambda b, f: setattr(b, "raw_manifest", b'{"format": "teamtr-bundle/1", "x": ' + _nested(100_000) + b"}"),
                2, "nested deeper than 32 levels"),
    HostileCase("manifest with a 5000-digit integer",
                lambda b, f: setattr(b, "raw_manifest", b'{"format": "teamtr-bundle/1", "team_revision": ' + b"9" * 5000 + b"}"),
                2, "is not valid JSON"),
    HostileCase("manifest that is not UTF-8", lambda b, f: setattr(b, "raw_manifest", b'{"format": "\xff\xfe"}'), 2,
                "is not valid JSON"),
    HostileCase("manifest that is a list", lambda b, f: setattr(b, "raw_manifest", b"[]"), 2, "is not a teamtr bundle"),
    HostileCase("metrics of 50 MB (CI: 5 MB)", _big_metrics, 2, "over the 4194304-byte limit; refused before downloading",
                never_downloaded=("manifest.json",)),
    HostileCase("metrics of 100 KB in one role", lambda b, f: b.manifest["roles"]["critic"].update(metrics={"blob": "x" * 100_000}),
                2, "over the 65536-byte limit"),
    HostileCase("lineage chain of 1M entries (CI: 300)", _long_chain, 2, "over the ",
                never_downloaded=()),
    HostileCase("lineage chain entry with unknown keys",
                lambda b, f: b.manifest["roles"]["critic"].update(lineage_chain=[{"id": "a" * 64, "path": "/etc"}]),
                2, "has unknown keys"),
    # names that would become file names in the registry
    HostileCase("role named 'critic\\n' in the manifest", lambda b, f: b.rename_role("critic", "critic\n", move_files=False),
                2, "invalid role name 'critic\\n'"),
    HostileCase("role folder 'adapters/critic\\n/'", lambda b, f: b.rename_role("critic", "critic\n"), 2,
                "unsafe path 'adapters/critic\\n/"),
    HostileCase("team named 'tiny-duo\\n'", lambda b, f: b.manifest.update(team="tiny-duo\n"), 2, "invalid team name"),
    HostileCase("lineage 'tiny-duo.critic\\n'",
                lambda b, f: b.manifest["roles"]["critic"].update(lineage="tiny-duo.critic\n"), 2, "invalid lineage"),
    HostileCase("manifest listing an extra adapter file", _listed_extra, 2, "must list exactly"),
    # paths the Hub listing may hold
    HostileCase("a '..' path in the repo", lambda b, f: b.raw.update({"adapters/../../evil.safetensors": b"x"}),
                2, "unsafe path 'adapters/../../evil.safetensors'", unchecked_paths=True),
    HostileCase("an absolute path in the repo", lambda b, f: b.raw.update({"/etc/evil.json": b"{}"}),
                2, "unsafe path '/etc/evil.json'", unchecked_paths=True),
    HostileCase("a 200 MB unlisted file (CI: 2 MB)",
                lambda b, f: b.raw.update({"adapters/critic/big.safetensors": b"\0" * ((200 if f else 2) << 20)}),
                2, "adapters/critic/big.safetensors is not in the manifest",
                never_downloaded=("adapters/critic/big.safetensors",)),
    HostileCase("a pickle file beside the adapter",
                lambda b, f: b.raw.update({"adapters/critic/adapter_model.bin": b"\x80\x04K\x01."}),
                2, "is a pickle file", never_downloaded=("adapters/critic/adapter_model.bin",)),
    HostileCase("more than 1024 files in the repo", _many_files, 2, "more than 1024 files"),
    HostileCase("an oversized listed adapter_config.json",
                lambda b, f: b.set_adapter("critic", config=json.dumps({**json.loads(b.raw[f"adapters/critic/{C}"]),
                                                                        "pad": "x" * 100_000}).encode()),
                2, f"adapters/critic/{C} is ", never_downloaded=(f"adapters/critic/{C}",)),
    HostileCase("an oversized listed safetensors file (limit lowered)",
                lambda b, f: None, 2, f"adapters/critic/{W} is ", never_downloaded=(f"adapters/critic/{W}",),
                limits={"weights_bytes": 1000}),
    HostileCase("adapter_config.json nested 20k deep",
                lambda b, f: b.set_adapter("critic", config=b'{"peft_type": "LORA", "r": 4, "x": ' + _nested(20_000) + b"}",
                                           fix_id=False), 2, "nested deeper than 32 levels"),
    # safetensors headers
    HostileCase("safetensors header nested 100k deep",
                _header(lambda h, d: (b'{"a": ' + _nested(100_000) + b"}", d)), 2, "nested deeper than 32 levels"),
    HostileCase("safetensors header that is a list", _header(lambda h, d: ([1, 2], d)), 2, "not a valid safetensors file"),
    HostileCase("safetensors entry without a shape",
                _header(_drop_shape), 2, "not a valid safetensors file"),
    HostileCase("safetensors absurd data_offsets", _header(lambda h, d: _offsets(h, d, 0, 10 ** 12)), 2,
                "not a valid safetensors file"),
    HostileCase("safetensors overlapping data_offsets",
                _header(lambda h, d: _offsets(h, d, 8, 8 + h[_first_tensor(h)]["data_offsets"][1]
                                              - h[_first_tensor(h)]["data_offsets"][0])), 2, "not a valid safetensors file"),
    HostileCase("safetensors data longer than its offsets", _header(lambda h, d: (h, d + b"\0" * 64)), 2,
                "not a valid safetensors file"),
    HostileCase("safetensors header length past the file end",
                lambda b, f: b.set_adapter("critic", weights=struct.pack("<Q", 10 ** 9) + b"{}"), 2, "does not fit"),
    # team.toml
    HostileCase("team.toml with a TOML datetime param", lambda b, f: _with_params(b, "params = { when = 1979-05-27T07:32:00Z }"),
                2, "TOML date/time value at task.params.when"),
    HostileCase("team.toml nested 100k deep",
                lambda b, f: _with_params(b, "params = { x = " + _nested(100_000).decode() + " }"), 2, "nested deeper than 32"),
    HostileCase("team.toml over 256 KiB",
                lambda b, f: _with_params(b, f'params = {{ pad = "{"x" * 300_000}" }}'), 2, "over the 262144-byte limit",
                never_downloaded=("team.toml",)),
    # bytes that do not match the manifest
    HostileCase("a tampered weights file", _tamper, 4, "does not match the manifest"),
]


# -- running a case ------------------------------------------------------------------------------------
@dataclass
class Outcome:
    code: int | None
    out: str
    err: str
    traceback: str | None


def run_cli(*argv: str) -> Outcome:
    """Run the CLI in-process, capturing stdout/stderr; an exception escaping `run` is a traceback."""
    from teamtr_adapters.cli.app import run

    out, err = io.StringIO(), io.StringIO()
    tb = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = run(list(argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001  (a traceback is what the campaign counts)
            code, tb = None, traceback.format_exc()
    return Outcome(code, out.getvalue(), err.getvalue(), tb)


def commit_case(state, repo: str, base_commit: str, case: HostileCase, full: bool) -> str:
    """Reset `repo`'s main to `base_commit` and commit the hostile bundle `case` makes from it."""
    valid = state.files(repo, base_commit)
    b = Bundle(valid)
    case.build(b, full)
    files = b.files()
    adds = {p: d for p, d in files.items() if valid.get(p) != d}
    state.reset_branch(repo, "main", base_commit)
    return state.commit(repo, "main", adds, deletes=b.deletes, title=f"hostile: {case.name}",
                        check_paths=not case.unchecked_paths)


def check_refusal(case: HostileCase, home: Path, requests: list, argv: list[str]) -> dict[str, Any]:
    """Pull with `argv`; what went wrong (an empty dict when the refusal was right)."""
    from teamtr_adapters.registry import hub as hubmod

    before = registry_snapshot(home)
    limits = getattr(hubmod, "LIMITS", {})  # (absent before issue 13: then the case runs unpatched)
    saved = dict(limits)
    limits.update(case.limits)
    del requests[:]
    try:
        got = run_cli(*argv)
    finally:
        limits.clear()
        limits.update(saved)
    problems: dict[str, Any] = {}
    if got.traceback or "Traceback" in got.err:
        problems["traceback"] = (got.traceback or got.err)[-2000:]
    if got.code != case.code:
        problems["code"] = f"exit {got.code}, expected {case.code}: {got.err.strip()[:300]}"
    if not (got.err.startswith("error: ") and got.err.count("\n") == 1 and case.message in got.err):
        problems["message"] = got.err[:400]
    if got.out:
        problems["stdout"] = got.out[:200]
    if registry_snapshot(home) != before:
        problems["changed"] = True
    fetched = [p for m, p in list(requests) if m == "GET" and "/resolve/" in p]
    bad = [p for p in fetched for f in case.never_downloaded if p.endswith("/" + f)]
    if bad:
        problems["downloaded"] = bad
    return problems


# -- push races ----------------------------------------------------------------------------------------
def cli_env(home: Path, hub_url: str, token: str, cache: Path) -> dict[str, str]:
    env = {**os.environ, "TEAMTR_HOME": str(home), "HF_ENDPOINT": hub_url, "HF_TOKEN": token, "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_CACHE": str(cache), "HF_HUB_DISABLE_TELEMETRY": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return env


def race_pushes(envs: list[dict[str, str]], repo: str, team: str = "tiny-duo") -> list[tuple[int, str, str]]:
    """Start `hub push TEAM REPO --json` in one process per env at once; (exit code, stdout, stderr) each."""
    procs = [subprocess.Popen([sys.executable, "-m", "teamtr_adapters", "hub", "push", team, repo, "--json"],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for env in envs]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        results.append((p.returncode, out, err))
    return results


# -- the campaign's own setup (the pytest tests use the conftest/hub_fixtures fixtures instead) ----------
from benchmarks.chaos import TINY_SPEC, make_tiny_base  # noqa: E402,F401  (used by the hub campaign)


@contextlib.contextmanager
def client_at(url: str, cache: Path, token: str):
    """Point the in-process `huggingface_hub` client (and subprocesses, through the environment) at `url`."""
    from huggingface_hub import constants, hf_api

    values = [("ENDPOINT", url), ("HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"),
              ("HF_HUB_OFFLINE", False), ("HF_HUB_DISABLE_XET", True), ("HF_HUB_CACHE", str(cache)),
              ("HF_HUB_DISABLE_TELEMETRY", True)]
    env = {"HF_ENDPOINT": url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1", "HF_HUB_CACHE": str(cache),
           "HF_TOKEN": token, "TEAMTR_HOME": os.environ.get("TEAMTR_HOME", "")}
    saved = [(n, getattr(constants, n)) for n, _ in values]
    saved_env = {k: os.environ.get(k) for k in env}
    saved_endpoint = hf_api.api.endpoint
    try:
        for n, v in values:
            setattr(constants, n, v)
        hf_api.api.endpoint = url
        os.environ.update(env)
        yield
    finally:
        for n, v in saved:
            setattr(constants, n, v)
        hf_api.api.endpoint = saved_endpoint
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
