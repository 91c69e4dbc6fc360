"""Registry behaviour: versions, names, aliases, manifests, integrity, import checks, gc."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from teamtr_adapters.errors import (IncompatibleAdapterError, IntegrityError, InvalidNameError, NotFoundError,
                                    UnsafeAdapterError)
from teamtr_adapters.registry import Registry


def snapshot(home: Path) -> dict[str, bytes]:
    """Every file under the registry home (locks excluded), to prove that refused input changed nothing."""
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*"))
            if p.is_file() and "locks" not in p.parts}


def test_init_team_versions_load_with_plain_peft(tiny_team, tiny_base):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    reg = tiny_team
    manifest = reg.manifest("tiny-duo")
    assert list(manifest["roles"]) == ["solver", "critic"]
    assert manifest["base"] == tiny_base.identity
    for role, pin in manifest["roles"].items():
        info = reg.version(pin["id"])
        assert (info.name, info.lineage) == ("v1", f"tiny-duo.{role}")
        assert sorted(os.listdir(info.path)) == ["adapter_config.json", "adapter_model.safetensors", "teamtr.json"]
        assert info.meta["base"] == tiny_base.identity and info.meta["made_by"] == "init"
        assert info.meta["parent"] is None
        base = AutoModelForCausalLM.from_pretrained(tiny_base.path, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, str(info.path))
        assert model.peft_config["default"].r == 4
    assert reg.verify()["ok"]
    assert [e["event"] for e in reg.history("tiny-duo")] == ["init"]


def test_resolve_names_aliases_and_ids(tiny_team, tmp_path):
    reg = tiny_team
    v1 = reg.resolve("tiny-duo.solver:v1")
    exported = reg.export("tiny-duo.solver:v1", tmp_path / "out")
    assert reg.resolve(v1.id[:10]).id == v1.id
    assert reg.resolve("latest", "tiny-duo.solver").id == v1.id
    reg.set_alias("tiny-duo.solver", "best", "v1")
    assert reg.resolve("tiny-duo.solver:best").id == v1.id
    # identical bytes are stored once and keep their name
    assert reg.add_version("tiny-duo.solver", exported, made_by="import", base={}).name == "v1"
    with pytest.raises(NotFoundError, match="has no version or alias 'v9'"):
        reg.resolve("tiny-duo.solver:v9")
    with pytest.raises(NotFoundError, match="no lineage"):
        reg.resolve("nope.solver:v1")
    with pytest.raises(InvalidNameError):
        reg.set_alias("tiny-duo.solver", "v7", "v1")


def test_update_pins_moves_manifest_and_logs_history(tiny_team, tmp_path):
    reg = tiny_team
    other = reg.resolve("tiny-duo.critic:v1")
    before = reg.pins("tiny-duo")
    reg.update_pins("tiny-duo", {"solver": other.id}, {"event": "swap"})
    assert reg.pins("tiny-duo")["solver"] == other.id
    assert reg.manifest("tiny-duo")["revision"] == 2
    last = reg.history("tiny-duo")[-1]
    assert last["pins_before"] == before and last["pins_after"]["solver"] == other.id
    with pytest.raises(NotFoundError, match="no role 'judge'"):
        reg.update_pins("tiny-duo", {"judge": other.id}, {"event": "swap"})


def test_flipped_byte_is_reported_and_refused_at_load(tiny_team):
    reg = tiny_team
    info = reg.resolve("tiny-duo.solver:v1")
    weights = info.path / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    report = reg.verify()
    assert not report["ok"]
    assert any("adapter_model.safetensors does not match" in p for p in report["problems"])
    with pytest.raises(IntegrityError, match="refusing to load"):
        reg.version_path(info.id)


def test_import_refuses_unsafe_or_foreign_adapters(tiny_team, tiny_base, tmp_path):
    reg = tiny_team
    good = reg.export("tiny-duo.solver:v1", tmp_path / "good")
    before = snapshot(reg.home)

    pickled = reg.export("tiny-duo.solver:v1", tmp_path / "pickled")
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(UnsafeAdapterError, match="pickle"):
        reg.import_adapter(pickled, "mine", tiny_base)

    linked = reg.export("tiny-duo.solver:v1", tmp_path / "linked")
    (linked / "extra.json").symlink_to("/etc/passwd")
    with pytest.raises(UnsafeAdapterError, match="symlink"):
        reg.import_adapter(linked, "mine", tiny_base)

    foreign = reg.export("tiny-duo.solver:v1", tmp_path / "foreign")
    meta = json.loads((foreign / "teamtr.json").read_text())
    meta["base"] = {"name": "other-model", "hash": "0" * 16}
    (foreign / "teamtr.json").write_text(json.dumps(meta))
    with pytest.raises(IncompatibleAdapterError, match="made for base other-model"):
        reg.import_adapter(foreign, "mine", tiny_base)

    with pytest.raises(InvalidNameError):
        reg.import_adapter(good, "../escape", tiny_base)
    with pytest.raises(InvalidNameError):
        reg.import_adapter(good, "a/b", tiny_base)
    assert snapshot(reg.home) == before
    assert reg.import_adapter(good, "mine", tiny_base).name == "v1"


def test_import_refuses_adapter_whose_shapes_do_not_fit(tiny_team, embedded_base, tmp_path):
    """A LoRA for the tiny base (hidden 64) does not fit SmolLM2 (hidden 576): refused by shape."""
    reg = tiny_team
    src = reg.export("tiny-duo.solver:v1", tmp_path / "tiny")
    (src / "teamtr.json").unlink()
    before = snapshot(reg.home)
    with pytest.raises(IncompatibleAdapterError, match="do not fit the base weight"):
        reg.import_adapter(src, "mine", embedded_base)
    assert snapshot(reg.home) == before


def test_gc_is_dry_run_first_and_keeps_pinned(tiny_team, tiny_base, tmp_path):
    reg = tiny_team
    src = reg.export("tiny-duo.solver:v1", tmp_path / "x")
    from safetensors.numpy import load_file, save_file

    w = load_file(src / "adapter_model.safetensors")
    save_file({k: v + 1.0 for k, v in w.items()}, str(src / "adapter_model.safetensors"))
    (src / "teamtr.json").unlink()
    loose = reg.import_adapter(src, "loose", tiny_base)
    dry = reg.gc()
    assert dry["dry_run"] and dry["remove"] == [loose.id]
    assert loose.path.is_dir()
    done = reg.gc(dry_run=False)
    assert done["remove"] == [loose.id] and not loose.path.exists()
    assert reg.verify()["ok"]
    assert set(reg.pins("tiny-duo").values()) <= {v.id for v in reg.list_versions()}
    with pytest.raises(NotFoundError):
        reg.resolve("loose:v1")
