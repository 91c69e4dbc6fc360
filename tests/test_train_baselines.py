"""Method plumbing: rollout schedules, update orders, the single-agent spec, HAPPO factor clamping."""
from __future__ import annotations

import math
import random

import pytest

from teamtr_adapters.errors import InputError
from teamtr_adapters.spec import load_spec
from teamtr_adapters.train.baselines import (check_method, clamp_factors, refresh_every, single_agent_spec,
                                             update_order)


def test_refresh_schedules():
    assert [refresh_every(m, 2, 3) for m in ("teamtr", "single", "resample-every-k", "stale", "stale-is", "joint")] \
        == [1, 1, 2, 3, 3, 3]
    with pytest.raises(InputError, match="resample-every"):
        refresh_every("resample-every-k", 0, 3)
    with pytest.raises(InputError, match="unknown method 'ppo'"):
        check_method("ppo")


def test_update_orders_and_single_spec():
    spec = load_spec("math-trio")
    rng = random.Random(0)
    assert update_order(spec, "speaking", rng) == ["solver", "critic", "refiner"]
    assert update_order(spec, "reverse", rng) == ["refiner", "critic", "solver"]
    assert sorted(update_order(spec, "random", rng)) == ["critic", "refiner", "solver"]
    assert update_order(spec, "refiner, solver", rng) == ["refiner", "solver"]
    with pytest.raises(InputError, match="unknown: judge"):
        update_order(spec, "solver,judge", rng)
    solo = single_agent_spec(spec, "critic")
    assert solo.role_names == ["critic"] and solo.n_turns == 1 and solo.role("critic") == spec.role("critic")


def test_happo_factors_are_clamped_in_log_space_and_ess_falls_with_spread():
    w, ess = clamp_factors([0.0, 0.0, 0.0], 2.0)
    assert w == [1.0, 1.0, 1.0] and ess == pytest.approx(1.0)
    w, ess = clamp_factors([10.0, -10.0, 0.5], 2.0)
    assert w == pytest.approx([math.exp(2.0), math.exp(-2.0), math.exp(0.5)])
    assert 0 < ess < 0.7
