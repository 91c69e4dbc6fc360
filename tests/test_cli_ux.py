"""What a user sees (issue 17): tables that keep names whole at 80 columns, readable `adapter show`, standard
help, one default-team rule, next-step hints on empty states, shell completion."""
from __future__ import annotations

import json

import pytest

from teamtr_adapters.cli import render


@pytest.fixture
def narrow(monkeypatch):
    """An 80-column terminal (what `COLUMNS=80` gives rich)."""
    monkeypatch.setattr(render.console, "width", 80)
    return 80


def fits(out: str, width: int = 80) -> None:
    lines = out.splitlines()
    assert lines and max(len(line) for line in lines) <= width, out
    assert "…" not in out, out


def words(out: str) -> set[str]:
    return {w.strip(",;:()") for line in out.splitlines() for w in line.split()}


@pytest.fixture
def grown(tiny_team, tiny_base, tmp_path):
    """tiny-duo with solver v2 (imported, aliased `best`, swapped in) and a second version of critic."""
    reg = tiny_team
    src = reg.export("tiny-duo.solver:v1", tmp_path / "src")
    cfg = json.loads((src / "adapter_config.json").read_text())
    (src / "adapter_config.json").write_text(json.dumps({**cfg, "lora_dropout": 0.05}))  # a new content id
    v2 = reg.import_adapter(src, "tiny-duo.solver", tiny_base)
    reg.set_alias("tiny-duo.solver", "best", "v2")
    reg.update_pins("tiny-duo", {"solver": v2.id}, {"event": "swap", "role": "solver"})
    return reg


def test_registry_tables_keep_names_whole_at_80_columns(cli, grown, narrow):
    for args in (["adapter", "list"], ["team", "list"], ["team", "show", "tiny-duo"], ["history"],
                 ["adapter", "show", "tiny-duo.solver:v2"]):
        code, out, err = cli(*args)
        assert code == 0, err
        fits(out)
    code, out, _ = cli("adapter", "list")
    rows = [line.split() for line in out.splitlines() if line.startswith("tiny-duo.")]
    assert [r[:2] for r in rows] == [["tiny-duo.critic", "v1"], ["tiny-duo.solver", "v1"], ["tiny-duo.solver", "v2"]]
    assert rows[2][2] == "import" and "best" in rows[2]  # made by, and the alias among the tags
    code, out, _ = cli("history")
    assert "solver v1 -> v2" in out and "tiny-duo" in words(out)
    assert len([line for line in out.splitlines() if "swap" in line]) == 1  # one change, one line
    code, out, _ = cli("team", "show", "tiny-duo")
    assert {"solver", "critic", "v1", "v2"} <= words(out)
    code, out, _ = cli("team", "list")
    assert {"tiny-duo", "solver", "critic", "v2"} <= words(out)


def test_adapter_show_prints_fields_not_dicts(cli, grown, narrow):
    code, out, _ = cli("adapter", "show", "tiny-duo.solver:v2")
    assert code == 0
    assert "{" not in out and "'" not in out, out
    assert "config.lora_dropout" not in out  # lineage metadata, not the PEFT config
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:] if line.strip()}
    assert lines["aliases"] == ["best"] and lines["made"] == ["by", "import"] and lines["base"][0] == "tiny-llama"


