"""The protocol and Team on a tiny registry team: reproducible transcripts, records, router, suffix
resampling, context-window errors, and the `eval`/`run` commands."""
from __future__ import annotations

import json

import pytest

from teamtr_adapters.errors import InputError, TaskError
from teamtr_adapters.registry import Registry
from teamtr_adapters.runtime.backend import GenRequest
from teamtr_adapters.runtime.protocol import build_prompt, rollout, speaking_order
from teamtr_adapters.runtime.records import Episode, Turn
from teamtr_adapters.runtime.team import load_team
from teamtr_adapters.spec import ProtocolSpec, RoleSpec, TaskSpec, load_spec
from teamtr_adapters.tasks import TaskItem

BUDGETS = {"solver": 6, "critic": 5, "refiner": 4}


def _spec(tiny_base, **changes):
    spec = load_spec("math-trio")
    roles = tuple(RoleSpec(r.name, r.system_prompt, BUDGETS[r.name]) for r in spec.roles)
    return spec.replace(base=str(tiny_base.path), roles=roles, **changes)


@pytest.fixture(scope="module")
def team_home(tiny_base, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    reg = Registry(home)
    reg.init_team(_spec(tiny_base), tiny_base)
    reg.init_team(_spec(tiny_base, name="shuffled", protocol=ProtocolSpec("random", 0)), tiny_base)
    return home


@pytest.fixture(scope="module")
def team(team_home):
    return load_team(Registry(team_home), "math-trio", device="cpu", dtype="float32")


ITEMS = [TaskItem("What is 2 + 3?", "5"), TaskItem("What is 7 - 4?", "3")]


def test_same_seed_gives_identical_transcripts(team, team_home):
    one = [e.to_dict() for e in team.rollout(ITEMS, group_size=2, seed=7)]
    assert one == [e.to_dict() for e in team.rollout(ITEMS, group_size=2, seed=7)]
    fresh = load_team(Registry(team_home), "math-trio", device="cpu", dtype="float32")
    assert one == [e.to_dict() for e in fresh.rollout(ITEMS, group_size=2, seed=7)]
    assert one != [e.to_dict() for e in team.rollout(ITEMS, group_size=2, seed=8)]


def test_per_turn_records(team):
    eps = team.rollout(ITEMS, group_size=2, seed=1)
    assert [(e.item_index, e.sample) for e in eps] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    tok = team.tokenizer
    for ep in eps:
        assert [t.role for t in ep.turns] == ["solver", "critic", "refiner"]
        for i, turn in enumerate(ep.turns):
            role = team.spec.role(turn.role)
            assert turn.version == team.pins[turn.role]
            assert turn.prompt_ids == build_prompt(tok, role.system_prompt, ep.prompt, ep.turns[:i])
            prompt = tok.decode(turn.prompt_ids)
            assert role.system_prompt in prompt and ep.prompt in prompt
            assert all(f"{t.role}: {t.text}" in prompt for t in ep.turns[:i])
            assert prompt.endswith("<|im_start|>assistant\n")
            assert 1 <= len(turn.message_ids) == len(turn.logprobs) <= BUDGETS[turn.role]
            assert all(lp <= 0 for lp in turn.logprobs)
            assert turn.text == tok.decode(turn.message_ids, skip_special_tokens=True).strip()
        assert ep.reward == team.task.reward(ep.turns[-1].text, ep.answer)
        assert Episode.from_dict(json.loads(json.dumps(ep.to_dict()))) == ep


def test_random_router_orders_each_episode_and_mixes_adapters(team_home):
    team = load_team(Registry(team_home), "shuffled", device="cpu", dtype="float32")
    orders = [[r.name for r in speaking_order(team.spec, 3, k)] for k in range(8)]
    assert all(sorted(o) == ["critic", "refiner", "solver"] for o in orders)
    assert len({tuple(o) for o in orders}) > 1
    assert orders == [[r.name for r in speaking_order(team.spec, 3, k)] for k in range(8)]
    eps = team.rollout(ITEMS * 2, group_size=2, seed=3)
    assert [[t.role for t in e.turns] for e in eps] == orders
    assert all(t.version == team.pins[t.role] for e in eps for t in e.turns)


def test_suffix_resampling_keeps_the_prefix(team):
    first = team.rollout(ITEMS, group_size=2, seed=1)
    again = team.rollout(ITEMS, group_size=2, seed=2, prefix=first, from_turn=[1, 2, 0, 3])
    for ep, old, keep in zip(again, first, [1, 2, 0, 3]):
        assert ep.turns[:keep] == old.turns[:keep] and len(ep.turns) == 3
    assert again[2].turns[0] != first[2].turns[0]
    with pytest.raises(TaskError, match="prefix has 4 episodes"):
        team.rollout(ITEMS, group_size=1, seed=2, prefix=first, from_turn=1)


def test_prompts_longer_than_the_context_window_are_refused(team):
    with pytest.raises(TaskError, match=r"exceeds the model's context window of 1024 tokens"):
        team.run("What is " + "1 + " * 600 + "1?")
    long_budget = team.spec.replace(roles=(RoleSpec("solver", "", 1000),))
    with pytest.raises(TaskError, match=r"turn 0 \(solver\): prompt of \d+ tokens \+ 1000 new tokens"):
        rollout(team.backend, long_budget, ITEMS, pins=team.pins)


def test_score_avg_and_pass_at_k(team):
    def ep(item, reward):
        return Episode("q", "1", item, 0, 0, [Turn("refiner", "v", [1], [2], [-0.1], "Answer: 1")], reward, "1")

    r = team.score([ep(0, 1.0), ep(0, 0.0), ep(1, 0.0), ep(1, 0.0)], k=2)
    assert (r["avg@k"], r["pass@k"], r["final_format_rate"], r["tokens"]) == (0.25, 0.5, 1.0, 4)


def test_eval_command_reports_and_saves(cli, team_home, monkeypatch, tmp_path):
    monkeypatch.setenv("TEAMTR_HOME", str(team_home))
    out = tmp_path / "t.jsonl"
    code, stdout, err = cli("eval", "--team", "math-trio", "--n", "3", "--k", "2", "--save", str(out),
                            "--json", "--dtype", "float32")
    assert code == 0, err
    r = json.loads(stdout)
    assert (r["n"], r["k"], r["split"], r["task"]) == (3, 2, "heldout", "arithmetic")
    for who in ("team_result", "base_alone"):
        assert 0 <= r[who]["pass@k"] <= 1 and 0 <= r[who]["avg@k"] <= r[who]["pass@k"]
        assert r[who]["episodes"] == 6 and r[who]["tokens"] > 0
    agents = r["team_result"]["agents"]
    assert sorted(agents) == ["critic", "refiner", "solver"]
    assert all(a["messages"] == 6 and 0 < a["mean_tokens"] <= BUDGETS[role] and a["version"].startswith("v1 (")
               for role, a in agents.items())
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["who"] for x in lines] == ["team"] * 6 + ["base"] * 6
    assert all(len(x["turns"]) == 3 for x in lines[:6]) and all(len(x["turns"]) == 1 for x in lines[6:])
    items = load_team(Registry(team_home), "math-trio", device="cpu").task.sample(3, seed=0, split="heldout")
    assert [x["prompt"] for x in lines[:6:2]] == [i.prompt for i in items]


