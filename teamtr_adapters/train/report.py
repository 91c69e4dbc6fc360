"""`report RUN`: find a run's diagnostics and draw its curves to PNG (matplotlib, Agg backend)."""
from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Any

from ..errors import InputError, NotFoundError
from .diagnostics import UpdateRecord, read_records, summarise


def _is_run(path: Path) -> bool:
    """A run dir: the trainer writes config.json when it starts, updates.jsonl as it goes, summary.json at the end."""
    return path.is_dir() and any((path / f).is_file() for f in ("config.json", "updates.jsonl"))


def find_run(ref: str, home: Path) -> Path:
    """A run dir from a path or a run id under `home/runs` (a unique prefix is enough)."""
    path = Path(ref).expanduser()
    if _is_run(path):
        return path
    runs = home / "runs"
    hits = sorted(p for p in runs.glob(f"{glob.escape(ref)}*") if _is_run(p)) if runs.is_dir() else []
    if len(hits) != 1:
        known = sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []
        raise NotFoundError(f"no run {ref!r}" + (" (ambiguous)" if hits else "")
                            + f" (runs: {', '.join(known[-5:]) or 'none'})")
    return hits[0]


def load_run(run_dir: Path) -> tuple[list[UpdateRecord], dict[str, Any]]:
    """The run's update records and summary (recomputed from the records, with `finished: false`, when the
    run was cut short: interrupted, killed, or still running)."""
    records = read_records(run_dir / "updates.jsonl")
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        return records, {"finished": True, **json.loads(summary_path.read_text())}
    if not records:
        raise InputError(f"run {run_dir.name!r} did not finish and recorded no update "
                         "(it was interrupted or killed before its first update, or is still starting)")
    return records, {**summarise(records), "finished": False}


def plot_run(records: list[UpdateRecord], out: Path, title: str = "") -> Path:
    """Six panels per update: reward before/after, D_tok mean and p99 against delta, beta, L_fresh and
    L_stale, the stale gap, cumulative tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r.update for r in records]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    ax = axes[0, 0]
    ax.plot(x, [r.reward_before for r in records], "o-", label="before")
    ax.plot(x, [r.reward_after for r in records], "s--", label="after")
    ax.set_title("team reward")
    ax.legend()
    ax = axes[0, 1]
    ax.plot(x, [r.d_tok_mean for r in records], "o-", label="D_tok mean")
    ax.plot(x, [r.d_tok_p99 for r in records], ".:", label="D_tok p99")
    ax.plot(x, [r.d_tok_fresh for r in records], "x", label="D_tok fresh")
    ax.plot(x, [r.d_tok_heldout for r in records], "+", label="D_tok held-out")
    if records:
        ax.axhline(records[0].delta, color="red", lw=1, label="delta")
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_title("token KL to the pre-update version")
    ax.legend(fontsize=8)
    ax = axes[0, 2]
    ax.plot(x, [r.beta for r in records], "o-")
    ax.bar(x, [r.backtracks for r in records], alpha=0.3, label="backtracks")
    ax.set_title("beta (bars: backtracks)")
    ax = axes[1, 0]
    ax.plot(x, [r.l_fresh for r in records], "o-", label="L_fresh")
    ax.plot(x, [r.l_stale for r in records], "s--", label="L_stale")
    ax.plot(x, [r.certificate for r in records], ".:", label="certificate")
    ax.set_title("surrogate gain")
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    ax.plot(x, [r.stale_gap for r in records], "o-")
    ax.set_title("stale gap |L_fresh - L_stale|")
    ax = axes[1, 2]
    total, cum = 0, []
    for r in records:
        total += r.tokens
        cum.append(total)
    ax.plot(x, cum, "o-")
    ax.set_title("tokens generated (cumulative)")
    for a in axes.flat:
        a.set_xlabel("update")
        a.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
