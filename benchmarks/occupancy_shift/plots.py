"""PNG plots of scaling data (matplotlib, Agg). Every function takes plain {size: [values]} dicts, so the
exact study and a measured (LLM) study plot the same way."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .fit import ExponentFit, fit_exponent  # noqa: E402

Series = Mapping[int | float, Sequence[float]]

FIT_CAPTION = ("Markers: mean over instances at each size, error bars: its 95% bootstrap interval (instances "
               "resampled); solid lines: the fitted power law c * x^exponent (exponent with its 95% bootstrap "
               "interval in the legend); dashed grey: reference slopes.")


def add_caption(fig, caption: str | None) -> None:
    """A caption under the figure (wrapped to its width), leaving room for it below the axes."""
    if not caption:
        return
    import textwrap

    text = "\n".join(textwrap.wrap(caption, int(fig.get_figwidth() * 15.5)))
    lines = text.count("\n") + 1
    fig.tight_layout(rect=(0, min(0.5, (0.12 + 0.135 * lines) / fig.get_figheight()), 1, 1))
    fig.text(0.01, 0.01, text, ha="left", va="bottom", fontsize=8)


def plot_fits(ax, fits: Mapping[str, ExponentFit], *, ref_slopes: Sequence[float] = (1.0, 2.0),
              colors: Mapping[str, str] | None = None) -> None:
    """Log-log means (with bootstrap intervals) and the fitted power law of each fit on one axis (in
    `colors[label]` when given); dashed grey reference lines of the given slopes through the first fit's
    first point."""
    for label, fit in fits.items():
        sizes = sorted(fit.means)
        x = np.array(sizes, dtype=float)
        y = np.array([fit.means[k] for k in sizes])
        err = np.array([[y[i] - fit.mean_ci[k][0], fit.mean_ci[k][1] - y[i]] for i, k in enumerate(sizes)]).T
        line = ax.errorbar(x, y, yerr=np.clip(err, 0, None), fmt="o", capsize=3, color=(colors or {}).get(label),
                           label=f"{label}: exponent {fit.exponent:.2f} [{fit.ci[0]:.2f}, {fit.ci[1]:.2f}]")
        c = np.exp(np.mean(np.log(y) - fit.exponent * np.log(x)))
        ax.plot(x, c * x**fit.exponent, "-", color=line[0].get_color(), lw=1)
    if fits:
        first = next(iter(fits.values()))
        xs = np.array(sorted(first.means), dtype=float)
        y0 = first.means[min(first.means)]
        for s in ref_slopes:
            ax.plot(xs, y0 * (xs / xs[0]) ** s, "--", color="grey", lw=0.8)
            ax.annotate(f"slope {s:g}", (xs[-1], y0 * (xs[-1] / xs[0]) ** s), fontsize=7, color="grey")
    ax.set_xscale("log")
    ax.set_yscale("log")
    if fits:
        ax.set_xticks(xs, [f"{k:g}" for k in xs])
        ax.minorticks_off()
    ax.legend(fontsize=7)


def plot_points(ax, series: Mapping[str, Series]) -> None:
    """Every value of each series as a faint dot (spread a little around its size), in the colour of the
    matching `plot_fits` series; values <= 0 cannot be shown on log axes and are left out."""
    for (label, values), container in zip(series.items(), ax.containers):
        xs, ys = [], []
        for size, vs in values.items():
            for j, v in enumerate(vs):
                if v > 0:
                    xs.append(size * (1 + 0.03 * (j - (len(vs) - 1) / 2)))
                    ys.append(v)
        ax.scatter(xs, ys, s=10, color=container[0].get_color(), alpha=0.4, zorder=1)


def plot_scaling(ax, series: Mapping[str, Series], *, ref_slopes: Sequence[float] = (1.0, 2.0),
                 n_boot: int = 4000, points: bool = False,
                 colors: Mapping[str, str] | None = None) -> dict[str, ExponentFit]:
    """Fit each {size: [values]} series (`fit_exponent`) and plot it with `plot_fits` (and, with `points`,
    every value with `plot_points`); returns the fits."""
    fits = {label: fit_exponent(values, n_boot=n_boot) for label, values in series.items()}
    plot_fits(ax, fits, ref_slopes=ref_slopes, colors=colors)
    if points:
        plot_points(ax, series)
    return fits


def save_scaling_figure(panels: Mapping[str, Mapping[str, Series]], path: Path, *, xlabel: str = "team size n",
                        ylabel: str = "", ref_slopes: Sequence[float] = (1.0, 2.0),
                        points: bool = False, caption: str | None = None, sharey: bool = False) -> dict[str, dict]:
    """One log-log panel per entry of `panels` ({title: {label: {size: [values]}}}), with every value as a
    dot when `points`; a label has one colour in every panel. Returns the fits ({title: {label: fit dict}})."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4 + (0.8 if caption else 0)),
                             squeeze=False, sharey=sharey)
    labels = dict.fromkeys(label for series in panels.values() for label in series)
    colors = {label: f"C{i}" for i, label in enumerate(labels)}
    out = {}
    for ax, (title, series) in zip(axes[0], panels.items()):
        fits = plot_scaling(ax, series, ref_slopes=ref_slopes, points=points, colors=colors)
        out[title] = {k: f.as_dict() for k, f in fits.items()}
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        if ax is axes[0][0] or not sharey:
            ax.set_ylabel(ylabel)
    fig.tight_layout()
    add_caption(fig, caption)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return out


def save_ratio_figure(pairs: Mapping[str, tuple[Series, Series]], path: Path, *, ylabel: str,
                      n_boot: int = 4000, caption: str | None = None) -> dict[str, dict]:
    """Log-log ratio of means (numerator / denominator, paired by instance) per size, one series per
    label, with the fitted exponent of the ratio (the difference of the two exponents); returns the fits."""
    fits = {label: fit_exponent(num, relative_to=den, n_boot=n_boot) for label, (num, den) in pairs.items()}
    fig, ax = plt.subplots(figsize=(7, 4.2 + (1.4 if caption else 0)))
    plot_fits(ax, fits, ref_slopes=(0.0, 1.0))
    ax.set_xlabel("team size n")
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    add_caption(fig, caption)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {k: f.as_dict() for k, f in fits.items()}


def save_profile_figure(profiles: Mapping[str, Mapping[int, Sequence[Sequence[float]]]], path: Path, *,
                        ylabel: str, caption: str | None = None, sharey: bool = False) -> None:
    """Per-update quantity against the update index i, one panel per label, one line per team size
    (mean over instances); `profiles` is {label: {n: [[value per update] per instance]}}."""
    fig, axes = plt.subplots(1, len(profiles), figsize=(4.6 * len(profiles), 4 + (0.8 if caption else 0)),
                             squeeze=False, sharey=sharey)
    for ax, (label, by_n) in zip(axes[0], profiles.items()):
        for n in sorted(by_n):
            mean = np.mean(np.asarray(by_n[n], dtype=float), axis=0)
            ax.plot(np.arange(1, len(mean) + 1), mean, "o-", ms=3, label=f"n = {n}")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_title(label)
        ax.set_xlabel("update index i")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        if ax is axes[0][0] or not sharey:
            ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.tight_layout()
    add_caption(fig, caption)
    fig.savefig(path, dpi=110)
    plt.close(fig)
