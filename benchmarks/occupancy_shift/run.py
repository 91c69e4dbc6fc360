"""Run the exact occupancy-shift study: stale vs fresh sequential stages for n = 2..8 on random team MDPs,
fit growth exponents, print a table, write JSON and PNG plots.

    python -m benchmarks.occupancy_shift --quick          # seconds
    python -m benchmarks.occupancy_shift                  # full study (see docs/occupancy.md for runtime)
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .exact import REWARDS, Stage, random_instance, run_stage
from .fit import fit_exponent

RESULTS = Path(__file__).resolve().parents[1] / "results" / "occupancy_shift"
MODES = ("stale", "fresh")
QUANTITIES = {
    "E": "stage surrogate error sum_i |L_i(used) - (J_i - J_{i-1})|",
    "G": "cumulative stale gap sum_i |L_i^fresh - L_i^stale|",
}
DEFINITIONS = QUANTITIES | {
    "P": "signed stage penalty sum_i L_i(used) - (J_n - J_0)",
    "dJ": "realised stage improvement J_n - J_0",
    "max_dtok_ratio": "max over updates of D_tok on the intermediate team's states / delta",
    "errors": "per update L_i(used) - (J_i - J_{i-1})",
    "gaps": "per update L_i^fresh - L_i^stale",
}


@dataclass(frozen=True)
class Config:
    ns: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
    seeds: int = 32
    families: tuple[str, ...] = REWARDS
    delta: float = 0.01
    tokens_per_message: int = 2
    vocab: int = 2
    n_prompts: int = 4
    window: int | None = None
    sweep_n: int = 4                      # team size of the delta sweep
    sweep_deltas: tuple[float, ...] = (0.0025, 0.005, 0.01, 0.02, 0.04)
    order_n: int = 6                      # team size of the update-order check
    n_boot: int = 4000
    seed: int = 2026


QUICK = Config(ns=(2, 3, 4, 5), seeds=6, sweep_deltas=(0.005, 0.01, 0.02), order_n=4, n_boot=1000)


@dataclass(frozen=True)
class Task:
    family: str
    n: int
    seed: int
    delta: float
    order: str          # "forward" (speaking order) or "reverse"


def _r(x: float) -> float:
    return float(f"{x:.4g}")


def summarise_stage(stage: Stage, delta: float) -> dict:
    return {
        "J0": _r(stage.j_start), "dJ": _r(stage.j_end - stage.j_start),
        "E": _r(stage.abs_error), "P": _r(stage.penalty), "G": _r(stage.abs_gap),
        "errors": [_r(u.error) for u in stage.updates],
        "gaps": [_r(u.gap) for u in stage.updates],
        "max_dtok_ratio": _r(max(u.dtok_actual for u in stage.updates) / delta),
    }


def measure(task: Task, cfg: Config) -> dict:
    """Both stages (stale and fresh) from the same random instance."""
    mdp, logits = random_instance(
        task.n, [cfg.seed, task.n, task.seed, REWARDS.index(task.family)], reward=task.family,
        tokens_per_message=cfg.tokens_per_message, vocab=cfg.vocab, n_prompts=cfg.n_prompts, window=cfg.window)
    order = list(range(task.n)) if task.order == "forward" else list(reversed(range(task.n)))
    out = asdict(task)
    for mode in MODES:
        out[mode] = summarise_stage(run_stage(mdp, logits, task.delta, mode, order), task.delta)
    return out


def tasks_for(cfg: Config) -> list[Task]:
    """Main grid, delta sweep and order check, most expensive first (for load balance)."""
    main = [Task(f, n, s, cfg.delta, "forward") for f in cfg.families for n in cfg.ns for s in range(cfg.seeds)]
    sweep = [Task(f, cfg.sweep_n, s, d, "forward") for f in cfg.families for d in cfg.sweep_deltas
             for s in range(cfg.seeds) if not (d == cfg.delta and cfg.sweep_n in cfg.ns)]
    order = [Task(f, cfg.order_n, s, cfg.delta, "reverse") for f in cfg.families for s in range(cfg.seeds)]
    return sorted(main + sweep + order, key=lambda t: -t.n)


def _measure_packed(args: tuple[Task, Config]) -> dict:
    return measure(*args)


def run_all(cfg: Config, jobs: int) -> list[dict]:
    work = [(t, cfg) for t in tasks_for(cfg)]
    if jobs <= 1:
        return [measure(t, c) for t, c in work]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(_measure_packed, work, chunksize=1))


def main_records(records: Iterable[dict], cfg: Config, family: str, order: str = "forward") -> list[dict]:
    """The records of the main grid (radius cfg.delta) of one family and update order."""
    return [r for r in records
            if r["family"] == family and r["delta"] == cfg.delta and r["order"] == order and r["n"] in cfg.ns]


def by_n(records: Iterable[dict], mode: str, key: str) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for r in records:
        out.setdefault(r["n"], []).append(r[mode][key])
    return dict(sorted(out.items()))


def by_delta(records: Iterable[dict], cfg: Config, family: str, mode: str) -> dict[float, list[float]]:
    """E of the delta sweep (team size cfg.sweep_n) by radius."""
    out: dict[float, list[float]] = {}
    for r in records:
        if r["family"] == family and r["n"] == cfg.sweep_n and r["order"] == "forward":
            out.setdefault(r["delta"], []).append(r[mode]["E"])
    return dict(sorted(out.items()))


def reference_slopes(ns: Sequence[int]) -> dict[str, float]:
    """What the same log-log regression over `ns` reads off exact shapes: the theory's fresh bound (n),
    its stale bound (sum_i (n - i + 1) = n(n+1)/2), a pure n^2, and a pure gap term (n(n-1)/2)."""
    n = np.asarray(ns, dtype=float)
    shapes = {"n": n, "n(n+1)/2": n * (n + 1) / 2, "n^2": n**2, "n(n-1)/2": n * (n - 1) / 2}
    return {k: round(float(np.polyfit(np.log(n), np.log(v), 1)[0]), 3) for k, v in shapes.items()}


def analyse_records(records: list[dict], cfg: Config) -> dict:
    """Fits and summaries (pure numbers; the plots recompute the same fits from the same dicts)."""
    fam = {}
    for f in cfg.families:
        main = main_records(records, cfg, f)
        fits = {f"{q}_{m}": fit_exponent(by_n(main, m, q), n_boot=cfg.n_boot).as_dict()
                for q in QUANTITIES for m in MODES}
        fits["E_stale/E_fresh"] = fit_exponent(by_n(main, "stale", "E"), relative_to=by_n(main, "fresh", "E"),
                                               n_boot=cfg.n_boot).as_dict()
        rev = main_records(records, cfg, f, order="reverse")
        fwd = [r for r in main if r["n"] == cfg.order_n]
        fam[f] = {
            "fits": fits,
            "mean": {f"{q}_{m}": {n: float(np.mean(v)) for n, v in by_n(main, m, q).items()}
                     for q in (*QUANTITIES, "P", "dJ", "max_dtok_ratio") for m in MODES},
            "share_P_positive": {m: {n: float(np.mean(np.array(v) > 0)) for n, v in by_n(main, m, "P").items()}
                                 for m in MODES},
            "delta_sweep": {m: fit_exponent(by_delta(records, cfg, f, m), n_boot=cfg.n_boot).as_dict()
                            for m in MODES},
            "order_check": {o: {m: float(np.mean([r[m]["E"] for r in rs])) for m in MODES}
                            for o, rs in (("forward", fwd), ("reverse", rev))},
        }
    return fam


def make_plots(records: list[dict], cfg: Config, out: Path) -> list[str]:
    from .plots import FIT_CAPTION, save_profile_figure, save_ratio_figure, save_scaling_figure

    main = {f: main_records(records, cfg, f) for f in cfg.families}
    inst = f"{cfg.seeds} random team MDPs (instances) per team size n"
    setting = (f"Exact study: {inst}; per-update KL radius delta = {cfg.delta:g}, "
               f"{cfg.tokens_per_message} tokens per message over a vocabulary of {cfg.vocab}, {cfg.n_prompts} prompts"
               + (f", agents see the last {cfg.window} messages" if cfg.window is not None else "") + ". ")
    for q, name in (("E", "scaling_error.png"), ("G", "scaling_gap.png")):
        save_scaling_figure({f: {m: by_n(rs, m, q) for m in MODES} for f, rs in main.items()}, out / name,
                            ylabel=QUANTITIES[q].split(" sum")[0] + f" ({q})",
                            caption=setting + f"One panel per reward family. {q} = {QUANTITIES[q]}; stale: every update scored on the stage-start "
                                    "rollouts, fresh: on rollouts of the current team. " + FIT_CAPTION)
    save_ratio_figure({f: (by_n(rs, "stale", "E"), by_n(rs, "fresh", "E")) for f, rs in main.items()},
                      out / "ratio.png", ylabel="E_stale / E_fresh (ratio of means)", n_boot=cfg.n_boot,
                      caption=setting + "Ratio of mean stage surrogate errors, stale over fresh, paired by instance, one series per "
                              "reward family; "
                              "the exponent of the ratio is the difference of the two exponents. " + FIT_CAPTION)
    profiles = {f: {} for f in cfg.families}
    for f, rs in main.items():
        for r in rs:
            profiles[f].setdefault(r["n"], []).append(r["stale"]["gaps"])
    save_profile_figure(profiles, out / "gap_profile.png", ylabel="stale gap L_i^fresh - L_i^stale",
                        caption=setting + "One panel per reward family. Stale gap of the i-th update of a stage (its surrogate gain on rollouts of "
                                "the current team minus that on the stage-start rollouts), mean over the instances; "
                                "one line per team size n.")
    sweep = {f: {m: by_delta(records, cfg, f, m) for m in MODES} for f in cfg.families}
    save_scaling_figure(sweep, out / "delta.png", xlabel="KL radius delta", ylabel=f"E at n = {cfg.sweep_n}",
                        ref_slopes=(0.5, 1.0),
                        caption=f"Exact study, delta sweep at team size n = {cfg.sweep_n}: {cfg.seeds} instances per "
                                f"radius (x: delta = {', '.join(f'{d:g}' for d in cfg.sweep_deltas)}); E = "
                                f"{QUANTITIES['E']}. " + FIT_CAPTION)
    return ["scaling_error.png", "scaling_gap.png", "ratio.png", "gap_profile.png", "delta.png"]


def records_from_json(path: Path) -> tuple[list[dict], Config]:
    """The per-instance records and the config of a written study (`occupancy_shift.json`), for re-plotting
    without re-running it. Per-update lists exist for the main grid only, which is all the plots use."""
    doc = json.loads(Path(path).read_text())
    c = doc["config"]
    cfg = Config(**{**c, "ns": tuple(c["ns"]), "families": tuple(c["families"]),
                    "sweep_deltas": tuple(c["sweep_deltas"])})
    records = []
    for g in doc["instances"]:
        for i, seed in enumerate(g["seed"]):
            records.append({"family": g["family"], "n": g["n"], "delta": g["delta"], "order": g["order"],
                            "seed": seed, **{m: {k: v[i] for k, v in g[m].items()} for m in MODES}})
    return records, cfg


def replot(folder: Path) -> list[str]:
    """Redraw a study's PNGs from its committed JSON (no study is run)."""
    records, cfg = records_from_json(folder / "occupancy_shift.json")
    return make_plots(records, cfg, folder)


