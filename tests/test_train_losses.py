"""The pure loss pieces: advantages, ratios, the masked clipped surrogate, exact KL and its estimators,
the adaptive KL coefficient."""
from __future__ import annotations

import math

import pytest
import torch

from teamtr_adapters.train.losses import (AdaptiveBeta, LossConfig, clipped_surrogate, group_advantages,
                                          kl_estimators, log_softmax_t, masked_quantile, policy_ratio,
                                          surrogate_gain, token_kl, update_loss)


def test_group_advantages_normalise_per_group_and_clip():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    a = group_advantages(r, group_size=4, adv_clip=5.0)
    std = math.sqrt(0.25 * 0.75)
    assert a[:4].tolist() == pytest.approx([0.75 / std, -0.25 / std, -0.25 / std, -0.25 / std], rel=1e-5)
    assert a[4:].tolist() == [0.0, 0.0, 0.0, 0.0]  # a group with equal rewards carries no signal
    one_of_eight = torch.tensor([1.0] + [0.0] * 7)
    assert group_advantages(one_of_eight, 8, adv_clip=5.0)[0] == pytest.approx(math.sqrt(7), rel=1e-5)
    assert group_advantages(one_of_eight, 8, adv_clip=2.0)[0] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(r, group_size=3, adv_clip=5.0)


def _logps():
    new = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]])
    old = torch.tensor([[-1.5, -1.0, -3.0], [-0.7, -0.4, -1.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return new, old, mask


def test_ratio_modes():
    new, old, mask = _logps()
    tok = policy_ratio(new, old, mask, "token")
    assert tok[0].tolist() == pytest.approx([math.exp(0.5), math.exp(-1.0), 1.0])
    assert tok[1, 2] == 1.0  # an unmasked position carries no ratio
    prod = policy_ratio(new, old, mask, "seq-product")
    assert prod[0].tolist() == pytest.approx([math.exp(-0.5)] * 3)
    assert prod[1].tolist() == pytest.approx([math.exp(0.1)] * 3)  # the masked -8 is ignored
    geo = policy_ratio(new, old, mask, "seq-geomean")
    assert geo[0, 0] == pytest.approx(math.exp(-0.5 / 3))
    assert geo[1, 0] == pytest.approx(math.exp(0.1 / 2))
    huge = policy_ratio(torch.zeros(1, 50), torch.full((1, 50), -10.0), torch.ones(1, 50), "seq-product",
                        log_clamp=20.0)
    assert torch.isfinite(huge).all() and huge[0, 0] == pytest.approx(math.exp(20.0))
    with pytest.raises(ValueError, match="unknown ratio mode"):
        policy_ratio(new, old, mask, "bogus")


def test_clipped_surrogate_values_and_token_masking():
    ratio = torch.tensor([[1.5, 0.5], [1.1, 3.0]], requires_grad=True)
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1, 1], [1, 0]])
    obj, rows = clipped_surrogate(ratio, adv, mask, clip_eps=0.2, mode="token")
    # row 0, A=+1: min(1.5, 1.2)=1.2 and min(0.5, 0.8)=0.5; row 1, A=-2: min(-2.2, -2.2)=-2.2
    assert float(obj.detach()) == pytest.approx((1.2 + 0.5 - 2.2) / 3)
    assert rows.tolist() == pytest.approx([0.85, -2.2])
    obj.backward()
    assert ratio.grad[0, 0] == 0.0  # clipped in the advantage's direction: no gradient
    assert ratio.grad[1, 1] == 0.0  # not the agent's token: no gradient
    assert ratio.grad[0, 1] != 0.0 and ratio.grad[1, 0] != 0.0
    seq_obj, _ = clipped_surrogate(ratio.detach(), adv, mask, 0.2, mode="seq-product")
    assert float(seq_obj) == pytest.approx((0.85 - 2.2) / 2)


def test_surrogate_gain_is_zero_before_a_step_and_positive_for_a_good_move():
    new, old, mask = _logps()
    adv = torch.tensor([1.0, -1.0])
    gain, se = surrogate_gain(old, old, adv, mask, clip_eps=0.2)
    assert gain == pytest.approx(0.0, abs=1e-7) and se == pytest.approx(0.0, abs=1e-7)
    better = old + torch.tensor([[0.1], [-0.1]])  # more likely where A > 0, less where A < 0
    assert surrogate_gain(better, old, adv, mask, clip_eps=0.2)[0] > 0


def test_token_kl_is_exact_and_estimators_agree():
    torch.manual_seed(0)
    ref_logits, new_logits = torch.randn(4, 5, 11), torch.randn(4, 5, 11)
    ref, new = log_softmax_t(ref_logits), log_softmax_t(new_logits)
    kl = token_kl(ref, new)
    expected = torch.nn.functional.kl_div(new, ref, log_target=True, reduction="none").sum(-1)
    assert torch.allclose(kl, expected, atol=1e-6)
    assert float(token_kl(ref, ref).abs().max()) < 1e-6 and float(kl.min()) > 0
    hot = log_softmax_t(ref_logits, temperature=0.5)
    assert torch.allclose(hot, (ref_logits / 0.5).log_softmax(-1))
    # k1 and k3 on tokens sampled from the old policy estimate the same exact KL
    p, q = ref[0, 0], new[0, 0]
    samples = torch.distributions.Categorical(logits=p).sample((200_000,))
    est = kl_estimators(p[samples].unsqueeze(0), q[samples].unsqueeze(0), torch.ones(1, samples.numel()))
    exact = float(token_kl(p, q))
    assert est["k1"] == pytest.approx(exact, rel=0.05) and est["k3"] == pytest.approx(exact, rel=0.05)


