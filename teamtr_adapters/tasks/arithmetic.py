"""Built-in seedable generators: two-operand arithmetic and one-step word problems, by difficulty.

The curriculum (`CURRICULUM`, levels 1..5) orders them from easiest to hardest:
1. arithmetic/1: single-digit + and - (non-negative results)
2. arithmetic/2: two-digit + and -
3. arithmetic/3: multiplication (2..12 x 2..20)
4. word-problems/1: one-step word problems with + and - (numbers up to 20)
5. word-problems/2: one-step word problems with x and exact division
`difficulty` may be one level or a list of levels (each item draws its level at random).
"""
from __future__ import annotations

import random
from typing import Any, Callable

from ..errors import TaskError
from .base import Task, TaskItem, check_params, check_split, draw_unique, rng_for


def _arith_add_sub(rng: random.Random, lo: int, hi: int) -> tuple[str, int]:
    a, b = rng.randint(lo, hi), rng.randint(lo, hi)
    if rng.random() < 0.5:
        return f"What is {a} + {b}?", a + b
    a, b = max(a, b), min(a, b)
    return f"What is {a} - {b}?", a - b


def _arith_mul(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(2, 12), rng.randint(2, 20)
    return f"What is {a} * {b}?", a * b


_NAMES = ("Tom", "Mia", "Sam", "Ana", "Leo", "Zoe", "Ben", "Ivy")
_THINGS = ("apples", "marbles", "stickers", "books", "pencils", "cookies", "coins", "cards")


def _word_add_sub(rng: random.Random) -> tuple[str, int]:
    who, what = rng.choice(_NAMES), rng.choice(_THINGS)
    a, b = rng.randint(2, 20), rng.randint(1, 20)
    if rng.random() < 0.5:
        return f"{who} has {a} {what}. {who} gets {b} more. How many {what} does {who} have now?", a + b
    a, b = max(a, b), min(a, b)
    return f"{who} has {a} {what}. {who} gives away {b}. How many {what} does {who} have left?", a - b


def _word_mul_div(rng: random.Random) -> tuple[str, int]:
    who, what = rng.choice(_NAMES), rng.choice(_THINGS)
    a, b = rng.randint(2, 9), rng.randint(2, 12)
    if rng.random() < 0.5:
        return f"{who} has {a} boxes with {b} {what} in each box. How many {what} are there in total?", a * b
    return f"{who} shares {a * b} {what} equally among {a} friends. How many {what} does each friend get?", b


GENERATORS: dict[str, dict[int, Callable[[random.Random], tuple[str, int]]]] = {
    "arithmetic": {1: lambda r: _arith_add_sub(r, 0, 9), 2: lambda r: _arith_add_sub(r, 10, 99), 3: _arith_mul},
    "word-problems": {1: _word_add_sub, 2: _word_mul_div},
}
CURRICULUM: list[tuple[str, int]] = [(name, level) for name, levels in GENERATORS.items() for level in levels]


class GeneratedTask(Task):
    """`arithmetic` or `word-problems` at one difficulty or a mix (see the module docstring)."""

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        check_params(name, params, ["difficulty"])
        levels = params.get("difficulty", 1)
        levels = levels if isinstance(levels, list) else [levels]
        known = GENERATORS[name]
        bad = [lv for lv in levels if not isinstance(lv, int) or isinstance(lv, bool) or lv not in known]
        if bad or not levels:
            raise TaskError(f"task {name!r}: difficulty must be one of {sorted(known)} or a list of them, "
                            f"got {params.get('difficulty')!r}")
        self.name, self.levels = name, sorted(set(levels))

    def _draw(self, rng: random.Random) -> TaskItem:
        level = rng.choice(self.levels)
        prompt, answer = GENERATORS[self.name][level](rng)
        return TaskItem(prompt, str(answer), {"difficulty": level})

    def sample(self, n: int, seed: int = 0, split: str = "train") -> list[TaskItem]:
        """`n` problems of `split`, distinct while the split has enough; the same seed gives the same list."""
        rng = rng_for(self.name, self.levels, check_split(split), seed)
        return draw_unique(self._draw, n, rng, split)


def curriculum_task(level: int) -> GeneratedTask:
    """The task at curriculum level 1..len(CURRICULUM)."""
    if not 1 <= level <= len(CURRICULUM):
        raise TaskError(f"curriculum level must be in 1..{len(CURRICULUM)}, got {level}")
    name, difficulty = CURRICULUM[level - 1]
    return GeneratedTask(name, {"difficulty": difficulty})
