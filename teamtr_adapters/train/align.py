"""Stage-0 alignment (TEAMTR.md, plug-and-play): distil a newcomer toward the role's incumbent on probe
contexts from the team's own rollouts, until D_tok(incumbent || newcomer) <= delta_0 or the step budget
runs out, and store the result as a new version of the role's lineage (made by `align`, parent = the
newcomer, `aligned_toward` = the incumbent).

Probe contexts: the incumbent team rolls out `probes` training prompts (one episode each); every turn of
the role is one context, and every token state of its message is a state of the loss. The loss is the
exact full-vocabulary token KL (train/losses.py), averaged over all states, with the model in float32
(`upcast_for_kl`): the same D_tok the swap gate measures (`kl_pass` is shared with it). Before each
optimiser step D_tok is measured for the weights in place, so the reported final D_tok is exact for the
stored version.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import InputError, TrainingAborted
from ..registry import Registry, lineage_of
from ..runtime.base import BaseRef
from .losses import LossConfig, log_softmax_t, token_kl
from .policy import LossRows, WorkingCopy, agent_rows

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class AlignConfig:
    """delta0: the target D_tok (paper: 0.01); probes: prompts rolled out for probe contexts; steps: the
    Adam step budget; lr: its learning rate on the newcomer's LoRA matrices."""

    delta0: float = 0.01
    probes: int = 32
    steps: int = 200
    lr: float = 2e-3
    seed: int = 0
    micro_batch: int = 8

    def check(self) -> "AlignConfig":
        for ok, msg in [(self.delta0 > 0, "--delta0 must be positive"), (self.probes >= 1, "--probes must be >= 1"),
                        (self.steps >= 0, "--steps must be >= 0"), (0 < self.lr < 1, "--lr must be in (0, 1)"),
                        (self.micro_batch >= 1, "micro_batch must be >= 1")]:
            if not ok:
                raise InputError(msg)
        return self


def upcast_for_kl(tm: Any) -> None:
    """Put the TeamModel's weights (base and adapters) in float32, in place, before measuring D_tok.

    Rollouts may run in bf16, but bf16 logits put a floor under the measured KL: on the embedded
    SmolLM2-135M, D_tok between an adapter and a copy nudged by N(0, 1e-4^2) reads 2.4e-3 in bf16 and
    1.1e-7 in float32 (a quarter of the default delta 0.01 is rounding). Upcasting bf16 weights is exact,
    so the float32 measurement is of the very weights that generated the rollouts."""
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


def align_candidate(registry: Registry, team: str, role: str, ref: str, cfg: AlignConfig, *, base: BaseRef,
                    device: str = "auto", dtype: str = "auto", progress: Progress | None = None) -> dict[str, Any]:
    """Distil candidate REF (resolved as `swap` does) toward `team`'s `role` incumbent; store the result."""
    from ..gate import check_candidate, resolve_candidate
    from ..runtime.team_model import TeamModel

    say = progress or (lambda desc, done, total: None)
    spec = registry.team_spec(team)
    spec.role(role)
    pins = registry.pins(team)
    incumbent = registry.version(pins[role])
    candidate = resolve_candidate(registry, team, role, ref, base)
    check_candidate(candidate.path, base)
    if candidate.id == incumbent.id:
        raise InputError(f"{candidate.ref} is the incumbent of {team}/{role}; there is nothing to align")
    temperature = spec.sampling.temperature or 1.0
    tm = TeamModel(base, device=device, dtype=dtype)
    for vid in set(pins.values()):
        tm.ensure_adapter(vid, registry.version_path(vid))
    rows = probe_rows(tm, spec, pins, role, cfg.probes, cfg.seed, say)
    upcast_for_kl(tm)
    work = WorkingCopy(tm, candidate.id, candidate.path, f"align-{candidate.id}", LossConfig(temperature=temperature),
                       micro_batch=cfg.micro_batch)
    try:
        curve, d_final, steps = distil(tm, incumbent.id, work, rows, cfg, temperature, say)
        with tempfile.TemporaryDirectory(prefix="teamtr-align-") as tmp:
            work.save(Path(tmp) / "adapter")
            metrics = {"d_tok_before": curve[0], "d_tok_after": d_final, "steps": steps,
                       "reached": d_final <= cfg.delta0, "contexts": len(rows), "states": rows.n_tokens}
            info = registry.add_version(
                lineage_of(team, role), Path(tmp) / "adapter", made_by="align", base=base.identity,
                parent=candidate.id, config={**asdict(cfg), "temperature": temperature}, metrics=metrics,
                context={r: v for r, v in pins.items() if r != role},
                extra={"aligned_toward": incumbent.id, "source": ref})
    finally:
        work.close()
    return {"team": team, "role": role, "incumbent": {"id": incumbent.id, "ref": incumbent.ref},
            "candidate": candidate.to_dict(), "version": {"id": info.id, "ref": info.ref},
            "config": asdict(cfg), "curve": curve, **metrics}


def distil(tm: Any, incumbent: str, work: WorkingCopy, rows: LossRows, cfg: AlignConfig, temperature: float,
           progress: Progress) -> tuple[list[float], float, int]:
    """Adam on the working copy's LoRA weights minimising D_tok(incumbent || copy) on `rows`, stopping
    once D_tok <= delta0. Returns (D_tok measured before each step, D_tok of the weights left in place,
    steps taken); if the budget runs out first, the best measured weights are put back."""
    opt = torch.optim.Adam(work.params, lr=cfg.lr)
    curve: list[float] = []
    best: tuple[float, list[torch.Tensor]] | None = None
    for step in range(cfg.steps + 1):
        work.assert_trainable()
        d = float(kl_pass(tm, incumbent, work.key, rows, temperature=temperature, micro_batch=cfg.micro_batch,
                          backward=step < cfg.steps).mean())
        if not math.isfinite(d):
            raise TrainingAborted(f"non-finite D_tok ({d}) while aligning; nothing was written")
        curve.append(d)
        progress("distilling toward the incumbent", step + 1, cfg.steps + 1)
        if d <= cfg.delta0:
            return curve, d, step
        if best is None or d < best[0]:
            best = (d, [p.detach().clone() for p in work.params])
        if step < cfg.steps:
            opt.step()
            opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        for p, saved in zip(work.params, best[1]):
            p.copy_(saved)
    return curve, best[0], cfg.steps
