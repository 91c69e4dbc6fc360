"""Engine-vs-trainer log-prob gap and truncated importance sampling (TIS).

A rollout engine (vLLM) and the trainer's model score the same sampled tokens slightly differently
(other kernels, other numerics). Training recomputes behaviour log-probs with the trainer's model, so the
PPO ratio is exact with respect to the trainer; what remains is that the tokens were sampled from the
engine's distribution. `logprob_gap` measures the mismatch per update; `tis_weights` gives the truncated
importance-sampling correction min(pi_trainer / pi_engine, cap) per token, to multiply into the loss.
Pure Python over per-message sequences of floats (tensors work too: each item goes through `float`).
"""
from __future__ import annotations

import math
from typing import Sequence

from ..errors import InputError

Messages = Sequence[Sequence[float]]


def _pairs(engine: Messages, trainer: Messages) -> list[tuple[float, float]]:
    if len(engine) != len(trainer) or any(len(e) != len(t) for e, t in zip(engine, trainer)):
        raise InputError("engine and trainer log-probs must cover the same messages and tokens")
    return [(float(e), float(t)) for em, tm in zip(engine, trainer) for e, t in zip(em, tm)]


def logprob_gap(engine: Messages, trainer: Messages) -> dict[str, float]:
    """Summary of engine - trainer log-probs over every token: count, mean (signed), mean and max absolute
    gap, and the k3 estimate of KL(engine || trainer) on the engine's samples (non-negative)."""
    pairs = _pairs(engine, trainer)
    if not pairs:
        return {"tokens": 0, "mean": 0.0, "mean_abs": 0.0, "max_abs": 0.0, "kl_k3": 0.0}
    diffs = [e - t for e, t in pairs]
    n = len(diffs)
    # k3 = (r - 1) - log r with r = pi_trainer / pi_engine: unbiased for KL(engine || trainer), always >= 0.
    k3 = [math.expm1(-d) + d for d in diffs]
    return {"tokens": n, "mean": sum(diffs) / n, "mean_abs": sum(map(abs, diffs)) / n,
            "max_abs": max(map(abs, diffs)), "kl_k3": sum(k3) / n}


def tis_weights(engine: Messages, trainer: Messages, cap: float = 2.0) -> list[list[float]]:
    """Per-token truncated importance weights min(exp(trainer - engine), cap), message by message."""
    if cap <= 0:
        raise InputError("the TIS cap must be positive")
    _pairs(engine, trainer)
    return [[min(math.exp(float(t) - float(e)), cap) for e, t in zip(em, tm)] for em, tm in zip(engine, trainer)]
