"""The real embedded SmolLM2 through the paths users get: base resolution, team init, plain peft load."""
from __future__ import annotations

import pytest

from teamtr_adapters.registry import Registry
from teamtr_adapters.runtime.base import EMBEDDED_NAME
from teamtr_adapters.spec import load_spec

pytestmark = pytest.mark.integration


def test_embedded_math_trio_versions_load_with_plain_peft(home, embedded_base, cli):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert embedded_base.identity["name"] == EMBEDDED_NAME
    assert (embedded_base.path / "model.safetensors").is_file()
    code, _, err = cli("team", "init", "math-trio")
    assert code == 0, err
    reg = Registry()
    manifest = reg.manifest("math-trio")
    assert list(manifest["roles"]) == ["solver", "critic", "refiner"]
    assert manifest["base"] == embedded_base.identity
    base = AutoModelForCausalLM.from_pretrained(embedded_base.path, dtype=torch.float32)
    ids = torch.tensor([[1, 2, 3, 4]])
    reference = base(ids).logits
    for role, pin in manifest["roles"].items():
        info = reg.version(pin["id"])
        assert info.meta["base"] == embedded_base.identity
        assert info.meta["made_by"] == "init" and info.lineage == f"math-trio.{role}"
        model = PeftModel.from_pretrained(base, str(info.path), adapter_name=role)
        assert model.peft_config[role].target_modules == {"q_proj", "k_proj", "v_proj", "o_proj"}
        # a fresh LoRA starts with B = 0, so the team starts exactly as the base model
        assert torch.allclose(model(ids).logits, reference, atol=1e-5)
        base = model.unload()
