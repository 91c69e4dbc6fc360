"""`eval` and `run` on the real embedded SmolLM2-135M-Instruct (a few prompts)."""
from __future__ import annotations

import json

import pytest

from teamtr_adapters.registry import Registry
from teamtr_adapters.spec import load_spec

pytestmark = pytest.mark.integration


@pytest.fixture
def trio(home, embedded_base):
    Registry().init_team(load_spec("math-trio"), embedded_base)
    return "math-trio"


def test_eval_and_run_on_the_embedded_model(cli, trio, tmp_path):
    out = tmp_path / "transcripts.jsonl"
    code, stdout, err = cli("eval", "--team", trio, "--n", "2", "--seed", "1", "--save", str(out), "--json")
    assert code == 0, err
    r = json.loads(stdout)
    assert (r["team"], r["task"], r["n"], r["k"], r["split"]) == (trio, "arithmetic", 2, 1, "heldout")
    for who in ("team_result", "base_alone"):
        res = r[who]
        assert res["episodes"] == 2 and 0 <= res["avg@k"] <= res["pass@k"] <= 1
        assert 0 <= res["final_format_rate"] <= 1 and res["tokens"] > 0
    spec = load_spec("math-trio")
    for role in spec.roles:
        a = r["team_result"]["agents"][role.name]
        assert a["messages"] == 2 and 0 < a["mean_tokens"] <= role.max_new_tokens
        assert 0 <= a["answer_format_rate"] <= 1 and a["version"].startswith("v1 (")
    assert r["gain_avg@k"] == pytest.approx(r["team_result"]["avg@k"] - r["base_alone"]["avg@k"], abs=1e-3)
    g = r["gain_paired"]  # paired by prompt, with a 95% interval
    assert g["n"] == 2 and g["change"] == pytest.approx(r["gain_avg@k"], abs=1e-3) and g["ci95"][0] <= g["change"] <= g["ci95"][1]
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["who"] for x in lines] == ["team"] * 2 + ["base"] * 2
    # the real model writes real words, and its messages stop at <|im_end|> or at the budget
    for turn in lines[0]["turns"]:
        assert turn["text"] and (turn["message_ids"][-1] == 2 or len(turn["message_ids"]) == spec.role(
            turn["role"]).max_new_tokens)

    code, stdout, err = cli("run", "--team", trio, "What is 3 + 4?", "--answer", "7")
    assert code == 0, err
    assert all(f"{i}. {role.name}" in stdout for i, role in enumerate(spec.roles, 1)) and "final answer:" in stdout
