"""benchmarks/learning.py's bookkeeping: `--resume` only continues runs made with the same setting, and continues an
interrupted run exactly (the tiny model; everything else without a model)."""
from __future__ import annotations

import json

import pytest

from benchmarks import learning


def _log(tmp_path, runs):
    out = tmp_path / "out"
    out.mkdir()
    (out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    return out


def test_resume_refuses_runs_of_another_setting(tmp_path):
    a = learning.parse(["--temperature", "0.3", "--out", str(tmp_path)])
    same = {"method": "teamtr", "seed": 0, "setting": learning.setting(a)}
    learning.check_resumable([same], a, tmp_path / "runs.jsonl")  # same setting: fine
    other = {**same, "setting": {**same["setting"], "temperature": 0.5, "lr": 1e-3}}
    with pytest.raises(SystemExit, match=r"^error: --resume: .* teamtr seed 0 run with another setting "
                                         r"\(lr 0.001 here 0.002, temperature 0.5 here 0.3\)"):
        learning.check_resumable([other], a, tmp_path / "runs.jsonl")
    with pytest.raises(SystemExit, match="no recorded setting"):
        learning.check_resumable([{"method": "stale", "seed": 1}], a, tmp_path / "runs.jsonl")


def test_resume_check_runs_before_anything_is_written(tmp_path, capsys):
    """main() stops on a mismatched log before it loads a model, and leaves the log as it was."""
    out = _log(tmp_path, [{"method": "teamtr", "seed": 0, "setting": {"temperature": 0.5}}])
    before = (out / "runs.jsonl").read_text()
    with pytest.raises(SystemExit, match="another setting"):
        learning.main(["--resume", "--out", str(out)])
    assert (out / "runs.jsonl").read_text() == before


def _run(method, seed, before, after):
    return {"method": method, "seed": seed, "before": before, "after": after, "tokens": 100, "train_wall_s": 1.0,
            "probed_updates": 2, "out_of_region_updates": 0, "out_of_region_events": 0, "updates": 2, "no_signal": 0}


def test_analysis_pairs_methods_with_teamtr_on_common_seeds_and_keeps_each_seeds_change():
    """Each method's trained team is paired with teamtr's on the seeds both ran (stale's seed 1 has no teamtr
    partner and is left out of that pairing), and each seed's own change is kept beside the pooled interval."""
    runs = [_run("teamtr", 0, [0, 0, 0, 0], [1, 1, 0, 0]),
            _run("stale", 0, [0, 0, 0, 0], [1, 1, 1, 1]),
            _run("stale", 1, [0, 0, 1, 1], [0, 0, 0, 0])]
    alone = {0: {"scores": [1, 0, 0, 0]}, 1: {"scores": [1, 1, 1, 1]}}
    s = learning.analyse(runs, alone)
    assert s["teamtr"]["after_minus_teamtr"] is None
    assert {k: v["change"] for k, v in s["stale"]["per_seed_change"].items()} == {0: 1.0, 1: -0.5}
    assert s["stale"]["per_seed_change"][1]["ci95"][0] < -0.5 < s["stale"]["per_seed_change"][1]["ci95"][1]
    vt = s["stale"]["after_minus_teamtr"]
    assert vt["seeds"] == 1 and vt["change"] == pytest.approx(0.5)  # seed 0 only: 4/4 against 2/4
    assert s["stale"]["change"] == pytest.approx(0.25)  # pooled over both seeds' 8 prompts
    assert s["stale"]["after_minus_base_alone"]["change"] == pytest.approx((4 - 1 + 0 - 4) / 8)
    md = learning.table(s)
    assert "| stale | 2 | " in md and "+1.000 [+1.000, +1.000]; -0.500 [" in md and "not the spread between training seeds" in md


def test_curves_are_averaged_per_evaluation_point_with_an_interval_and_plotted(tmp_path):
    runs = [_run("teamtr", s, [0] * 4, [1] * 4) for s in (0, 1)]
    runs[0]["curve"] = [{"tokens": 0, "wall_s": 0.0, "accuracy": 0.25}, {"tokens": 100, "wall_s": 10.0, "accuracy": 0.5}]
    runs[1]["curve"] = [{"tokens": 0, "wall_s": 0.0, "accuracy": 0.75}, {"tokens": 120, "wall_s": 14.0, "accuracy": 1.0},
                        {"tokens": 200, "wall_s": 20.0, "accuracy": 1.0}]  # a third point only one seed reached
    xs, ys, cis = learning.curve_mean(runs, "wall_s", n_samples=4)
    assert xs == [0.0, 12.0] and ys == [0.5, 0.75]
    assert cis[0][0] < 0.5 < cis[0][1] and cis[1][0] < 0.75 < cis[1][1] <= 1.0  # 4 of 8, 6 of 8 (Wilson)
    a = learning.parse(["--eval", "4", "--out", str(tmp_path)])
    learning.plot(runs, a, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_wall_times_of_different_machines_are_listed_apart_never_averaged(tmp_path):
    """A run appended on another machine (here a CPU without native bf16) keeps its own wall mean: the table lists
    each machine's, the wall panel averages only the most common machine's runs and draws the other dashed."""
    runs = [_run("stale", s, [0] * 4, [1] * 4) for s in (0, 1, 2)]
    for r, wall in zip(runs, (3000.0, 3400.0, 7000.0)):
        r["train_wall_s"] = wall
        r["curve"] = [{"tokens": 0, "wall_s": 0.0, "accuracy": 0.0}, {"tokens": 100, "wall_s": wall, "accuracy": 1.0}]
    runs[2]["machine"] = "AMD EPYC, 2 cores, no native bf16"
    s = learning.analyse(runs, {k: {"scores": [0] * 4} for k in (0, 1, 2)})
    assert s["stale"]["train_wall_s"] == {learning.UNRECORDED: {"runs": 2, "mean": 3200.0},
                                          "AMD EPYC, 2 cores, no native bf16": {"runs": 1, "mean": 7000.0}}
    md = learning.table(s)
    assert "| 3200 s (2 on machine not recorded); 7000 s (1 on AMD EPYC, 2 cores, no native bf16) |" in md
    assert "4467 s" not in md  # the mixed mean
    learning.plot(runs, learning.parse(["--eval", "4", "--out", str(tmp_path)]), tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_machine_names_the_cpu_and_whether_it_has_native_bf16():
    m = learning.machine()
    assert m.endswith(("native bf16", "no native bf16")) and " cores, " in m


def test_base_alone_is_measured_once_and_reused_only_for_the_same_setting(tmp_path):
    """A re-summary reads the base-alone evaluations learning.json stored (re-sampling them on another machine
    could change them); a learning.json of another setting is not used."""
    a = learning.parse(["--out", str(tmp_path)])
    assert learning.known_alone(a) == {}  # nothing stored yet
    stored = {"config": learning.setting(a), "base_alone": {"2": {"accuracy": 0.25, "scores": [1, 0, 0, 0]}}}
    (tmp_path / "learning.json").write_text(json.dumps(stored))
    assert learning.known_alone(a) == {2: {"accuracy": 0.25, "scores": [1, 0, 0, 0]}}
    other = learning.parse(["--lr", "1e-3", "--out", str(tmp_path)])
    assert learning.known_alone(other) == {}


def test_learning_md_says_where_its_runs_come_from_and_what_has_not_run(tmp_path):
    """The provenance paragraph is written from the run log (per seed, the runs in the order they ran; what of the
    full comparison is missing), then the folder's hand-kept notes verbatim: no hand re-typing after each run."""
    a = learning.parse(["--out", str(tmp_path)])
    runs = [_run("stale", 0, [0], [1]), _run("teamtr", 0, [0], [1]), _run("teamtr", 1, [0], [0])]
    text = learning.provenance(runs, a)
    assert "(seed 0: stale, teamtr; seed 1: teamtr)" in " ".join(text.split())
    missing = " ".join(text.split()).split("Not run yet: ")[1]
    assert missing.startswith("stale-is seed 0, resample-every-k seed 0, joint seed 0, single seed 0, stale seed 1,")
    assert "teamtr seed 1" not in missing and missing.count("seed 2") == len(learning.METHODS)
    assert max(len(x) for x in text.splitlines()) <= 114 and "notes" not in text
    (tmp_path / learning.NOTES).write_text("Seed 0 ran on a Xeon.\n")
    assert learning.provenance(runs, a).endswith("continues.\n\nSeed 0 ran on a Xeon.")
    done = [_run(m, s, [0], [1]) for s in range(3) for m in learning.METHODS]
    assert "Every method of the full comparison has run on every seed." in learning.provenance(done, a)
    quick = learning.parse(["--quick", "--out", str(tmp_path)])
    assert "Every method" in learning.provenance([_run("teamtr", 0, [0], [1]), _run("stale", 0, [0], [1])], quick)


def test_an_interrupted_run_leaves_a_complete_snapshot_at_every_moment_and_resume_checks_its_setting(tmp_path):
    """A stage-end snapshot counts once its state is written; the previous one goes only after that, so a run
    killed mid-rotation still leaves the newest complete one. `--resume` refuses a snapshot of another setting
    before anything runs, and a run without `--resume` starts over (snapshots removed)."""
    a = learning.parse(["--out", str(tmp_path / "out")])
    ckpt = learning.partial_dir(a, "stale-is", 1)
    home = tmp_path / "home"
    home.mkdir()
    (home / "manifest").write_text("stage 0")
    assert learning.load_snapshot(ckpt) is None
    learning.snapshot(ckpt, home, {"setting": learning.setting(a), "stage": 1})
    (home / "manifest").write_text("stage 1")
    learning.snapshot(ckpt, home, {"setting": learning.setting(a), "stage": 2})
    saved = learning.load_snapshot(ckpt)
    assert saved["state"]["stage"] == 2 and (saved["home"] / "manifest").read_text() == "stage 1"
    assert sorted(p.name for p in ckpt.iterdir()) == ["last"]
    # killed between moving the last snapshot aside and putting the new one in its place
    (ckpt / "last").rename(ckpt / "old")
    learning.snapshot(ckpt, home, {"setting": learning.setting(a), "stage": 3})
    (ckpt / "last").rename(ckpt / "next")
    assert learning.load_snapshot(ckpt)["state"]["stage"] == 3
    # killed while writing a new snapshot (no state.pkl yet): the last complete one is kept
    (ckpt / "next").rename(ckpt / "last")
    (ckpt / "next" / "home").mkdir(parents=True)
    assert learning.load_snapshot(ckpt)["state"]["stage"] == 3
    # another setting: refused before any model loads, and nothing is removed
    other = learning.parse(["--resume", "--lr", "1e-3", "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match=r"^error: --resume: the unfinished run in .*stale-is-seed1 has another"):
        learning.check_resumable([], other, tmp_path / "out" / "runs.jsonl")
    assert learning.load_snapshot(ckpt)["state"]["stage"] == 3
    learning.check_resumable([], learning.parse(["--resume", "--out", str(tmp_path / "out")]), tmp_path / "x")


def test_provenance_names_runs_continued_from_a_snapshot(tmp_path):
    a = learning.parse(["--out", str(tmp_path)])
    runs = [{**_run("stale-is", 1, [0], [1]), "parts": 2, "machine": "AMD EPYC, 2 cores, no native bf16"}]
    text = " ".join(learning.provenance(runs, a).split())
    assert "Continued from a stage-end snapshot after an interruption (wall times are sums over the parts): " \
           "stale-is seed 1 (2 parts on AMD EPYC, 2 cores, no native bf16)." in text


def test_a_run_killed_after_a_stage_and_resumed_records_what_the_uninterrupted_run_records(tiny_team, tmp_path,
                                                                                            monkeypatch):
    """run_one on the tiny team (a reward with signal): the same run straight through, and interrupted during
    its second stage then continued with `--resume` from the first stage's snapshot, record the same accuracies,
    tokens and updates, and end with the same pinned versions (content hashes); the resumed one says it ran in 2
    parts."""
    from test_train_stage import BASE_CFG, even_first_token

    import teamtr_adapters.train.stage as stage
    from teamtr_adapters.registry import Registry
    from teamtr_adapters.train.stage import TrainConfig, Trainer

    def tiny_trainer(method, seed, a, home, run_dir):
        cfg = TrainConfig(**{**BASE_CFG, "method": method, "seed": seed, "steps": a.steps, "prompts": a.prompts,
                             "group_size": a.group_size, "max_new_tokens": a.max_new_tokens, "order": a.order})
        return Trainer(Registry(home), "tiny-duo", cfg, device="cpu", dtype="float32", run_dir=run_dir,
                       reward_fn=even_first_token)

    monkeypatch.setattr(learning, "trainer", tiny_trainer)
    opts = ["--methods", "stale-is", "--budget", "90", "--eval", "4", "-P", "2", "-G", "4", "--max-new-tokens", "4",
            "--steps", "1", "--eval-points", "2"]
    straight = learning.run_one("stale-is", 0, learning.parse(opts + ["--out", str(tmp_path / "a")]), tiny_team.home, {})
    assert len(straight["curve"]) == 3 and straight["updates"] > 2  # more than one stage, two evaluations

    real, calls = stage.run_stages, []

    def killed_in_second_stage(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(stage, "run_stages", killed_in_second_stage)
    b = learning.parse(opts + ["--out", str(tmp_path / "b")])
    with pytest.raises(KeyboardInterrupt):
        learning.run_one("stale-is", 0, b, tiny_team.home, {})
    assert learning.load_snapshot(learning.partial_dir(b, "stale-is", 0))["state"]["stage"] == 1
    monkeypatch.setattr(stage, "run_stages", real)
    b.resume = True
    resumed = learning.run_one("stale-is", 0, b, tiny_team.home, {})
    keys = ("before", "after", "tokens", "diag_tokens", "updates", "accepted", "no_signal",
            "out_of_region_events", "d_tok_heldout_mean")
    strip = [{**c, "wall_s": None} for c in straight["curve"]]
    assert {k: resumed[k] for k in keys} == {k: straight[k] for k in keys}
    assert [{**c, "wall_s": None} for c in resumed["curve"]] == strip
    assert resumed["parts"] == 2 and "parts" not in straight
    pins = [Registry(learning.partial_dir(x, "stale-is", 0) / "work" / "home").pins("tiny-duo")
            for x in (learning.parse(opts + ["--out", str(tmp_path / "a")]), b)]
    assert pins[0] == pins[1] != tiny_team.pins("tiny-duo")
