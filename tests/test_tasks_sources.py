"""Built-in generators, the JSONL loader and the reasoning-gym adapter: seeds, splits, errors."""
from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from teamtr_adapters.errors import TaskError
from teamtr_adapters.spec import TaskSpec
from teamtr_adapters.tasks import CURRICULUM, curriculum_task, get_task, split_of
from teamtr_adapters.tasks.answers import parse_number


@pytest.mark.parametrize("name, difficulty", CURRICULUM)
def test_generators_are_seeded_correct_and_split_disjoint(name, difficulty):
    task = get_task(TaskSpec(name, {"difficulty": difficulty}))
    a = task.sample(20, seed=3, split="train")
    assert a == task.sample(20, seed=3, split="train")
    assert a != task.sample(20, seed=4, split="train")
    held = task.sample(20, seed=3, split="heldout")
    assert all(split_of(i.prompt) == "train" for i in a)
    assert all(split_of(i.prompt) == "heldout" for i in held)
    assert not {i.prompt for i in a} & {i.prompt for i in held}
    assert len({i.prompt for i in a}) == 20  # distinct while the space allows
    for item in a:
        assert item.meta["difficulty"] == difficulty
        assert parse_number(item.answer) is not None and task.reward(f"Answer: {item.answer}", item.answer) == 1.0


def test_arithmetic_levels_and_answers():
    easy = curriculum_task(1).sample(50, seed=0)
    for item in easy:
        a, op, b = item.prompt.removeprefix("What is ").rstrip("?").split()
        assert 0 <= int(a) <= 9 and 0 <= int(b) <= 9 and op in "+-"
        assert int(item.answer) == (int(a) + int(b) if op == "+" else int(a) - int(b)) >= 0
    mul = get_task("arithmetic", {"difficulty": 3}).sample(10, seed=0)
    for item in mul:
        a, op, b = item.prompt.removeprefix("What is ").rstrip("?").split()
        assert op == "*" and int(item.answer) == int(a) * int(b)
    words = curriculum_task(5).sample(10, seed=0)
    assert all("How many" in i.prompt for i in words)


def test_mixed_difficulty_draws_every_level():
    items = get_task("arithmetic", {"difficulty": [1, 3]}).sample(40, seed=0)
    assert {i.meta["difficulty"] for i in items} == {1, 3}


def test_small_split_repeats_after_exhausting_distinct_problems():
    items = get_task("arithmetic", {"difficulty": 1}).sample(200, seed=0, split="heldout")
    distinct = {i.prompt for i in items}
    assert len(items) == 200 and 10 < len(distinct) < 100


@pytest.mark.parametrize("name, params, message", [
    ("arithmetc", {}, "unknown task 'arithmetc'"),
    ("arithmetic", {"difficulty": 9}, "difficulty must be one of [1, 2, 3]"),
    ("arithmetic", {"difficulty": True}, "difficulty must be one of"),
    ("word-problems", {"level": 1}, "has no parameter 'level'"),
    ("jsonl", {}, "needs params.path"),
    ("gym:", {}, "unknown task 'gym:'"),
])
def test_bad_task_names_and_params(name, params, message):
    with pytest.raises(TaskError, match=message.replace("[", r"\[").replace("]", r"\]")):
        get_task(name, params)


def test_bad_split():
    with pytest.raises(TaskError, match="unknown split 'test'"):
        get_task("arithmetic").sample(2, split="test")


def _write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_jsonl_loads_splits_and_samples(tmp_path):
    rows = [{"prompt": f"What is {i} + 1?", "answer": i + 1} for i in range(60)]
    task = get_task("jsonl", {"path": _write(tmp_path / "d.jsonl", rows)})
    train, held = task.sample(10, seed=1), task.sample(5, seed=1, split="heldout")
    assert train == task.sample(10, seed=1)
    assert not {i.prompt for i in train} & {i.prompt for i in held}
    assert all(split_of(i.prompt) == "heldout" for i in held)
    assert task.reward("Answer: 5", "5") == 1.0
    assert len(task.sample(100, seed=0)) == 100  # the split repeats, reshuffled


