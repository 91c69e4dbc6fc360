"""benchmarks/rollout_phases.py on the tiny team: the phases it reports add up to no more than the rollout, every
phase it names ran, and TeamModel's methods are its own again afterwards (the benchmark wraps them)."""
from __future__ import annotations

import re

import pytest

from benchmarks import rollout_phases
from teamtr_adapters.runtime import team_model as tm
from teamtr_adapters.runtime.team import load_team


@pytest.mark.parametrize("backend", ["hf", "hf=reference"])
def test_phases_add_up_and_the_model_is_restored(tiny_team, capsys, backend):
    team = load_team(tiny_team, "tiny-duo", backend=backend, device="cpu", dtype="float32")
    before = (tm.TeamModel._prefill, tm.TeamModel._forward, tm._pick_fast, tm._pick)
    items = team.task.sample(2, seed=0, split="train")
    rollout_phases.phases(team, items, 2, 0, profile=False)
    assert (tm.TeamModel._prefill, tm.TeamModel._forward, tm._pick_fast, tm._pick) == before
    out = capsys.readouterr().out
    wall = float(re.search(r"tokens in ([\d.]+) s", out).group(1))
    parts = {k: float(s) for k, s in re.findall(r"^  (prompt prefill|decode forwards|sampler) +([\d.]+) s", out, re.M)}
    assert set(parts) == {"prompt prefill", "decode forwards", "sampler"}
    assert sum(parts.values()) <= wall + 0.05 * len(parts)  # each figure is rounded to 0.1 s
    assert re.search(r"^  turn 0 \(solver\): prompt \d+ tokens", out, re.M)