def table(summary: dict, cfg: Config) -> str:
    lines = []
    for f, s in summary.items():
        m = s["mean"]
        lines.append(f"\nfamily {f!r} (delta = {cfg.delta}, {cfg.seeds} instances per n)")
        lines.append(f"{'n':>3} {'E_stale':>9} {'E_fresh':>9} {'ratio':>6} {'G_stale':>9} {'G_fresh':>9}"
                     f" {'P_stale':>9} {'P_fresh':>9} {'dJ_stale':>9} {'dJ_fresh':>9} {'maxKL/d':>8}")
        for n in cfg.ns:
            row = [m[k][n] for k in ("E_stale", "E_fresh")] + [s["fits"]["E_stale/E_fresh"]["means"][str(n)]] + \
                  [m[k][n] for k in ("G_stale", "G_fresh", "P_stale", "P_fresh", "dJ_stale", "dJ_fresh")]
            lines.append(f"{n:>3} " + " ".join(f"{v:>{6 if i == 2 else 9}.{2 if i == 2 else 5}f}"
                                              for i, v in enumerate(row))
                         + f" {m['max_dtok_ratio_stale'][n]:>8.3f}")
        for k, fit in s["fits"].items():
            lines.append(f"  exponent in n of {k:<15} {fit['exponent']:6.2f}  [{fit['ci'][0]:.2f}, {fit['ci'][1]:.2f}]")
        for mode, fit in s["delta_sweep"].items():
            lines.append(f"  exponent in delta of E_{mode:<6}    {fit['exponent']:6.2f}  "
                         f"[{fit['ci'][0]:.2f}, {fit['ci'][1]:.2f}]  (n = {cfg.sweep_n})")
        oc = s["order_check"]
        lines.append(f"  order check at n = {cfg.order_n}: E_stale forward {oc['forward']['stale']:.5f} "
                     f"reverse {oc['reverse']['stale']:.5f}; E_fresh forward {oc['forward']['fresh']:.5f} "
                     f"reverse {oc['reverse']['fresh']:.5f}")
    ref = ", ".join(f"{k}: {v:.2f}" for k, v in reference_slopes(cfg.ns).items())
    lines.append(f"\nthe same regression over n = {cfg.ns[0]}..{cfg.ns[-1]} on exact shapes: {ref}")
    return "\n".join(lines)


