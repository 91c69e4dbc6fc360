"""`train --backend vllm` and `swap --gate --backend vllm` with the real vLLM engine on the tiny random
model: rollouts through the engine, committed versions loaded into it and replaced ones unloaded, the
engine-vs-trainer log-prob gap in the records and the summary, the gate's decision equal to hf's.

The engine tests run in the vLLM environment only: `make vllm-env`, then
`.venv-vllm/bin/python -m pytest tests/test_vllm_train.py` (docs/vllm.md). The TIS arithmetic and the
argument-error tests run in both environments."""
from __future__ import annotations

import importlib.util
import json
import math
import shutil

import pytest
import torch

from conftest import TINY_SPEC
from gate_helpers import same_weights_new_id

needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                reason="needs the vLLM environment: make vllm-env, then "
                                       ".venv-vllm/bin/python -m pytest tests/test_vllm_*.py")
GAP_TOL = 1e-3  # float32 on both sides: engine and trainer log-probs of the same tokens agree closely
TINY = dict(device="cpu", dtype="float32")


def even_first_token(episode) -> float:
    """A synthetic reward with spread for the random tiny model: the final message starts with an even id."""
    return float(episode.turns[-1].message_ids[0] % 2 == 0)


@pytest.fixture(scope="module")
def vllm_base_dir(tmp_path_factory, tiny_base_dir):
    """The tiny random Llama with its 64 hidden units regrouped as 2 query heads (1 KV head) of 32: the same
    weight shapes, but a head size vLLM's CPU attention has kernels for (it has none for 16)."""
    out = tmp_path_factory.mktemp("tiny-llama-vllm") / "base"
    shutil.copytree(tiny_base_dir, out)
    config = json.loads((out / "config.json").read_text())
    config.update(num_attention_heads=2, num_key_value_heads=1, head_dim=32)
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture
def team(home, vllm_base_dir):
    """A registry at `home` holding team `tiny-duo` (solver, critic; fresh v1 each) on that base."""
    from teamtr_adapters.registry import Registry
    from teamtr_adapters.runtime.base import resolve_base
    from teamtr_adapters.spec import parse_spec

    reg = Registry()
    reg.init_team(parse_spec(TINY_SPEC.format(base=vllm_base_dir)), resolve_base(str(vllm_base_dir)))
    return reg


def _gap_ok(gap: dict) -> bool:
    return (gap["tokens"] > 0 and all(math.isfinite(gap[k]) for k in ("mean", "mean_abs", "max_abs", "kl_k3"))
            and gap["max_abs"] < GAP_TOL and gap["kl_k3"] >= 0)


def test_tis_weights_scale_each_tokens_surrogate_term():
    """min(pi_trainer / pi_engine, cap) per masked token, 1 off the mask; at ratio 1 the loss is the
    weighted mean of the advantages."""
    from teamtr_adapters.train.losses import LossConfig, update_loss
    from teamtr_adapters.train.policy import tis_tensor

    trainer = torch.tensor([[0.0, -1.0, -2.0], [-0.4, -0.5, -0.1]])
    mask = torch.tensor([[False, True, True], [True, True, True]])
    engine = [[-1.5, -2.0], [-0.2, -0.5, -3.0]]
    w = tis_tensor(engine, trainer, mask, cap=2.0)
    expected = torch.tensor([[1.0, math.exp(0.5), 1.0], [math.exp(-0.2), 1.0, 2.0]])
    assert torch.allclose(w, expected)
    logits = torch.randn(2, 3, 11)
    ref = torch.log_softmax(logits, dim=-1)
    targets = torch.zeros(2, 3, dtype=torch.long)
    adv = torch.tensor([1.0, -2.0])
    loss, _, _ = update_loss(logits, targets, ref, adv, mask, LossConfig(clip_eps=0.2), beta=0.0, tis=w)
    weighted = float((w * mask * adv[:, None]).sum() / mask.sum())
    assert float(loss) == pytest.approx(-weighted, abs=1e-6)
    plain, _, _ = update_loss(logits, targets, ref, adv, mask, LossConfig(clip_eps=0.2), beta=0.0)
    assert float(plain) == pytest.approx(-float((mask * adv[:, None]).sum() / mask.sum()), abs=1e-6)


def test_backend_argument_errors(tiny_team, cli, tmp_path):
    code, _, err = cli("train", "--team", "tiny-duo", "--stages", "1", "--backend", "bogus")
    assert code == 2 and "unknown backend 'bogus'" in err and "Traceback" not in err
    code, _, err = cli("swap", "solver", "v1", "--team", "tiny-duo", "--backend", "vllm")
    assert code == 2 and "--backend applies to the gate; add --gate" in err


