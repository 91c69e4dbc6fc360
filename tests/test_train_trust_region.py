"""The hard trust region's step / measure / roll-back mechanics on a plain torch module."""
from __future__ import annotations

import pytest
import torch

from teamtr_adapters.train.losses import log_softmax_t, token_kl
from teamtr_adapters.train.trust_region import ACCEPT, BACKTRACK, REJECT, ParamSnapshot, TrustRegion


def _policy(seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    return torch.nn.Linear(6, 9), torch.randn(16, 6)


def _grad_step(model: torch.nn.Module, states: torch.Tensor, target: int = 3) -> None:
    model.zero_grad()
    (-log_softmax_t(model(states))[:, target].mean()).backward()


def _bits(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _same_bits(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    """Bitwise equality (not just numerical equality)."""
    return all(x.dtype == y.dtype and torch.equal(x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8))
               for x, y in zip(a, b))


def test_snapshot_restores_parameters_and_optimiser_state_bitwise():
    model, states = _policy()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    _grad_step(model, states)
    opt.step()
    before, state_before = _bits(model), {k: v["exp_avg"].clone() for k, v in enumerate(opt.state.values())}
    snap = ParamSnapshot(list(model.parameters()), opt)
    for _ in range(3):
        _grad_step(model, states)
        opt.step()
    assert not _same_bits(before, _bits(model))
    snap.restore()
    assert _same_bits(before, _bits(model))
    after = {k: v["exp_avg"] for k, v in enumerate(opt.state.values())}
    assert all(torch.equal(state_before[k], after[k]) for k in state_before)


def test_step_forced_out_of_region_is_rolled_back_bitwise():
    model, states = _policy()
    opt = torch.optim.Adam(model.parameters(), lr=0.5)
    tr = TrustRegion(list(model.parameters()), opt, delta=0.01, max_backtracks=2)
    before = _bits(model)
    _grad_step(model, states)
    tr.step()
    moved = _bits(model)
    assert tr.check(5.0) == BACKTRACK  # half the step
    half = _bits(model)
    assert all(torch.allclose(h, b + 0.5 * (m - b)) for h, b, m in zip(half, before, moved))
    assert tr.check(5.0) == BACKTRACK  # a quarter
    assert tr.check(5.0) == REJECT
    assert _same_bits(before, _bits(model))
    assert len(opt.state) == 0  # the optimiser state is back to before the step too
    s = tr.stats
    assert (s.steps, s.accepted_steps, s.rejected_steps, s.backtracks, s.out_of_region_events) == (1, 0, 1, 2, 3)
    assert not tr.pending


def test_real_kl_measurement_backtracks_into_the_region():
    model, states = _policy()
    ref = log_softmax_t(model(states)).detach()
    opt = torch.optim.SGD(model.parameters(), lr=20.0)  # a step far outside delta
    tr = TrustRegion(list(model.parameters()), opt, delta=0.01, max_backtracks=12)

    def measure() -> float:
        with torch.no_grad():
            return float(token_kl(ref, log_softmax_t(model(states))).mean())

    _grad_step(model, states)
    tr.step()
    verdict = tr.check(measure())
    while verdict == BACKTRACK:
        verdict = tr.check(measure())
    assert verdict == ACCEPT
    assert 0 < measure() <= 0.01 and tr.stats.backtracks >= 1 and tr.stats.out_of_region_events == tr.stats.backtracks


def test_soft_region_only_counts_and_first_measurement_is_accepted():
    model, states = _policy()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    tr = TrustRegion(list(model.parameters()), opt, delta=0.01, hard=False)
    assert tr.check(0.0) == ACCEPT  # nothing pending
    _grad_step(model, states)
    tr.step()
    moved = _bits(model)
    assert tr.check(float("nan")) == ACCEPT  # counted, not enforced
    assert _same_bits(moved, _bits(model)) and tr.stats.out_of_region_events == 1
    with pytest.raises(ValueError):
        TrustRegion(list(model.parameters()), opt, delta=0.0)
    _grad_step(model, states)
    tr.step()
    with pytest.raises(RuntimeError, match="check"):
        tr.step()
