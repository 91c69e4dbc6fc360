"""The gate's statistics and decision rule: paired bootstrap lower bound, coordination regressions."""
from __future__ import annotations

import math

import pytest

from teamtr_adapters.errors import InputError
from teamtr_adapters.gate import GateConfig, coordination_regressions, decide, paired_lcb


def test_lcb_of_constant_differences_is_the_constant():
    assert paired_lcb([0.0] * 16) == 0.0
    assert paired_lcb([0.25] * 5, seed=3) == 0.25


def test_lcb_matches_the_normal_approximation_and_is_seeded():
    diffs = [-1.0] * 4 + [0.0] * 12  # mean -0.25, se 0.108: normal LCB95 = -0.428
    lcb = paired_lcb(diffs, confidence=0.95, n_boot=4000, seed=1)
    assert -0.5 <= lcb <= -0.375
    assert lcb == paired_lcb(diffs, confidence=0.95, n_boot=4000, seed=1)
    assert paired_lcb(diffs, confidence=0.80, seed=1) > paired_lcb(diffs, confidence=0.99, seed=1)


def test_lcb_needs_scores():
    with pytest.raises(InputError):
        paired_lcb([])


def test_coordination_regressions_are_solved_then_failed_prompts():
    inc = [1.0, 1.0, 0.0, 0.5, 1.0]
    cand = [1.0, 0.0, 1.0, 0.0, 0.75]
    assert coordination_regressions(inc, cand, solved=0.5) == [1, 3]
    assert coordination_regressions(inc, cand, solved=1.0) == [1, 4]


def test_decision_boundaries():
    cfg = GateConfig(delta=0.01, epsilon=0.05)
    assert decide(0.01, -0.05, cfg) == (True, [])
    ok, why = decide(0.0100001, 0.0, cfg)
    assert not ok and why == ["D_tok 0.0100001 > delta 0.01"]
    ok, why = decide(0.0, -0.0625, cfg)
    assert not ok and why == ["score LCB -0.0625 < -epsilon -0.05"]
    assert decide(math.nan, 0.0, cfg)[0] is False


@pytest.mark.parametrize("kw, msg", [({"delta": 0.0}, "--delta"), ({"epsilon": -1.0}, "--epsilon"),
                                     ({"n": 0}, "--n")])
def test_gate_config_refuses_bad_values(kw, msg):
    with pytest.raises(InputError, match=msg):
        GateConfig(**kw).check()
