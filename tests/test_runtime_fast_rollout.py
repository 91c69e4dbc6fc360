"""The fast rollout path (TeamModel.fast) against the reference path on the tiny random Llama.

Exactness: the model runs in float32. The fast path prefills identical requests once (a different batch
layout and padding width) and keeps the KV cache in preallocated buffers, so its logits equal the reference
path's up to float32 rounding: log-probs are compared at 1e-4 (as in test_runtime_team_model.py); the
sampler's own log-prob, z[tok] - logsumexp(z), equals log_softmax(z)[tok] at 1e-5 on the same logits.
Distribution: chi-square goodness-of-fit tests with fixed seeds against the exact softmax(logits / T),
at a 1e-3 level (deterministic: fixed seeds, so these tests either always pass or always fail).
"""
from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from scipy.stats import chisquare

from teamtr_adapters.runtime import team_model
from teamtr_adapters.runtime.backend import GenRequest, create_backend
from teamtr_adapters.runtime.team_model import TeamModel, _pick, _pick_fast

TOL = 1e-4
A, B = "aa" * 32, "bb" * 32  # the version ids of conftest's `tm` adapters
ALPHA = 1e-3


def _prompts(n: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 40000, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


def _binned_chisquare(counts: torch.Tensor, probs: torch.Tensor, n: int, min_expected: float = 20.0) -> float:
    """p-value of a chi-square test of `counts` against `probs`, tokens with a small expected count pooled."""
    probs = probs.double() / probs.double().sum()
    big = probs * n >= min_expected
    obs = torch.cat([counts[big], counts[~big].sum()[None]]).double()
    exp = torch.cat([probs[big], probs[~big].sum()[None]]) * n
    if exp[-1] < 5:  # too little mass left to test on its own: fold it into the largest bin
        obs, exp = obs[:-1].clone(), exp[:-1].clone()
        obs[exp.argmax()] += counts[~big].sum()
        exp[exp.argmax()] += probs[~big].sum() * n
    exp = exp * obs.sum() / exp.sum()
    return float(chisquare(obs.numpy(), exp.numpy()).pvalue)


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.6, 1.0), (0.8, 0.7)])
def test_sampler_distribution_matches_softmax(temperature, top_p):
    logits = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0, -8.0, 0.7, 1.2, -0.2])
    n = 40000
    gen = torch.Generator().manual_seed(0)
    tok, lp = _pick_fast(logits.expand(n, -1).clone(), temperature, top_p, gen)
    probs = torch.softmax(logits / temperature, -1)
    if top_p < 1.0:  # the smallest prefix of the sorted distribution reaching top_p, renormalised
        sp, order = probs.sort(descending=True)
        keep = torch.zeros_like(probs, dtype=torch.bool)
        keep[order[(sp.cumsum(-1) - sp) < top_p]] = True
        assert set(tok.tolist()) <= set(keep.nonzero().flatten().tolist())
        probs = torch.where(keep, probs, 0.0) / probs[keep].sum()
    counts = torch.bincount(tok, minlength=logits.numel()).double()
    assert _binned_chisquare(counts, probs, n) > ALPHA
    # the recorded log-prob is the untruncated tempered one, as the reference sampler records it
    torch.testing.assert_close(lp, torch.log_softmax(logits / temperature, -1)[tok], atol=1e-5, rtol=0)


def test_sampler_rejects_a_wrong_distribution():
    """The test above has power: samples at temperature 1 fail against the temperature-0.6 distribution."""
    logits = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0])
    n = 40000
    tok, _ = _pick_fast(logits.expand(n, -1).clone(), 1.0, 1.0, torch.Generator().manual_seed(0))
    counts = torch.bincount(tok, minlength=logits.numel()).double()
    assert _binned_chisquare(counts, torch.softmax(logits / 0.6, -1), n) < 1e-6


def test_sampler_logprobs_on_full_vocabulary_logits():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(16, 49152, generator=g) * 4
    logits[0, 5] = 60.0  # a near-certain token
    logits[1] = -1e4  # a flat row far from zero
    for temperature in (0.0, 0.8, 1.3):
        tok, lp = _pick_fast(logits, temperature, 1.0, torch.Generator().manual_seed(2))
        # against float64 (the flat row at -1e4 / T is where float32's log_softmax itself is off by 6e-5)
        ref = torch.log_softmax(logits.double() / (temperature or 1.0), -1).gather(-1, tok[:, None])[:, 0]
        torch.testing.assert_close(lp.double(), ref, atol=1e-5, rtol=0)
        if temperature == 0:
            assert torch.equal(tok, logits.argmax(-1))
        # the reference sampler's log-prob of the token it drew is computed the same way
        rtok, rlp = _pick(logits, temperature, 1.0, torch.Generator().manual_seed(2))
        torch.testing.assert_close(rlp, torch.log_softmax(logits / (temperature or 1.0), -1)
                                   .gather(-1, rtok[:, None])[:, 0], atol=1e-5, rtol=0)


