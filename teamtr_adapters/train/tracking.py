"""An optional experiment-tracker hook for training runs: `train --track mlflow|wandb`.

Off by default, and no dependency of this package: the tracker's own package must be installed (`pip install
mlflow` or `pip install wandb`) and configured the way that tool is (MLflow: `MLFLOW_TRACKING_URI`,
`MLFLOW_EXPERIMENT_NAME`; W&B: `wandb login`, `WANDB_PROJECT`, `WANDB_MODE=offline`, ...).

What a tracked run logs:
- params (W&B: config): the run's settings, flattened with dots (`train.lr`, `train.delta`, `pins_before.solver`,
  ...): the resolved `TrainConfig`, the team, backend, stages and the pins the run started from;
- metrics, one step per component update (step = the update's index): every numeric field of its
  `UpdateRecord` (`reward_before`, `d_tok_mean`, `beta`, `backtracks`, `tokens`, `logprob_gap.mean_abs`, ...;
  booleans as 0/1, absent values left out), logged as the trainer writes the record;
- at the end, the run summary's numeric fields as `summary.*` (MLflow: metrics, plus the whole summary as the
  artifact `summary.json`; W&B: the run summary), and the run is closed as finished, or as failed when
  training raised.

`open_tracker(name)` imports the package up front, so a missing one is a clear `InputError` (exit 2) before
any model loads. Nothing here imports torch.
"""
from __future__ import annotations

import importlib
import math
import os
import sys
from dataclasses import asdict
from typing import Any, Mapping, Protocol

from ..errors import InputError

TRACKERS = ("mlflow", "wandb")
PROJECT = "teamtr-adapters"  # the W&B project when WANDB_PROJECT is not set


class Tracker(Protocol):
    def start(self, run: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None: ...

    def log(self, metrics: Mapping[str, float], step: int) -> None: ...

    def finish(self, summary: Mapping[str, Any] | None, ok: bool) -> None: ...


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> one level with dotted keys."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def numeric(d: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric values of `d` (nested dicts flattened with dots) as floats; booleans as 0/1; None, text,
    lists and non-finite numbers left out."""
    out: dict[str, float] = {}
    for k, v in flatten(d, prefix).items():
        if isinstance(v, (bool, int, float)) and math.isfinite(float(v)):
            out[k] = float(v)
    return out


def params(d: Mapping[str, Any]) -> dict[str, str | int | float | bool]:
    """Run settings as tracker params: flattened, scalars kept, None and lists as text."""
    return {k: v if isinstance(v, (str, int, float, bool)) else str(v) for k, v in flatten(d).items()}


class MlflowTracker:
    def __init__(self, mlflow: Any) -> None:
        self.mlflow = mlflow

    def start(self, run: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        self.mlflow.start_run(run_name=run, tags=dict(tags))
        self.mlflow.log_params(dict(params))

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if metrics:
            self.mlflow.log_metrics(dict(metrics), step=step)

    def finish(self, summary: Mapping[str, Any] | None, ok: bool) -> None:
        if summary is not None:
            self.log(numeric(summary, "summary."), 0)
            self.mlflow.log_dict(dict(summary), "summary.json")
        self.mlflow.end_run(status="FINISHED" if ok else "FAILED")


class WandbTracker:
    def __init__(self, wandb: Any) -> None:
        self.wandb = wandb
        self.run: Any = None

    def start(self, run: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        self.run = self.wandb.init(project=os.environ.get("WANDB_PROJECT") or PROJECT, name=run,
                                   config=dict(params), tags=[f"{k}:{v}" for k, v in tags.items()])

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if metrics:
            self.run.log(dict(metrics), step=step)

    def finish(self, summary: Mapping[str, Any] | None, ok: bool) -> None:
        if summary is not None:
            self.run.summary.update(numeric(summary, "summary."))
        self.run.finish(exit_code=0 if ok else 1)


def open_tracker(name: str) -> Tracker:
    """The tracker `name` (mlflow | wandb), its package imported now: InputError when it is unknown or not
    installed."""
    if name not in TRACKERS:
        raise InputError(f"unknown tracker {name!r} for --track (choose from {', '.join(TRACKERS)})")
    try:
        module = importlib.import_module(name)
    except ImportError as e:
        raise InputError(f"--track {name} needs the {name} package, which cannot be imported here "
                         f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); install it "
                         f"(pip install {name}) or train without --track") from None
    return MlflowTracker(module) if name == "mlflow" else WandbTracker(module)


def run_params(trainer: Any, **extra: Any) -> dict[str, Any]:
    """A trainer's run settings (what `config.json` holds): run id, team, the resolved `TrainConfig`, backend,
    the pins it starts from, and `extra` (e.g. stages)."""
    return {"run": trainer.run_id, "team": trainer.team, "train": asdict(trainer.cfg), "backend": trainer.backend,
            "pins_before": dict(trainer.pins), **extra}


class RunTracking:
    """One training run's link to a tracker: `start` with the run's settings, `record` as the trainer's
    `on_record` callback (one step per update), `finish` with the summary (None: the run failed). A tracker
    that raises is reported once on stderr and dropped: the training run goes on."""

    def __init__(self, tracker: Tracker, name: str = "tracker") -> None:
        self.tracker, self.name = tracker, name
        self.opened = self.live = False

    def _failed(self, what: str, e: Exception) -> None:
        self.live = False
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"warning: {self.name} failed to {what} ({type(e).__name__}: {first}); the run goes on without "
              "tracking", file=sys.stderr)

    def start(self, run: str, config: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        self.opened = True
        try:
            self.tracker.start(run, params(config), tags)
            self.live = True
        except Exception as e:  # a tracker outage must not cost the training run
            self._failed("start the run", e)

    def record(self, rec: Any) -> None:
        if not self.live:
            return
        d = rec.to_dict()
        step = int(d.pop("update"))
        try:
            self.tracker.log(numeric(d), step)
        except Exception as e:
            self._failed(f"log update {step}", e)

    def finish(self, summary: Mapping[str, Any] | None) -> None:
        if not self.opened:
            return
        self.opened = False
        try:
            self.tracker.finish(summary if self.live else None, ok=summary is not None)
        except Exception as e:
            self._failed("close the run", e)
