"""Several `vllm serve --enable-lora` replicas of one base, kept consistent (DESIGN.md, "Past one machine").

vLLM's own run-time LoRA API is the only mechanism used: `/v1/load_lora_adapter` (with `load_inplace` to
point a served name at new files), `/v1/unload_lora_adapter` and `/v1/models` (each adapter listed with
its `root`, the path it was loaded from). What this module adds on top, for N replicas:

- **All or none.** `load(name, path)` loads on every replica; if one refuses, the replicas already changed
  by this call are put back (a new name unloaded, a moved name pointed at its previous path again) and the
  error is raised: a name never serves two different versions on two replicas.
- **Moving a name.** `load(name, path, move=True)` re-points an existing name (e.g. `math-trio/solver`) at
  another version's files in place. vLLM loads the new weights before it drops the old ones, so clients
  of the name see no gap, and its prefix cache is keyed by (name, path), and every registry version has
  its own path, so no cached block of the old weights is reused for the new ones.
- **Checks.** `check(name, path)`: every replica lists `name` in `/v1/models` with root `path`; and a short
  greedy probe (a few tokens with their log-probs) against the bare base on the same replica: a replica
  whose answer is the base's while the adapter is not a no-op (some `lora_B` non-zero) silently serves the
  base (a known failure of LoRA servers: a skipped load, target modules that match nothing).

The HTTP client is the stdlib's; nothing here imports vLLM.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ..errors import IncompatibleAdapterError, InputError, NotFoundError, TeamTRError

RUNTIME_LORA_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"
PROBE_TEXT = "Problem: What is 17 + 25? Answer with the number."


class ServerError(Exception):
    """A non-2xx answer from a server: its HTTP status and the message it gave."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ReplicaUnreachable(NotFoundError):
    """A server that does not answer at all (refused connection, reset, timeout)."""

    def __init__(self, url: str, reason: Any) -> None:
        super().__init__(f"vLLM server {url} is unreachable ({reason})")
        self.url = url


