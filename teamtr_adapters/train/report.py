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


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.json (its settings), or {} when it is missing or unreadable."""
    try:
        doc = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def run_title(run: str, summary: dict[str, Any] | None = None, config: dict[str, Any] | None = None,
              records: list[UpdateRecord] | None = None) -> str:
    """`RUN: METHOD on team TEAM (what was trained), P x G, steps, lr, delta`: the settings a reader needs."""
    summary, config = summary or {}, config or {}
    train = config.get("train") or {}
    method = summary.get("method") or train.get("method") or (records[0].method if records else "?")
    team = summary.get("team") or config.get("team") or "?"
    roles = list(dict.fromkeys(r.role for r in records or []))
    what = f"{len(records or [])} update(s) of {', '.join(roles)}" if roles else ""

    def opt(key: str, label: str) -> str:
        v = train.get(key)
        return f"{label} {v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{label} (spec)"

    delta = train.get("delta")
    if delta is None and records:
        delta = records[0].delta
    settings = ", ".join([f"P={train.get('prompts') or '(spec)'} x G={train.get('group_size') or '(spec)'}",
                          opt("steps", "steps/update"), opt("lr", "lr"),
                          f"delta {delta:g}" if isinstance(delta, (int, float)) else "delta (spec)",
                          f"seed {train.get('seed', '?')}"])
    return f"run {run}: {method} on team {team}" + (f" ({what})" if what else "") + f"\n{settings}"


CAPTION = ("Each point is one component update (x: update number). R: the team's mean reward on the update's own "
           "prompts before and after it. D_tok: mean token KL(pre-update || new version), float32, on the training "
           "states (fresh, held-out: on other states); delta is the trust-region radius. beta: the KL coefficient; "
           "bars: steps rolled back because D_tok exceeded delta (backtracks). L_fresh / L_stale: surrogate gain on "
           "rollouts of the current team / of the stage-start team. Certificate = L_fresh - c*sqrt(delta) - "
           "zeta/(1-gamma), c = sqrt(2)*gamma*max|A|/(1-gamma)^2, zeta = standard error of L_fresh: the lower bound "
           "on the improvement of the team objective that TeamTR's theorem gives (zeta estimated); above 0 the bound certifies an improvement.")


def plot_run(records: list[UpdateRecord], out: Path, title: str = "", summary: dict[str, Any] | None = None) -> Path:
    """Seven panels per update (reward before/after, D_tok against delta, beta with backtracks as bars, surrogate
    gains with the certificate, the stale gap, cumulative tokens, held-out accuracy before/after when the run
    measured it), titled with the run's settings and captioned with what the curves mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    summary = summary or {}
    x = [r.update for r in records]
    fig, axes = plt.subplots(2, 4, figsize=(17, 8.5))
    ax = axes[0, 0]
    ax.plot(x, [r.reward_before for r in records], "o-", label="before the update")
    ax.plot(x, [r.reward_after for r in records], "s--", label="after the update")
    ax.set_title("team reward on the update's prompts")
    ax.set_ylabel("mean reward")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.plot(x, [r.d_tok_mean for r in records], "o-", label="D_tok mean")
    ax.plot(x, [r.d_tok_p99 for r in records], ".:", label="D_tok p99")
    ax.plot(x, [r.d_tok_fresh for r in records], "x", label="D_tok fresh")
    ax.plot(x, [r.d_tok_heldout for r in records], "+", label="D_tok held-out")
    if records:
        ax.axhline(records[0].delta, color="red", lw=1, label=f"delta = {records[0].delta:g}")
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_title("token KL to the pre-update version")
    ax.set_ylabel("D_tok (nats per token, symlog)")
    ax.legend(fontsize=8)
    ax = axes[0, 2]
    bars = ax.twinx()
    bt = [r.backtracks for r in records]
    bars.bar(x, bt, width=0.5, color="tab:orange", alpha=0.6, label="backtracks")
    bars.set_ylim(0, max(bt + [1]) * 1.25)
    bars.set_ylabel("backtracks (rolled-back steps)", color="tab:orange")
    bars.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_zorder(bars.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.plot(x, [r.beta for r in records], "o-", color="tab:blue", label="beta")
    ax.set_ylabel("beta (KL coefficient)", color="tab:blue")
    ax.set_title("beta (line) and backtracks (bars)")
    ax = axes[0, 3]
    ax.plot(x, [r.l_fresh for r in records], "o-", label="L_fresh")
    ax.plot(x, [r.l_stale for r in records], "s--", label="L_stale")
    ax.plot(x, [r.certificate for r in records], "^:", label="certificate")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_title("surrogate gain and certificate")
    ax.set_ylabel("gain (reward units)")
    ax.legend(fontsize=8)
    ax = axes[1, 0]
    ax.plot(x, [r.stale_gap for r in records], "o-")
    ax.set_title("stale gap |L_fresh - L_stale|")
    ax.set_ylabel("|L_fresh - L_stale|")
    ax = axes[1, 1]
    total, cum = 0, []
    for r in records:
        total += r.tokens
        cum.append(total)
    ax.plot(x, cum, "o-")
    ax.set_title("training tokens generated (cumulative)")
    ax.set_ylabel("tokens")
    _heldout(axes[1, 2], summary)
    for a in list(axes[0]) + list(axes[1, :2]):
        a.set_xlabel("update")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.grid(alpha=0.3)
    axes[1, 3].axis("off")
    axes[1, 3].text(0, 1, _wrap(CAPTION, 52), va="top", ha="left", fontsize=8.5, transform=axes[1, 3].transAxes)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _heldout(ax: Any, summary: dict[str, Any]) -> None:
    """Held-out accuracy before and after the run (paired: same prompts, same seeds) with the change's 95% CI."""
    ch = summary.get("eval_change")
    ax.set_title("held-out accuracy before / after the run")
    if not ch:
        ax.text(0.5, 0.5, "not measured in this run\n(train --eval N measures it)", ha="center", va="center",
                transform=ax.transAxes, color="grey")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    lo, hi = ch["ci95"]
    ax.bar([0, 1], [ch["before"], ch["after"]], color=["tab:grey", "tab:green"], width=0.6)
    ax.errorbar([1], [ch["after"]], yerr=[[ch["change"] - lo], [hi - ch["change"]]], fmt="none", color="black",
                capsize=6)
    ax.set_xticks([0, 1], ["before", "after"])
    ax.set_ylabel("held-out accuracy (mean reward)")
    ax.set_ylim(0, max(1.0, ch["after"] + hi - ch["change"]) * 1.05)
    ax.text(0.5, 0.97, f"change {ch['change']:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}]\n{ch['n']} prompts, paired; "
            "error bar: before + 95% CI of the change", ha="center", va="top", transform=ax.transAxes, fontsize=8.5)
    ax.grid(alpha=0.3, axis="y")


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))
