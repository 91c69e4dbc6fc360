"""Adapters to put through the swap gate in tests: perturbed copies of a stored version, a copy with the
same weights but another id, a pickle-only dir, and an adapter for another base."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

WEIGHTS, CONFIG = "adapter_model.safetensors", "adapter_config.json"


def copy_adapter(src: Path, out: Path) -> Path:
    """A plain PEFT adapter dir (weights + config) copied from a version dir."""
    out.mkdir(parents=True)
    for f in (WEIGHTS, CONFIG):
        shutil.copyfile(src / f, out / f)
    return out


def perturbed(src: Path, out: Path, scale: float, seed: int = 0) -> Path:
    """A copy of `src` with N(0, scale^2) noise added to every LoRA matrix (B starts at zero, so this
    moves the adapter away from the base by an amount set by `scale`)."""
    import torch
    from safetensors.torch import load_file, save_file

    copy_adapter(src, out)
    gen = torch.Generator().manual_seed(seed)
    state = load_file(str(src / WEIGHTS))
    noisy = {k: (v.float() + scale * torch.randn(v.shape, generator=gen)).to(v.dtype) for k, v in state.items()}
    save_file(noisy, str(out / WEIGHTS), metadata={"format": "pt"})
    return out


def same_weights_new_id(src: Path, out: Path) -> Path:
    """The same weights under another content id (a config flag that does not change the function)."""
    copy_adapter(src, out)
    cfg = json.loads((out / CONFIG).read_text())
    cfg["inference_mode"] = not cfg.get("inference_mode", True)
    (out / CONFIG).write_text(json.dumps(cfg))
    return out


def pickle_only(out: Path) -> Path:
    """A dir holding only a pickled state dict and a config, as old PEFT versions wrote them."""
    out.mkdir(parents=True)
    (out / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    (out / CONFIG).write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                          "target_modules": ["q_proj"]}))
    return out


def other_base_adapter(src: Path, out: Path) -> Path:
    """An adapter whose LoRA shapes fit a base with a different hidden size (rank 4, hidden 32)."""
    import torch
    from safetensors.torch import load_file, save_file

    copy_adapter(src, out)
    state = load_file(str(src / WEIGHTS))
    other = {k: torch.zeros([v.shape[0], 32] if ".lora_A." in k else [32, v.shape[1]]) for k, v in state.items()}
    save_file(other, str(out / WEIGHTS), metadata={"format": "pt"})
    return out
