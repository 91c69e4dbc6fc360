"""Answer extraction and rewards."""
from __future__ import annotations

import json

import pytest

from teamtr_adapters.tasks import extract_answer, find_answer
from teamtr_adapters.tasks.answers import exact_match, exact_number, parse_number


@pytest.mark.parametrize("text, answer, fmt", [
    ("3 + 4 = 7. Answer: 7", "7", "answer"),
    ("Answer: 7\nThe critic says 9 is wrong.", "7", "answer"),
    ("first Answer: 3, then Answer: 5", "5", "answer"),
    ("The answer is: -12", "-12", "answer"),
    ("answer = 1,234", "1234", "answer"),
    ("Answer: $5.50", "5.5", "answer"),
    ("we get\n#### 42", "42", "####"),
    ("so \\boxed{8} it is", "8", "boxed"),
    ("5 apples and 3 more makes 8 apples", "8", "last-number"),
    ("8 - 5 gives 3.", "3", "last-number"),
    ("Answer: unsure, maybe 6", "6", "answer"),
    ("Answer: 3 + 5 = 8", "8", "answer"),
    ("Answer: unsure. It is 4 + 2 = 6", "6", "answer"),
    ("Answer: unsure\n4 + 2 = 6", "6", "last-number"),
    ("no digits here", None, None),
])
def test_find_answer_formats(text, answer, fmt):
    assert find_answer(text) == (answer, fmt)


def test_marker_without_number_falls_back_to_text_for_non_numeric():
    assert extract_answer("Answer: Paris.", numeric=False) == "Paris"
    assert extract_answer("The capital is Paris", numeric=False) is None


def test_parse_number_handles_signs_and_separators():
    assert parse_number("-3.25") == -3.25
    assert parse_number("$1,000,000") == 1_000_000
    assert parse_number("v1 and x2") is None
    assert parse_number("5-3") == 5


def test_exact_number_reward():
    assert exact_number("Answer: 12", "12") == 1.0
    assert exact_number("Answer: 12.0", "12") == 1.0
    assert exact_number("#### 1,200", "1200") == 1.0
    assert exact_number("Answer: 13", "12") == 0.0
    assert exact_number("I do not know", "12") == 0.0
    assert exact_number("Answer: 12", "twelve") == 0.0


def test_exact_match_reward():
    assert exact_match("Answer: Paris.", "paris") == 1.0
    assert exact_match("  New   York ", "new york") == 1.0
    assert exact_match("Answer: Lyon", "Paris") == 0.0


@pytest.mark.parametrize("text, answer, fmt", [
    ("Answer: 1/2", "0.5", "answer"),
    ("\\boxed{\\frac12}", "0.5", "boxed"),
    ("so \\boxed{\\frac{1}{2}}.", "0.5", "boxed"),
    ("\\boxed{\\dfrac{3}{4}}", "0.75", "boxed"),
    ("Answer: 1e3", "1000", "answer"),
    ("Answer: 2.5E-2", "0.025", "answer"),
    ("Answer: -3 / 4", "-0.75", "answer"),
    ("Answer: 1/0", "0", "last-number"),  # no value: the marker is skipped
])
def test_marked_fractions_exponents_and_latex_are_values(text, answer, fmt):
    assert find_answer(text) == (answer, fmt)


@pytest.mark.parametrize("message, answer, score", [
    ("Answer: 1/2", "0.5", 1.0),
    ("\\boxed{\\frac12}", "0.5", 1.0),
    ("Answer: 1e3", "1000", 1.0),
    ("Answer: 3", "4", 0.0),
])
def test_exact_number_reads_values(message, answer, score):
    assert exact_number(message, answer) == score


@pytest.mark.parametrize("message, answer, score", [
    ("Answer: 1/2", "0.5", 1.0),
    ("The result is \\boxed{\\frac{1}{2}}", "1/2", 1.0),
    ("Answer: 1e3", "1000", 1.0),
    ("Answer: {1, 2}", "{2, 1}", 1.0),
    ("Answer: 2x + 2", "2(x + 1)", 1.0),
    ("Answer: 3", "4", 0.0),
    ("no answer at all", "4", 0.0),
])
def test_math_verify_reward(message, answer, score):
    from teamtr_adapters.tasks.answers import REWARDS

    assert REWARDS["math-verify"](message, answer) == score


def test_builtin_tasks_score_their_own_formats_with_the_new_reader():
    from teamtr_adapters.tasks import get_task

    for name in ("arithmetic", "word-problems"):
        task = get_task(name)
        for item in task.sample(8, seed=1):
            assert task.reward(f"Let me think. Answer: {item.answer}", item.answer) == 1.0
            assert task.reward(f"#### {item.answer}", item.answer) == 1.0
            assert task.reward(f"\\boxed{{{item.answer}}}", item.answer) == 1.0
            assert task.reward(f"Answer: {float(item.answer) + 1:g}", item.answer) == 0.0


def test_jsonl_task_takes_the_math_verify_reward(tmp_path):
    from teamtr_adapters.tasks import get_task

    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"half of {i}?", "answer": f"{i}/2"}) for i in range(1, 9)))
    task = get_task("jsonl", {"path": str(data), "reward": "math-verify"})
    item = task.sample(1, seed=0, split="train")[0]
    half = int(item.answer.split("/")[0]) / 2
    assert task.reward(f"Answer: {half}", item.answer) == 1.0
    assert task.reward(f"Answer: {half + 1}", item.answer) == 0.0
