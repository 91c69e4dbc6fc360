"""The gate's score decision: a group-sequential non-inferiority test of the paired team score, with stated
error rates. Pure numbers (numpy + scipy), no torch, no registry: `benchmarks/gate_calibration.py` and the
tests run this very function on synthetic outcomes.

Data: one paired difference per held-out prompt, `d_i = candidate's mean reward - incumbent's mean reward`
over the prompt's episodes (the prompt is the unit; several episodes per prompt only make `d_i` less noisy).
Both teams play the same prompts with the same seeds.

Two one-sided tests, each at level `alpha`, on the mean paired difference `mu`:
- accept   <=> reject H0: mu <= -epsilon  (the candidate is not worse by epsilon or more);
- refuse   <=> reject H0: mu >= 0         (the candidate is worse than the incumbent);
  the accept test is checked first: a candidate shown to be within the margin is accepted even if it is
  also shown to be slightly worse (that is what non-inferiority means).
- otherwise, after the whole budget: inconclusive, with the number of further prompts that would likely
  decide (80% power at the observed mean and spread).

Statistic: a one-sample t-test (`scipy.stats.ttest_1samp`) of the differences *plus `PSEUDO` (2) pseudo-losses
(-1) and as many pseudo-wins (+1)*. With 0/1 rewards and correlated teams most differences are 0; a plain t-test
then reads "no variance" as certainty and accepts a candidate that loses a few prompts and wins none
(false-accept rate 14% instead of 5% at n = 60, epsilon 0.1; 9.5% with one pair). The pseudo-observations keep the variance
away from zero (like the Agresti-Caffo / Bonett-Price adjustments for paired proportions); the simulation in
`benchmarks/gate_calibration.py` checks the error rates over incumbent accuracy, correlation and budget.

Looks: the budget of `n` prompts is played in `looks` equal batches; after each batch both tests are run
against O'Brien-Fleming boundaries `c_k = C / sqrt(t_k)` (t_k = share of the budget seen), with C chosen so
that the chance of ever crossing is `alpha` under the null (multivariate normal, `scipy.stats.multivariate_
normal`). Early looks stop only on overwhelming evidence (an identical candidate, a broken one); the last
boundary is close to the fixed-sample z (1.71 instead of 1.645 for 4 looks), so the budget barely grows.

Coordination regressions (prompts the incumbent team solved that the candidate team fails) enter as a third
test: refuse when the share of regressed prompts among the prompts seen is above `max_regressions`
significantly (exact binomial test at level alpha / looks per look). Two equally good teams with independent
outcomes regress on p(1 - p) <= 0.25 of the prompts, so the default cap 0.3 refuses only a candidate that
breaks much of what the team could do, even when it wins elsewhere.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
from scipy import optimize, stats

ACCEPTED, REFUSED, INCONCLUSIVE = "accepted", "refused", "inconclusive"
POWER = 0.8  # the power the suggested extra budget aims at
PSEUDO = 2  # pseudo-losses (-1) and as many pseudo-wins (+1) added to the differences


@dataclass(frozen=True)
class Design:
    """The score test's parameters: margin `epsilon`, one-sided level `alpha`, budget `n` prompts played in
    `looks` batches, regression cap `max_regressions` (share of prompts; >= 1 switches the test off) and
    the per-prompt score at or above which a prompt counts as solved."""

    epsilon: float = 0.1
    alpha: float = 0.05
    n: int = 360
    looks: int = 4
    max_regressions: float = 0.3
    solved: float = 0.5

    @property
    def n_looks(self) -> int:
        return max(1, min(self.looks, self.n))

    def look_sizes(self) -> list[int]:
        """Cumulative prompts after each look (the last one is the whole budget)."""
        k = self.n_looks
        return [round(self.n * (i + 1) / k) for i in range(k)]


@dataclass
class Decision:
    """The outcome after the prompts seen so far."""

    outcome: str  # accepted | refused | inconclusive | continue
    prompts: int
    look: int
    looks: int
    mean: float
    lcb: float  # lower confidence bound of mu at the look's accept boundary
    ucb: float  # upper confidence bound of mu at the look's refuse boundary
    z_accept: float  # evidence against mu <= -epsilon (accept when >= boundary)
    z_refuse: float  # evidence against mu >= 0 (refuse when >= boundary)
    boundary: float
    regressions: list[int] = field(default_factory=list)
    improvements: list[int] = field(default_factory=list)
    regression_share_lcb: float = 0.0
    reasons: list[str] = field(default_factory=list)
    more_prompts: int | None = None  # inconclusive: further prompts likely needed to decide

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=64)
def obf_boundaries(looks: int, alpha: float) -> tuple[float, ...]:
    """One-sided O'Brien-Fleming z boundaries for `looks` equally spaced looks with overall level `alpha`."""
    if looks <= 1:
        return (float(stats.norm.isf(alpha)),)
    t = np.arange(1, looks + 1) / looks
    cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    mvn = stats.multivariate_normal(mean=np.zeros(looks), cov=cov)

    def crossing(c: float) -> float:  # P(some Z_k >= c / sqrt(t_k)) - alpha
        return 1.0 - float(mvn.cdf(c / np.sqrt(t), rng=np.random.default_rng(0))) - alpha

    c = optimize.brentq(crossing, stats.norm.isf(alpha), stats.norm.isf(alpha / looks) * math.sqrt(looks),
                        xtol=1e-4)
    return tuple(float(c / math.sqrt(x)) for x in t)


