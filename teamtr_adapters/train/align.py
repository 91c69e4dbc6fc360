"""Stage-0 alignment (TEAMTR.md, plug-and-play): distil a newcomer toward the role's incumbent on probe
contexts from the team's own rollouts, until D_tok(incumbent || newcomer) <= delta_0 or the step budget
runs out, and store the result as a new version of the role's lineage (made by `align`, parent = the
newcomer, `aligned_toward` = the incumbent).

Probe contexts: the incumbent team rolls out `probes` training prompts (one episode each); every turn of
the role is one context, and every token state of its message is a state of the loss. The loss is the
exact full-vocabulary token KL (train/losses.py), averaged over all states, with the model in float32
(`train.kl.upcast_for_kl`): the same D_tok the swap gate measures (`train.kl` is shared with it). Before each
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
from ..runtime.rows import LossRows
from .kl import kl_pass, probe_rows, upcast_for_kl  # noqa: F401  (upcast_for_kl, kl_pass: API)
from .losses import LossConfig
from .policy import WorkingCopy

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


def align_candidate(registry: Registry, team: str, role: str, ref: str, cfg: AlignConfig, *, base: BaseRef,
                    device: str = "auto", dtype: str = "auto", progress: Progress | None = None) -> dict[str, Any]:
    """Distil candidate REF (resolved as `swap` does) toward `team`'s `role` incumbent; store the result."""
    from ..registry.candidates import check_candidate, resolve_candidate
    from ..runtime.open import open_team_model

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
    tm, pins = open_team_model(registry, team, base=base, device=device, dtype=dtype)
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
    assert best is not None  # set at step 0 unless it returned
    with torch.no_grad():
        for p, saved in zip(work.params, best[1]):
            p.copy_(saved)
    return curve, best[0], cfg.steps
