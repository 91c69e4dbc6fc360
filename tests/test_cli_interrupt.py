"""Ctrl-C and killed runs (issue 13, failure 2): `train` under SIGINT prints one line and exits 130 with the
registry consistent and no temp dir left; `report` on a run that did not finish says so."""
from __future__ import annotations

import json
import signal

from benchmarks.chaos import cli as chaos


def test_sigint_during_train_prints_one_line_exits_130_registry_consistent(tiny_team):
    home = tiny_team.home
    # Launched as a background job of a non-interactive shell, pytest inherits SIGINT ignored (this test once passed
    # only when CI ran in the foreground); the helper must still deliver a working Ctrl-C to `train`.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code, out, err = chaos.interrupt_train(home, after_updates=1)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert chaos.interrupt_problems(home, code, err) == []
    assert not [p for p in home.iterdir() if p.name.startswith(".train-")]
    run = next((home / "runs").iterdir())
    code, out, err = chaos.run_inprocess(["report", run.name, "--json"], str(home))
    assert code == 0, err
    d = json.loads(out)
    assert d["summary"]["finished"] is False and d["summary"]["updates"] >= 1


def test_report_on_a_run_killed_before_its_first_update(cli, home):
    run = home / "runs" / "tiny-duo-teamtr-20260101T000000-0001"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    code, _, err = cli("report", run.name)
    assert code == 2 and "did not finish" in err and "no run" not in err
    (run / "updates.jsonl").write_text('{"stage": 0, "upd')  # a line cut short by the kill
    code, _, err = cli("report", run.name[:20])
    assert code == 2 and "did not finish" in err and "Traceback" not in err


def test_train_writes_its_temp_dirs_under_the_registry_tmp(tiny_team, tiny_spec):
    """A killed run's scratch dir must lie where `registry gc` cleans up, never loose in $TEAMTR_HOME."""
    from teamtr_adapters.train.stage import TrainConfig, Trainer, run_stages

    reg = tiny_team
    seen = []
    real_add = reg.add_version

    def spy(lineage, src_dir, **kw):  # records where the trainer staged the adapter; the real write follows
        seen.append(src_dir)
        return real_add(lineage, src_dir, **kw)

    reg.add_version = spy
    cfg = TrainConfig(steps=2, group_size=4, prompts=2, max_new_tokens=4, lr=1e-2, delta=0.05, order="critic")
    with Trainer(reg, "tiny-duo", cfg, dtype="float32", device="cpu", single_role="critic",
                 reward_fn=lambda ep: float(ep.turns[-1].message_ids[0] % 2 == 0)) as t:
        run_stages(t, 1)
    assert seen and all(reg.home / "tmp" in p.parents for p in seen)
    assert not [p for p in reg.home.iterdir() if p.name.startswith(".train-")]