def _both(tm, requests, **kw):
    tm.fast = False
    try:
        ref = tm.generate(requests, **kw)
    finally:
        tm.fast = True
    return tm.generate(requests, **kw), ref


@pytest.mark.parametrize("merge", [True, False])
def test_fast_path_equals_reference_path_greedy(tm, merge):
    """Greedy decoding: same tokens and log-probs (1e-4) on mixed, single-version and base batches, with
    duplicated prompts (shared prefill) and budgets that end rows at different steps (KV rows pruned)."""
    prompts = _prompts(4, seed=3)
    layouts = {"single": [A] * 8, "mixed": [A, B, None, A] * 2, "base": [None] * 8}
    tm.merge_single = merge
    try:
        for versions in layouts.values():
            reqs = [GenRequest(prompts[i // 2], v, 2 + 3 * (i % 3)) for i, v in enumerate(versions)]
            fast, ref = _both(tm, reqs, temperature=0, seed=0)
            for f, r in zip(fast, ref):
                assert f.ids == r.ids
                torch.testing.assert_close(torch.tensor(f.logprobs), torch.tensor(r.logprobs), atol=TOL, rtol=0)
    finally:
        tm.merge_single = True


@pytest.mark.parametrize("versions", [[A] * 12, [A, B, None] * 4])
def test_fast_path_sampled_logprobs_equal_rescoring(tm, versions):
    """Sampled at temperature 0.7 with 4 samples per prompt (shared prefill): each recorded log-prob equals
    the reference scoring path's log-prob of the sampled token (1e-4), and duplicates sample independently."""
    prompts = _prompts(3, seed=4)
    reqs = [GenRequest(prompts[i // 4], v, 6) for i, v in enumerate(versions)]
    res = tm.generate(reqs, temperature=0.7, top_p=1.0, seed=5)
    again = tm.logprobs([r.prompt_ids for r in reqs], [r.ids for r in res], versions, temperature=0.7)
    for r, lp in zip(res, again):
        assert len(r.ids) == len(r.logprobs) == 6
        torch.testing.assert_close(torch.tensor(r.logprobs), lp, atol=TOL, rtol=0)
    same_prompt = [tuple(res[i].ids) for i in range(12) if reqs[i].prompt_ids == prompts[0] and versions[i] == A]
    assert len(set(same_prompt)) == len(same_prompt)
    assert res == tm.generate(reqs, temperature=0.7, top_p=1.0, seed=5)  # seeded


@pytest.mark.parametrize("version", [A, None])
def test_model_next_token_distribution_matches_exact_softmax(tm, version):
    """2000 samples of the first token of one prompt (each call prefills it once and copies it to 250 rows)
    follow the exact softmax(logits / T) of the model at that state (chi-square, fixed seeds). T is picked
    so that the most likely token has probability 0.3 to 0.9: several tokens are likely."""
    prompt, calls, rows = _prompts(1, seed=6)[0], 8, 250
    logits = tm.completion_logits([prompt], [[0]], version)[0][0, 0]
    temperature = next(t for t in (0.01 * 1.1 ** k for k in range(60)) if float(torch.softmax(logits / t, -1).max()) < 0.9)
    probs = torch.softmax(logits / temperature, -1)
    assert float(probs.max()) > 0.3
    toks = [r.ids[0] for s in range(calls)
            for r in tm.generate([GenRequest(prompt, version, 1)] * rows, temperature=temperature, seed=s)]
    counts = torch.bincount(torch.tensor(toks), minlength=probs.numel()).double()
    assert _binned_chisquare(counts, probs, calls * rows) > ALPHA


def _logits_and_grads(tm, prompts, comps, version, variants):
    """completion_logits and the gradients of `version`'s LoRA weights (of a scalar of the logits) under each
    of `variants` (context managers); the trainable set must stay that adapter's."""
    trainable = {n for n, p in tm.peft.named_parameters() if f".{tm.adapter_name(version)}." in n}
    params = dict(tm.peft.named_parameters())
    for n, p in params.items():
        p.requires_grad_(n in trainable)
    try:
        outs, grads = [], []
        for variant in variants:
            for n in trainable:
                params[n].grad = None
            with variant:
                logits, _, mask = tm.completion_logits(prompts, comps, version)
            (torch.log_softmax(logits, -1)[..., 7] * mask).sum().backward()
            outs.append(logits.detach())
            grads.append({n: params[n].grad.clone() for n in trainable})
            assert {n for n, p in tm.peft.named_parameters() if p.requires_grad} == trainable
    finally:
        tm.peft.requires_grad_(False)
        for p in params.values():
            p.grad = None
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=0)
    for n in trainable:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4)
    assert any(float(g.abs().max()) > 0 for g in grads[0].values())


@contextmanager
def _setting(obj, name, value):
    before = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, before)


def test_single_adapter_forward_equals_per_row_dispatch_with_gradients(tm):
    """A batch whose rows share one adapter runs it as the active adapter: same logits and same gradients
    as peft's per-row `adapter_names` path, and the trainable set is untouched."""
    _logits_and_grads(tm, _prompts(4, seed=8), [p[:3] for p in _prompts(4, seed=9)], A,
                      [_setting(tm, "fast", True), _setting(tm, "fast", False)])


def _shared_prompts(n: int, seed: int, common: int = 12) -> list[list[int]]:
    """`n` prompts that all start with the same `common` tokens (a turn's system prompt), then differ."""
    head = _prompts(1, seed=seed + 100)[0] * 4
    return [head[:common] + tail for tail in _prompts(n, seed=seed)]


@pytest.fixture
def counted_prefixes(tm, monkeypatch):
    """Counts the shared-prefix runs (so a test cannot pass without exercising them)."""
    calls = []
    real = TeamModel._prefix_kv

    def spy(self, prefix, names):
        calls.append(len(prefix))
        return real(self, prefix, names)

    monkeypatch.setattr(TeamModel, "_prefix_kv", spy)
    return calls


def test_shared_prefix_scoring_equals_unshared_with_gradients(tm, counted_prefixes):
    """Rows on one adapter whose prompts share 12 leading tokens read that prefix from one run: same logits
    (1e-5) and same gradients of the adapter's LoRA weights as every row run in full."""
    _logits_and_grads(tm, _shared_prompts(4, seed=10), [p[:3] for p in _prompts(4, seed=11)], A,
                      [_setting(team_model, "MIN_SHARED", 8), _setting(team_model, "MIN_SHARED", 10 ** 9)])
    assert counted_prefixes == [12]


@pytest.mark.parametrize("version,merge", [(A, True), (A, False), (None, True)])
def test_shared_prefix_generation_equals_full_prefill(tm, counted_prefixes, version, merge):
    """Sampling from prompts with a common prefix (run once) gives the same tokens and log-probs (1e-4) as
    prefilling every prompt in full, with the same seed; rows end at different steps (KV rows pruned)."""
    prompts = _shared_prompts(6, seed=12)
    reqs = [GenRequest(prompts[i // 2], version, 2 + 3 * (i % 3)) for i in range(12)]
    tm.merge_single = merge
    try:
        out = []
        for min_shared in (8, 10 ** 9):
            with _setting(team_model, "MIN_SHARED", min_shared):
                out.append(tm.generate(reqs, temperature=0.9, seed=3))
    finally:
        tm.merge_single = True
    assert counted_prefixes == [12]
    for f, r in zip(*out):
        assert f.ids == r.ids
        torch.testing.assert_close(torch.tensor(f.logprobs), torch.tensor(r.logprobs), atol=TOL, rtol=0)


def test_no_shared_prefix_across_adapters(tm, counted_prefixes):
    """Rows on different adapters never share a prefix run (its keys depend on the adapter)."""
    prompts = _shared_prompts(4, seed=13)
    tm.completion_logits(prompts, [[5, 6]] * 4, [A, B, A, B])
    tm.generate([GenRequest(p, v, 2) for p, v in zip(prompts, [A, B, None, A])], temperature=0.7, seed=0)
    assert counted_prefixes == []


def test_backend_args(tiny_base):
    from teamtr_adapters.errors import InputError

    ref = create_backend("hf=reference", tiny_base, device="cpu", dtype="float32")
    assert ref.fast is False and ref.merge_single is True
    both = create_backend("hf=unmerged+reference", tiny_base, device="cpu", dtype="float32")
    assert both.fast is False and both.merge_single is False
    assert create_backend("hf", tiny_base, device="cpu", dtype="float32").fast is True
    with pytest.raises(InputError, match="takes no argument but one of"):
        create_backend("hf=fast", tiny_base)
