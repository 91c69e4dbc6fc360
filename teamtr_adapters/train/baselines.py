"""What distinguishes the methods: when rollouts are refreshed, in which order agents are updated, the
HAPPO importance factor of `stale-is`, and the one-agent team of `single`. The loop itself is shared
(stage.py), so budgets are accounted the same way for every method."""
from __future__ import annotations

import random
from dataclasses import replace

import torch

from ..errors import InputError
from ..runtime.records import Episode
from ..spec import TeamSpec

METHODS = ("teamtr", "stale", "stale-is", "resample-every-k", "joint", "single")


def check_method(method: str) -> str:
    if method not in METHODS:
        raise InputError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    return method


def refresh_every(method: str, k: int, n_updates: int) -> int:
    """Updates per rollout set within a stage: 1 for `teamtr` (fresh rollouts of the intermediate team
    before every update), k for `resample-every-k`, the whole stage for `stale`, `stale-is` and `joint`."""
    if method in ("teamtr", "single"):
        return 1
    if method == "resample-every-k":
        if k < 1:
            raise InputError("--resample-every must be >= 1")
        return k
    return max(n_updates, 1)


def update_order(spec: TeamSpec, order: str, rng: random.Random) -> list[str]:
    """The roles to update in one stage: `reverse` (the spec's speaking order reversed, the default),
    `speaking` (the spec's order), `random` (a seeded permutation per stage) or an explicit comma-separated
    list of roles.

    Why reverse by default: every order keeps TeamTR's guarantees (each update is computed on fresh rollouts
    of the intermediate team, so the per-update bound and the stage penalty c * sum_i sqrt(delta_i) do not
    depend on the order; the paper reports that the order barely matters), but suffix resampling keeps each
    episode's turns before the first turn of the agent just updated. Updating the last speaker first, the
    k-th rollout set of a stage regenerates only the last k-1 turns: n + (1 + ... + n-1) = n(n+1)/2 turns per
    stage instead of n^2, (n+1)/2n of full resampling. In speaking order the first speaker is updated first,
    so the second set is full again: n + n + (n-1) + ... + 2 turns, (n^2+3n-2)/2n^2 (0.89 for n = 3, 1 for n = 2)."""
    roles = spec.role_names
    if order == "speaking":
        return list(roles)
    if order == "reverse":
        return list(reversed(roles))
    if order == "random":
        out = list(roles)
        rng.shuffle(out)
        return out
    picked = [r.strip() for r in order.split(",") if r.strip()]
    unknown = [r for r in picked if r not in roles]
    if not picked or unknown:
        raise InputError(f"--order must be 'reverse', 'speaking', 'random' or a list of roles from {', '.join(roles)}"
                         + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    return picked


def single_agent_spec(spec: TeamSpec, role: str) -> TeamSpec:
    """The `single` baseline's team: `role` alone answers the task (one turn, its own system prompt)."""
    return replace(spec, roles=(spec.role(role),), protocol=replace(spec.protocol, turns=1, router="round-robin"))


def happo_log_factors(tm, episodes: list[Episode], updated: dict[str, tuple[str, str]], temperature: float,
                      micro_batch: int = 8) -> list[float]:
    """Per episode, sum over the earlier-updated agents k of log pi_k_new(msg) - log pi_k_old(msg) over
    their own messages (the HAPPO product, in log space). `updated` maps role -> (old id, new id)."""
    out = [0.0] * len(episodes)
    for role, (old, new) in updated.items():
        idx = [(e, t) for e, ep in enumerate(episodes) for t in ep.turns if t.role == role and t.message_ids]
        if not idx:
            continue
        prompts = [t.prompt_ids for _, t in idx]
        comps = [t.message_ids for _, t in idx]
        lp_new = tm.logprobs(prompts, comps, new, temperature=temperature, batch_size=micro_batch)
        lp_old = tm.logprobs(prompts, comps, old, temperature=temperature, batch_size=micro_batch)
        for (e, _), a, b in zip(idx, lp_new, lp_old):
            out[e] += float((a.double() - b.double()).sum())
    return out


def clamp_factors(log_factors: list[float], log_clamp: float) -> tuple[list[float], float]:
    """exp(clamp(log factor, +-log_clamp)) per episode, and the effective sample size ratio ESS/B."""
    w = torch.tensor(log_factors, dtype=torch.float64).clamp(-log_clamp, log_clamp).exp()
    ess = float(w.sum() ** 2 / (len(w) * (w ** 2).sum())) if len(w) else 1.0
    return w.tolist(), ess
