"""Validation of adapter dirs before they enter the registry: safe files only, a loadable LoRA config,
and weights whose target modules and shapes match the base model. Reads JSON and safetensors headers
only (no torch)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import IncompatibleAdapterError, UnsafeAdapterError
from ..runtime.base import BaseRef, safetensors_header, weight_shapes

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
META = "teamtr.json"
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz"}


def check_adapter_dir(src: Path) -> dict[str, Any]:
    """Refuse symlinks, pickle files and missing/invalid files; return the parsed adapter config."""
    if src.is_symlink():
        raise UnsafeAdapterError(f"{src}: is a symlink; adapter dirs must be plain dirs")
    if not src.is_dir():
        raise UnsafeAdapterError(f"{src}: not a directory")
    for p in src.rglob("*"):
        if p.is_symlink():
            raise UnsafeAdapterError(f"{src}: contains a symlink ({p.relative_to(src)}); refused")
        if p.suffix.lower() in PICKLE_SUFFIXES:
            raise UnsafeAdapterError(f"{src}: contains a pickle file ({p.relative_to(src)}); only safetensors are loaded")
    if not (src / WEIGHTS).is_file():
        raise UnsafeAdapterError(f"{src}: no {WEIGHTS} (only safetensors adapters are accepted)")
    if not (src / CONFIG).is_file():
        raise UnsafeAdapterError(f"{src}: no {CONFIG}")
    try:
        config = json.loads((src / CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UnsafeAdapterError(f"{src / CONFIG}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or str(config.get("peft_type", "")).upper() != "LORA":
        raise IncompatibleAdapterError(f"{src / CONFIG}: not a LoRA adapter config (peft_type must be LORA)")
    if not isinstance(config.get("r"), int) or config["r"] <= 0:
        raise IncompatibleAdapterError(f"{src / CONFIG}: 'r' must be a positive integer")
    safetensors_header(src / WEIGHTS)  # raises on a file that is not safetensors
    return config


def lora_modules(adapter_dir: Path) -> dict[str, dict[str, list[int]]]:
    """Module path (as in the base's state dict) -> {"A": shape, "B": shape} for each LoRA pair."""
    modules: dict[str, dict[str, list[int]]] = {}
    for key, info in safetensors_header(adapter_dir / WEIGHTS).items():
        if key == "__metadata__":
            continue
        for part in ("A", "B"):
            marker = f".lora_{part}."
            if marker in key:
                module = key.split(marker)[0].removeprefix("base_model.model.")
                modules.setdefault(module, {})[part] = info["shape"]
    return modules


def check_compatible(adapter_dir: Path, base: BaseRef) -> None:
    """Refuse an adapter made for another base: recorded identity, module names and shapes must match."""
    meta_path = adapter_dir / META
    if meta_path.is_file():
        try:
            recorded = json.loads(meta_path.read_text()).get("base") or {}
        except json.JSONDecodeError:
            recorded = {}
        if recorded.get("hash") and recorded["hash"] != base.identity["hash"]:
            raise IncompatibleAdapterError(
                f"{adapter_dir}: made for base {recorded.get('name')} ({recorded['hash']}), "
                f"not {base.name} ({base.identity['hash']})")
    modules = lora_modules(adapter_dir)
    if not modules:
        raise IncompatibleAdapterError(f"{adapter_dir}: holds no LoRA weights")
    shapes = weight_shapes(base.path)
    for module, pair in sorted(modules.items()):
        w = shapes.get(module + ".weight")
        if w is None:
            raise IncompatibleAdapterError(
                f"{adapter_dir}: targets module {module!r}, which base {base.name} does not have (an adapter for another base?)")
        a, b = pair.get("A"), pair.get("B")
        if a is None or b is None or len(w) != 2 or a[1] != w[1] or b[0] != w[0]:
            raise IncompatibleAdapterError(
                f"{adapter_dir}: LoRA shapes for {module!r} (A {a}, B {b}) do not fit the base weight {w} "
                f"(an adapter for another base?)")
