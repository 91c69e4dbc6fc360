"""Ungated swaps, compatibility refusals and rollbacks on the tiny team (no rollouts needed)."""
from __future__ import annotations

import json

import pytest

from gate_helpers import other_base_adapter, perturbed, pickle_only


@pytest.fixture
def versions(tiny_team, tmp_path):
    """Two more solver versions (v2, v3) in the registry, as local dirs to swap in."""
    v1 = tiny_team.version_path(tiny_team.pins("tiny-duo")["solver"])
    return [perturbed(v1, tmp_path / f"cand{i}", scale=0.01 * i, seed=i) for i in (1, 2)]


def _roles(reg):
    return json.loads(json.dumps(reg.manifest("tiny-duo")["roles"]))


def test_ungated_swap_then_undo_restores_identical_pins(tiny_team, versions, cli):
    start = _roles(tiny_team)
    code, out, err = cli("swap", "solver", str(versions[0]), "--json")  # the only team: no --team needed
    assert code == 0, err
    res = json.loads(out)
    assert res["gated"] is False and res["accepted"] and res["revision"] == 2
    assert tiny_team.pins("tiny-duo")["solver"] == res["candidate"]["id"] != start["solver"]["id"]
    code, _, err = cli("swap", "solver", str(versions[1]), "--team", "tiny-duo")
    assert code == 0, err
    after_two = _roles(tiny_team)
    assert after_two["solver"]["name"] == "v3"

    assert cli("rollback", "solver")[0] == 0  # undo: v3 -> v2
    assert _roles(tiny_team)["solver"]["id"] == res["candidate"]["id"]
    assert cli("rollback", "solver", "--json")[0] == 0  # undo again: v2 -> v1
    assert _roles(tiny_team) == start
    code, _, err = cli("rollback", "solver")
    assert code == 2 and "no earlier holder" in err

    assert cli("rollback", "solver", "--to", "3")[0] == 0  # the pin of revision 3 (v3)
    assert _roles(tiny_team) == after_two
    events = tiny_team.history("tiny-duo")
    assert [e["event"] for e in events] == ["init", "swap", "swap", "rollback", "rollback", "rollback"]
    assert events[3]["undo"] and events[-1]["to_revision"] == 3


def test_team_rollback_restores_a_revision_exactly(tiny_team, versions, cli):
    start = tiny_team.manifest("tiny-duo")
    assert cli("swap", "solver", str(versions[0]))[0] == 0
    assert cli("swap", "critic", "tiny-duo.solver:v2")[0] == 0  # a version of another lineage
    assert tiny_team.pins("tiny-duo")["critic"] == tiny_team.pins("tiny-duo")["solver"]
    code, out, err = cli("team", "rollback", "tiny-duo", "1", "--json")
    assert code == 0, err
    m = json.loads(out)
    assert m["roles"] == start["roles"] and m["revision"] == 4
    assert tiny_team.history("tiny-duo")[-1]["event"] == "team-rollback"
    code, _, err = cli("team", "rollback", "tiny-duo", "1")
    assert code == 2 and "nothing to roll back" in err
    code, _, err = cli("team", "rollback", "tiny-duo", "9")
    assert code == 2 and "no revision 9" in err and "revisions: 1, 2, 3, 4" in err


def test_bad_candidates_are_refused_and_change_nothing(tiny_team, tmp_path, cli):
    manifest = tiny_team.manifest("tiny-duo")
    n_events = len(tiny_team.history())
    v1 = tiny_team.version_path(manifest["roles"]["solver"]["id"])
    cases = [
        (["swap", "solver", "v9", "--gate"], "has no version or alias 'v9'"),
        (["swap", "solver", str(tmp_path / "missing")], "no adapter dir"),
        (["swap", "solver", str(pickle_only(tmp_path / "pkl")), "--gate"], "pickle file (adapter_model.bin)"),
        (["swap", "solver", str(other_base_adapter(v1, tmp_path / "other")), "--gate"], "another base"),
        (["swap", "judge", "v1"], "no role 'judge'"),
        (["swap", "solver", "v1", "--force"], "use it together with --gate"),
        (["swap", "solver", "v1", "--team", "nope"], "no team 'nope'"),
        (["rollback", "solver", "--to", "7"], "no revision 7"),
    ]
    for args, msg in cases:
        code, out, err = cli(*args)
        assert code == 2, (args, err)
        assert msg in err and err.startswith("error:") and "Traceback" not in err, (args, err)
    assert tiny_team.manifest("tiny-duo") == manifest
    assert len(tiny_team.history()) == n_events
