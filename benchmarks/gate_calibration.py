"""Calibration of the swap gate's score decision (`teamtr_adapters.gate.stats`, the function the gate runs).

Synthetic paired 0/1 outcomes: per prompt one episode of each team, incumbent success p, candidate success
p + diff, correlation rho of the two outcomes (clipped to what the marginals allow; rho = 0.95 is the worst
case for a false accept: the candidate then only loses, never wins). For each cell the gate plays its looks
in order and stops early when it can; the table gives the accept / refuse / inconclusive rates and the mean
number of prompts played.

    python -m benchmarks.gate_calibration                 # table + PNG under benchmarks/results/gate_calibration/
    python -m benchmarks.gate_calibration --runs 500      # quicker

The embedded-model part (three real solver candidates through the real gate) is /tmp-free and separate:
`benchmarks/gate_candidates.py` makes the candidates; the reports are committed next to the table.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from teamtr_adapters.gate.stats import Design, obf_boundaries, simulate

OUT = Path(__file__).resolve().parent / "results" / "gate_calibration"
DIFFS = [-0.2, -0.15, -0.1, -0.05, 0.0, 0.05, 0.1]
PS = [0.2, 0.5]
RHOS = [0.0, 0.5, 0.95]
BUDGETS = [80, 160, 360]


def run(runs: int, seed: int = 0) -> list[dict]:
    rows = []
    for n in BUDGETS:
        design = Design(n=n)
        for p in PS:
            for rho in RHOS:
                for i, diff in enumerate(DIFFS):
                    r = simulate(design, p=p, diff=diff, rho=rho, runs=runs, seed=seed + 1000 * i + n)
                    rows.append({"budget": n, "p": p, "rho": rho, "diff": diff, **r})
    return rows


def table(rows: list[dict], runs: int) -> str:
    d = Design()
    lines = [f"# Gate score decision on synthetic paired outcomes ({runs} runs per cell)", "",
             f"epsilon {d.epsilon}, alpha {d.alpha}, {d.looks} looks (O'Brien-Fleming z boundaries "
             f"{', '.join(f'{c:.2f}' for c in obf_boundaries(d.looks, d.alpha))}), regression cap {d.max_regressions}; "
             "rates accept / refuse / inconclusive, then the mean prompts played.", "",
             "| budget | p_inc | rho | " + " | ".join(f"diff {x:+.2f}" for x in DIFFS) + " |",
             "|---|---|---|" + "---|" * len(DIFFS)]
    for n in BUDGETS:
        for p in PS:
            for rho in RHOS:
                cells = [r for r in rows if r["budget"] == n and r["p"] == p and r["rho"] == rho]
                lines.append(f"| {n} | {p} | {rho} | " + " | ".join(
                    f"{c['accept']:.2f} / {c['refuse']:.2f} / {c['inconclusive']:.2f} ({c['mean_prompts']:.0f})"
                    for c in cells) + " |")
    worst_fa = max(r["accept"] for r in rows if r["diff"] <= -d.epsilon + 1e-9 and r["diff"] >= -d.epsilon - 1e-9)
    worst_fr = max(r["refuse"] for r in rows if r["diff"] == 0.0)
    eq = [r for r in rows if r["diff"] == 0.0 and r["budget"] == d.n]
    lines += ["", f"largest false-accept rate at diff = -epsilon: {worst_fa:.3f}; largest refusal rate of an "
              f"equally good candidate: {worst_fr:.3f}; at the default budget ({d.n} prompts) an equally good "
              f"candidate is accepted {min(r['accept'] for r in eq):.2f} to {max(r['accept'] for r in eq):.2f} "
              f"of the time (mean prompts played {min(r['mean_prompts'] for r in eq):.0f} to "
              f"{max(r['mean_prompts'] for r in eq):.0f})."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(PS), len(BUDGETS), figsize=(4.2 * len(BUDGETS), 3.6 * len(PS)), sharex=True, sharey=True)
    colors = {0.0: "tab:blue", 0.5: "tab:orange", 0.95: "tab:green"}
    d = Design()
    for i, p in enumerate(PS):
        for j, n in enumerate(BUDGETS):
            ax = axes[i][j]
            for rho in RHOS:
                cells = [r for r in rows if r["budget"] == n and r["p"] == p and r["rho"] == rho]
                xs = [c["diff"] for c in cells]
                ax.plot(xs, [c["accept"] for c in cells], "-o", color=colors[rho], ms=3, label=f"accept, rho {rho}")
                ax.plot(xs, [c["refuse"] for c in cells], "--s", color=colors[rho], ms=3, label=f"refuse, rho {rho}")
            ax.axvline(-d.epsilon, color="grey", lw=0.8, ls=":")
            ax.axhline(d.alpha, color="red", lw=0.8, ls=":")
            ax.axhline(0.8, color="grey", lw=0.8, ls=":")
            ax.set_title(f"budget {n} prompts, incumbent accuracy {p}", fontsize=9)
            if i == len(PS) - 1:
                ax.set_xlabel("true score difference (candidate - incumbent)")
            if j == 0:
                ax.set_ylabel("rate")
    axes[0][0].legend(fontsize=7, loc="center left")
    fig.suptitle(f"Swap gate score decision: accept (solid) / refuse (dashed) rates; epsilon {d.epsilon} (dotted "
                 f"vertical), alpha {d.alpha} and 0.8 (dotted horizontal)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run(args.runs)
    (args.out / "synthetic.json").write_text(json.dumps(rows, indent=1))
    text = table(rows, args.runs)
    (args.out / "synthetic.md").write_text(text)
    plot(rows, args.out / "synthetic.png")
    print(text)


if __name__ == "__main__":
    main()
