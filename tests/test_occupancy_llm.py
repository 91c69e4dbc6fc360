"""The LLM half of the occupancy-shift study on its tiny random model (the `--quick` path): every update of
every stage gets a stale gap, a null gap and an occupancy divergence, and the divergence is exactly 0 where
no agent of the stage has changed yet, and positive once one has."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from benchmarks.occupancy_shift.llm import QUICK, main, read_runs


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("occupancy-llm")
    head = main(["--quick", "--seeds", "1", "--jobs", "1", "--out", str(out)])
    return out, head, read_runs(out / "runs.jsonl", replace(QUICK, seeds=1))


def test_every_update_has_a_non_negative_gap_and_divergence(quick):
    _, _, runs = quick
    assert sorted((r["n"], r["method"]) for r in runs) == [(2, "stale"), (2, "teamtr"), (3, "stale"), (3, "teamtr")]
    for r in runs:
        for key in ("gaps", "null_gaps", "div", "div_sampled", "l_fresh", "l_stale", "accepted", "d_tok_fresh"):
            assert len(r[key]) == r["n"], key
        assert all(g >= 0 for g in r["gaps"] + r["null_gaps"]) and all(d >= 0 for d in r["div"])
        assert r["G"] == pytest.approx(sum(r["gaps"]), rel=1e-3, abs=1e-12)
        assert r["G0"] == pytest.approx(sum(r["null_gaps"]), rel=1e-3, abs=1e-12)
        assert r["D"] == pytest.approx(sum(r["div"]), rel=1e-3, abs=1e-12)
        assert r["tokens"] > 0 and r["diag_tokens"] > 0


def test_first_update_of_a_stage_has_zero_divergence_and_zero_gap(quick):
    _, _, runs = quick
    for r in runs:  # no agent updated yet: the fresh, stale and training rollouts are one set
        assert r["div"][0] == 0.0 and r["div_sampled"][0] == 0.0 and r["gaps"][0] == 0.0


def test_divergence_is_positive_exactly_after_an_earlier_agent_changed(quick):
    _, _, runs = quick
    for r in runs:
        for i in range(1, r["n"]):
            assert (r["div"][i] > 0) == any(r["accepted"][:i]), (r["method"], r["n"], i, r["div"], r["accepted"])
    assert any(d > 0 for r in runs for d in r["div"])  # the positive side was exercised


def test_results_json_and_plots_are_written(quick):
    out, head, runs = quick
    data = json.loads((out / "occupancy_llm.json").read_text())
    assert data["stages"] == len(runs) == 4
    assert set(data["definitions"]) >= {"gaps", "null_gaps", "div", "G", "G0", "D"}
    assert {g["method"] for g in data["instances"]} == {"teamtr", "stale"}
    for name in head["plots"]:
        assert (out / name).stat().st_size > 1000
    assert {"gap_profile.png", "null_profile.png", "div_profile.png"} <= set(head["plots"])
    # a rerun with the same setup measures nothing new: the stages are read back from runs.jsonl
    again = main(["--quick", "--seeds", "1", "--jobs", "1", "--out", str(out)])
    assert again["stages"] == 4 and again["summary"] == head["summary"]