def test_jsonl_heldout_file_and_exact_match(tmp_path):
    rows = [{"prompt": f"Capital {i}?", "answer": f"City {i}"} for i in range(10)]
    held = [rows[0], {"prompt": "Capital X?", "answer": "X-ville"}]
    task = get_task("jsonl", {"path": _write(tmp_path / "a.jsonl", rows), "reward": "exact-match",
                              "heldout_path": _write(tmp_path / "b.jsonl", held)})
    train = task.sample(9, seed=0)
    assert "Capital 0?" not in {i.prompt for i in train}
    assert {i.prompt for i in task.sample(2, seed=0, split="heldout")} == {"Capital 0?", "Capital X?"}
    assert task.reward("Answer: city 3", "City 3") == 1.0
    assert task.reward("Answer: 3", "City 3") == 0.0


@pytest.mark.parametrize("lines, message", [
    (['{"prompt": "a", "answer": 1}', '{"prompt": "b", "answer": 2', '{"prompt": "c", "answer": 3}'],
     r"d.jsonl:2: malformed JSON"),
    (['{"prompt": "a", "answer": 1}', "", '["a", 1]'], r"d.jsonl:3: expected an object"),
    (['{"prompt": "", "answer": 1}'], r"d.jsonl:1: 'prompt' must be a non-empty string"),
    (['{"prompt": "a"}'], r"d.jsonl:1: 'answer' must be"),
    (['{"prompt": "a", "answer": true}'], r"d.jsonl:1: 'answer' must be"),
    ([""], r"has no items"),
])
def test_jsonl_malformed_lines_name_their_line(tmp_path, lines, message):
    with pytest.raises(TaskError, match=message):
        get_task("jsonl", {"path": _write(tmp_path / "d.jsonl", lines)})


def test_jsonl_missing_file_and_bad_reward(tmp_path):
    with pytest.raises(TaskError, match="cannot read dataset"):
        get_task("jsonl", {"path": str(tmp_path / "nope.jsonl")})
    path = _write(tmp_path / "d.jsonl", [{"prompt": "a", "answer": 1}])
    with pytest.raises(TaskError, match="unknown reward 'fuzzy'"):
        get_task("jsonl", {"path": path, "reward": "fuzzy"})


def test_jsonl_empty_split_is_a_clear_error(tmp_path):
    prompt = next(f"p{i}" for i in range(100) if split_of(f"p{i}") == "train")
    task = get_task("jsonl", {"path": _write(tmp_path / "d.jsonl", [{"prompt": prompt, "answer": 1}])})
    with pytest.raises(TaskError, match="split 'heldout' of dataset .* is empty"):
        task.sample(1, split="heldout")


def test_gym_without_reasoning_gym_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # makes `import reasoning_gym` fail
    with pytest.raises(TaskError, match=r"need the optional package reasoning-gym: pip install"):
        get_task("gym:basic_arithmetic")


@pytest.mark.skipif(importlib.util.find_spec("reasoning_gym") is None, reason="reasoning-gym is not installed")
def test_gym_dataset_samples_splits_and_scores():
    task = get_task("gym:basic_arithmetic", {"min_terms": 2, "max_terms": 2})
    train, held = task.sample(6, seed=0), task.sample(6, seed=0, split="heldout")
    assert train == task.sample(6, seed=0)
    assert not {i.prompt for i in train} & {i.prompt for i in held}
    item = train[0]
    assert task.reward(f"Answer: {item.answer}", item.answer, item) == 1.0
    assert task.reward("Answer: 123456789", item.answer, item) == 0.0
    with pytest.raises(TaskError, match="no dataset 'nope'"):
        get_task("gym:nope")
