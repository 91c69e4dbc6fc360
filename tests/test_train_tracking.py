"""`train --track mlflow|wandb`: the optional experiment-tracker hook. Neither package is installed here (nor may
be): a small stand-in module put in `sys.modules` records what the hook calls, with the signatures of the real
`mlflow` / `wandb` functions it uses."""
from __future__ import annotations

import json
import sys
import types

import pytest

from teamtr_adapters.train.diagnostics import UpdateRecord
from teamtr_adapters.train.tracking import RunTracking, open_tracker

TRAIN = ("train", "critic", "--team", "tiny-duo", "--updates", "2", "--steps", "1", "-G", "2", "-P", "2",
         "--max-new-tokens", "3", "--dtype", "float32", "--probe-prompts", "0")


def fake_mlflow(calls: list) -> types.ModuleType:
    m = types.ModuleType("mlflow")
    m.start_run = lambda run_name=None, tags=None: calls.append(("start_run", run_name, tags))
    m.log_params = lambda params: calls.append(("log_params", params))
    m.log_metrics = lambda metrics, step=None: calls.append(("log_metrics", metrics, step))
    m.log_dict = lambda dictionary, artifact_file: calls.append(("log_dict", dictionary, artifact_file))
    m.end_run = lambda status="FINISHED": calls.append(("end_run", status))
    return m


class _Run:
    def __init__(self, calls: list) -> None:
        self.calls, self.summary = calls, {}

    def log(self, data, step=None):
        self.calls.append(("log", data, step))

    def finish(self, exit_code=None):
        self.calls.append(("finish", exit_code, dict(self.summary)))


def fake_wandb(calls: list) -> types.ModuleType:
    m = types.ModuleType("wandb")

    def init(project=None, name=None, config=None, tags=None):
        calls.append(("init", project, name, config, tags))
        return _Run(calls)

    m.init = init
    return m


