"""TeamTR's loss pieces, pure torch: group-normalised clipped advantages, policy ratios (per token,
per-message product clamped in log space, per-message geometric mean), the clipped surrogate masked
to the trained agent's tokens, exact full-vocabulary token KL and its k1/k3 estimators, and the
adaptive KL coefficient.

Shapes: a batch holds B rows, one row per message of the trained agent, with T target positions;
`mask[b, t]` is 1 where position t is one of the agent's own message tokens (its context, including
other agents' messages, is never a target). Log-probs are under the sampling distribution
softmax(logits / temperature).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

RATIO_MODES = ("token", "seq-product", "seq-geomean")


def group_advantages(rewards: Tensor, group_size: int, adv_clip: float, eps: float = 1e-6) -> Tensor:
    """A = clip((R - mean_G) / (std_G + eps), -adv_clip, adv_clip) per group of `group_size` consecutive
    trajectories; std is the population std (a group with equal rewards gets A = 0)."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.double().reshape(-1, group_size)
    a = (r - r.mean(dim=1, keepdim=True)) / (r.std(dim=1, unbiased=False, keepdim=True) + eps)
    return a.clamp(-adv_clip, adv_clip).reshape(-1).float()


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `x` over positions where `mask` is 1 (0 where a row has no masked position)."""
    m = mask.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp_min(1.0)
    return (x * m).sum(dim) / m.sum(dim).clamp_min(1.0)


def policy_ratio(new_logp: Tensor, old_logp: Tensor, mask: Tensor, mode: str = "token",
                 log_clamp: float = 20.0) -> Tensor:
    """The importance ratio w of each row's tokens, shape [B, T] (a sequence ratio is broadcast over the
    row). `token`: exp(new - old) per token; `seq-product`: exp(clamp(sum of log-ratios, +-log_clamp)),
    the paper's per-message product, clamped in log space so it never overflows; `seq-geomean`:
    exp(mean of log-ratios)."""
    if mode not in RATIO_MODES:
        raise ValueError(f"unknown ratio mode {mode!r} (choose from {', '.join(RATIO_MODES)})")
    m = mask.to(new_logp.dtype)
    log_r = (new_logp - old_logp) * m
    if mode == "token":
        return log_r.exp()
    if mode == "seq-product":
        seq = log_r.sum(dim=1).clamp(-log_clamp, log_clamp)
    else:
        seq = log_r.sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
    return seq.exp().unsqueeze(1).expand_as(new_logp)


def clipped_surrogate(ratio: Tensor, adv: Tensor, mask: Tensor, clip_eps: float, mode: str = "token",
                      n_tokens: int | None = None, n_rows: int | None = None,
                      weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """PPO's E[min(w A, clip(w, 1-eps, 1+eps) A)] on the agent's tokens only.

    `adv` is per row [B]. Token mode averages over all masked tokens of the batch (each token counts
    once); sequence modes average over rows (one ratio per message). `n_tokens`/`n_rows` override the
    normalisers (the whole batch's counts, so that micro-batch objectives add up exactly). `weight` [B, T]
    multiplies each token's term (truncated importance weights, see `LossConfig.tis_cap`). Returns
    (objective, per-row values), where a row's value is its own token mean, used for standard errors.
    """
    m = mask.to(ratio.dtype)
    a = adv.to(ratio.dtype).unsqueeze(1)
    per_tok = torch.minimum(ratio * a, ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * a)
    if weight is not None:
        per_tok = per_tok * weight.to(per_tok.dtype)
    rows = masked_mean(per_tok, m, dim=1)
    if mode == "token":
        return (per_tok * m).sum() / (n_tokens or m.sum().clamp_min(1.0)), rows
    return rows.sum() / (n_rows or rows.numel()), rows


def surrogate_gain(new_logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, clip_eps: float,
                   mode: str = "token", log_clamp: float = 20.0) -> tuple[float, float]:
    """L = surrogate(new) - surrogate(old): the surrogate's estimate of the improvement of the update
    (0 before any step). Returns (L, its standard error over rows)."""
    ratio = policy_ratio(new_logp, old_logp, mask, mode, log_clamp)
    obj, rows = clipped_surrogate(ratio, adv, mask, clip_eps, mode)
    base, base_rows = clipped_surrogate(ratio.new_ones(ratio.shape), adv, mask, clip_eps, mode)
    diff = rows - base_rows
    se = float(diff.std(unbiased=True) / diff.numel() ** 0.5) if diff.numel() > 1 else 0.0
    return float(obj - base), se


def log_softmax_t(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """log softmax(logits / temperature) in float32 (bf16 logits lose the small KLs that matter here)."""
    t = temperature if temperature > 0 else 1.0
    return (logits.float() / t).log_softmax(dim=-1)


def gather_logp(logp_full: Tensor, targets: Tensor) -> Tensor:
    """The log-probs of `targets` [..] from full-vocabulary log-probs [.., V]."""
    return logp_full.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def token_kl(ref_logp_full: Tensor, new_logp_full: Tensor) -> Tensor:
    """Exact full-vocabulary KL(pi_ref(.|s) || pi_new(.|s)) per state, from both policies' log-probs over
    the whole vocabulary [..., V] (see `log_softmax_t`)."""
    return (ref_logp_full.exp() * (ref_logp_full - new_logp_full)).sum(dim=-1)


class _PolicyTerms(torch.autograd.Function):
    """The new policy's token log-probs and the exact token KL(ref || new) from the new logits, computed in
    chunks of token states: the same float32 formulas as `log_softmax_t` + `gather_logp` + `token_kl`, but no
    [B, T, V] intermediate is kept for the backward (it recomputes softmax(new) chunk by chunk from the saved
    logits), and each chunk's vocabulary passes stay in cache. Gradient w.r.t. the logits:
    (g_lp * (onehot(target) - p_new) + g_kl * (p_new - p_ref)) / temperature."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, ref_logp: Tensor, targets: Tensor, temperature: float,
                chunk: int) -> tuple[Tensor, Tensor]:
        v = logits.shape[-1]
        flat, ref, tg = logits.reshape(-1, v), ref_logp.reshape(-1, v), targets.reshape(-1, 1)
        n = flat.shape[0]
        kl = flat.new_empty(n, dtype=torch.float32)
        lp = flat.new_empty(n, dtype=torch.float32)
        for s in range(0, n, chunk):
            # exactly log_softmax_t's arithmetic, so that the KL to a reference computed by log_softmax_t
            # cancels the same way (at equal logits it is exactly 0)
            new = (flat[s:s + chunk].float() / temperature).log_softmax(dim=-1)
            r = ref[s:s + chunk]
            lp[s:s + chunk] = new.gather(-1, tg[s:s + chunk])[:, 0]
            kl[s:s + chunk] = (r.exp() * (r - new)).sum(-1)
        ctx.save_for_backward(logits, ref_logp, targets)
        ctx.temperature, ctx.chunk = temperature, chunk
        return lp.view(targets.shape), kl.view(targets.shape)

    @staticmethod
    def backward(ctx: Any, g_lp: Tensor | None, g_kl: Tensor | None) -> tuple[Any, ...]:
        logits, ref_logp, targets = ctx.saved_tensors
        t, chunk, v = ctx.temperature, ctx.chunk, logits.shape[-1]
        flat, ref, tg = logits.reshape(-1, v), ref_logp.reshape(-1, v), targets.reshape(-1, 1)
        n = flat.shape[0]
        zero = torch.zeros(targets.shape, dtype=torch.float32, device=flat.device)
        gl = (g_lp if g_lp is not None else zero).reshape(-1, 1).float()
        gk = (g_kl if g_kl is not None else zero).reshape(-1, 1).float()
        grad = torch.empty((n, v), dtype=torch.float32, device=flat.device)
        for s in range(0, n, chunk):
            p_new = (flat[s:s + chunk].float() / t).log_softmax(dim=-1).exp_()
            a, b = gl[s:s + chunk], gk[s:s + chunk]
            g = p_new.mul_(b - a).sub_(ref[s:s + chunk].exp().mul_(b))
            g.scatter_add_(-1, tg[s:s + chunk], a)
            grad[s:s + chunk] = g.div_(t)
        return grad.view(logits.shape).to(logits.dtype), None, None, None, None


