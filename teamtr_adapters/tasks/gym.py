"""`gym:<dataset>`: procedural datasets from `reasoning-gym` (optional dependency, imported lazily).

Task params are passed to `reasoning_gym.create_dataset(<dataset>, **params)` (e.g. `min_terms`).
The reward is the dataset's own `score_answer` on the answer extracted from the final message
(`Answer:`, `####`, `\\boxed{}`, else the whole message). The split is the hash partition of the
question text, as for the built-in tasks.
"""
from __future__ import annotations

import hashlib
from typing import Any

from ..errors import TaskError
from .answers import REWARDS, find_answer
from .base import Task, TaskItem, check_split, split_of

INSTALL_HINT = "pip install 'teamtr-adapters[gym]' (reasoning-gym==0.1.25)"


def _reasoning_gym() -> Any:
    try:
        import reasoning_gym
    except ImportError:
        raise TaskError(f"gym tasks need the optional package reasoning-gym: {INSTALL_HINT}") from None
    return reasoning_gym


class GymTask(Task):
    reward_name = "gym"

    def __init__(self, dataset: str, params: dict[str, Any]) -> None:
        params = dict(params)
        # `checker = "math-verify"` scores with math-verify instead of the dataset's own score_answer
        self.checker = params.pop("checker", "dataset")
        if self.checker not in ("dataset", "math-verify"):
            raise TaskError(f"task gym:{dataset}: unknown checker {self.checker!r} (choose dataset or math-verify)")
        self.name, self.dataset, self.params = f"gym:{dataset}", dataset, params
        self._entries: dict[str, dict[str, Any]] = {}
        self._scorer = self._generate(1, 0)  # fails now on a missing package, unknown dataset or bad params

    def _generate(self, size: int, seed: int) -> Any:
        rg = _reasoning_gym()
        try:
            return rg.create_dataset(self.dataset, size=size, seed=seed, **self.params)
        except ValueError as e:
            if "not registered" in str(e):
                raise TaskError(f"reasoning-gym has no dataset {self.dataset!r}") from None
            raise TaskError(f"task {self.name!r}: {e}") from None
        except TypeError as e:
            raise TaskError(f"task {self.name!r}: bad params {self.params}: {e}") from None

    @property
    def numeric(self) -> bool:
        return False

    def sample(self, n: int, seed: int = 0, split: str = "train") -> list[TaskItem]:
        """`n` questions of `split` (distinct while the generator yields new ones)."""
        check_split(split)
        items: list[TaskItem] = []
        seen: set[str] = set()
        for attempt in range(8):
            ds_seed = int(hashlib.sha256(f"{self.name}|{split}|{seed}|{attempt}".encode()).hexdigest()[:8], 16)
            for entry in self._generate(max(8, 6 * n), ds_seed):
                q = entry["question"]
                if len(items) < n and split_of(q) == split and q not in seen:
                    seen.add(q)
                    self._entries[q] = entry
                    items.append(TaskItem(q, str(entry["answer"]), {"entry": entry}))
            if len(items) == n:
                return items
        if not items:
            raise TaskError(f"{self.name}: no {split} questions generated")
        return [items[i % len(items)] for i in range(n)]

    def reward(self, final_message: str, answer: str, item: TaskItem | None = None) -> float:
        """The dataset's `score_answer` (exact match when the generating entry is unknown), or math-verify's
        equality with the reference when the task's `checker` is `math-verify`."""
        if self.checker == "math-verify":
            return REWARDS["math-verify"](final_message, answer)
        pred = find_answer(final_message, numeric=False)[0] or final_message.strip()
        entry = (item.meta.get("entry") if item else None) or self._entries.get(item.prompt if item else "")
        if entry is None:
            return float(pred.strip() == str(answer).strip())
        return float(self._scorer.score_answer(answer=pred, entry=entry))
