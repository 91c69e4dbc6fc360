"""The hard trust region on any set of torch parameters: take an optimiser step, check the measured
D_tok against delta, and if the step left the region move back along it (bounded backtracking:
p0 + s * (p1 - p0) with s = shrink^k) or, once the backtracks are spent, restore the pre-step
parameters and optimiser state bitwise.

The caller measures D_tok on the same fresh states the update was computed on and calls `check(d)`
after every `step()`; `check` says what to do next. A measurement that follows no pending step (the
first one of an update) is accepted as it is.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

ACCEPT, BACKTRACK, REJECT = "accept", "backtrack", "reject"


class ParamSnapshot:
    """A bitwise copy of parameters (and, given one, an optimiser's state) that `restore()` puts back."""

    def __init__(self, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer | None = None) -> None:
        self.params = list(params)
        self.saved = [p.detach().clone() for p in self.params]
        self.optimizer = optimizer
        self.opt_state = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None

    @torch.no_grad()
    def restore(self) -> None:
        for p, s in zip(self.params, self.saved):
            p.copy_(s)
        if self.optimizer is not None and self.opt_state is not None:
            self.optimizer.load_state_dict(copy.deepcopy(self.opt_state))


@dataclass
class RegionStats:
    """What the trust region saw during one update."""

    steps: int = 0  # optimiser steps taken (accepted or not)
    accepted_steps: int = 0
    backtracks: int = 0
    rejected_steps: int = 0
    out_of_region_events: int = 0  # measurements with D_tok > delta (each one caught, unless hard=False)


class TrustRegion:
    """Step / measure / roll back. `hard=False` only counts excursions (the adaptive-KL-only ablation)."""

    def __init__(self, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer, delta: float, *,
                 max_backtracks: int = 4, shrink: float = 0.5, hard: bool = True) -> None:
        if delta <= 0 or not 0 < shrink < 1 or max_backtracks < 0:
            raise ValueError("need delta > 0, 0 < shrink < 1 and max_backtracks >= 0")
        self.params = list(params)
        self.optimizer = optimizer
        self.delta, self.max_backtracks, self.shrink, self.hard = delta, max_backtracks, shrink, hard
        self.stats = RegionStats()
        self._before: ParamSnapshot | None = None
        self._after: list[torch.Tensor] | None = None
        self._tries = 0

    @property
    def pending(self) -> bool:
        """Whether a step awaits its measurement."""
        return self._before is not None

    def step(self) -> None:
        """Apply the optimiser step for the gradients now in `.grad` (snapshotting what it replaces)."""
        if self.pending:
            raise RuntimeError("check() the previous step before taking another")
        self._before = ParamSnapshot(self.params, self.optimizer)
        self.optimizer.step()
        self._after = [p.detach().clone() for p in self.params]
        self._tries = 0
        self.stats.steps += 1

    def check(self, d_tok: float) -> str:
        """Judge the parameters now in place, whose D_tok was measured as `d_tok`.

        Returns `accept` (keep them), `backtrack` (they were moved back along the step: measure again)
        or `reject` (the pre-step parameters and optimiser state are restored bitwise)."""
        inside = d_tok == d_tok and d_tok <= self.delta  # NaN counts as outside
        if not inside:
            self.stats.out_of_region_events += 1
        if self._before is None or self._after is None:  # no pending step
            return ACCEPT
        if inside or not self.hard:
            self._finish()
            self.stats.accepted_steps += 1
            return ACCEPT
        if self._tries < self.max_backtracks:
            self._tries += 1
            self.stats.backtracks += 1
            s = self.shrink ** self._tries
            with torch.no_grad():
                for p, p0, p1 in zip(self.params, self._before.saved, self._after):
                    p.copy_(p0 + s * (p1 - p0))
            return BACKTRACK
        self._before.restore()
        self._finish()
        self.stats.rejected_steps += 1
        return REJECT

    def _finish(self) -> None:
        self._before, self._after, self._tries = None, None, 0