def test_train_and_eval_tables_at_80_columns(narrow, capsys):
    from teamtr_adapters.cli.runtime_cmds import _render_report
    from teamtr_adapters.cli.train_cmds import _render_train

    rec = dict(update=11, stage=10, role="refiner", version_name="v12", reward_before=0.123456, reward_after=0.25,
               l_fresh=-0.012345, d_tok_mean=4.5678e-05, beta=0.1, backtracks=3, out_of_region=True, tokens=12345,
               wall_s=123.4567, no_signal=None)
    _render_train(dict(run="20261130-104600-teamtr-abc", method="teamtr", records=[rec], tokens=12345,
                       diag_tokens=0, wall_s=123.4, stale_gap_mean=None, run_dir="/r", backend="hf"))
    out = capsys.readouterr().out
    fits(out)
    header = next(line for line in out.splitlines() if line.split()[:3] == ["#", "stage", "role"])
    assert header.split() == ["#", "stage", "role", "ver", "R0", "R1", "L_fresh", "D_tok", "beta", "bt", "oor",
                              "tok", "s"]
    assert {"refiner", "v12", "12345"} <= words(out) and "bt: backtracks" in " ".join(out.split())

    res = {"avg@k": 0.25, "pass@k": 0.25, "answered_rate": 0.9, "final_format_rate": 0.5, "tokens": 999,
           "agents": {"refiner": {"version": "v12 (1a2b3c4d)", "mean_tokens": 40.5, "answer_format_rate": 0.5}}}
    _render_report({"team": "math-trio", "task": "arithmetic", "split": "heldout", "n": 32, "k": 1, "seed": 0,
                    "team_result": res, "base_alone": {**res, "avg@k": 0.125}, "gain_avg@k": 0.125,
                    "gain_paired": {"n": 32, "before": 0.125, "after": 0.25, "change": 0.125,
                                    "ci95": [-0.03, 0.28], "wins": 6, "losses": 2}})
    out = capsys.readouterr().out
    fits(out)
    assert {"refiner", "v12", "math-trio", "answered"} <= words(out)
    flat = " ".join(out.split())
    assert "gain_avg@k (team - base alone) +0.125, 95% CI [-0.030, +0.280] over 32 paired prompts" in flat
    assert "no significant difference" in flat


def test_paired_gain_pairs_prompts_and_averages_samples():
    from teamtr_adapters.cli.runtime_cmds import paired_gain
    from teamtr_adapters.runtime.records import Episode

    def eps(rewards: list[list[float]]) -> list[Episode]:
        return [Episode("q", "1", i, s, 0, reward=r) for i, rs in enumerate(rewards) for s, r in enumerate(rs)]

    g = paired_gain(eps([[1, 1], [1, 0], [0, 0], [1, 1]]), eps([[0, 0], [0, 0], [0, 0], [1, 0]]))
    assert g["n"] == 4 and g["after"] == 0.625 and g["before"] == 0.125 and g["change"] == 0.5
    assert g["wins"] == 3 and g["losses"] == 0 and g["ci95"][0] < 0.5 < g["ci95"][1]


def test_run_never_prints_final_answer_none(capsys):
    from teamtr_adapters.cli.runtime_cmds import _render_run

    _render_run({"turns": [{"role": "solver", "label": "v1 (abc)", "message": "hmm"}], "final_answer": None})
    out = capsys.readouterr().out
    assert "None" not in out and "final answer: no answer found" in out


def test_help_uses_standard_metavars_and_groups_commands(cli, home):
    code, out, _ = cli("team", "show", "-h")
    assert code == 0 and "team show [OPTIONS] TEAM" in out and "{team}" not in out and "<" not in out
    code, out, _ = cli("train", "--help")
    assert code == 0 and "[ROLE]" in out and "--team" in out and "TEAM" in out and "<int>" not in out
    assert "<bool>" not in out and "<str>" not in out
    code, out, _ = cli("--help")
    assert code == 0
    for panel in ("Teams and versions", "Play", "Train", "Swap and roll back", "Share"):
        assert panel in out
    code, out, _ = cli("--version")
    assert code == 0 and out.startswith("teamtr-adapters ")