@pytest.mark.vllm
@needs_vllm
def test_train_through_vllm_commits_versions_and_keeps_the_engine_on_the_pins(team):
    """One TeamTR stage with rollouts through vLLM: new versions are committed, the engine holds exactly
    the new pins (the replaced v1s unloaded) and plays them, each update logs a small finite gap."""
    from teamtr_adapters.train.diagnostics import read_records
    from teamtr_adapters.train.stage import TrainConfig, Trainer, run_stages

    cfg = TrainConfig(steps=2, group_size=4, prompts=2, max_new_tokens=4, lr=1e-2, delta=0.05, tis_cap=2.0)
    with Trainer(team, "tiny-duo", cfg, reward_fn=even_first_token, backend="vllm", **TINY) as t:
        before = dict(t.pins)
        assert t.engine is not t.tm and t.engine.engine_versions() == sorted(set(before.values()))
        result = run_stages(t, 1)
        after = dict(t.pins)
        replaced = {v for r, v in before.items() if after[r] != v}
        assert replaced and after == team.pins("tiny-duo")
        assert t.engine.engine_versions() == sorted(set(after.values()))
        assert not replaced & set(t.engine.engine_versions())
        played = t.rollout(t.task.sample(2, seed=1), seed=1, observe=False)
        assert {turn.version for e in played.episodes for turn in e.turns} == set(after.values())
    assert t.engine.llm is None  # closed
    committed = [r for r in result.records if r.version]
    assert {r.version for r in committed} == set(after.values()) - set(before.values())
    for rec in result.records:
        assert _gap_ok(rec.logprob_gap), rec.logprob_gap
    logged = read_records(result.run_dir / "updates.jsonl")
    assert [r.logprob_gap for r in logged] == [r.logprob_gap for r in result.records]
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["backend"] == "vllm" and _gap_ok(summary["logprob_gap"])
    assert summary["logprob_gap"]["tokens"] == sum(r.logprob_gap["tokens"] for r in result.records)


@pytest.mark.vllm
@needs_vllm
def test_train_cli_with_backend_vllm_reports_the_gap(team, cli):
    code, out, err = cli("train", "--team", "tiny-duo", "--stages", "1", "--steps", "1", "-G", "2", "-P", "2",
                         "--max-new-tokens", "3", "--backend", "vllm", "--device", "cpu", "--dtype", "float32",
                         "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["backend"] == "vllm" and d["updates"] == 2 and _gap_ok(d["logprob_gap"])
    lines = [json.loads(x) for x in (team.home / "runs" / d["run"] / "updates.jsonl").read_text().splitlines()]
    assert [x["role"] for x in lines] == ["critic", "solver"] and all(_gap_ok(x["logprob_gap"]) for x in lines)


@pytest.mark.vllm
@needs_vllm
def test_gate_through_vllm_accepts_identical_weights_like_hf(team, cli, tmp_path):
    v1 = team.version_path(team.pins("tiny-duo")["solver"])
    twin = same_weights_new_id(v1, tmp_path / "twin")
    reports = {}
    for backend in ("vllm", "hf"):
        code, out, err = cli("swap", "solver", str(twin), "--gate", "--n", "8", "--looks", "1", "--epsilon", "0.5",
                             "--dry-run", "--backend", backend,
                             "--device", "cpu", "--dtype", "float32", "--json")
        assert code == 0, err
        reports[backend] = json.loads(out)["report"]
    vllm, hf = reports["vllm"], reports["hf"]
    assert vllm["backend"] == "vllm" and hf["backend"] == "hf"
    assert vllm["candidate"]["id"] != vllm["incumbent"]["id"]
    for rep in (vllm, hf):
        assert rep["d_tok"] == 0.0 and rep["kl_states"] > 0 and rep["contexts"] == 8
        assert rep["accepted"] and rep["decision"] == "accepted" and rep["reasons"] == []



@pytest.mark.vllm
@needs_vllm
def test_train_and_gate_through_a_vllm_server(team, cli, vllm_base_dir, tmp_path):
    """The same through `vllm-server=URL` (a real server on loopback): after a stage the server lists
    exactly the new pins, and the gate accepts identical weights with D_tok 0."""
    from teamtr_adapters.runtime.backend import create_backend
    from teamtr_adapters.runtime.base import resolve_base
    from teamtr_adapters.runtime.vllm_server import local_server
    from teamtr_adapters.train.stage import TrainConfig, Trainer, run_stages

    cfg = TrainConfig(steps=2, group_size=4, prompts=2, max_new_tokens=4, lr=1e-2, delta=0.05)
    with local_server(vllm_base_dir, log=tmp_path / "server.log", dtype="float32", max_loras=4) as url:
        before = team.pins("tiny-duo")
        with Trainer(team, "tiny-duo", cfg, reward_fn=even_first_token, backend=f"vllm-server={url}", **TINY) as t:
            result = run_stages(t, 1)
        after = team.pins("tiny-duo")
        assert after != before and any(r.version for r in result.records)
        assert all(_gap_ok(r.logprob_gap) for r in result.records)
        server = create_backend(f"vllm-server={url}", resolve_base(str(vllm_base_dir)))
        assert server.engine_versions() == sorted(set(after.values()))
        twin = same_weights_new_id(team.version_path(after["solver"]), tmp_path / "twin")
        code, out, err = cli("swap", "solver", str(twin), "--gate", "--n", "8", "--looks", "1", "--epsilon", "0.5",
                             "--backend", f"vllm-server={url}",
                             "--device", "cpu", "--dtype", "float32", "--json")
    assert code == 0, err
    rep = json.loads(out)["report"]
    assert rep["backend"] == f"vllm-server={url}" and rep["d_tok"] == 0.0 and rep["contexts"] == 8
    assert rep["accepted"] and team.pins("tiny-duo")["solver"] == rep["candidate"]["id"]
