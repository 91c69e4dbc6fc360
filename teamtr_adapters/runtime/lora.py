"""Fresh LoRA adapters for a base model, written as plain PEFT adapter dirs."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ..spec import LoraSpec
from .base import BaseRef, load_base_model


def lora_config(lora: LoraSpec, base_name: str):
    from peft import LoraConfig

    return LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=list(lora.target_modules), task_type="CAUSAL_LM",
                      base_model_name_or_path=base_name)


def init_adapters(base: BaseRef, lora: LoraSpec, seeds: dict[str, int], out_root: Path) -> dict[str, Path]:
    """Write one fresh LoRA adapter per name (A seeded, B zero: each starts as the base) under `out_root/<name>/`."""
    import torch
    from peft import get_peft_model

    model, _ = load_base_model(base, dtype="float32")
    cfg = lora_config(lora, base.name)
    peft_model: Any = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft notes that it rewrote base_model_name_or_path; we set it back
        for name, seed in seeds.items():
            torch.manual_seed(seed)
            if peft_model is None:
                peft_model = get_peft_model(model, cfg, adapter_name=name)
            else:
                peft_model.add_adapter(name, cfg)
            peft_model.peft_config[name].base_model_name_or_path = base.name
    out = {}
    for name in seeds:
        target = out_root / name
        peft_model.save_pretrained(str(target), selected_adapters=[name], save_embedding_layers=False)
        nested = target / name  # peft nests every adapter not named `default`
        if nested.is_dir():
            for f in nested.iterdir():
                f.replace(target / f.name)
            nested.rmdir()
        (target / "README.md").unlink(missing_ok=True)
        out[name] = target
    return out
