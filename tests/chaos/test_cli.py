"""Chaos checks of the command line at CI size (issue 13, failures 1, 2 and 8); `python -m benchmarks.chaos --only
cli` runs the same checks at full size (every invocation also as a subprocess, 10,000 fuzzed specs, SIGINTs)."""
from __future__ import annotations

from pathlib import Path

from benchmarks.chaos import cli as chaos


def test_every_bad_invocation_is_one_error_line_and_changes_nothing(tiny_team, tmp_path):
    home = tiny_team.home
    failures = []
    for case in chaos.cases(chaos.make_inputs(tmp_path / "inputs", home)):
        target = Path(case.home) if case.home else home
        before, before_main = chaos.snapshot(target) if target.exists() else {}, chaos.snapshot(home)
        code, out, err = chaos.run_inprocess(case.args, str(target))
        failed, tb, why = chaos.judge(case, code, out, err)
        if failed or tb:
            failures.append(f"{case.label}: {why}")
        after = chaos.snapshot(target) if target.exists() else {}
        if after != before or chaos.snapshot(home) != before_main:
            failures.append(f"{case.label}: the registry changed")
    assert not failures, "\n".join(failures)


def test_bad_invocations_through_the_console_entry_point(tiny_team, tmp_path):
    """A few of them as real processes: exit codes and stderr exactly as a shell sees them."""
    p = chaos.make_inputs(tmp_path / "inputs", tiny_team.home)
    picked = {"unknown option", "-h", "--version", "missing --team", "--n abc", "binary spec",
              "home is a file: team list"}
    for case in [c for c in chaos.cases(p) if c.label in picked]:
        code, out, err = chaos.run_subprocess(case.args, case.home or str(tiny_team.home))
        failed, tb, why = chaos.judge(case, code, out, err)
        assert not failed and not tb, f"{case.label}: {why}"


def test_fuzzed_specs_round_trip_or_are_refused_with_input_errors():
    row = chaos.fuzz_row(200)
    assert row.trials == 200 and row.failures == 0 and row.tracebacks == 0, row.note



def test_os_refusal_inside_the_registry_is_one_line_and_exit_7(tiny_team):
    """The OS refusing a write inside the home (here `locks` is a file, so creating a lock fails with
    FileExistsError; a read-only home fails the same way with PermissionError) is one `error:` line, exit 8."""
    import shutil

    home = tiny_team.home
    shutil.rmtree(home / "locks", ignore_errors=True)
    (home / "locks").write_text("")
    before = chaos.snapshot(home)
    code, out, err = chaos.run_inprocess(["adapter", "alias", "tiny-duo.solver:v1", "best"], str(home))
    assert code == 8 and err.startswith("error: ") and "locks" in err and err.count("\n") == 1, err
    assert chaos.snapshot(home) == before


def test_read_only_home_is_one_line_and_exit_7(tiny_team, tmp_path):
    import os
    import shutil
    import stat

    import pytest

    if os.geteuid() == 0:
        pytest.skip("root may write into a read-only dir")
    home = tmp_path / "ro-home"
    shutil.copytree(tiny_team.home, home)
    for p in [home, *home.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    before = chaos.snapshot(home)
    try:
        code, out, err = chaos.run_inprocess(["adapter", "alias", "tiny-duo.solver:v1", "best"], str(home))
    finally:
        for p in [home, *home.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
    assert code == 8 and err.startswith("error: Permission denied") and err.count("\n") == 1, err
    assert chaos.snapshot(home) == before