def test_track_without_the_package_is_one_error_before_any_model_loads(cli, tiny_team, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    monkeypatch.setitem(sys.modules, "wandb", None)

    def no_model(*a, **k):
        raise AssertionError("a model was loaded before the tracker was checked")

    monkeypatch.setattr("teamtr_adapters.runtime.open.open_team_model", no_model)
    for name in ("mlflow", "wandb"):
        code, out, err = cli(*TRAIN, "--track", name)
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and f"pip install {name}" in lines[0], err
        assert "Traceback" not in err
    code, _, err = cli(*TRAIN, "--track", "neptune")
    assert code == 2 and "unknown tracker 'neptune'" in err and "mlflow, wandb" in err
    assert not (tiny_team.home / "runs").exists()
    assert [e["event"] for e in tiny_team.history()] == ["init"]


def test_track_mlflow_logs_settings_each_update_and_the_summary(cli, tiny_team, monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "mlflow", fake_mlflow(calls))
    code, out, err = cli(*TRAIN, "--track", "mlflow", "--json")
    assert code == 0, err
    d = json.loads(out)
    kinds = [c[0] for c in calls]
    assert kinds[:2] == ["start_run", "log_params"] and kinds[-2:] == ["log_dict", "end_run"]
    assert calls[0][1] == d["run"] and calls[0][2] == {"team": "tiny-duo", "method": "teamtr"}
    p = calls[1][1]
    assert p["run"] == d["run"] and p["team"] == "tiny-duo" and p["role"] == "critic" and p["updates"] == 2
    assert p["train.steps"] == 1 and p["train.group_size"] == 2 and p["train.prompts"] == 2
    assert p["train.delta"] == d["records"][0]["delta"] > 0  # resolved from the spec, not None
    assert set(p) >= {"pins_before.solver", "pins_before.critic", "backend", "train.lr"}
    assert all(isinstance(v, (str, int, float, bool)) for v in p.values())
    logged = [c for c in calls if c[0] == "log_metrics"]
    per_update = [c for c in logged if "summary.updates" not in c[1]]
    assert [c[2] for c in per_update] == [r["update"] for r in d["records"]] == [0, 1]
    for (_, metrics, _), rec in zip(per_update, d["records"]):
        assert metrics["tokens"] == rec["tokens"] and metrics["d_tok_mean"] == rec["d_tok_mean"]
        assert metrics["backtracks"] == rec["backtracks"] and metrics["beta"] == rec["beta"]
        assert "update" not in metrics and "role" not in metrics  # the step, and text
        assert all(isinstance(v, float) for v in metrics.values())
    summary = next(c[1] for c in calls if c[0] == "log_metrics" and "summary.updates" in c[1])
    assert summary["summary.updates"] == 2 and summary["summary.tokens"] == d["tokens"]
    assert calls[-2][2] == "summary.json" and calls[-2][1]["run"] == d["run"]
    assert calls[-1] == ("end_run", "FINISHED")


def _records() -> list[UpdateRecord]:
    return [UpdateRecord(stage=0, update=i, role="solver", method="teamtr", ratio="token", parent="p",
                         reward_before=0.25 * i, d_tok_mean=0.004, out_of_region=bool(i), tokens=40 + i,
                         logprob_gap={"tokens": 3, "mean": 0.0, "mean_abs": 0.1, "max_abs": 0.2, "kl_k3": 0.01})
            for i in range(3)]


def test_track_wandb_logs_config_steps_and_summary(monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb(calls))
    monkeypatch.setenv("WANDB_PROJECT", "my-project")
    t = RunTracking(open_tracker("wandb"), "wandb")
    t.start("run-1", {"team": "tiny-duo", "train": {"lr": 1e-4, "max_new_tokens": None}}, {"team": "tiny-duo"})
    for rec in _records():
        t.record(rec)
    t.finish({"updates": 3, "tokens": 123, "certificate_rank_corr": None, "run": "run-1"})
    assert calls[0] == ("init", "my-project", "run-1", {"team": "tiny-duo", "train.lr": 1e-4,
                                                         "train.max_new_tokens": "None"}, ["team:tiny-duo"])
    logs = [c for c in calls if c[0] == "log"]
    assert [c[2] for c in logs] == [0, 1, 2]
    assert logs[2][1]["reward_before"] == 0.5 and logs[2][1]["out_of_region"] == 1.0 and logs[2][1]["tokens"] == 42
    assert logs[0][1]["logprob_gap.mean_abs"] == 0.1 and "reward_after" not in logs[0][1]  # None: left out
    assert calls[-1] == ("finish", 0, {"summary.updates": 3.0, "summary.tokens": 123.0})


def test_a_failed_run_is_closed_as_failed_and_a_failing_tracker_does_not_stop_training(monkeypatch, capsys):
    calls: list = []
    monkeypatch.setitem(sys.modules, "mlflow", fake_mlflow(calls))
    t = RunTracking(open_tracker("mlflow"), "mlflow")
    t.start("run-2", {"team": "x"}, {})
    t.record(_records()[0])
    t.finish(None)  # training raised
    assert calls[-1] == ("end_run", "FAILED") and not any(c[0] == "log_dict" for c in calls)

    calls.clear()
    broken = fake_mlflow(calls)

    def refuse(metrics, step=None):
        raise ConnectionError("tracking server unreachable")

    broken.log_metrics = refuse
    monkeypatch.setitem(sys.modules, "mlflow", broken)
    t = RunTracking(open_tracker("mlflow"), "mlflow")
    t.start("run-3", {}, {})
    for rec in _records():
        t.record(rec)  # no exception: one warning, then tracking stops
    t.finish({"updates": 3})
    err = capsys.readouterr().err
    assert err.count("warning: mlflow failed to log update 0") == 1 and "goes on without tracking" in err
    assert calls[-1] == ("end_run", "FINISHED")


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_open_tracker_imports_the_package_up_front(monkeypatch, name):
    monkeypatch.setitem(sys.modules, name, None)
    from teamtr_adapters.errors import InputError

    with pytest.raises(InputError, match=f"pip install {name}"):
        open_tracker(name)