def _adjusted(diffs: Any) -> np.ndarray:
    """The differences (last axis) plus one pseudo-loss and one pseudo-win."""
    x = np.asarray(diffs, dtype=float)
    pad = np.broadcast_to(np.array([-1.0, 1.0] * PSEUDO), x.shape[:-1] + (2 * PSEUDO,))
    return np.concatenate([x, pad], axis=-1)


def z_stat(diffs: Any, mu0: float, alternative: str) -> Any:
    """The test's z (evidence for `alternative` against mean `mu0`): the t-test of the adjusted differences
    (last axis), its one-sided p-value turned into a standard normal quantile to compare with the boundaries."""
    res = stats.ttest_1samp(_adjusted(diffs), popmean=mu0, alternative=alternative, axis=-1)
    return stats.norm.isf(np.clip(np.nan_to_num(res.pvalue, nan=1.0), 1e-300, 1.0))


def bound(diffs: Any, z: float, side: str) -> Any:
    """Confidence bound of the mean at the normal quantile `z` (t quantile of the same tail probability)."""
    x = _adjusted(diffs)
    se = x.std(axis=-1, ddof=1) / math.sqrt(x.shape[-1])
    q = float(stats.t.isf(stats.norm.sf(z), df=x.shape[-1] - 1))
    return x.mean(axis=-1) - q * se if side == "lower" else x.mean(axis=-1) + q * se


def regressions(incumbent: Sequence[float], candidate: Sequence[float], solved: float = 0.5) -> list[int]:
    """Indices of the prompts the incumbent team solved (score >= `solved`) that the candidate team fails."""
    return [i for i, (a, b) in enumerate(zip(incumbent, candidate)) if a >= solved > b]


def regression_lcb(count: Any, n: int, level: float) -> Any:
    """Exact (Clopper-Pearson) one-sided lower confidence bound of the regressed share at `level`."""
    count = np.asarray(count)
    low = stats.beta.ppf(1 - level, np.maximum(count, 1), n - count + 1)
    return np.where(count > 0, low, 0.0)


def more_prompts(diffs: Sequence[float], design: Design) -> int:
    """Further prompts that would likely (80% power) decide, at the observed mean and spread."""
    x = _adjusted(diffs)
    m, s = float(x.mean()), max(float(x.std(ddof=1)), 1e-9)
    z = obf_boundaries(design.n_looks, design.alpha)[-1] + stats.norm.isf(1 - POWER)
    gap = max(m + design.epsilon, -m)  # distance to the nearer decision: accept (m > -eps) or refuse (m < 0)
    need = math.ceil((z * s / max(gap, 1e-9)) ** 2)
    return int(min(max(need - len(diffs), 1), 10**6))


CODES = {0: "continue", 1: ACCEPTED, 2: REFUSED, 3: INCONCLUSIVE}


def decide_batch(incumbent: Any, candidate: Any, design: Design, look: int) -> dict[str, Any]:
    """The look-`look` decision for many runs at once: per-prompt scores [runs, prompts seen] -> arrays of
    outcome codes (`CODES`), both z statistics and the regression share's lower bound. `decide_scores`
    is this function on one run; the calibration benchmark calls it on thousands."""
    inc, cand = np.atleast_2d(np.asarray(incumbent, float)), np.atleast_2d(np.asarray(candidate, float))
    n, looks = inc.shape[-1], design.n_looks
    c = obf_boundaries(looks, design.alpha)[look - 1]
    diffs = cand - inc
    z_acc = z_stat(diffs, -design.epsilon, "greater")
    z_ref = z_stat(diffs, 0.0, "less")
    n_reg = ((inc >= design.solved) & (cand < design.solved)).sum(axis=-1)
    reg_lcb = (regression_lcb(n_reg, n, 1 - design.alpha / looks) if design.max_regressions < 1
               else np.zeros(len(inc)))
    by_regs = reg_lcb > design.max_regressions
    accept = (z_acc >= c) & ~by_regs
    refuse = ~accept & ((z_ref >= c) | by_regs)
    code = np.where(accept, 1, np.where(refuse, 2, 3 if look >= looks else 0))
    return {"code": code, "z_accept": z_acc, "z_refuse": z_ref, "boundary": c, "regressions": n_reg,
            "regression_share_lcb": reg_lcb, "by_regressions": by_regs}


