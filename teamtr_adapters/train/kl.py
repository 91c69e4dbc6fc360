"""D_tok(reference || other): the exact full-vocabulary token KL on the states of one agent's turns, the
quantity shared by the swap gate (`gate.swap`), Stage-0 alignment (`train.align`) and `adapter diff`.

Always measured with the weights in float32 (`upcast_for_kl`): bf16 logits put a floor under a KL (on the
embedded SmolLM2-135M, an adapter against a copy nudged by N(0, 1e-4^2) reads 2.4e-3 in bf16 and 1.1e-7 in
float32), and upcasting bf16 weights is exact, so the float32 number is that of the weights that generated
the rollouts. `kl_summary` gives the mean over states and its standard error, clustered by message (the
states of one message are not independent).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ..errors import InputError
from ..runtime.rows import LossRows, agent_rows
from ..types import KLSummary
from .losses import log_softmax_t, token_kl

Progress = Callable[[str, int, int], None]


def upcast_for_kl(tm: Any) -> None:
    """Put the TeamModel's weights (base and adapters) in float32, in place, before measuring D_tok."""
    (tm.peft if tm.peft is not None else tm.model).to(torch.float32)


def kl_pass(tm: Any, ref_version: str, version: str, rows: LossRows, *, temperature: float,
            micro_batch: int = 8, backward: bool = False) -> torch.Tensor:
    """Exact full-vocabulary KL(ref || version) at every token state of `rows`, concatenated in row order.
    With `backward`, the gradient of their mean w.r.t. `version`'s trainable weights is added to `.grad`."""
    n_tok = max(rows.n_tokens, 1)
    out = []
    for sl in rows.batches(micro_batch):
        with torch.no_grad():
            ref_logits, _, mask = tm.completion_logits(rows.prompts[sl], rows.completions[sl], ref_version)
            ref = log_softmax_t(ref_logits, temperature)
            del ref_logits
        with torch.set_grad_enabled(backward):
            logits, _, _ = tm.completion_logits(rows.prompts[sl], rows.completions[sl], version)
            kl = token_kl(ref, log_softmax_t(logits, temperature))
            if backward:
                ((kl * mask).sum() / n_tok).backward()
        out.append(kl.detach()[mask].double().cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def kl_summary(kl: torch.Tensor, rows: LossRows) -> KLSummary:
    """Mean D_tok over the states, its standard error clustered by message (0 for one message), p99, max,
    and the number of states and messages."""
    n = int(kl.numel())
    if n == 0:
        return {"d_tok": 0.0, "d_tok_se": 0.0, "d_tok_p99": 0.0, "d_tok_max": 0.0, "kl_states": 0, "kl_contexts": 0}
    mean = float(kl.mean())
    lengths = [len(c) for c in rows.completions]
    if sum(lengths) == n and len(lengths) > 1:
        sums = torch.stack([s.sum() for s in kl.split(lengths)])
        resid = sums - mean * torch.tensor(lengths, dtype=sums.dtype)
        r = len(lengths)
        se = math.sqrt(float((resid ** 2).sum()) * r / (r - 1)) / n
    else:
        se = float(kl.std() / math.sqrt(n)) if n > 1 else 0.0
    return {"d_tok": mean, "d_tok_se": se, "d_tok_p99": float(kl.quantile(0.99)), "d_tok_max": float(kl.max()),
            "kl_states": n, "kl_contexts": len(rows)}


def probe_rows(tm: Any, spec: Any, pins: dict[str, str], role: str, n: int, seed: int,
               progress: Progress) -> LossRows:
    """The role's turns in `n` training-prompt episodes of the team `pins` (one episode per prompt)."""
    from ..runtime.protocol import rollout
    from ..tasks import get_task

    items = get_task(spec.task).sample(n, seed, split="train")
    episodes = rollout(tm, spec, items, group_size=1, seed=seed, pins=pins,
                       progress=lambda done, total: progress("probe rollouts", done, total))
    rows = agent_rows(episodes, role, [0.0] * len(episodes))
    if not len(rows):
        raise InputError(f"the team's rollouts hold no turn of {role!r} to probe")
    return rows


def probe_kl(registry: Any, team: str, role: str, a: Any, b: Any, *, probes: int, seed: int, base: Any,
             device: str = "auto", dtype: str = "auto", progress: Progress | None = None) -> dict[str, Any]:
    """D_tok(A || B) on the states of `role`'s turns in training-prompt rollouts of `team` with A in place
    (`a`, `b`: `registry.candidates.Candidate`s)."""
    from ..registry.validate import check_compatible
    from ..runtime.open import open_team_model

    for c in (a, b):
        check_compatible(c.path, base)
    spec = registry.team_spec(team)
    tm, pins = open_team_model(registry, team, base=base, device=device, dtype=dtype,
                               pins={**registry.pins(team), role: a.id}, extra={a.id: a.path, b.id: b.path})
    rows = probe_rows(tm, spec, pins, role, probes, seed, progress or (lambda desc, done, total: None))
    upcast_for_kl(tm)
    kl = kl_pass(tm, a.id, b.id, rows, temperature=spec.sampling.temperature or 1.0)
    s = kl_summary(kl, rows)
    return {"team": team, "role": role, "probes": probes, "seed": seed, "contexts": len(rows),
            "states": s["kl_states"], "d_tok": s["d_tok"], "d_tok_se": s["d_tok_se"]}
