"""Per-update diagnostics: one `UpdateRecord` per component update, written as JSON lines while a run
goes, and `summarise()` over them at the end. Pure Python (no torch)."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable


@dataclass
class UpdateRecord:
    """What one component update did and measured.

    Surrogate gains are L = surrogate(new) - surrogate(old) (0 before any step). `l_fresh` is scored on
    rollouts of the team the update acts on (the intermediate team), `l_stale` on the stage-start
    rollouts; `stale_gap` = |l_fresh - l_stale|. `d_tok_*` are exact token KLs of the accepted version to
    its pre-update version on the update's training states; `d_tok_fresh` on the intermediate team's
    states (identical to `d_tok_mean` when the training data is fresh). `out_of_region` = d_tok_fresh >
    delta. `certificate` = l_fresh - c * sqrt(d_tok_fresh) - se(l_fresh), c = sqrt(2) * max|A|.
    `tokens` are the training rollouts' generated tokens (the budget), `diag_tokens` those generated only
    for diagnostics. `logprob_gap`: the rollout engine's minus the trainer's log-probs of the trained
    agent's sampled tokens under the pre-update version (`runtime.logprob_gap.logprob_gap`).
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
    l_fresh: float | None = None
    l_fresh_se: float | None = None
    l_stale: float | None = None
    stale_gap: float | None = None
    d_tok_mean: float = 0.0
    d_tok_p99: float = 0.0
    d_tok_fresh: float | None = None
    kl_k1: float = 0.0
    kl_k3: float = 0.0
    beta: float = 0.0
    steps: int = 0
    accepted_steps: int = 0
    backtracks: int = 0
    rejected_steps: int = 0
    out_of_region_events: int = 0
    out_of_region: bool = False
    certificate: float | None = None
    ess: float | None = None
    tokens: int = 0
    diag_tokens: int = 0
    wall_s: float = 0.0
    delta: float = 0.0
    logprob_gap: dict[str, float] | None = None

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


def certificate(l_fresh: float, l_fresh_se: float, d_tok: float, adv_max: float) -> float:
    """The certificate proxy l_fresh - c * sqrt(D_tok) - zeta with c = sqrt(2) * max|A| and the surrogate
    error zeta estimated by the standard error of l_fresh (TEAMTR.md's bound with gamma's horizon factor
    folded into the per-token KL)."""
    return l_fresh - math.sqrt(2.0) * adv_max * math.sqrt(max(d_tok, 0.0)) - l_fresh_se


def rank_correlation(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None with fewer than 3 pairs or no spread."""
    if len(xs) != len(ys) or len(xs) < 3:
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else None


def _ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def _mean(vals: Iterable[float | None]) -> float | None:
    v = [x for x in vals if x is not None]
    return sum(v) / len(v) if v else None


def summarise(records: list[UpdateRecord]) -> dict[str, Any]:
    """Run-level figures: updates, accepted versions, out-of-region rate, stale gap, KL, budget, wall time
    and the certificate's rank correlation with the measured reward change."""
    n = len(records)
    pairs = [(r.certificate, r.reward_after - r.reward_before) for r in records
             if r.certificate is not None and r.reward_after is not None and r.reward_before is not None]
    flagged = [r for r in records if r.d_tok_fresh is not None]
    return {
        "updates": n,
        "accepted": sum(1 for r in records if r.version),
        "out_of_region_rate": (sum(r.out_of_region for r in flagged) / len(flagged)) if flagged else None,
        "out_of_region_events": sum(r.out_of_region_events for r in records),
        "backtracks": sum(r.backtracks for r in records),
        "rejected_steps": sum(r.rejected_steps for r in records),
        "stale_gap_mean": _mean(r.stale_gap for r in records),
        "d_tok_mean": _mean(r.d_tok_mean for r in records),
        "d_tok_fresh_mean": _mean(r.d_tok_fresh for r in records),
        "d_tok_max": max((r.d_tok_mean for r in records), default=None),
        "reward_first": records[0].reward_before if records else None,
        "reward_last": records[-1].reward_after if records else None,
        "tokens": sum(r.tokens for r in records),
        "diag_tokens": sum(r.diag_tokens for r in records),
        "wall_s": round(sum(r.wall_s for r in records), 3),
        "certificate_rank_corr": rank_correlation([p[0] for p in pairs], [p[1] for p in pairs]),
        "ess_mean": _mean(r.ess for r in records),
    }
