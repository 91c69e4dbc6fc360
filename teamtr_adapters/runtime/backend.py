"""The rollout backend interface and the backend factory.

A backend turns token-id prompts into sampled continuations with their behaviour log-probs, under a
chosen adapter version per request (`version=None`: the bare base). Version names are registry version
ids (content hashes), so a name never stands for two sets of weights. The protocol (chat templates, the
router, records) lives above this interface; a backend only sees token ids.

Backends are created by name through `create_backend("hf", base, device=..., dtype=...)`; another
backend registers itself by adding a factory to `BACKENDS` (name -> "module:function", imported lazily).
A backend spec may carry one argument after `=`, e.g. `vllm-server=http://127.0.0.1:8000`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import InputError


@dataclass
class GenRequest:
    """One continuation to sample: the prompt ids, the adapter version (None: bare base), the budget, and
    an optional routing group (a multi-replica backend keeps a group on one replica, for its prefix cache)."""

    prompt_ids: list[int]
    version: str | None
    max_new_tokens: int
    group: int | None = None  # requests of one group (the G samples of a prompt) may share a server replica

    def __post_init__(self) -> None:
        if not self.prompt_ids:  # every backend needs a context to continue
            raise InputError("every generation request needs a non-empty prompt")


@dataclass
class GenResult:
    """The sampled ids (EOS included when produced) and their behaviour log-probs under
    softmax(logits / temperature) of the version that generated them (untruncated by top-p;
    temperature 0: the argmax under softmax(logits))."""

    ids: list[int]
    logprobs: list[float]


@runtime_checkable
class Backend(Protocol):
    tokenizer: Any  # the base model's tokenizer (rollouts encode prompts with it)

    def ensure_adapter(self, version: str, path: Path) -> None:
        """Load an immutable adapter version under its id (idempotent)."""

    def unload_adapter(self, version: str) -> None:
        """Drop a loaded version (no-op if it is not loaded)."""

    def generate(self, requests: list[GenRequest], *, temperature: float, top_p: float,
                 seed: int) -> list[GenResult]:
        """Sample one continuation per request; the same requests and seed give the same results."""


# name -> "module:factory"; a factory is called as factory(base, device=..., dtype=..., arg=...).
BACKENDS: dict[str, str] = {
    "hf": "teamtr_adapters.runtime.team_model:create_hf_backend",
    "vllm": "teamtr_adapters.runtime.vllm_backend:create_vllm_backend",
    "vllm-server": "teamtr_adapters.runtime.vllm_server:create_server_backend",
}


def parse_backend(spec: str) -> tuple[str, str | None]:
    """`NAME` or `NAME=ARG` -> (name, arg); an unknown name is a clear InputError."""
    name, sep, arg = spec.partition("=")
    if name not in BACKENDS:
        raise InputError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    return name, (arg if sep else None)


def create_backend(spec: str, base: Any, *, device: str = "auto", dtype: str = "auto") -> Backend:
    """Create the backend named by `spec` (see `parse_backend`) for a resolved base model."""
    name, arg = parse_backend(spec)
    module, _, func = BACKENDS[name].partition(":")
    factory = getattr(importlib.import_module(module), func)
    return factory(base, device=device, dtype=dtype, arg=arg)