def test_shell_completion_through_run(cli, home, monkeypatch):
    code, out, err = cli("--show-completion", "bash")
    assert code == 0, err
    assert "_TEAMTR_ADAPTERS_COMPLETE" in out and "complete -o default -F" in out
    monkeypatch.setenv("_TEAMTR_ADAPTERS_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "teamtr-adapters te")
    monkeypatch.setenv("COMP_CWORD", "1")
    code, out, _ = cli()
    assert code == 0 and out.split() == ["team"]
    monkeypatch.setenv("COMP_WORDS", "teamtr-adapters adapter ")
    monkeypatch.setenv("COMP_CWORD", "2")
    code, out, _ = cli()
    assert {"list", "show", "import", "diff"} <= set(out.split())


def test_empty_registry_states_name_the_next_step(cli, home):
    for args in (["team", "list"], ["adapter", "list"], ["history"]):
        code, out, err = cli(*args)
        assert code == 0, err
        assert "team init" in out, (args, out)
    code, _, err = cli("eval")
    assert code == 2 and "holds no team" in err and "team init" in err


def test_one_default_team_rule_for_every_command(cli, tiny_team, tiny_spec, tiny_base):
    def bad_or_other(args: list[str]) -> str:
        code, _, err = cli(*args)
        assert code != 0 and "Traceback" not in err
        return err

    one_team = {"rollback": ["rollback", "solver"]}
    err = bad_or_other(one_team["rollback"])
    assert "--team" not in err  # the only team is taken: the error is about the rollback itself
    tiny_team.init_team(tiny_spec.replace(name="tiny-two"), tiny_base)
    cmds = [["train", "critic"], ["eval"], ["run", "What is 1 + 1?"], ["swap", "solver", "v1"],
            ["rollback", "solver"], ["align", "solver", "v1"]]
    for args in cmds:
        code, _, err = cli(*args)
        assert code == 2, (args, err)
        assert err == "error: name the team with --team: the registry holds 2 teams (tiny-duo, tiny-two)\n", args


def test_import_of_a_missing_dir_is_not_found(tiny_team, tiny_base, cli, tmp_path):
    from teamtr_adapters.errors import NotFoundError

    with pytest.raises(NotFoundError, match="no such adapter dir"):
        tiny_team.import_adapter(tmp_path / "missing" / "dir", "mine", tiny_base)
    code, _, err = cli("adapter", "import", str(tmp_path / "missing"), "mine", "--team", "tiny-duo")
    assert code == 2 and "no such adapter dir" in err


def test_report_png_is_titled_with_the_runs_settings(cli, home):
    from teamtr_adapters.train.diagnostics import DiagnosticsLog, UpdateRecord
    from teamtr_adapters.train.report import read_config, run_title

    run = home / "runs" / "r1-teamtr"
    log = DiagnosticsLog(run / "updates.jsonl")
    for i in range(3):
        log.write(UpdateRecord(stage=0, update=i, role=["solver", "critic", "solver"][i], method="teamtr",
                               ratio="token", parent="p", reward_before=0.1, reward_after=0.2, backtracks=i,
                               tokens=10, delta=0.01, certificate=0.0))
    (run / "config.json").write_text(json.dumps({"team": "math-trio", "stages": 1, "train": {
        "method": "teamtr", "prompts": 8, "group_size": 4, "steps": 2, "lr": 1e-4, "delta": None, "seed": 3}}))
    (run / "summary.json").write_text(json.dumps({"method": "teamtr", "team": "math-trio", "updates": 3,
                                                  "eval_change": {"n": 16, "before": 0.2, "after": 0.3,
                                                                  "change": 0.1, "ci95": [-0.05, 0.25]}}))
    records = __import__("teamtr_adapters.train.diagnostics", fromlist=["read_records"]).read_records(
        run / "updates.jsonl")
    title = run_title("r1-teamtr", json.loads((run / "summary.json").read_text()), read_config(run), records)
    assert title == ("run r1-teamtr: teamtr on team math-trio (3 update(s) of solver, critic)\n"
                     "P=8 x G=4, steps/update 2, lr 0.0001, delta 0.01, seed 3")
    code, out, err = cli("report", "r1-teamtr", "--json")
    assert code == 0, err
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
