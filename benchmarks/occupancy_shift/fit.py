"""Growth exponents: log-log regression of a per-instance quantity's mean against a size (n or delta),
with a percentile bootstrap over instances. Data-source agnostic: takes {size: [values]}."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ExponentFit:
    exponent: float                  # slope of log(mean value) against log(size)
    ci: tuple[float, float]          # percentile bootstrap interval of the slope
    level: float
    means: dict[int | float, float]  # mean value per size
    mean_ci: dict[int | float, tuple[float, float]]  # bootstrap interval of each mean
    dropped: float                   # fraction of bootstrap replicates with a mean <= 0 or a ratio
                                     # over a zero mean (left out)

    def as_dict(self) -> dict:
        return {"exponent": self.exponent, "ci": list(self.ci), "level": self.level,
                "means": {str(k): v for k, v in self.means.items()},
                "mean_ci": {str(k): list(v) for k, v in self.mean_ci.items()}, "dropped": self.dropped}


def _slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope of each row of y (..., k) against x (k,)."""
    xc = x - x.mean()
    return (y - y.mean(axis=-1, keepdims=True)) @ xc / (xc @ xc)


def fit_exponent(values: Mapping[int | float, Sequence[float]], *,
                 relative_to: Mapping[int | float, Sequence[float]] | None = None, n_boot: int = 4000,
                 level: float = 0.95, seed: int = 0) -> ExponentFit:
    """Fit mean(value) ~ size^b by least squares on log-log, and bootstrap b by resampling the
    instances of each size independently (with replacement). Needs >= 2 sizes with positive means.

    With `relative_to` (values paired with `values` by position, e.g. the same instances run another
    way), the fitted quantity is mean(values) / mean(relative_to): b is the difference of the two
    exponents, and pairs are resampled together."""
    sizes = sorted(values)
    if len(sizes) < 2:
        raise ValueError("need at least two sizes to fit an exponent")
    num = [np.asarray(values[k], dtype=float) for k in sizes]
    den = [np.ones_like(d) for d in num] if relative_to is None else \
        [np.asarray(relative_to[k], dtype=float) for k in sizes]
    if any(d.size == 0 or d.shape != e.shape for d, e in zip(num, den)):
        raise ValueError("every size needs at least one value (and as many paired values)")
    with np.errstate(divide="ignore", invalid="ignore"):
        means = np.array([d.mean() / e.mean() for d, e in zip(num, den)])
    if not np.all(np.isfinite(means) & (means > 0)):
        raise ValueError("an exponent needs positive means (and non-zero reference means); fit the magnitude "
                         "of a signed quantity")
    x = np.log(np.asarray(sizes, dtype=float))
    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot, len(sizes)))
    with np.errstate(divide="ignore", invalid="ignore"):  # a resampled denominator of 0: left out below
        for j, (d, e) in enumerate(zip(num, den)):
            idx = rng.integers(d.size, size=(n_boot, d.size))
            boot[:, j] = d[idx].mean(axis=1) / e[idx].mean(axis=1)
    ok = np.all(np.isfinite(boot) & (boot > 0), axis=1)
    slopes = _slopes(x, np.log(boot[ok]))
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(slopes, [tail, 100 - tail])
    mlo, mhi = np.nanpercentile(boot, [tail, 100 - tail], axis=0)  # nan: a 0/0 ratio replicate
    return ExponentFit(
        exponent=float(_slopes(x, np.log(means))),
        ci=(float(lo), float(hi)),
        level=level,
        means={k: float(m) for k, m in zip(sizes, means)},
        mean_ci={k: (float(a), float(b)) for k, a, b in zip(sizes, mlo, mhi)},
        dropped=float(1 - ok.mean()),
    )