def test_masked_quantile():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, 5.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert masked_quantile(x, mask, 1.0) == 5.0
    assert masked_quantile(x, mask, 0.5) == 3.0
    assert masked_quantile(x, torch.zeros_like(mask), 0.99) == 0.0


@pytest.mark.parametrize("ratio", ["token", "seq-product", "seq-geomean"])
def test_update_loss_micro_batches_add_up_and_start_at_minus_mean_advantage(ratio):
    torch.manual_seed(1)
    b, t, v = 4, 3, 13
    ref = log_softmax_t(torch.randn(b, t, v))
    logits = torch.randn(b, t, v)
    targets = torch.randint(0, v, (b, t))
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]])
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    cfg = LossConfig(ratio=ratio)
    full, kl, _ = update_loss(logits, targets, ref, adv, mask, cfg, beta=0.3)
    n_tok = int(mask.sum())
    parts = [update_loss(logits[i:i + 2], targets[i:i + 2], ref[i:i + 2], adv[i:i + 2], mask[i:i + 2], cfg,
                         beta=0.3, n_tokens=n_tok, n_rows=b)[0] for i in (0, 2)]
    assert float(sum(parts)) == pytest.approx(float(full), rel=1e-5)
    assert float(kl[0, 0]) > 0
    at_ref, kl0, _ = update_loss(ref.clone(), targets, ref, adv, mask, cfg, beta=0.3)
    weights = mask.sum(1).float() if ratio == "token" else torch.ones(b)
    assert float(at_ref) == pytest.approx(-float((adv * weights).sum() / weights.sum()), abs=1e-5)
    assert float(kl0.abs().max()) < 1e-5


def test_adaptive_beta_rules_and_bounds():
    b = AdaptiveBeta(beta=0.1, target=0.01)
    assert b.update(0.02) == pytest.approx(0.2)  # above 1.5 x target: doubles
    assert b.update(0.01) == pytest.approx(0.2)  # near target: unchanged
    assert b.update(0.001) == pytest.approx(0.1)  # below target / 1.5: halves
    assert b.raise_() == pytest.approx(0.2)
    capped = AdaptiveBeta(beta=800.0, target=0.01, beta_max=1000.0)
    assert capped.update(1.0) == 1000.0 and capped.raise_() == 1000.0
    floor = AdaptiveBeta(beta=0.0, target=0.01, beta_min=1e-4)
    assert floor.update(0.0) == 1e-4 and floor.raise_() == pytest.approx(2e-4)
    fixed = AdaptiveBeta(beta=0.1, target=0.01, adaptive=False)
    assert fixed.update(1.0) == 0.1 and fixed.update(0.0) == 0.1 and fixed.raise_() == pytest.approx(0.2)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_fused_policy_terms_equal_the_unfused_formulas_with_gradients(temperature):
    """`policy_terms` (chunked, custom backward) against log_softmax + gather + exact KL through autograd:
    log-probs (about -20 here) within 2e-7 relative, KLs within 1e-6 and gradients w.r.t. the logits within 1e-6 + 2e-6 relative
    (float32 rounding), for chunks that do not divide the states."""
    from teamtr_adapters.train.losses import gather_logp, log_softmax_t, policy_terms, token_kl

    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 7, 500, generator=g) * 3).requires_grad_(True)
    ref = log_softmax_t(logits.detach() + 0.3 * torch.randn(3, 7, 500, generator=g), temperature)
    targets = torch.randint(0, 500, (3, 7), generator=g)
    wl, wk = torch.randn(3, 7, generator=g), torch.rand(3, 7, generator=g)
    lp, kl = policy_terms(logits, ref, targets, temperature, chunk=4)
    (lp * wl + kl * wk).sum().backward()
    fused_grad, logits.grad = logits.grad.clone(), None
    new = log_softmax_t(logits, temperature)
    lp2, kl2 = gather_logp(new, targets), token_kl(ref, new)
    (lp2 * wl + kl2 * wk).sum().backward()
    torch.testing.assert_close(lp, lp2, atol=0, rtol=2e-7)
    torch.testing.assert_close(kl, kl2, atol=1e-6, rtol=0)
    torch.testing.assert_close(fused_grad, logits.grad, atol=1e-6, rtol=2e-6)
    assert float(kl2.min()) > 1e-3 and float(logits.grad.abs().max()) > 1e-3  # a real comparison
    # at the reference itself the KL is exactly what the unfused formula gives: zero
    _, kl0 = policy_terms(logits.detach(), log_softmax_t(logits.detach(), temperature), targets, temperature)
    assert float(kl0.abs().max()) < 1e-6