def policy_terms(new_logits: Tensor, ref_logp_full: Tensor, targets: Tensor, temperature: float = 1.0,
                 chunk: int = 64) -> tuple[Tensor, Tensor]:
    """(new token log-probs [B, T], exact token KL(ref || new) [B, T]) under softmax(logits / temperature),
    chunked (see `_PolicyTerms`); equal to `gather_logp(log_softmax_t(...))` and `token_kl(...)`."""
    t = temperature if temperature > 0 else 1.0
    return _PolicyTerms.apply(new_logits, ref_logp_full, targets, t, chunk)


def kl_estimators(old_logp: Tensor, new_logp: Tensor, mask: Tensor) -> dict[str, float]:
    """The sampled KL(old || new) estimators on tokens drawn from the old policy, masked means:
    k1 = log old - log new (unbiased, noisy), k3 = (r - 1) - log r with r = new/old (unbiased, >= 0)."""
    log_r = (new_logp - old_logp).double()
    k1 = -log_r
    k3 = log_r.exp() - 1.0 - log_r
    return {"k1": float(masked_mean(k1, mask)), "k3": float(masked_mean(k3, mask))}


def masked_quantile(x: Tensor, mask: Tensor, q: float) -> float:
    """The q-quantile of `x` over masked positions (0.0 when nothing is masked)."""
    vals = x.detach().double()[mask.bool()]
    return float(torch.quantile(vals, q)) if vals.numel() else 0.0


