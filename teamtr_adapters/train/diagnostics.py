"""Per-update diagnostics: one `UpdateRecord` per component update, written as JSON lines while a run
goes, and `summarise()` over them at the end. Pure Python (no torch)."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

from ..types import PairedChange, RankCorrelation, TrainStats


@dataclass
class UpdateRecord:
    """What one component update did and measured.

    Surrogate gains are L = surrogate(new) - surrogate(old) (0 before any step). `l_fresh` is scored on
    rollouts of the team the update acts on (the intermediate team), `l_stale` on the stage-start
    rollouts; `stale_gap` = |l_fresh - l_stale|. Every KL is computed in float32 (the trainer's model).
    `d_tok_*` are exact token KLs of the accepted version to its pre-update version on the update's training
    states; `d_tok_fresh` on the intermediate team's rollouts that `l_fresh` is scored on (the training
    states themselves for teamtr). `d_tok_heldout` is measured the same way for every method, on a probe
    rollout of the pre-update team on prompts drawn for it, whose states no update trained on;
    `out_of_region` = d_tok_heldout > delta (None without a probe). `out_of_region_events` counts the
    measurements of the hard check that left the region (each one rolled back, unless the check is off).
    `occupancy_div` = KL(d_intermediate || d_stage_start) of the contexts the agent reads, on the rollouts
    `l_fresh` is scored on (0 for the first update of a stage). `certificate` is the paper's
    l_fresh - c * sqrt(delta) - zeta / (1 - gamma), c = sqrt(2) * gamma * max|A| / (1 - gamma)^2, with the
    surrogate error zeta estimated by the standard error of l_fresh. `reward_before`/`reward_after`: the
    team's mean reward on this update's prompts before and after it (same prompts; `after_span` updates
    were committed between the two rollouts). `tokens` are the training rollouts' generated tokens (the
    budget, redrawn no-signal sets included), `diag_tokens` those generated only for diagnostics.
    `redraws`: no-signal rollout sets redrawn before this update; `no_signal`: why the update took no step
    (None when it had a learning signal). `logprob_gap`: the rollout engine's minus the trainer's log-probs
    of the trained agent's sampled tokens under the pre-update version (`runtime.logprob_gap.logprob_gap`).
    """

    stage: int
    update: int
    role: str
    method: str
    ratio: str
    parent: str
    version: str | None = None
    version_name: str | None = None
    context: dict[str, str] = field(default_factory=dict)
    rollout_seed: int = 0
    reward_before: float | None = None
    reward_after: float | None = None
    after_span: int | None = None
    l_fresh: float | None = None
    l_fresh_se: float | None = None
    l_stale: float | None = None
    stale_gap: float | None = None
    d_tok_mean: float = 0.0
    d_tok_p99: float = 0.0
    d_tok_fresh: float | None = None
    d_tok_heldout: float | None = None
    occupancy_div: float | None = None
    kl_k1: float = 0.0
    kl_k3: float = 0.0
    beta: float = 0.0
    steps: int = 0
    accepted_steps: int = 0
    backtracks: int = 0
    rejected_steps: int = 0
    out_of_region_events: int = 0
    out_of_region: bool | None = None
    certificate: float | None = None
    ess: float | None = None
    tokens: int = 0
    diag_tokens: int = 0
    wall_s: float = 0.0
    delta: float = 0.0
    logprob_gap: dict[str, float] | None = None
    redraws: int = 0
    no_signal: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UpdateRecord":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class DiagnosticsLog:
    """Append-only JSON-lines file of update records (one line per update, flushed as it happens)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, rec: UpdateRecord) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(rec.to_dict(), sort_keys=True) + "\n")
            f.flush()

    def read(self) -> list[UpdateRecord]:
        return read_records(self.path)