def call(url: str, route: str, body: dict | None = None, timeout: float = 600.0) -> Any:
    """GET (no body) or POST JSON to one server; a JSON answer (or text), ServerError for a non-2xx status,
    ReplicaUnreachable when the server does not answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + route, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read().decode()
    except urllib.error.HTTPError as e:
        raise ServerError(e.code, error_message(e.read().decode(errors="replace"), e.reason)) from None
    except (urllib.error.URLError, OSError) as e:
        raise ReplicaUnreachable(url, getattr(e, "reason", e)) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def error_message(body: str, reason: Any) -> str:
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


def is_noop_adapter(path: Path) -> bool:
    """Whether an adapter dir's LoRA acts as the bare base: every `lora_B` (or every `lora_A`) is zero, as in
    a freshly initialised version. Its probe cannot tell it from the base, by construction."""
    from safetensors import safe_open

    zero_a = zero_b = True
    with safe_open(str(Path(path) / "adapter_model.safetensors"), framework="pt") as f:
        for key in f.keys():
            if "lora_A" in key or "lora_B" in key:
                nonzero = bool(f.get_tensor(key).count_nonzero())
                if "lora_A" in key:
                    zero_a = zero_a and not nonzero
                else:
                    zero_b = zero_b and not nonzero
    return zero_a or zero_b


class ReplicaSet:
    """N vLLM servers of one base, addressed by URL (see the module docstring)."""

    def __init__(self, urls: list[str], *, timeout: float = 600.0) -> None:
        if not urls or not all(u.startswith(("http://", "https://")) for u in urls):
            raise InputError("vLLM replicas need server URLs: http://HOST:PORT[,...]")
        self.urls = [u.rstrip("/") for u in urls]
        self.timeout = timeout

    def call(self, url: str, route: str, body: dict | None = None) -> Any:
        return call(url, route, body, self.timeout)

    def models(self, url: str) -> list[dict]:
        try:
            return list(self.call(url, "/v1/models")["data"])
        except (ServerError, KeyError, TypeError):
            raise InputError(f"{url} does not answer /v1/models like a vLLM server") from None

    def base_name(self, url: str) -> str:
        return next(m["id"] for m in self.models(url) if not m.get("parent"))

    def served(self, url: str) -> dict[str, str]:
        """The adapters a replica serves: name -> the path it was loaded from."""
        return {m["id"]: str(m.get("root") or "") for m in self.models(url) if m.get("parent")}

    # -- loading ---------------------------------------------------------------------------------
    def _load_one(self, url: str, name: str, path: str, inplace: bool) -> None:
        try:
            self.call(url, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path, "load_inplace": inplace})
        except ServerError as e:
            if e.status == 404 and str(e) == "Not Found":
                raise InputError(f"{url} has no /v1/load_lora_adapter: start it with {RUNTIME_LORA_ENV}=True "
                                 "and --enable-lora (python -m teamtr_adapters.runtime.vllm_server)") from None
            raise IncompatibleAdapterError(f"{url} cannot load adapter {path} as {name}: {e}") from None

    def _unload_one(self, url: str, name: str) -> None:
        try:
            self.call(url, "/v1/unload_lora_adapter", {"lora_name": name})
        except ServerError as e:
            if e.status != 404:
                raise InputError(f"{url} cannot unload {name}: {e}") from None

    def load(self, name: str, path: Path | str, *, move: bool = False, content_id: bool = False) -> list[str]:
        """Serve `path` as `name` on every replica, or on none (see the module docstring). `move`: `name` may
        already serve other files, which it then stops serving (in place). A replica already serving `name`
        from `path` is left alone, and so is one serving it from any path when `content_id` (the name is a
        version's content hash: the same name is the same bytes). Returns the replicas this call changed."""
        path = str(path)
        changed: list[tuple[str, str | None]] = []  # (url, the path `name` had there before, None: absent)
        try:
            for url in self.urls:
                before = self.served(url).get(name)
                if before == path or (content_id and before is not None):
                    continue
                if before is not None and not move:
                    raise IncompatibleAdapterError(f"{url} already serves {name} from {before}, not {path}")
                self._load_one(url, name, path, inplace=before is not None)
                changed.append((url, before))
        except BaseException as e:
            undo_errors = []
            for url, before in reversed(changed):
                try:
                    if before is None:
                        self._unload_one(url, name)
                    else:
                        self._load_one(url, name, before, inplace=True)
                except (TeamTRError, ServerError) as undo:
                    undo_errors.append(f"{url}: {undo}")
            if undo_errors and isinstance(e, TeamTRError):
                raise type(e)(f"{e}; rolling the other replicas back also failed: {'; '.join(undo_errors)}") from None
            raise
        return [u for u, _ in changed]

    def unload(self, name: str) -> None:
        """Stop serving `name` on every replica (no-op where it is not served)."""
        for url in self.urls:
            self._unload_one(url, name)

    # -- checks ----------------------------------------------------------------------------------
    def probe(self, url: str, model: str, prompt: str = PROBE_TEXT, tokens: int = 4) -> tuple[list[int], list[float]]:
        """A greedy completion of `prompt` by `model` on one replica: its token ids and their log-probs."""
        body = {"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0.0, "logprobs": 0,
                "return_token_ids": True, "seed": 0}
        choice = self.call(url, "/v1/completions", body)["choices"][0]
        return list(choice["token_ids"]), [float(x) for x in choice["logprobs"]["token_logprobs"]]

    def check(self, name: str, path: Path | str, *, probe: bool = True, content_id: bool = False) -> None:
        """Raise IncompatibleAdapterError unless every replica lists `name` from `path` (any path when
        `content_id`) and, with `probe`, answers differently from its bare base (skipped for a no-op adapter,
        which is the base by construction)."""
        path = str(path)
        for url in self.urls:
            root = self.served(url).get(name)
            if root is None or (root != path and not content_id):
                raise IncompatibleAdapterError(f"{url} serves {name} from {root or 'nowhere'}, expected {path}")
        if not probe or is_noop_adapter(Path(path)):
            return
        for url in self.urls:
            ids, lps = self.probe(url, name)
            base_ids, base_lps = self.probe(url, self.base_name(url))
            if ids == base_ids and all(abs(a - b) <= 1e-6 for a, b in zip(lps, base_lps)):
                raise IncompatibleAdapterError(
                    f"{url} answers as the bare base when asked for {name} (the same tokens with the same "
                    f"log-probs), although {path} is not a no-op adapter: the replica ignores the adapter")
