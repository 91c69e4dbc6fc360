"""`train` and `report` through the CLI: argument errors, a tiny run end to end, curves to PNG."""
from __future__ import annotations

import json

from teamtr_adapters.train.diagnostics import DiagnosticsLog, UpdateRecord


def test_train_argument_errors(cli, home):
    code, _, err = cli("train", "--team", "tiny-duo")
    assert code == 2 and "give a ROLE" in err
    code, _, err = cli("train", "solver", "--team", "tiny-duo", "--stages", "2")
    assert code == 2 and "not both" in err
    code, _, err = cli("train", "solver", "--team", "nope")
    assert code == 2 and "no team 'nope'" in err and "Traceback" not in err


def test_report_draws_png_from_a_run_dir(cli, home):
    run = home / "runs" / "t-teamtr-1"
    log = DiagnosticsLog(run / "updates.jsonl")
    for i in range(3):
        log.write(UpdateRecord(stage=0, update=i, role="solver", method="teamtr", ratio="token", parent="p",
                               version=f"v{i}", reward_before=0.1 * i, reward_after=0.1 * i + 0.1, d_tok_mean=0.004,
                               d_tok_p99=0.02, d_tok_fresh=0.004, l_fresh=0.01, l_stale=0.02, stale_gap=0.01,
                               beta=0.1, tokens=50, delta=0.01, certificate=0.001 * i))
    code, out, err = cli("report", "t-teamtr", "--json")
    assert code == 0, err
    d = json.loads(out)
    png = run / "curves.png"
    assert d["png"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert d["summary"]["updates"] == 3 and d["summary"]["tokens"] == 150 and len(d["records"]) == 3
    code, _, err = cli("report", "missing-run")
    assert code == 2 and "no run 'missing-run'" in err


def test_train_cli_runs_updates_and_report_draws_them(cli, tiny_team):
    code, out, err = cli("train", "critic", "--team", "tiny-duo", "--updates", "2", "--steps", "1", "-G", "2",
                         "-P", "2", "--max-new-tokens", "3", "--dtype", "float32", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["updates"] == 2 and [r["role"] for r in d["records"]] == ["critic", "critic"]
    assert d["tokens"] == sum(r["tokens"] for r in d["records"]) > 0
    assert d["records"][1]["parent"] == (d["records"][0]["version"] or d["records"][0]["parent"])
    code, out, err = cli("report", d["run"], "--json")
    assert code == 0, err and json.loads(out)["summary"]["updates"] == 2
    code, _, err = cli("train", "--team", "tiny-duo", "--stages", "1", "--method", "bogus")
    assert code == 2 and "unknown method 'bogus'" in err
