"""The registry chaos campaign at CI size (benchmarks/chaos/registry.py runs it at full size): SIGKILL during
version writes, pin moves and gc; gc beside writers and readers; every kind of stored damage. No torch."""
from __future__ import annotations

import pytest

from benchmarks.chaos import registry as chaos


def clean(row) -> None:
    assert row.trials > 0
    assert (row.failures, row.tracebacks, row.changed_after_refusal) == (0, 0, 0), (row.check, row.note)


def test_sigkill_during_version_writes_leaves_every_visible_version_whole(tmp_path):
    row = chaos.kill_version_writes(tmp_path, trials=15, per_registry=8)
    clean(row)


def test_sigkill_during_pin_moves_keeps_manifest_and_history_together_and_rollback_works(tmp_path):
    # Before the pin journal, ~15% of such kills left `manifest revision N but N-1 pin events`.
    row = chaos.kill_pin_moves(tmp_path, trials=30, per_registry=15, ops=15)
    clean(row)


def test_sigkill_during_gc_leaves_a_registry_the_next_gc_finishes(tmp_path):
    clean(chaos.kill_gc(tmp_path, trials=8))


def test_gc_beside_writers_and_readers_loses_nothing(tmp_path):
    # Before the registry lock, gc deleted writers' tmp/ dirs and versions between add and alias.
    clean(chaos.gc_beside_writers(tmp_path, writers=4, ops=12))


@pytest.mark.parametrize("case", chaos.CASES, ids=[c[0] for c in chaos.CASES])
def test_damage_is_reported_by_verify_and_refused_in_one_line(tmp_path, monkeypatch, capsys, case):
    from teamtr_adapters.cli.app import run

    def in_process(home, args):
        monkeypatch.setenv("TEAMTR_HOME", str(home))
        capsys.readouterr()
        try:
            code = run(list(args))
        except BaseException as e:  # anything escaping the CLI would be a traceback for the user
            out = capsys.readouterr()
            return 1, out.out, out.err + f"Traceback (escaped): {type(e).__name__}: {e}"
        out = capsys.readouterr()
        return code, out.out, out.err

    [row] = chaos.corruption_cases(tmp_path, in_process, cases=[case])
    clean(row)


def test_gc_spares_scratch_dirs_of_live_processes_and_removes_leftovers(tmp_path):
    import os
    import signal
    import time

    from teamtr_adapters.registry import Registry

    reg = chaos.new_registry(tmp_path / "home", pool=1)
    home = reg.home
    ready_r, ready_w = os.pipe()

    def worker() -> None:  # a training run: its scratch dir lives as long as the process
        with Registry(home).scratch("train-") as d:
            (d / "adapter_model.safetensors").write_bytes(b"partial")
            os.write(ready_w, d.name.encode())
            time.sleep(600)

    pid = chaos.fork_run(worker)
    os.close(ready_w)  # so that the read below ends if the worker dies
    name = os.read(ready_r, 200).decode()
    assert name, "the worker died before making its scratch dir"
    (home / "tmp" / "add-killed").mkdir()                      # a version write killed mid-copy
    (home / "tmp" / "foreign").mkdir()                         # not ours: left alone until it is old
    (home / "lineages" / ".chaos.solver.json.x1y2.tmp").write_text("{")  # an atomic write killed before its rename
    report = reg.gc(dry_run=False)
    assert (home / "tmp" / name / "adapter_model.safetensors").is_file()
    assert report["stale_tmp"] == ["tmp/add-killed"] and report["live_tmp"] == 2
    assert report["stale_files"] == ["lineages/.chaos.solver.json.x1y2.tmp"]
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    old = time.time() - 2 * 3600
    os.utime(home / "tmp" / "foreign", (old, old))
    report = reg.gc(dry_run=False)
    assert sorted(report["stale_tmp"]) == ["tmp/foreign", f"tmp/{name}"] and report["live_tmp"] == 0
    assert not any((home / "tmp").iterdir()) and reg.verify()["ok"]


def test_a_pull_event_keeps_the_manifest_revision(tmp_path):
    # `hub pull` passes the Hub revision as "revision"; it used to overwrite the manifest revision in the
    # history, so `team rollback T 1` found no revision 1 in a pulled team.
    from teamtr_adapters.registry.rollback import pins_at, rollback_team
    from teamtr_adapters.registry import Registry
    from teamtr_adapters.spec import parse_spec

    reg = Registry(tmp_path / "home")
    src = tmp_path / "src"
    ids = {r: [reg.add_version(f"chaos.{r}", chaos.fake_adapter(src / f"{r}{i}", [9, k, i]), made_by="pull",
                               base=chaos.BASE).id for i in range(2)] for k, r in enumerate(chaos.ROLES)}
    reg.create_team(parse_spec(chaos.SPEC), {r: ids[r][0] for r in chaos.ROLES}, chaos.BASE,
                    {"event": "pull", "revision": "main"})
    reg.update_pins("chaos", {"solver": ids["solver"][1]}, {"event": "pull", "revision": "v2-tag"})
    events = reg.history("chaos")
    assert [(e["revision"], e["event_revision"]) for e in events] == [(1, "main"), (2, "v2-tag")]
    rollback_team(reg, "chaos", 1)
    assert reg.pins("chaos") == pins_at(reg, "chaos", 1) and reg.verify()["ok"]
