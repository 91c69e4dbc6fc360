"""User datasets as JSON lines: one `{"prompt": "...", "answer": ...}` object per line.

Parameters: `path` (required), `reward` (`exact-number` default, `exact-match`, or `math-verify`: mathematical
equality by math-verify, so `1/2`, `0.5` and `\\frac{1}{2}` agree), `heldout_path`
(optional: a separate held-out file; its prompts are removed from the training split). Without
`heldout_path` the split is the hash partition of `tasks.base.split_of`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import TaskError
from .answers import REWARDS
from .base import Task, TaskItem, check_params, check_split, rng_for, split_of


def read_jsonl(path: Path) -> list[TaskItem]:
    """Parse a dataset file; a malformed line is a TaskError naming the file and line number."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise TaskError(f"cannot read dataset {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise TaskError(f"dataset {path} is not UTF-8 text") from None
    items = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise TaskError(f"{path}:{lineno}: expected an object with 'prompt' and 'answer'")
        prompt, answer = row.get("prompt"), row.get("answer")
        if not isinstance(prompt, str) or not prompt.strip():
            raise TaskError(f"{path}:{lineno}: 'prompt' must be a non-empty string")
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or str(answer).strip() == "":
            raise TaskError(f"{path}:{lineno}: 'answer' must be a non-empty string or a number")
        items.append(TaskItem(prompt, str(answer), {"line": lineno}))
    if not items:
        raise TaskError(f"dataset {path} has no items")
    return items


class JsonlTask(Task):
    name = "jsonl"

    def __init__(self, params: dict[str, Any]) -> None:
        check_params("jsonl", params, ["path", "reward", "heldout_path"])
        if not isinstance(params.get("path"), str):
            raise TaskError("task 'jsonl' needs params.path, the dataset file")
        self.reward_name = params.get("reward", "exact-number")
        if self.reward_name not in REWARDS:
            raise TaskError(f"unknown reward {self.reward_name!r} (choose {', '.join(REWARDS)})")
        items = read_jsonl(Path(params["path"]).expanduser())
        if params.get("heldout_path"):
            heldout = read_jsonl(Path(params["heldout_path"]).expanduser())
            held = {i.prompt for i in heldout}
            self.splits = {"train": [i for i in items if i.prompt not in held], "heldout": heldout}
        else:
            self.splits = {s: [i for i in items if split_of(i.prompt) == s] for s in ("train", "heldout")}
        self.source = params["path"]

    def sample(self, n: int, seed: int = 0, split: str = "train") -> list[TaskItem]:
        """`n` items of `split` in a seeded order (the split repeats, reshuffled, when n exceeds it)."""
        pool = self.splits[check_split(split)]
        if not pool:
            raise TaskError(f"split {split!r} of dataset {self.source} is empty (it has "
                            f"{sum(map(len, self.splits.values()))} items; add more or give heldout_path)")
        rng = rng_for("jsonl", self.source, split, seed)
        out: list[TaskItem] = []
        while len(out) < n:
            order = pool[:]
            rng.shuffle(order)
            out += order[: n - len(out)]
        return out
