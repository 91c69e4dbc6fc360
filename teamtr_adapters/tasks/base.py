"""The task interface: `Task.sample(n, seed, split)` -> `TaskItem`s; `Task.reward(final_message, answer)`.

Train and held-out splits are a fixed partition of the problem space by a hash of the prompt text, so
no prompt is ever in both, whatever the seed.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..errors import TaskError
from .answers import REWARDS, find_answer

SPLITS = ("train", "heldout")
HELDOUT_SHARE = 0.2


@dataclass(frozen=True)
class TaskItem:
    """One problem: the prompt the team reads, the reference answer, and task-specific data."""

    prompt: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


def split_of(prompt: str, heldout_share: float = HELDOUT_SHARE) -> str:
    """`heldout` for a fixed share of prompts (by sha256 of the text), `train` for the rest."""
    h = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "heldout" if h < heldout_share else "train"


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise TaskError(f"unknown split {split!r} (choose train or heldout)")
    return split


def check_eval_args(n: int, k: int, split: str) -> None:
    """Refuse an evaluation size or split before anything is loaded."""
    if n < 1 or k < 1:
        raise TaskError("eval needs n >= 1 prompts and k >= 1 samples per prompt")
    check_split(split)


def check_params(task: str, params: dict[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise TaskError(f"task {task!r} has no parameter {unknown[0]!r} (parameters: {', '.join(allowed) or 'none'})")


def rng_for(*parts: Any) -> random.Random:
    """A random generator seeded from `parts` (stable across processes and Python versions)."""
    return random.Random("|".join(map(str, parts)))


def draw_unique(draw: Callable[[random.Random], TaskItem], n: int, rng: random.Random, split: str,
                max_tries: int = 200) -> list[TaskItem]:
    """`n` items of `split` from a generator: distinct prompts while the space allows, then repeats."""
    items: list[TaskItem] = []
    seen: set[str] = set()
    tries = 0
    while len(items) < n and tries < max_tries * max(n, 1):
        tries += 1
        item = draw(rng)
        if split_of(item.prompt) == split and item.prompt not in seen:
            seen.add(item.prompt)
            items.append(item)
    if not items and n > 0:
        raise TaskError(f"split {split!r} of this task has no problems")
    return [items[i % len(items)] for i in range(n)] if items else []


class Task:
    """Base class: a named problem source with a reward; subclasses implement `sample`."""

    name = "task"
    reward_name = "exact-number"

    def sample(self, n: int, seed: int = 0, split: str = "train") -> list[TaskItem]:
        raise NotImplementedError

    @property
    def numeric(self) -> bool:
        return self.reward_name == "exact-number"

    def extract_answer(self, text: str) -> str | None:
        return find_answer(text, self.numeric)[0]

    def answer_format(self, text: str) -> str | None:
        """Which format held the answer (`answer`, `####`, `boxed`, `last-number`) or None."""
        return find_answer(text, self.numeric)[1]

    def reward(self, final_message: str, answer: str, item: TaskItem | None = None) -> float:
        """The verifier's score of the team's final message against the reference answer."""
        return REWARDS[self.reward_name](final_message, answer)