def decide_scores(incumbent: Sequence[float], candidate: Sequence[float], design: Design,
                  look: int | None = None) -> Decision:
    """The decision after the prompts seen (`len(incumbent)` of them) at look `look` (1-based; default: the
    look whose cumulative size matches, else the last). `continue` means: play the next batch."""
    if len(incumbent) != len(candidate) or not len(incumbent):
        raise ValueError("need the same, non-zero number of incumbent and candidate scores")
    sizes = design.look_sizes()
    k = look or (sizes.index(len(incumbent)) + 1 if len(incumbent) in sizes else len(sizes))
    r = decide_batch(incumbent, candidate, design, k)
    outcome, c = CODES[int(r["code"][0])], r["boundary"]
    diffs = [b - a for a, b in zip(incumbent, candidate)]
    n, eps = len(diffs), design.epsilon
    lcb, ucb = float(bound(diffs, c, "lower")), float(bound(diffs, c, "upper"))
    regs, imps = regressions(incumbent, candidate, design.solved), regressions(candidate, incumbent, design.solved)
    reasons: list[str] = []
    if outcome == REFUSED:
        if r["z_refuse"][0] >= c:
            reasons.append(f"score: the candidate team is worse (mean paired difference {np.mean(diffs):+.3f}, "
                           f"upper confidence bound {ucb:+.3f} < 0)")
        if r["by_regressions"][0]:
            reasons.append(f"coordination: {len(regs)} of {n} prompts regressed (share >= "
                           f"{float(r['regression_share_lcb'][0]):.3f} > cap {design.max_regressions:g})")
    elif outcome == INCONCLUSIVE:
        reasons.append(f"inconclusive after {n} prompts: the score's lower confidence bound {lcb:+.3f} is below "
                       f"-epsilon {-eps:g} and its upper bound {ucb:+.3f} is above 0")
    return Decision(outcome=outcome, prompts=n, look=k, looks=len(sizes), mean=float(np.mean(diffs)),
                    lcb=lcb, ucb=ucb, z_accept=float(r["z_accept"][0]), z_refuse=float(r["z_refuse"][0]),
                    boundary=c, regressions=regs, improvements=imps,
                    regression_share_lcb=float(r["regression_share_lcb"][0]), reasons=reasons,
                    more_prompts=more_prompts(diffs, design) if outcome == INCONCLUSIVE else None)


def run_sequential(incumbent: Sequence[float], candidate: Sequence[float], design: Design) -> Decision:
    """The decision the gate reaches on per-prompt scores that cover the whole budget: looks in order,
    stopping at the first accept or refuse (what `gate.swap` does with real rollouts, batch by batch)."""
    for k, size in enumerate(design.look_sizes(), 1):
        d = decide_scores(incumbent[:size], candidate[:size], design, look=k)
        if d.outcome != "continue":
            return d
    return d  # pragma: no cover  (the last look always decides)


def simulate(design: Design, *, p: float, diff: float, rho: float, runs: int, samples: int = 1,
             seed: int = 0) -> dict[str, float]:
    """Accept / refuse / inconclusive rates of the gate's decision on synthetic paired 0/1 outcomes: per
    prompt `samples` episode pairs, incumbent success `p`, candidate success `p + diff`, correlation `rho`
    of a pair's two outcomes (clipped to what the marginals allow); looks in order as the gate plays them.
    Also the mean number of prompts played."""
    q = min(max(p + diff, 0.0), 1.0)
    sd = math.sqrt(p * (1 - p) * q * (1 - q))
    p11 = min(max(p * q + rho * sd, max(0.0, p + q - 1)), min(p, q))  # P(both succeed), Frechet-clipped
    probs = np.array([p11, p - p11, q - p11, 1 - p - q + p11])  # (1,1) (1,0) (0,1) (0,0) for (inc, cand)
    rng = np.random.default_rng(seed)
    cell = rng.choice(4, size=(runs, design.n, samples), p=np.clip(probs, 0, None) / np.clip(probs, 0, None).sum())
    inc = np.isin(cell, (0, 1)).mean(axis=-1)
    cand = np.isin(cell, (0, 2)).mean(axis=-1)
    final = np.zeros(runs, dtype=int)
    used = np.zeros(runs)
    open_ = np.ones(runs, dtype=bool)
    for k, size in enumerate(design.look_sizes(), 1):
        idx = np.flatnonzero(open_)
        if not len(idx):
            break
        code = decide_batch(inc[idx, :size], cand[idx, :size], design, k)["code"]
        done = code != 0
        final[idx[done]] = code[done]
        used[idx[done]] = size
        open_[idx[done]] = False
    return {"accept": float(np.mean(final == 1)), "refuse": float(np.mean(final == 2)),
            "inconclusive": float(np.mean(final == 3)), "mean_prompts": float(used.mean())}
