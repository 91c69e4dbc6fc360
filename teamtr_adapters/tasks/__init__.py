"""Tasks: problem sources with verifiers. Pure Python (reasoning-gym is imported only by `gym:` tasks).

```python
from teamtr_adapters.tasks import get_task
task = get_task(spec.task)                      # a TaskSpec, or get_task("arithmetic", {"difficulty": 2})
items = task.sample(8, seed=0, split="train")   # list[TaskItem(prompt, answer, meta)]
task.reward("... Answer: 12", items[0].answer)  # 1.0 or 0.0
```
Names: `arithmetic`, `word-problems` (param `difficulty`), `jsonl` (params `path`, `reward`,
`heldout_path`), `gym:<dataset>` (params go to reasoning-gym, except `checker = "math-verify"`, which scores with math-verify
instead of the dataset's own checker).
"""
from __future__ import annotations

from typing import Any

from ..errors import TaskError
from .answers import REWARDS, extract_answer, find_answer
from .arithmetic import CURRICULUM, GENERATORS, GeneratedTask, curriculum_task
from .base import SPLITS, Task, TaskItem, split_of

TASK_NAMES = (*GENERATORS, "jsonl", "gym:<dataset>")


def get_task(spec: Any, params: dict[str, Any] | None = None) -> Task:
    """A task from a `TaskSpec` (name + params) or from a name and params."""
    name, params = (spec, params or {}) if isinstance(spec, str) else (spec.name, dict(spec.params))
    if not isinstance(params, dict):
        raise TaskError(f"task params must be a table, got {params!r}")
    if name in GENERATORS:
        return GeneratedTask(name, params)
    if name == "jsonl":
        from .jsonl import JsonlTask

        return JsonlTask(params)
    if isinstance(name, str) and name.startswith("gym:") and len(name) > 4:
        from .gym import GymTask

        return GymTask(name[4:], params)
    raise TaskError(f"unknown task {name!r} (choose from {', '.join(TASK_NAMES)})")


__all__ = ["get_task", "Task", "TaskItem", "SPLITS", "split_of", "extract_answer", "find_answer", "REWARDS",
           "CURRICULUM", "curriculum_task", "TASK_NAMES"]