def read_records(path: Path) -> list[UpdateRecord]:
    """The records of a diagnostics log; a last line cut short by a killed run is left out."""
    if not Path(path).is_file():
        return []
    lines = [line for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(UpdateRecord.from_dict(json.loads(line)))
        except (ValueError, TypeError, KeyError, AttributeError):
            if i == len(lines) - 1:
                break  # a write cut short by a kill
            from ..errors import InputError

            raise InputError(f"{path}: line {i + 1} is not an update record") from None
    return records


def certificate(l_fresh: float, zeta: float, delta: float, adv_max: float, gamma: float) -> float:
    """The paper's per-update certificate l_fresh - c * sqrt(delta) - zeta / (1 - gamma) with
    c = sqrt(2) * gamma * A_max / (1 - gamma)^2 (TEAMTR.md): a lower bound on the update's improvement when
    the surrogate error is at most `zeta`. Here `delta` is the update's radius and `zeta` the standard error
    of `l_fresh` (our estimate of the surrogate error; the paper does not say how it measures it)."""
    if not 0.0 < gamma < 1.0:
        raise ValueError(f"gamma must be in (0, 1), got {gamma}")
    c = math.sqrt(2.0) * gamma * adv_max / (1.0 - gamma) ** 2
    return l_fresh - c * math.sqrt(max(delta, 0.0)) - zeta / (1.0 - gamma)


MIN_RANK_PAIRS = 10


def rank_correlation(xs: list[float], ys: list[float], *, min_pairs: int = MIN_RANK_PAIRS,
                     seed: int = 0) -> RankCorrelation | None:
    """Spearman's rank correlation of paired values with a 95% percentile-bootstrap interval over pairs
    (scipy), as {"rho", "ci95": [lo, hi], "n"}; None with fewer than `min_pairs` pairs or no spread."""
    if len(xs) != len(ys) or len(xs) < min_pairs or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    import numpy as np
    from scipy import stats

    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    rho = float(stats.spearmanr(x, y).statistic)

    def stat(a: Any, b: Any) -> Any:
        return stats.spearmanr(a, b).statistic

    with np.errstate(invalid="ignore", divide="ignore"):
        import warnings

        with warnings.catch_warnings():  # resamples without spread give nan (ConstantInputWarning)
            warnings.simplefilter("ignore")
            res = stats.bootstrap((x, y), stat, paired=True, vectorized=False, n_resamples=999,
                                  confidence_level=0.95, method="percentile", rng=np.random.default_rng(seed))
    lo, hi = res.confidence_interval
    ci = [float(lo), float(hi)] if math.isfinite(lo) and math.isfinite(hi) else None
    return {"rho": rho, "ci95": ci, "n": len(xs)}


def paired_change(before: list[float], after: list[float]) -> PairedChange:
    """The paired change of per-prompt scores (same prompts, same seeds): mean of after - before with a
    95% t interval over prompts (scipy), and both means. ValueError without pairs."""
    if len(before) != len(after) or not before:
        raise ValueError("paired_change needs two score lists of the same non-zero length")
    import numpy as np
    from scipy import stats

    d = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    n, mean = len(d), float(d.mean())
    if n < 2 or float(d.std(ddof=1)) == 0.0:
        ci = [mean, mean]
    else:
        lo, hi = stats.t.interval(0.95, n - 1, loc=mean, scale=float(d.std(ddof=1)) / math.sqrt(n))
        ci = [float(lo), float(hi)]
    return {"n": n, "before": float(np.mean(before)), "after": float(np.mean(after)), "change": mean,
            "ci95": ci, "wins": int((d > 0).sum()), "losses": int((d < 0).sum())}


def _mean(vals: Iterable[float | None]) -> float | None:
    v = [x for x in vals if x is not None]
    return sum(v) / len(v) if v else None


def summarise(records: list[UpdateRecord]) -> TrainStats:
    """Run-level figures: updates, accepted versions, no-signal updates, the out-of-region rate on held-out
    states and the hard check's rolled-back excursions, stale gap, KL, occupancy divergence, budget, wall time,
    and the certificate's rank correlation with the measured reward change (updates observed alone)."""
    n = len(records)
    pairs = [(r.certificate, r.reward_after - r.reward_before) for r in records
             if r.certificate is not None and r.reward_after is not None and r.reward_before is not None
             and r.after_span == 1]
    probed = [r for r in records if r.d_tok_heldout is not None]
    return {
        "updates": n,
        "accepted": sum(1 for r in records if r.version),
        "no_signal": sum(1 for r in records if r.no_signal),
        "redraws": sum(r.redraws for r in records),
        "out_of_region_rate": (sum(bool(r.out_of_region) for r in probed) / len(probed)) if probed else None,
        "out_of_region_updates": sum(bool(r.out_of_region) for r in probed),
        "probed_updates": len(probed),
        "out_of_region_events": sum(r.out_of_region_events for r in records),
        "backtracks": sum(r.backtracks for r in records),
        "rejected_steps": sum(r.rejected_steps for r in records),
        "stale_gap_mean": _mean(r.stale_gap for r in records),
        "d_tok_mean": _mean(r.d_tok_mean for r in records),
        "d_tok_fresh_mean": _mean(r.d_tok_fresh for r in records),
        "d_tok_heldout_mean": _mean(r.d_tok_heldout for r in records),
        "d_tok_max": max((r.d_tok_mean for r in records), default=None),
        "occupancy_div_mean": _mean(r.occupancy_div for r in records),
        "reward_first": records[0].reward_before if records else None,
        "reward_last": records[-1].reward_after if records else None,
        "tokens": sum(r.tokens for r in records),
        "diag_tokens": sum(r.diag_tokens for r in records),
        "wall_s": round(sum(r.wall_s for r in records), 3),
        "certificate_rank_corr": rank_correlation([p[0] for p in pairs], [p[1] for p in pairs]),
        "ess_mean": _mean(r.ess for r in records),
    }
