"""Answer extraction and rewards."""
from __future__ import annotations

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
