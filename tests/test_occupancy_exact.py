"""The exact occupancy-shift study: the enumeration machinery, and the property the study is about
(stale-data surrogate errors grow faster in the team size n than fresh-data ones)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.occupancy_shift.exact import (
    Analysis, agent_probs, analyse, kl_rows, npg_step, random_instance, replace_agent, run_stage, softmax,
    surrogate, token_kl,
)
from benchmarks.occupancy_shift.fit import fit_exponent
from benchmarks.occupancy_shift.run import main


@pytest.mark.parametrize("window", [None, 1])
def test_occupancies_sum_to_the_number_of_steps_and_turns(window):
    mdp, logits = random_instance(3, 0, reward="chain", window=window)
    data = analyse(mdp, logits)
    level_sums = [r.sum() for r in data.reach]
    assert np.allclose(level_sums, 1.0)
    assert sum(level_sums) == pytest.approx(mdp.horizon)          # 3 agents x 2 tokens
    turn_starts = range(0, mdp.horizon, mdp.tokens_per_message)   # one state per message turn
    assert sum(data.reach[t].sum() for t in turn_starts) == pytest.approx(mdp.n_agents)


def test_value_equals_enumerated_expected_return_and_advantages_average_to_zero():
    mdp, logits = random_instance(3, 1, reward="answer", window=1)
    data = analyse(mdp, logits)
    t = mdp.horizon - 1
    terminal = (data.reach[t][:, None] * data.probs[t][mdp.obs_index(t)]).reshape(-1)
    assert terminal.sum() == pytest.approx(1.0)
    assert data.value == pytest.approx(terminal @ mdp.reward, abs=1e-12)
    for t in range(mdp.horizon):
        pi = data.probs[t][mdp.obs_index(t)]
        assert np.allclose(np.sum(pi * data.adv[t], axis=1), 0.0, atol=1e-12)


def test_kl_of_a_policy_to_itself_is_zero():
    mdp, logits = random_instance(2, 2)
    data = analyse(mdp, logits)
    p = agent_probs(mdp, logits, 1)
    assert token_kl(mdp, 1, p, p, data) == 0.0
    assert np.all(kl_rows(p[0], p[0]) == 0.0)
    q = softmax(logits[0] + 1.0 * (np.arange(mdp.vocab) == 0))
    assert np.all(kl_rows(softmax(logits[0]), q) > 0)


def test_a_zero_size_step_has_zero_surrogate_error():
    mdp, logits = random_instance(3, 3)
    data = analyse(mdp, logits)
    new, eta = npg_step(mdp, logits, 1, data, 0.0)
    assert eta == 0.0
    after = analyse(mdp, replace_agent(mdp, logits, 1, new))
    assert surrogate(mdp, 1, tuple(softmax(x) for x in new), data) == pytest.approx(0.0, abs=1e-15)
    assert after.value - data.value == pytest.approx(0.0, abs=1e-15)
    for mode in ("stale", "fresh"):
        stage = run_stage(mdp, logits, 0.0, mode)
        assert stage.abs_error == pytest.approx(0.0, abs=1e-14)
        assert stage.abs_gap == pytest.approx(0.0, abs=1e-14)


def test_step_lands_on_the_radius_of_the_data_it_used_and_improves_the_surrogate():
    mdp, logits = random_instance(4, 4, reward="vote")
    for mode in ("stale", "fresh"):
        stage = run_stage(mdp, logits, 0.01, mode)
        for u in stage.updates:
            assert u.dtok_used == pytest.approx(0.01, rel=1e-9)
            assert u.surrogate_used > 0
        if mode == "fresh":
            assert all(u.dtok_actual == pytest.approx(0.01, rel=1e-9) for u in stage.updates)


def test_performance_difference_identity_holds_exactly():
    """J(pi') - J(pi) = sum over the updated agent's states s ~ d_{pi'} of sum_a pi'(a|s) A_pi(s, a)."""
    mdp, logits = random_instance(3, 5, reward="chain", window=1)
    before = analyse(mdp, logits)
    new, _ = npg_step(mdp, logits, 1, before, 0.05)
    after = analyse(mdp, replace_agent(mdp, logits, 1, new))
    mixed = Analysis(before.probs, after.reach, before.adv, before.value)
    assert surrogate(mdp, 1, tuple(softmax(x) for x in new), mixed) == pytest.approx(
        after.value - before.value, rel=1e-10)


def test_fresh_surrogate_is_exact_for_one_token_messages_and_stale_is_not():
    mdp, logits = random_instance(4, 6, tokens_per_message=1, vocab=3)
    fresh = run_stage(mdp, logits, 0.02, "fresh")
    stale = run_stage(mdp, logits, 0.02, "stale")
    assert fresh.abs_error == pytest.approx(0.0, abs=1e-12)
    assert stale.abs_error > 1e-4
    assert stale.updates[0] == fresh.updates[0]       # the first update sees the same data both ways
    assert stale.updates[0].gap == 0.0


def test_stale_penalty_grows_faster_in_n_than_fresh_penalty():
    """For the final-answer verifier reward, E_stale / E_fresh rises with n on every seed."""
    ns = [2, 3, 4, 5]
    ratios = []
    for seed in range(5):
        row = []
        for n in ns:
            mdp, logits = random_instance(n, [seed, n], reward="answer")
            row.append(run_stage(mdp, logits, 0.01, "stale").abs_error
                       / run_stage(mdp, logits, 0.01, "fresh").abs_error)
        ratios.append(row)
    ratios = np.array(ratios)
    assert np.all(ratios > 1)
    assert np.all(ratios[:, -1] > ratios[:, 0])
    assert np.all(np.polyfit(np.log(ns), np.log(ratios).T, 1)[0] > 0)    # per-seed log-log slope
    assert np.all(np.diff(ratios.mean(axis=0)) > 0)


def test_fit_recovers_a_power_law_and_the_exponent_difference_of_paired_values():
    rng = np.random.default_rng(0)
    values = {n: list(0.01 * n**1.5 * rng.lognormal(0.0, 0.1, size=20)) for n in range(2, 9)}
    fit = fit_exponent(values, n_boot=500)
    assert fit.ci[0] < 1.5 < fit.ci[1]
    assert fit.exponent == pytest.approx(1.5, abs=0.1)
    base = {n: list(n * np.asarray(v) / n**1.5) for n, v in values.items()}      # the same noise, n^1
    ratio = fit_exponent(values, relative_to=base, n_boot=500)
    assert ratio.exponent == pytest.approx(0.5, abs=1e-9)
    assert ratio.ci[1] - ratio.ci[0] < 1e-9                                     # paired: noise cancels
    with pytest.raises(ValueError, match="positive means"):
        fit_exponent({2: [1.0], 3: [-2.0]})


def test_cli_writes_json_table_and_plots(tmp_path, capsys):
    out = tmp_path / "occ"
    main(["--quick", "--seeds", "3", "--n-max", "3", "--families", "answer", "--jobs", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "exponent in n of E_stale" in printed
    result = json.loads((out / "occupancy_shift.json").read_text())
    fits = result["summary"]["answer"]["fits"]
    assert set(fits) == {"E_stale", "E_fresh", "G_stale", "G_fresh", "E_stale/E_fresh"}
    assert fits["E_stale"]["ci"][0] <= fits["E_stale"]["exponent"] <= fits["E_stale"]["ci"][1]
    main_grid = [g for g in result["instances"] if g["delta"] == 0.01 and g["order"] == "forward"]
    assert sorted((g["n"], g["seed"]) for g in main_grid) == [(2, [0, 1, 2]), (3, [0, 1, 2])]
    for g in main_grid:
        assert [len(gaps) for gaps in g["stale"]["gaps"]] == [g["n"]] * 3
        assert g["fresh"]["max_dtok_ratio"] == [1.0] * 3
    for name in result["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_replot_redraws_committed_pngs_from_json_alone(tmp_path):
    """The committed study's PNGs can be redrawn from its JSON (no study re-run); captions say what is shown."""
    import shutil

    from benchmarks.occupancy_shift import llm
    from benchmarks.occupancy_shift.run import RESULTS, records_from_json, replot

    records, cfg = records_from_json(RESULTS / "occupancy_shift.json")
    assert len(records) == len({(r["family"], r["n"], r["delta"], r["order"], r["seed"]) for r in records})
    assert {len(records_of) for records_of in [[r for r in records if r["n"] == 2 and r["delta"] == cfg.delta
                                                 and r["order"] == "forward" and r["family"] == "answer"]]} == {cfg.seeds}
    exact = tmp_path / "exact"
    exact.mkdir()
    shutil.copy(RESULTS / "occupancy_shift.json", exact)
    for name in replot(exact):
        assert (exact / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    study = tmp_path / "llm"
    study.mkdir()
    for f in ("occupancy_llm.json", "runs.jsonl"):
        shutil.copy(RESULTS / "llm" / f, study)
    assert set(llm.replot(study)) == {"scaling.png", "ratio.png", "gap_profile.png", "null_profile.png",
                                      "div_profile.png"}


def test_fit_legends_say_exponent_and_captions_are_drawn():
    import matplotlib.pyplot as plt

    from benchmarks.occupancy_shift import plots

    fig, ax = plt.subplots()
    series = {"stale": {2: [1.0, 1.1, 0.9], 3: [2.0, 2.2, 1.8], 4: [3.1, 3.0, 2.9]}}
    plots.plot_scaling(ax, series, n_boot=200)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0].startswith("stale: exponent ") and "b = " not in legend[0]
    plots.add_caption(fig, "delta = 0.01; 3 instances per size. " + plots.FIT_CAPTION)
    caption = fig.texts[-1].get_text()
    plt.close(fig)
    assert "delta = 0.01" in caption and "error bars: its 95% bootstrap interval" in caption.replace("\n", " ")