@dataclass(frozen=True)
class LossConfig:
    """The update loss's options: PPO clip, ratio mode, log-space clamp of sequence ratios, temperature, and
    the cap of truncated importance sampling (None: off; else each token's surrogate term is multiplied by
    min(pi_trainer / pi_engine, tis_cap), correcting for tokens sampled by another rollout engine)."""

    clip_eps: float = 0.2
    ratio: str = "token"
    log_clamp: float = 20.0
    temperature: float = 1.0
    tis_cap: float | None = None
    fused: bool = True  # token log-probs and KL by `policy_terms` (chunked, no [B, T, V] intermediates kept)


def update_loss(new_logits: Tensor, targets: Tensor, ref_logp_full: Tensor, adv: Tensor, mask: Tensor,
                cfg: LossConfig, beta: float, n_tokens: int | None = None, n_rows: int | None = None,
                tis: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """-surrogate + beta * D_tok for one (micro)batch, normalised by the whole batch's `n_tokens` masked
    tokens (token means) and `n_rows` rows (sequence means) so that micro-batch losses add up exactly.

    The surrogate's old policy is the frozen pre-update version (`ref_logp_full`), which is also the KL
    reference. `tis` [B, T]: truncated importance weights multiplying the surrogate's per-token terms (the
    KL penalty is exact and stays unweighted). Returns (loss, per-token KL [B, T] detached, new token
    log-probs [B, T] detached).
    """
    m = mask.float()
    n_tokens = n_tokens or int(m.sum())
    n_rows = n_rows or mask.shape[0]
    if cfg.fused:
        new_logp, kl = policy_terms(new_logits, ref_logp_full, targets, cfg.temperature)
    else:
        new_lp_full = log_softmax_t(new_logits, cfg.temperature)
        new_logp = gather_logp(new_lp_full, targets)
        kl = token_kl(ref_logp_full, new_lp_full)
    ratio = policy_ratio(new_logp, gather_logp(ref_logp_full, targets), mask, cfg.ratio, cfg.log_clamp)
    surrogate, _ = clipped_surrogate(ratio, adv, mask, cfg.clip_eps, cfg.ratio, n_tokens, n_rows, tis)
    loss = -surrogate + beta * (kl * m).sum() / n_tokens
    return loss, kl.detach(), new_logp.detach()


@dataclass
class AdaptiveBeta:
    """The KL coefficient. Adaptive (PPO rule): after a measured D, beta doubles if D > 1.5 * target and
    halves if D < target / 1.5, within [beta_min, beta_max]; `fixed` never moves on measurements.
    `raise_()` (a step rolled back for leaving the trust region) doubles it in both modes."""

    beta: float
    target: float
    adaptive: bool = True
    beta_min: float = 1e-4
    beta_max: float = 1e3
    factor: float = 2.0

    def update(self, d_tok: float) -> float:
        if self.adaptive:
            if d_tok > 1.5 * self.target:
                self.beta = min(self.beta * self.factor, self.beta_max)
            elif d_tok < self.target / 1.5:
                self.beta = max(self.beta / self.factor, self.beta_min)
        return self.beta

    def raise_(self) -> float:
        self.beta = min(max(self.beta, self.beta_min) * self.factor, self.beta_max)
        return self.beta