def test_run_command_prints_the_transcript(cli, team_home, monkeypatch):
    monkeypatch.setenv("TEAMTR_HOME", str(team_home))
    code, stdout, err = cli("run", "--team", "math-trio", "What is 2 + 3?", "--answer", "5", "--json",
                            "--dtype", "float32")
    assert code == 0, err
    d = json.loads(stdout)
    assert [t["role"] for t in d["turns"]] == ["solver", "critic", "refiner"]
    from teamtr_adapters import load_team as api_load_team  # the Python API gives the same episode

    ep = api_load_team(Registry(team_home), "math-trio", dtype="float32").run("What is 2 + 3?", answer="5")
    assert [t["message"] for t in d["turns"]] == [t.text for t in ep.turns]
    assert (d["final_answer"], d["reward"]) == (ep.final_answer, ep.reward)
    code, stdout, _ = cli("run", "--team", "math-trio", "What is 2 + 3?", "--dtype", "float32")
    assert code == 0 and "1. solver" in stdout and "3. refiner" in stdout and "final answer:" in stdout


def test_cli_errors_are_one_line(cli, team_home, monkeypatch, tiny_base):
    monkeypatch.setenv("TEAMTR_HOME", str(team_home))
    code, _, err = cli("eval", "--team", "nope")
    assert code == 2 and "no team 'nope'" in err
    Registry(team_home).init_team(_spec(tiny_base, name="badtask", task=TaskSpec("arithmetik")), tiny_base)
    code, _, err = cli("eval", "--team", "badtask", "--n", "1")
    assert code == 2 and "unknown task 'arithmetik'" in err and "Traceback" not in err
    code, _, err = cli("eval", "--team", "math-trio", "--backend", "warp")
    assert code == 2 and "unknown backend 'warp'" in err
    code, _, err = cli("eval", "--team", "math-trio", "--split", "test", "--n", "1")
    assert code == 2 and "unknown split 'test'" in err


def test_a_generation_request_without_a_prompt_is_refused_for_every_backend():
    """The check lives in the request itself, so no backend can be handed an empty context."""
    with pytest.raises(InputError, match="non-empty prompt"):
        GenRequest([], None, 4)
    assert GenRequest([1], None, 4).prompt_ids == [1]
