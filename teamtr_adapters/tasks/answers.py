"""Answer extraction and rewards, shared by every task.

`find_answer(text)` looks, in order, for the last `Answer: X`, the last `#### X`, the last `\\boxed{X}`,
and (numeric answers only) the last number anywhere; it returns the answer and which format held it.
"""
from __future__ import annotations

import re
from typing import Callable

NUMBER = r"(?<![\w.])[-+]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_NUMBER_RE = re.compile(NUMBER)
_MARKERS = (
    ("answer", re.compile(r"answer\s*(?:is)?\s*[:=]", re.IGNORECASE)),
    ("####", re.compile(r"####")),
    ("boxed", re.compile(r"\\boxed\{(?=[^{}]*\})")),
)
EXPLICIT_FORMATS = tuple(name for name, _ in _MARKERS)


def parse_number(text: str) -> float | None:
    """The first number in `text` (`1,234`, `$5`, `-3.5`), or None."""
    m = _NUMBER_RE.search(text)
    if not m:
        return None
    try:
        return float(re.sub(r"[$,+]", "", m.group(0)))
    except ValueError:
        return None


def format_number(x: float) -> str:
    return str(int(x)) if x == int(x) else repr(x)


def find_answer(text: str, numeric: bool = True) -> tuple[str | None, str | None]:
    """(answer, format) where format is `answer`, `####`, `boxed`, `last-number` or None.

    The marked text runs from the last marker to the end of its line (to `}` for boxed). With
    `numeric` it must hold a number (after the last `=` if any: `Answer: 3 + 5 = 8` gives 8;
    normalised: `1,234.0` -> `1234`), else the next format is tried."""
    for name, pattern in _MARKERS:
        for m in reversed(list(pattern.finditer(text))):
            body = (text[m.end():].split("}")[0] if name == "boxed" else text[m.end():]).strip()
            body = body.splitlines()[0].strip() if body else ""
            if numeric:
                body = body.split("=")[-1]
                x = parse_number(body)
                if x is not None:
                    return format_number(x), name
            elif body:
                return body.rstrip("."), name
    if numeric:
        numbers = _NUMBER_RE.findall(text)
        for raw in reversed(numbers):
            x = parse_number(raw)
            if x is not None:
                return format_number(x), "last-number"
    return None, None


def extract_answer(text: str, numeric: bool = True) -> str | None:
    """The answer a message gives (see `find_answer`), or None."""
    return find_answer(text, numeric)[0]


def exact_number(message: str, answer: str) -> float:
    """1.0 when the message's answer equals the reference number, else 0.0."""
    pred, gold = extract_answer(message), parse_number(str(answer))
    if pred is None or gold is None:
        return 0.0
    return float(abs(float(pred) - gold) <= 1e-6 * max(1.0, abs(gold)))


def normalise_text(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().strip(".").casefold())


def exact_match(message: str, answer: str) -> float:
    """1.0 when the marked answer (or, without a marker, the whole message) equals the reference text."""
    pred = extract_answer(message, numeric=False)
    return float(normalise_text(pred if pred is not None else message) == normalise_text(str(answer)))


REWARDS: dict[str, Callable[[str, str], float]] = {"exact-number": exact_number, "exact-match": exact_match}
