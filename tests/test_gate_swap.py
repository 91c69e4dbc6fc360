"""The swap gate on the tiny team: paired rollouts, exact D_tok, the three outcomes and their exit codes,
report in history, --force, --dry-run and reproducibility. The tiny random model never solves a task, so
scores tie: enough tied prompts accept, too few are inconclusive, and a far candidate is refused by D_tok;
the score test's error rates are tested in test_gate_stats.py."""
from __future__ import annotations

import json

from gate_helpers import perturbed, same_weights_new_id

# all-tied scores (the tiny random model never solves a task) decide "accepted" at 8 prompts with a 0.5 margin
GATE = ["--gate", "--n", "8", "--looks", "1", "--epsilon", "0.5", "--json"]


def test_identical_weights_pass_with_zero_kl(tiny_team, tmp_path, cli):
    v1 = tiny_team.version_path(tiny_team.pins("tiny-duo")["solver"])
    twin = same_weights_new_id(v1, tmp_path / "twin")
    code, out, err = cli("swap", "solver", str(twin), *GATE)
    assert code == 0, err
    res = json.loads(out)
    rep = res["report"]
    assert res["candidate"]["id"] != res["incumbent"]["id"]
    assert rep["d_tok"] == 0.0 and rep["d_tok_se"] == 0.0 and rep["kl_states"] > 0 and rep["contexts"] == 8
    assert rep["alpha"] == 0.05 and rep["budget"] == {"prompts": 8, "samples": 1, "looks": 1} and rep["prompts"] == 8
    assert rep["diff_mean"] == 0.0 and -0.5 <= rep["diff_lcb"] < 0 < rep["diff_ucb"] and rep["regressions"] == []
    assert rep["accepted"] and rep["decision"] == "accepted" and rep["reasons"] == []
    assert tiny_team.pins("tiny-duo")["solver"] == res["candidate"]["id"]
    event = tiny_team.history("tiny-duo")[-1]
    assert event["event"] == "swap" and event["gated"] and not event["forced"]
    assert event["report"] == rep and event["revision"] == res["revision"] == 2


def test_large_random_weights_are_refused_then_forced(tiny_team, tmp_path, cli):
    v1 = tiny_team.version_path(tiny_team.pins("tiny-duo")["solver"])
    wild = perturbed(v1, tmp_path / "wild", scale=1.0)
    manifest = tiny_team.manifest("tiny-duo")
    code, out, err = cli("swap", "solver", str(wild), *GATE)
    assert code == 3 and err.startswith("error: gate refused") and "D_tok" in err
    assert "teamtr-adapters align solver" in err and "--delta" in err and err.count("\n") == 1
    rep = json.loads(out)["report"]
    assert not rep["accepted"] and rep["decision"] == "refused" and rep["d_tok"] > 0.01
    assert rep["reasons"][0].startswith("D_tok") and rep["score_decision"] == "accepted"
    assert 0 < rep["d_tok_se"] < rep["d_tok"] and rep["kl_states"] > rep["kl_contexts"] == 8
    assert tiny_team.manifest("tiny-duo") == manifest
    refused = tiny_team.history("tiny-duo")[-1]
    assert refused["event"] == "swap-refused" and refused["report"] == rep and "pins_after" not in refused
    assert "next: align as above, or `--force` swaps anyway" in err  # the refusal names the next step
    code, out, _ = cli("history", "--team", "tiny-duo")
    flat = " ".join(out.split())
    assert code == 0 and "swap-refused" in flat and "solver kept, candidate" in flat and "D_tok" in flat

    code, out, err = cli("swap", "solver", str(wild), *GATE, "--force")
    assert code == 0, err
    res = json.loads(out)
    assert res["forced"] and not res["accepted"]
    assert tiny_team.pins("tiny-duo")["solver"] == res["candidate"]["id"] == rep["candidate"]["id"]
    forced = tiny_team.history("tiny-duo")[-1]
    assert forced["event"] == "swap" and forced["forced"] is True and forced["report"]["decision"] == "refused"
    code, out, _ = cli("history", "--team", "tiny-duo")
    assert code == 0 and "FORCED" in out


def test_same_seed_same_report_and_dry_run_changes_nothing(tiny_team, tmp_path, cli):
    v1 = tiny_team.version_path(tiny_team.pins("tiny-duo")["solver"])
    cand = perturbed(v1, tmp_path / "cand", scale=0.05)
    n_events, manifest = len(tiny_team.history()), tiny_team.manifest("tiny-duo")
    runs = [cli("swap", "solver", str(cand), *GATE, "--dry-run", "--seed", str(s)) for s in (7, 7, 8)]
    assert [r[0] for r in runs] == [0, 0, 0]
    first, again, other = (json.loads(r[1])["report"] for r in runs)
    assert first == again
    assert 0 < first["d_tok"] <= 0.01
    assert [p["prompt"] for p in first["per_prompt"]] != [p["prompt"] for p in other["per_prompt"]]
    assert len(tiny_team.history()) == n_events and tiny_team.manifest("tiny-duo") == manifest
    assert tiny_team.list_versions("tiny-duo.solver")[-1].name == "v1"  # a dry run imports nothing


def test_too_few_prompts_are_inconclusive_exit_7(tiny_team, tmp_path, cli):
    v1 = tiny_team.version_path(tiny_team.pins("tiny-duo")["solver"])
    twin = same_weights_new_id(v1, tmp_path / "twin")
    manifest = tiny_team.manifest("tiny-duo")
    code, out, err = cli("swap", "solver", str(twin), "--gate", "--n", "4", "--json")  # default margin 0.1
    assert code == 7 and err.startswith("error: gate inconclusive") and "more prompts" in err and "next: rerun with the larger --n" in err
    res = json.loads(out)
    rep = res["report"]
    assert res["decision"] == rep["decision"] == "inconclusive" and not rep["accepted"]
    assert rep["d_tok"] == 0.0 and rep["prompts"] == 4 and rep["looks_used"] == rep["budget"]["looks"] == 4
    assert rep["more_prompts"] > 0 and f"--n {4 + rep['more_prompts']}" in err
    assert rep["regressions"] == [] and rep["regressed_prompts"] == [] and rep["alpha"] == 0.05
    assert tiny_team.manifest("tiny-duo") == manifest
    event = tiny_team.history("tiny-duo")[-1]
    assert event["event"] == "swap-inconclusive" and event["report"] == rep and "pins_after" not in event
    code, out, err = cli("swap", "solver", str(twin), "--gate", "--n", "4", "--json", "--force")
    assert code == 0 and json.loads(out)["forced"], err
