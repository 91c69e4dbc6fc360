"""The gate's score decision (`gate.stats`) on synthetic paired outcomes, seeded: its stated error rates
(false accept at a true drop of epsilon <= alpha; an equally good candidate refused <= alpha and accepted
>= 80% at the default budget), early stops, the inconclusive outcome and the regression cap."""
from __future__ import annotations

import math

import pytest
from scipy import stats

from teamtr_adapters.errors import InputError
from teamtr_adapters.gate import Design, GateConfig, decide_scores
from teamtr_adapters.gate.stats import obf_boundaries, regressions, simulate

RUNS = 2000
MC = 3 * math.sqrt(0.05 * 0.95 / RUNS)  # three Monte-Carlo standard errors at a rate of alpha


def test_boundaries_spend_alpha_over_the_looks():
    assert obf_boundaries(1, 0.05) == (pytest.approx(stats.norm.isf(0.05)),)
    b = obf_boundaries(4, 0.05)
    assert list(b) == sorted(b, reverse=True) and 1.645 < b[-1] < 1.8 and b[0] > 3


@pytest.mark.parametrize("n", [80, 360])
@pytest.mark.parametrize("p", [0.2, 0.5])
@pytest.mark.parametrize("rho", [0.0, 0.5, 0.95])
def test_false_accept_at_a_drop_of_epsilon_is_at_most_alpha(n, p, rho):
    d = Design(n=n)
    r = simulate(d, p=p, diff=-d.epsilon, rho=rho, runs=RUNS, seed=11)
    assert r["accept"] <= d.alpha + MC, r


@pytest.mark.parametrize("p", [0.2, 0.5])
@pytest.mark.parametrize("rho", [0.0, 0.5, 0.95])
def test_an_equally_good_candidate_at_the_default_budget(p, rho):
    d = Design()
    r = simulate(d, p=p, diff=0.0, rho=rho, runs=RUNS, seed=12)
    assert r["refuse"] <= d.alpha + MC, r
    assert r["accept"] >= 0.8, r


def test_identical_outcomes_accept_at_the_first_look():
    d = Design()
    inc = [1.0, 0.0, 0.0, 0.0, 1.0] * 18  # the first look: 90 of the 360 prompts
    dec = decide_scores(inc, inc, d)
    assert dec.outcome == "accepted" and dec.look == 1 and dec.prompts == 90
    assert dec.mean == 0.0 and dec.lcb > -d.epsilon and dec.regressions == [] and dec.reasons == []


def test_a_broken_candidate_is_refused_early_and_the_lost_prompts_are_listed():
    d = Design()
    inc = [1.0, 0.0] * 45
    cand = [0.0] * 90
    dec = decide_scores(inc, cand, d)
    assert dec.outcome == "refused" and dec.look == 1 and dec.ucb < 0
    assert dec.regressions == list(range(0, 90, 2)) and "worse" in dec.reasons[0]


def test_too_little_evidence_is_inconclusive_with_the_prompts_still_needed():
    d = Design(n=8)
    dec = decide_scores([1.0, 0.0] * 4, [0.0, 1.0] * 4, Design(n=8, max_regressions=1.0))
    assert dec.outcome == "inconclusive" and dec.look == d.n_looks and dec.more_prompts > 8
    assert "inconclusive after 8 prompts" in dec.reasons[0]


def test_coordination_regressions_enter_the_decision():
    inc, cand = [1.0, 0.0] * 40, [0.0, 1.0] * 40  # same mean, but half of the prompts regress
    capped = decide_scores(inc, cand, Design(n=80, looks=1))
    assert capped.outcome == "refused" and capped.reasons[0].startswith("coordination: 40 of 80 prompts")
    assert capped.regression_share_lcb > 0.3
    assert decide_scores(inc, cand, Design(n=80, looks=1, max_regressions=1.0)).outcome == "inconclusive"


def test_regressions_are_solved_then_failed_prompts():
    assert regressions([1.0, 1.0, 0.0, 0.5, 1.0], [1.0, 0.0, 1.0, 0.0, 0.75], solved=0.5) == [1, 3]
    assert regressions([1.0, 1.0, 0.0, 0.5, 1.0], [1.0, 0.0, 1.0, 0.0, 0.75], solved=1.0) == [1, 4]


@pytest.mark.parametrize("kw, msg", [({"delta": 0.0}, "--delta"), ({"epsilon": 0.0}, "--epsilon"),
                                     ({"n": 0}, "--n"), ({"alpha": 0.6}, "--alpha"), ({"looks": 0}, "--looks"),
                                     ({"max_regressions": 0.0}, "--max-regressions")])
def test_gate_config_refuses_bad_values(kw, msg):
    with pytest.raises(InputError, match=msg):
        GateConfig(**kw).check()
