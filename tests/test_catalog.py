"""Registry views (issue 17): `runs list`, `adapter compare`, `adapter deprecate`, `team lineage`, and the natural
order of modules in `adapter diff`, on a tiny team with one real training run."""
from __future__ import annotations

import json

import pytest

from teamtr_adapters.cli import render


@pytest.fixture
def trained(cli, tiny_team, monkeypatch):
    monkeypatch.setattr(render.console, "width", 80)
    code, out, err = cli("train", "critic", "--updates", "2", "--steps", "1", "-G", "2", "-P", "2",
                         "--max-new-tokens", "3", "--dtype", "float32", "--eval", "2", "--redraws", "0",
                         "--probe-prompts", "0", "--json")
    assert code == 0, err
    return tiny_team, json.loads(out)


def test_runs_compare_lineage_deprecate(cli, trained, tmp_path):
    reg, run = trained
    code, out, err = cli("runs", "list", "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["run"] == run["run"] and row["method"] == "teamtr" and row["team"] == "tiny-duo"
    assert row["roles"] == ["critic"] and row["updates"] == 2 and row["finished"]
    assert row["accuracy_change"] == run["eval_change"]["change"] and len(row["change_ci95"]) == 2
    code, out, _ = cli("runs", "list")
    assert code == 0 and run["run"] in out and max(map(len, out.splitlines())) <= 80

    names = [v.name for v in reg.list_versions("tiny-duo.critic")]
    last = f"tiny-duo.critic:{names[-1]}"
    code, out, err = cli("adapter", "compare", "tiny-duo.critic:v1", last, "--json")
    assert code == 0, err
    rows = {r["key"]: r for r in json.loads(out)["rows"]}
    if len(names) > 1:  # an update without learning signal writes no version
        assert rows["made_by"]["a"] == "init" and rows["made_by"]["b"] == "train"
        assert rows["metrics.d_tok_mean"]["a"] is None and rows["metrics.d_tok_mean"]["b"] >= 0
    code, out, _ = cli("adapter", "compare", "tiny-duo.critic:v1", last)
    assert code == 0 and "B - A" in out

    code, out, err = cli("team", "lineage", "tiny-duo", "--json")
    assert code == 0, err
    tree = json.loads(out)
    critic = tree["roles"]["critic"]
    assert critic["versions"][0]["name"] == "v1" and critic["pinned"] == names[-1]
    depth, node = 1, critic["versions"][0]
    while node["children"]:
        node, depth = node["children"][0], depth + 1
    assert depth == len(names) and node["pinned"]
    code, out, _ = cli("team", "lineage", "tiny-duo")
    assert code == 0 and "critic" in out and "solver" in out and "PINNED" in out

    code, out, err = cli("adapter", "deprecate", "tiny-duo.solver:v1", "--reason", "bad")
    assert code == 0, err
    code, out, _ = cli("adapter", "list", "tiny-duo.solver")
    assert [line.split()[:2] + line.split()[-1:] for line in out.splitlines() if "tiny-duo.solver" in line] == [
        ["tiny-duo.solver", "v1", "DEPRECATED"]]
    assert reg.history()[-1]["event"] == "deprecate"
    code, out, _ = cli("history")
    assert "tiny-duo.solver:v1 deprecated:" in out and "bad" in out
    twin = reg.export("tiny-duo.solver:v1", tmp_path / "twin")
    code, _, err = cli("swap", "solver", "v1")
    assert code == 2 and "tiny-duo.solver:v1 is deprecated: bad; pass --force" in err
    code, _, err = cli("adapter", "deprecate", "tiny-duo.solver:v1", "--undo")
    assert code == 0, err
    assert twin.is_dir()


def test_natural_order_of_modules():
    from teamtr_adapters.registry.catalog import natural_key

    mods = ["layers.10.q", "layers.2.q", "layers.1.q", "layers.0.q"]
    assert sorted(mods, key=natural_key) == ["layers.0.q", "layers.1.q", "layers.2.q", "layers.10.q"]


def test_empty_runs_list_names_the_next_step(cli, home):
    code, out, _ = cli("runs", "list")
    assert code == 0 and "teamtr-adapters train ROLE" in out
