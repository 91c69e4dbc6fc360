"""The crash-and-abuse campaign (issue 13) at full size: `python -m benchmarks.chaos [--quick] [--only AREA]`.

Each area module (`cli`, `registry`, `hub`) exposes `campaign(full: bool, workdir: Path) -> list[Row]`; the small
versions of the same checks run in CI under tests/chaos/.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Row:
    """One line of the campaign table."""

    area: str
    check: str
    trials: int
    failures: int          # trials whose outcome was wrong (lost write, corrupt registry, wrong exit code, ...)
    tracebacks: int        # trials that printed a Python traceback
    changed_after_refusal: int = 0   # refused inputs after which the registry was not byte-identical
    seconds: float = 0.0
    note: str = ""