def _rounded(x):
    if isinstance(x, dict):
        return {str(k): _rounded(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_rounded(v) for v in x]
    if isinstance(x, float):
        return _r(x)
    return x


def columns(records: list[dict], cfg: Config) -> list[dict]:
    """Records grouped by (family, n, delta, order) with one list per field over the instances; the
    per-update lists (errors, gaps) are kept for the main grid only."""
    groups: dict[tuple, dict] = {}
    for r in sorted(records, key=lambda r: (r["family"], r["n"], r["delta"], r["order"], r["seed"])):
        main = r["delta"] == cfg.delta and r["order"] == "forward"
        g = groups.setdefault((r["family"], r["n"], r["delta"], r["order"]), {
            "family": r["family"], "n": r["n"], "delta": r["delta"], "order": r["order"], "seed": [],
            **{m: {} for m in MODES}})
        g["seed"].append(r["seed"])
        for m in MODES:
            for k, v in r[m].items():
                if main or not isinstance(v, list):
                    g[m].setdefault(k, []).append(v)
    return list(groups.values())


def write_json(path: Path, head: dict, groups: list[dict]) -> None:
    """Readable head (config, summary), then one compact line per instance group."""
    text = json.dumps(_rounded(head), indent=1)[:-2]
    lines = ",\n  ".join(json.dumps(_rounded(g), separators=(",", ":")) for g in groups)
    path.write_text(f'{text},\n "instances": [\n  {lines}\n ]\n}}\n')


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.occupancy_shift", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="n = 2..5, 6 instances per n (seconds)")
    p.add_argument("--out", type=Path, help="output folder (default: benchmarks/results/occupancy_shift, "
                                            "or a temp folder with --quick)")
    p.add_argument("--seeds", type=int, help="random instances per n")
    p.add_argument("--n-max", type=int, help="largest team size (2..8)")
    p.add_argument("--delta", type=float, help="per-update KL radius (default 0.01)")
    p.add_argument("--window", type=int, help="agents see the prompt, only the last WINDOW earlier messages "
                                               "and their own tokens (default: the whole context)")
    p.add_argument("--families", nargs="+", choices=REWARDS, help="reward families")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (1: in-process)")
    p.add_argument("--replot", type=Path, metavar="FOLDER",
                   help="only redraw the PNGs of a written study from its occupancy_shift.json (no study is run)")
    a = p.parse_args(argv)
    if a.replot:
        print("\n".join(str(a.replot / name) for name in replot(a.replot)))
        return {}
    cfg = QUICK if a.quick else Config()
    if a.n_max is not None:
        if not 2 <= a.n_max <= 8:
            p.error("--n-max must be within 2..8 (n = 9 enumerates 4 * 4^9 transcripts per instance)")
        cfg = replace(cfg, ns=tuple(range(2, a.n_max + 1)))
    if a.seeds is not None:
        if a.seeds < 2:
            p.error("--seeds must be at least 2 (the bootstrap resamples instances)")
        cfg = replace(cfg, seeds=a.seeds)
    if a.delta is not None:
        if a.delta <= 0:
            p.error("--delta must be positive")
        cfg = replace(cfg, delta=a.delta)
    if a.window is not None:
        if a.window < 0:
            p.error("--window must be >= 0")
        cfg = replace(cfg, window=a.window)
    if a.families:
        cfg = replace(cfg, families=tuple(a.families))
    cfg = replace(cfg, sweep_n=min(cfg.sweep_n, max(cfg.ns)), order_n=min(cfg.order_n, max(cfg.ns)))
    out = a.out or (Path(tempfile.gettempdir()) / "occupancy_shift_quick" if a.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)

    t0, c0 = time.perf_counter(), _cpu_seconds()
    records = run_all(cfg, a.jobs)
    summary = analyse_records(records, cfg)
    runtime, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    plots = make_plots(records, cfg, out)
    head = {"config": asdict(cfg), "jobs": a.jobs, "runtime_s": round(runtime, 1),
            "cpu_s": round(cpu, 1), "definitions": DEFINITIONS, "reference_slopes": reference_slopes(cfg.ns),
            "summary": summary, "plots": plots}
    write_json(out / "occupancy_shift.json", head, columns(records, cfg))
    print(table(summary, cfg))
    print(f"\n{len(records)} instances x 2 stages in {runtime:.1f} s wall, {cpu:.1f} s CPU, "
          f"{a.jobs} process(es); wrote {out}")
    return head
