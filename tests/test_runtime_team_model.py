"""TeamModel on a tiny random Llama: per-row adapters, log-probs, exact token KL, sampling records.

Tolerances: the model runs in float32; a row's log-probs may differ between two batch layouts only by
float32 rounding (padding width, batch size, merged vs un-merged LoRA), so they are compared at 1e-4.
"""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from teamtr_adapters.errors import IncompatibleAdapterError, InputError
from teamtr_adapters.runtime.backend import Backend, GenRequest, create_backend
from teamtr_adapters.runtime.team_model import TeamModel

TOL = 1e-4
A, B = "aa" * 32, "bb" * 32  # the version ids of conftest's `tm` adapters


def _seqs(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, 40000, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g).tolist()
               for _ in range(n)]
    comps = [torch.randint(3, 40000, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
             for _ in range(n)]
    return prompts, comps


def test_is_a_backend_and_created_by_name(tiny_base):
    backend = create_backend("hf", tiny_base, device="cpu", dtype="float32")
    assert isinstance(backend, TeamModel) and isinstance(backend, Backend)
    with pytest.raises(InputError, match="unknown backend 'nope'"):
        create_backend("nope", tiny_base)


def test_mixed_adapter_logprobs_equal_each_adapter_alone(tm):
    prompts, comps = _seqs(9)
    versions = [A, B, None] * 3
    mixed = tm.logprobs(prompts, comps, versions, batch_size=9)
    for v in (A, B, None):
        rows = [i for i, x in enumerate(versions) if x == v]
        alone = tm.logprobs([prompts[i] for i in rows], [comps[i] for i in rows], v)
        for i, lp in zip(rows, alone):
            assert lp.shape == (len(comps[i]),)
            torch.testing.assert_close(mixed[i], lp, atol=TOL, rtol=0)
    # the versions really differ, so the comparison above means something
    a, b, base = (tm.logprobs(prompts[:1], comps[:1], v)[0] for v in (A, B, None))
    assert (a - b).abs().max() > 1e-2 and (a - base).abs().max() > 1e-2


def test_token_kl_is_zero_to_itself_and_positive_between_versions(tm):
    prompts, comps = _seqs(5, seed=1)
    for v in (A, B, None):
        assert all(torch.equal(kl, torch.zeros(len(c))) for kl, c in zip(tm.token_kl(v, v, prompts, comps), comps))
    ab = tm.token_kl(A, B, prompts, comps)
    assert all(kl.shape == (len(c),) and bool((kl > 1e-4).all()) for kl, c in zip(ab, comps))
    assert all(bool((kl > 1e-4).all()) for kl in tm.token_kl(None, A, prompts, comps))
    # exact full-vocabulary KL(p || q) from the two versions' logits, computed separately
    lp_a = torch.log_softmax(tm.completion_logits(prompts, comps, A)[0], -1)
    lp_b = torch.log_softmax(tm.completion_logits(prompts, comps, B)[0], -1)
    full = (lp_a.exp() * (lp_a - lp_b)).sum(-1)
    for i, c in enumerate(comps):
        torch.testing.assert_close(ab[i], full[i, full.shape[1] - len(c):], atol=TOL, rtol=0)


def test_behaviour_logprobs_match_rescoring(tm):
    prompts, _ = _seqs(6, seed=2)
    for versions in ([A] * 6, [A, B, None] * 2):  # merged single-version path and per-row path
        reqs = [GenRequest(p, v, 6) for p, v in zip(prompts, versions)]
        res = tm.generate(reqs, temperature=0.7, top_p=1.0, seed=5)
        again = tm.logprobs(prompts, [r.ids for r in res], versions, temperature=0.7)
        for r, lp in zip(res, again):
            assert len(r.ids) == len(r.logprobs) == 6
            torch.testing.assert_close(torch.tensor(r.logprobs), lp, atol=TOL, rtol=0)


def test_mixed_generation_equals_each_adapter_alone(tm):
    prompts, _ = _seqs(6, seed=3)
    versions = [A, B, None] * 2
    mixed = tm.generate([GenRequest(p, v, 5) for p, v in zip(prompts, versions)], temperature=0, seed=0)
    for v in (A, B, None):
        rows = [i for i, x in enumerate(versions) if x == v]
        alone = tm.generate([GenRequest(prompts[i], v, 5) for i in rows], temperature=0, seed=0)
        for i, r in zip(rows, alone):
            assert mixed[i].ids == r.ids
            torch.testing.assert_close(torch.tensor(mixed[i].logprobs), torch.tensor(r.logprobs), atol=TOL, rtol=0)


def test_generation_is_reproducible_and_seeded(tm):
    prompts, _ = _seqs(4, seed=4)
    reqs = [GenRequest(p, A, 6) for p in prompts]
    one = tm.generate(reqs, temperature=1.0, seed=11)
    assert one == tm.generate(reqs, temperature=1.0, seed=11)
    assert one != tm.generate(reqs, temperature=1.0, seed=12)


def test_merged_generation_restores_base_weights_bitwise(tm):
    before = {k: v.clone() for k, v in tm.model.state_dict().items() if "lora_" not in k}
    tm.generate([GenRequest([5, 6, 7], B, 4)] * 3, temperature=1.0, seed=0)
    after = tm.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_stops_at_eos_and_respects_each_budget(tm):
    prompts, _ = _seqs(3, seed=5)
    first = tm.generate([GenRequest(prompts[0], A, 1)], temperature=0, seed=0)[0].ids[0]
    saved = tm.eos_ids
    try:
        tm.eos_ids = torch.tensor([first])  # the token row 0 emits first ends its message
        res = tm.generate([GenRequest(prompts[0], A, 8), GenRequest(prompts[1], A, 3), GenRequest(prompts[2], A, 7)],
                          temperature=0, seed=0)
    finally:
        tm.eos_ids = saved
    assert res[0].ids == [first]
    assert len(res[1].ids) <= 3 and len(res[2].ids) <= 7
    assert all(len(r.ids) == len(r.logprobs) for r in res)


def test_top_p_truncates_sampling_but_records_untruncated_logprobs(tm):
    prompts, _ = _seqs(4, seed=6)
    greedy = tm.generate([GenRequest(p, B, 4) for p in prompts], temperature=0, seed=0)
    tiny_p = tm.generate([GenRequest(p, B, 4) for p in prompts], temperature=0.7, top_p=1e-6, seed=0)
    assert [r.ids for r in tiny_p] == [r.ids for r in greedy]
    tempered = tm.logprobs(prompts, [r.ids for r in tiny_p], B, temperature=0.7)
    for r, lp in zip(tiny_p, tempered):
        torch.testing.assert_close(torch.tensor(r.logprobs), lp, atol=TOL, rtol=0)
        assert all(x < 0 for x in r.logprobs)  # not the truncated distribution's log(1) = 0


def test_adapter_bookkeeping_and_errors(tiny_base, adapter_dirs, tmp_path):
    model = TeamModel(tiny_base, device="cpu", dtype="float32")
    model.ensure_adapter(A, adapter_dirs["a"])
    model.ensure_adapter(A, adapter_dirs["a"])  # idempotent
    model.ensure_adapter(B, adapter_dirs["b"])
    assert model.versions == [A, B] and model.adapter_name(A) == "v_" + A[:16]
    with warnings.catch_warnings(record=True) as caught:  # peft warns when the active adapter goes: not ours
        warnings.simplefilter("always")
        model.unload_adapter(A)
    assert [str(w.message) for w in caught] == []
    model.unload_adapter(A)  # no-op
    assert model.versions == [B]
    with pytest.raises(InputError, match="is not loaded"):
        model.logprobs([[1, 2]], [[3]], A)
    bad = tmp_path / "bad"
    bad.mkdir()
    cfg = json.loads((adapter_dirs["a"] / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps({**cfg, "r": 4}))  # weights are rank 8
    (bad / "adapter_model.safetensors").write_bytes((adapter_dirs["a"] / "adapter_model.safetensors").read_bytes())
    with pytest.raises(IncompatibleAdapterError, match="does not load on base"):
        model.ensure_adapter("cc" * 32, bad)
    assert model.versions == [B]


def test_calls_never_change_requires_grad(tm):
    """peft's set_adapter/disable_adapter flip requires_grad; TeamModel must not (a trainer's trainable
    adapter keeps its flags through rollouts and scoring)."""
    trainable = {n for n, p in tm.peft.named_parameters() if f".{tm.adapter_name(A)}." in n}
    for n, p in tm.peft.named_parameters():
        p.requires_grad_(n in trainable)
    try:
        prompts, comps = _seqs(3, seed=7)
        for versions in ([B] * 3, [None] * 3, [A, B, None]):
            tm.generate([GenRequest(p, v, 2) for p, v in zip(prompts, versions)], temperature=1.0, seed=0)
        tm.logprobs(prompts, comps, [A, B, None])
        tm.token_kl(B, None, prompts, comps)
        assert {n for n, p in tm.peft.named_parameters() if p.requires_grad} == trainable
    finally:
        tm.peft.requires_grad_(False)
