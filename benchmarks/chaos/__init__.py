"""The crash-and-abuse campaign (issue 13) at full size: `python -m benchmarks.chaos [--quick] [--only AREA]`.

Each area module (`cli`, `registry`, `hub`) exposes `campaign(full: bool, workdir: Path) -> list[Row]`; the small
versions of the same checks run in CI under tests/chaos/.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Row:
    """One line of the campaign table."""

    area: str
    check: str
    trials: int
    failures: int          # trials whose outcome was wrong (lost write, corrupt registry, wrong exit code, ...)
    tracebacks: int        # trials that printed a Python traceback
    changed_after_refusal: int = 0   # refused inputs after which the registry was not byte-identical
    seconds: float = 0.0
    note: str = ""


# The tiny two-role team the campaigns and the tests share (tests/conftest.py builds the same one as fixtures).
TINY_SPEC = """
name = "tiny-duo"
base = "{base}"
[task]
name = "arithmetic"
[lora]
rank = 4
alpha = 8
target_modules = ["q_proj", "v_proj"]
[trust_region]
group_size = 2
prompts_per_update = 2
[[roles]]
name = "solver"
system_prompt = "Solve the problem."
max_new_tokens = 6
[[roles]]
name = "critic"
system_prompt = "Check the answer."
max_new_tokens = 6
"""


def make_tiny_base(out: Path) -> Path:
    """A tiny random Llama (2 layers, hidden 64) saved as a safetensors dir with the embedded model's tokenizer;
    kept when `out` already holds one."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from teamtr_adapters.runtime.base import resolve_base

    if (out / "config.json").is_file():
        return out
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(out)
    for f in resolve_base("embedded").path.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, out / f.name)
    (out / "teamtr_base.json").write_text(json.dumps({"name": "tiny-llama"}))
    return out
