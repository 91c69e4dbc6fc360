"""Stage-0 alignment on the tiny team: a candidate the gate refuses is distilled toward the incumbent
under delta_0, stored with its lineage, and then passes the gate; `adapter diff` measures the change."""
from __future__ import annotations

import json

from gate_helpers import perturbed


def test_align_makes_a_refused_candidate_pass(tiny_team, tmp_path, cli):
    inc = tiny_team.pins("tiny-duo")["solver"]
    cand_dir = perturbed(tiny_team.version_path(inc), tmp_path / "newcomer", scale=0.1)
    code, out, err = cli("swap", "solver", str(cand_dir), "--gate", "--n", "8", "--looks", "1", "--epsilon", "0.5", "--json")
    assert code == 3, err
    refused = json.loads(out)["report"]
    assert refused["d_tok"] > 0.01
    cand = refused["candidate"]["id"]  # imported as v2 before the gate ran

    code, out, err = cli("align", "solver", "v2", "--probes", "8", "--delta0", "0.005", "--lr", "0.01",
                         "--steps", "40", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["reached"] and res["d_tok_after"] <= 0.005 < res["d_tok_before"]
    assert res["steps"] == len(res["curve"]) - 1 and res["curve"][-1] == res["d_tok_after"]
    assert res["contexts"] == 8 and res["states"] > 8
    aligned = tiny_team.resolve(res["version"]["ref"])
    assert aligned.name == "v3" and aligned.meta["made_by"] == "align"
    assert aligned.meta["parent"] == cand and aligned.meta["aligned_toward"] == inc
    assert aligned.meta["metrics"]["d_tok_after"] == res["d_tok_after"]
    assert set(aligned.meta["context"]) == {"critic"}
    assert tiny_team.pins("tiny-duo")["solver"] == inc  # align writes a version, it does not swap

    code, out, err = cli("swap", "solver", "v3", "--gate", "--n", "8", "--looks", "1", "--epsilon", "0.5", "--json")
    assert code == 0, err
    rep = json.loads(out)["report"]
    assert rep["accepted"] and rep["d_tok"] <= 0.01 < refused["d_tok"]
    assert tiny_team.pins("tiny-duo")["solver"] == aligned.id

    code, out, err = cli("adapter", "diff", "tiny-duo.solver:v1", "tiny-duo.solver:v2", "--probes", "4", "--json")
    assert code == 0, err
    diff = json.loads(out)
    assert diff["config_diff"] == {} and len(diff["modules"]) == 4
    assert all(m["norm_a"] == 0.0 and m["norm_diff"] == m["norm_b"] > 0 for m in diff["modules"])  # v1: B = 0
    assert diff["kl"]["team"] == "tiny-duo" and diff["kl"]["role"] == "solver" and diff["kl"]["d_tok"] > 0.005


def test_align_refuses_the_incumbent_itself(tiny_team, cli):
    code, _, err = cli("align", "solver", "v1")
    assert code == 2 and "is the incumbent" in err
