"""Issue 14, done means 1: the embedded math-trio made in a Hub-backed registry from one home, trained and
swapped (gated) from a second home; both homes then show the same manifest and history (loopback Hub)."""
from __future__ import annotations

import json
import time

import pytest

from hub_fixtures import hub  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration
LOC = "hf://org/reg"
TRAIN = ["--updates", "1", "-P", "2", "-G", "2", "--max-new-tokens", "8", "--steps", "1", "--probe-prompts", "2",
         "--redraws", "0", "--no-diag", "--json"]
# the same version as the incumbent: every paired difference is 0, which 2 prompts accept at a 0.9 margin
GATE = ["--gate", "--n", "2", "--looks", "1", "--epsilon", "0.9", "--json"]


def test_init_then_train_and_gated_swap_from_a_second_home(hub, embedded_base, tmp_path, monkeypatch, cli):
    timings = {}

    def run(home: str, *args: str) -> tuple[int, str, str]:
        monkeypatch.setenv("TEAMTR_HOME", str(tmp_path / home))
        n, t0 = len(hub.requests), time.perf_counter()
        result = cli(*args, "--registry", LOC)
        timings[" ".join(args[:2])] = (len(hub.requests) - n, round(time.perf_counter() - t0, 2))
        return result

    code, _, err = run("home-a", "team", "init", "math-trio")
    assert code == 0, err
    code, out, err = run("home-b", "train", "critic", "--team", "math-trio", *TRAIN)
    assert code == 0, err
    code, out, err = run("home-b", "swap", "solver", "v1", *GATE)
    assert code == 0, err
    assert json.loads(out)["report"]["decision"] == "accepted"
    views = {}
    for home in ("home-a", "home-b"):
        views[home] = [run(home, "team", "show", "math-trio", "--json")[1], run(home, "history", "--json")[1]]
        assert run(home, "adapter", "list", "--json")[0] == 0
    assert views["home-a"] == views["home-b"]
    manifest, history = json.loads(views["home-a"][0]), json.loads(views["home-a"][1])
    assert [e["event"] for e in history][:1] == ["init"] and history[-1]["event"] == "swap"
    assert manifest["revision"] == sum(1 for e in history if isinstance(e.get("pins_after"), dict))
    titles = [hub.state.commit_doc("org/reg", c["commit"])["title"] for c in hub.commit_log]
    assert titles[0] == "init math-trio critic, refiner, solver" and titles[-1].startswith("swap math-trio")
    print("hub calls and seconds per command:", json.dumps(timings))
