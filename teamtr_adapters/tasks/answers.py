"""Answer extraction and rewards, shared by every task.

`find_answer(text)` looks, in order, for the last `Answer: X`, the last `#### X`, the last `\\boxed{X}`,
and (numeric answers only) the last number anywhere; it returns the answer and which format held it.
A marked numeric answer is read as a value: plain numbers (`1,234`, `$5`, `1e3`), fractions (`1/2`) and LaTeX
(`\\frac12`, `\\dfrac{3}{4}`, `\\sqrt{4}`; parsed with math-verify, Hugging Face's checker).
The `math-verify` reward compares any answer mathematically (`0.5` = `1/2` = `\\frac{1}{2}`, sets, intervals).
"""
from __future__ import annotations

import math
import re
from typing import Callable

NUMBER = r"(?<![\w.])[-+]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_NUMBER_RE = re.compile(NUMBER)
# A marked value: a number with an optional exponent (`1e3`, `2.5E-2`), optionally over another (`1/2`, `-3 / 4`).
_VALUE_RE = re.compile(r"^\s*(" + NUMBER + r"(?:[eE][-+]?\d+)?)(?:\s*/\s*(" + NUMBER + r"(?:[eE][-+]?\d+)?))?(?![\w.])")
_MARKERS = (
    ("answer", re.compile(r"answer\s*(?:is)?\s*[:=]", re.IGNORECASE)),
    ("####", re.compile(r"####")),
    ("boxed", re.compile(r"\\boxed\{")),
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


def _boxed_body(text: str, start: int) -> str | None:
    """The content of `\\boxed{...}` whose body starts at `start` (braces balanced), or None if unclosed."""
    depth = 1
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    return None


def _quiet_math_verify() -> None:
    """math-verify warns on every call when its signal-based timeouts are off (they only work in the main
    thread, and rollouts may score from others); our inputs are one short answer each."""
    import logging

    for name in ("math_verify", "math_verify.parser", "math_verify.grader", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.ERROR)


def latex_value(expr: str) -> float | None:
    """The numeric value of a LaTeX or plain expression (`\\frac12`, `\\sqrt{2}`, `3/4`) by math-verify, or None."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    _quiet_math_verify()
    try:
        parsed = parse(f"${expr}$", extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
                       parsing_timeout=None)
    except Exception:  # math-verify refuses what it cannot parse; anything else is no value
        return None
    for v in parsed:
        if getattr(v, "is_number", False) and getattr(v, "is_real", False):
            try:
                return float(v)
            except (TypeError, ValueError):
                return None
    return None


def marked_value(body: str) -> float | None:
    """The value a marked answer gives: after the last `=`, a number, fraction or exponent form at its start;
    else a LaTeX expression (math-verify); else the first number in it."""
    body = body.split("=")[-1]
    m = _VALUE_RE.match(body)
    if m:
        num = float(re.sub(r"[$,+]", "", m.group(1)))
        if m.group(2) is None:
            return num
        den = float(re.sub(r"[$,+]", "", m.group(2)))
        return num / den if den else None
    if "\\" in body:
        x = latex_value(body.strip().strip("$").rstrip("."))
        if x is not None:
            return x
    return parse_number(body)


def find_answer(text: str, numeric: bool = True) -> tuple[str | None, str | None]:
    """(answer, format) where format is `answer`, `####`, `boxed`, `last-number` or None.

    The marked text runs from the last marker to the end of its line (to the matching `}` for boxed). With
    `numeric` it must hold a value (`marked_value`: after the last `=` if any, so `Answer: 3 + 5 = 8` gives 8;
    `1/2` and `\\frac12` give 0.5, `1e3` gives 1000; normalised: `1,234.0` -> `1234`), else the next format is
    tried."""
    for name, pattern in _MARKERS:
        for m in reversed(list(pattern.finditer(text))):
            body = _boxed_body(text, m.end()) if name == "boxed" else text[m.end():]
            if body is None:
                continue
            body = body.strip()
            body = body.splitlines()[0].strip() if body and name != "boxed" else " ".join(body.split())
            if numeric:
                x = marked_value(body)
                if x is not None and math.isfinite(x):
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


def math_equal(message: str, answer: str) -> float:
    """1.0 when the message's answer (marked, or else the whole message) is mathematically equal to the reference
    (math-verify: `0.5` = `1/2` = `\\frac{1}{2}`, `{1, 2}` = `{2, 1}`, intervals, symbolic expressions), else 0.0."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    _quiet_math_verify()
    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    pred = extract_answer(message, numeric=False)
    x = extract_answer(message, numeric=True)
    try:
        gold = parse(f"${answer}$", extraction_config=configs, parsing_timeout=None)
        for cand in dict.fromkeys(c for c in (pred, x, message) if c):
            if verify(gold, parse(f"${cand}$", extraction_config=configs, parsing_timeout=None),
                      timeout_seconds=None):
                return 1.0
    except Exception:  # an answer math-verify cannot read scores 0
        return 0.0
    return 0.0


REWARDS: dict[str, Callable[[str, str], float]] = {"exact-number": exact_number, "exact-match": exact_match,
                                                   "math-verify": math_equal}
