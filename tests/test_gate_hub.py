"""`swap ROLE hf://ORG/REPO#ROLE` pulls that one agent from a bundle (loopback Hub server) and pins it."""
from __future__ import annotations

import json

from hub_fixtures import REPO, hub, push, retrain  # noqa: F401  (fixture)


def test_swap_from_a_hub_bundle_pins_the_pulled_version(hub, tiny_team, cli):
    retrained = retrain(tiny_team, "solver")
    push(cli)
    assert cli("rollback", "solver")[0] == 0
    assert tiny_team.pins("tiny-duo")["solver"] != retrained
    code, out, err = cli("swap", "solver", f"hf://{REPO}#solver", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["candidate"]["id"] == retrained == tiny_team.pins("tiny-duo")["solver"]
    assert [e["event"] for e in tiny_team.history()[-2:]] == ["pull", "swap"]
    code, _, err = cli("swap", "solver", f"hf://{REPO}#judge")
    assert code == 2 and "no role 'judge'" in err
