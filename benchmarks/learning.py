"""Does training make the team better? The paper's comparison on the embedded model, at equal token budget.

    python benchmarks/learning.py --quick             # < 2 min smoke path: 2 methods, 1 seed, tiny budget
    python benchmarks/learning.py                     # the full comparison (hours on 2 CPU cores)

For every method (teamtr, stale, stale-is, resample-every-k, joint, single) and seed: a fresh math-trio registry,
the held-out accuracy of the untrained team on a fixed evaluation set (same prompts, same sampling seeds every
time), then TeamTR stages (or the baseline's) until the run has generated `--budget` training tokens, with the
held-out accuracy measured again at `--eval-points` points evenly spaced in tokens. `single` trains one adapter
answering alone (the base model alone is its untrained start). Reported per method: accuracy before -> after with
the paired 95% interval (prompts x seeds as units) and each seed's change, the trained team paired against the base
model alone and against teamtr's trained team, training tokens, wall time (per machine), out-of-region rate on
held-out states (the same probe for every method) and the hard check's rolled-back excursions. Writes learning.json,
learning.md and learning.png (held-out accuracy against tokens and wall time: per method the mean over seeds at each
evaluation point with a 95% interval) under --out. Results that go either way are published either way.

A run snapshots its registry and state after every stage (OUT/partial/, git-ignored); `--resume` keeps the finished
runs of OUT/runs.jsonl and continues an interrupted one from its last snapshot exactly as if it had not stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import sys
import tempfile
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

# The options that define a comparison: every run of one results directory must share them (`--resume` checks).
SETTING = ("budget", "difficulty", "eval_n", "eval_k", "eval_points", "prompts", "group_size", "steps", "lr", "delta",
           "max_new_tokens", "temperature", "order", "dtype")
METHODS = ("teamtr", "stale", "stale-is", "resample-every-k", "joint", "single")
COLOURS = dict(zip(METHODS, ("tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:brown", "tab:gray")))


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=18000, help="training tokens per run")
    ap.add_argument("--difficulty", default="1,2", help="arithmetic levels of the team's task (1: one digit, 2: two)")
    ap.add_argument("--eval", dest="eval_n", type=int, default=128, help="held-out prompts")
    ap.add_argument("--eval-k", type=int, default=1, help="samples per held-out prompt")
    ap.add_argument("--eval-points", type=int, default=4, help="held-out evaluations along a run, evenly spaced "
                    "in training tokens (after the first stage that reaches budget*j/K, j = 1..K; 1: only the end)")
    ap.add_argument("-P", "--prompts", type=int, default=8)
    ap.add_argument("-G", "--group-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--delta", type=float, default=0.05)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--temperature", type=float, default=0.3, help="sampling temperature of training and "
                    "evaluation (the spec's 0.8 makes the 135M model ramble: benchmarks/results/learning/search/)")
    ap.add_argument("--order", default="speaking", help="update order (the committed runs used 'speaking', the "
                    "order before 'reverse' became the trainer's default)")
    ap.add_argument("--dtype", default="bfloat16", help="rollout dtype (the trainer is float32; bf16 rollouts are "
                    "corrected by truncated IS)")
    ap.add_argument("--resume", action="store_true", help="keep the runs already in OUT/runs.jsonl")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/learning"))
    ap.add_argument("--quick", action="store_true", help="teamtr and stale, 1 seed, a tiny budget, 16 prompts")
    a = ap.parse_args(argv)
    if a.quick:
        a.methods, a.seeds, a.budget, a.eval_n, a.prompts, a.group_size = "teamtr,stale", 1, 100, 8, 2, 2
        a.max_new_tokens, a.steps, a.eval_points = 8, 1, 2
        a.out = a.out / "quick" if a.out == Path("benchmarks/results/learning") else a.out
    a.methods = [m for m in a.methods.split(",") if m]
    bad = [m for m in a.methods if m not in METHODS]
    if bad:
        ap.error(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    return a


EVAL_SEED = 1000  # seed s evaluates on the held-out prompts and sampling seeds of EVAL_SEED + s
# Runs appended before each run recorded its machine (before stale seed 2).
UNRECORDED = "machine not recorded"
# OUT/NOTES: the hand-kept history of a results folder (what its run log cannot say), appended to learning.md
NOTES = "notes.md"
# OUT/PARTIAL/<method>-seed<seed>/: an unfinished run's working registry and last stage-end snapshot (git-ignored)
PARTIAL = "partial"


def machine() -> str:
    """What a run's wall time depends on: the CPU model, its cores and whether it has native bf16 (AVX512-BF16 or
    AMX; without it the bf16 rollouts run emulated). Wall times of different machines are never averaged."""
    import platform

    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    bf16 = "native bf16" if flags & {"avx512_bf16", "amx_bf16"} else "no native bf16"
    return f"{info.get('model name') or platform.processor() or platform.machine()}, {os.cpu_count()} cores, {bf16}"


def wall_groups(rs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Runs grouped by the machine they ran on (most runs first)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rs:
        groups.setdefault(r.get("machine", UNRECORDED), []).append(r)
    return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))


def trainer(method: str, seed: int, a: argparse.Namespace, home: Path, run_dir: Path) -> Any:
    """A Trainer of `method` on the registry at `home`, with this invocation's setting."""
    from teamtr_adapters.registry import Registry
    from teamtr_adapters.train.stage import TrainConfig, Trainer

    cfg = TrainConfig(method=method, seed=seed, steps=a.steps, lr=a.lr, delta=a.delta, prompts=a.prompts,
                      group_size=a.group_size, max_new_tokens=a.max_new_tokens, eval_k=a.eval_k, order=a.order)
    return Trainer(Registry(home), "math-trio", cfg, dtype=a.dtype, run_dir=run_dir)


def base_alone(seed: int, a: argparse.Namespace, template_home: Path) -> dict[str, Any]:
    """The untrained base model answering alone (the `single` method's start: the last role's prompt, one turn)
    on seed's evaluation set: the reference a trained team should at least match."""
    with tempfile.TemporaryDirectory(prefix="learning-") as tmp:
        home = Path(tmp) / "home"
        shutil.copytree(template_home, home)
        with trainer("single", seed, a, home, Path(tmp) / "run") as t:
            return t.evaluate(a.eval_n, EVAL_SEED + seed)


def known_alone(a: argparse.Namespace) -> dict[int, dict[str, Any]]:
    """The base-alone evaluations an earlier invocation with this setting stored in OUT/learning.json, per seed."""
    try:
        old = json.loads((a.out / "learning.json").read_text())
    except (OSError, ValueError):
        return {}
    if {k: old.get("config", {}).get(k) for k in SETTING} != setting(a):
        return {}
    return {int(k): v for k, v in old.get("base_alone", {}).items()}


def run_one(method: str, seed: int, a: argparse.Namespace, template_home: Path,
            untrained: dict[tuple[int, bool], dict[str, Any]]) -> dict[str, Any]:
    """One method x seed from a copy of the fresh team: evaluations along the way and the run's summary.
    `untrained` caches the untrained team's evaluation per (seed, single): every team method starts from the
    same team and plays the same evaluation set with the same seeds, so it is measured once. After every stage
    the run's registry and state are snapshotted under OUT/partial/ (`snapshot`); with `--resume`, an
    interrupted run continues from its last snapshot exactly as if it had not stopped (its wall is the sum of
    its parts; a run whose parts ran on different machines records them all)."""
    from teamtr_adapters.train.diagnostics import summarise
    from teamtr_adapters.train.stage import run_stages

    ckpt = partial_dir(a, method, seed)
    saved = load_snapshot(ckpt) if a.resume else None
    work = ckpt / "work"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(saved["home"] if saved else template_home, work / "home")
    t0 = time.perf_counter()
    with trainer(method, seed, a, work / "home", work / "run") as t:
        if saved:
            st = saved["state"]
            t.restore(st["trainer"])
            first, ev, curve, train_s, stage, point = (st[k] for k in ("first", "ev", "curve", "train_s", "stage",
                                                                         "point"))
            untrained.setdefault((seed, method == "single"), first)
            machines = st["machines"] + [machine()] * (machine() not in st["machines"])
            before_s, parts = st["total_s"], st["parts"] + 1
            print(f"  {method} seed {seed}: resumed after stage {stage - 1} ({curve[-1]})", file=sys.stderr,
                  flush=True)
        else:
            eval_seed = EVAL_SEED + seed  # one fixed evaluation set per seed: every method plays the same prompts
            key = (seed, method == "single")
            first = untrained.get(key) or untrained.setdefault(key, t.evaluate(a.eval_n, eval_seed))
            curve = [{"tokens": 0, "wall_s": 0.0, "accuracy": first["accuracy"]}]
            train_s, stage, ev, point, machines, before_s, parts = 0.0, 0, first, 1, [machine()], 0.0, 1
        while sum(r.tokens for r in t.records) < a.budget:
            s0 = time.perf_counter()
            run_stages(t, 1, first_stage=stage, token_budget=a.budget)
            train_s += time.perf_counter() - s0
            stage += 1
            tokens = sum(r.tokens for r in t.records)
            if tokens >= a.budget * point / a.eval_points:
                while point <= a.eval_points and tokens >= a.budget * point / a.eval_points:
                    point += 1
                ev = t.evaluate(a.eval_n, EVAL_SEED + seed)
                curve.append({"tokens": tokens, "wall_s": round(train_s, 1), "accuracy": ev["accuracy"]})
                print(f"  {method} seed {seed}: {curve[-1]}", file=sys.stderr, flush=True)
            snapshot(ckpt, work / "home", {
                "setting": setting(a), "trainer": t.state(), "first": first, "ev": ev, "curve": curve,
                "train_s": train_s, "stage": stage, "point": point, "machines": machines, "parts": parts,
                "total_s": before_s + time.perf_counter() - t0})
        s = summarise(t.records)
        tis_cap = t.tis_cap
    return {"method": method, "seed": seed, "setting": setting(a), "before": first["scores"], "after": ev["scores"],
            "curve": curve, "train_wall_s": round(train_s, 1),
            "total_wall_s": round(before_s + time.perf_counter() - t0, 1),
            "tokens": s.get("tokens", 0), "diag_tokens": s.get("diag_tokens", 0),
            "out_of_region_updates": s.get("out_of_region_updates", 0), "probed_updates": s.get("probed_updates", 0),
            "out_of_region_events": s.get("out_of_region_events", 0), "updates": s.get("updates", 0),
            "accepted": s.get("accepted", 0), "no_signal": s.get("no_signal", 0),
            "d_tok_heldout_mean": s.get("d_tok_heldout_mean"), "tis_cap": tis_cap, "machine": " + ".join(machines),
            **({"parts": parts} if parts > 1 else {})}


def partial_dir(a: argparse.Namespace, method: str, seed: int) -> Path:
    """Where an unfinished run of `method` on `seed` keeps its working registry and its snapshots."""
    return a.out / PARTIAL / f"{method}-seed{seed}"


def snapshot(ckpt: Path, home: Path, state: dict[str, Any]) -> None:
    """Keep a copy of the run's registry and its state at a stage's end under `ckpt`, atomically: a snapshot
    counts once its state.pkl exists (written last); the previous one is removed only after the new one is
    complete, so a run killed at any moment leaves one to continue from."""
    new, last, old = ckpt / "next", ckpt / "last", ckpt / "old"
    shutil.rmtree(new, ignore_errors=True)
    shutil.copytree(home, new / "home")
    with open(new / "state.tmp", "wb") as f:
        pickle.dump(state, f)
    os.replace(new / "state.tmp", new / "state.pkl")
    shutil.rmtree(old, ignore_errors=True)
    if last.exists():
        os.replace(last, old)
    os.replace(new, last)
    shutil.rmtree(old, ignore_errors=True)


def load_snapshot(ckpt: Path) -> dict[str, Any] | None:
    """The newest complete snapshot under `ckpt` ({"home": its registry copy, "state": ...}), or None."""
    for name in ("last", "next", "old"):  # "next" is complete (state.pkl written) only if killed mid-rotation
        if (ckpt / name / "state.pkl").is_file():
            with open(ckpt / name / "state.pkl", "rb") as f:
                return {"home": ckpt / name / "home", "state": pickle.load(f)}
    return None


def setting(a: argparse.Namespace) -> dict[str, Any]:
    """The comparison-defining options of this invocation (`SETTING`)."""
    return {k: getattr(a, k) for k in SETTING}


def check_resumable(runs: list[dict[str, Any]], a: argparse.Namespace, log: Path) -> None:
    """Stop with one line unless every kept run was made with this invocation's setting."""
    want = setting(a)
    for r in runs:
        have = r.get("setting")
        if have != want:
            diff = "no recorded setting" if have is None else ", ".join(
                f"{k} {have.get(k)!r} here {want[k]!r}" for k in SETTING if have.get(k) != want[k])
            raise SystemExit(f"error: --resume: {log} holds {r['method']} seed {r['seed']} run with another setting "
                             f"({diff}); pass the same options, or another --out")
    for ckpt in sorted((a.out / PARTIAL).glob("*")) if a.resume else []:
        saved = load_snapshot(ckpt)
        if saved and saved["state"]["setting"] != want:
            raise SystemExit(f"error: --resume: the unfinished run in {ckpt} has another setting; pass the same "
                             f"options, another --out, or remove {ckpt}")


def analyse(runs: list[dict[str, Any]], alone: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Per method: the paired change pooled over prompts x seeds and each seed's own change, the trained team
    against the base model alone on the same prompts (`alone`: per seed) and against teamtr's trained team on the
    seeds both ran, tokens, wall (a mean per machine) and out-of-region rate."""
    from teamtr_adapters.train.diagnostics import paired_change

    by_key = {(r["method"], r["seed"]): r for r in runs}

    def after(method: str, seeds: list[int]) -> list[float]:
        return [x for s in seeds for x in by_key[method, s]["after"]]

    out = {}
    for m in dict.fromkeys(r["method"] for r in runs):
        rs = [r for r in runs if r["method"] == m]
        change = paired_change([x for r in rs for x in r["before"]], [x for r in rs for x in r["after"]])
        vs_base = paired_change([x for r in rs for x in alone[r["seed"]]["scores"]], [x for r in rs for x in r["after"]])
        # against teamtr's trained team, on the seeds both ran (same evaluation prompts and sampling seeds)
        both = sorted({r["seed"] for r in rs} & {r["seed"] for r in runs if r["method"] == "teamtr"})
        vs_teamtr = paired_change(after("teamtr", both), after(m, both)) if both and m != "teamtr" else None
        probed = sum(r["probed_updates"] for r in rs)
        out[m] = {"seeds": len(rs), **change, "base_alone": vs_base["before"],
                  "per_seed_change": {r["seed"]: {k: v for k, v in paired_change(r["before"], r["after"]).items()
                                                  if k in ("change", "ci95")} for r in rs},
                  "after_minus_base_alone": {k: vs_base[k] for k in ("change", "ci95")},
                  "after_minus_teamtr": vs_teamtr and {"seeds": len(both), "change": vs_teamtr["change"],
                                                      "ci95": vs_teamtr["ci95"]},
                  "tokens": sum(r["tokens"] for r in rs) / len(rs),
                  "train_wall_s": {k: {"runs": len(g), "mean": sum(r["train_wall_s"] for r in g) / len(g)}
                                   for k, g in wall_groups(rs).items()},
                  "out_of_region_rate": sum(r["out_of_region_updates"] for r in rs) / probed if probed else None,
                  "out_of_region_events": sum(r["out_of_region_events"] for r in rs),
                  "updates": sum(r["updates"] for r in rs), "no_signal": sum(r["no_signal"] for r in rs)}
    return out


def table(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table, with what its intervals do and do not cover."""
    def ci(c: dict[str, Any]) -> str:
        return f"{c['change']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]"

    head = ("| method | seeds | accuracy before -> after | change [95% CI] | change per seed [95% CI] | after - base alone "
            "[95% CI] | after - teamtr's after [95% CI] | tokens/run | train wall/run | out-of-region (held-out) | "
            "rolled-back excursions | no-signal updates |")
    lines = [head, "|" + "---|" * 12]
    for m, s in summary.items():
        oor = "-" if s["out_of_region_rate"] is None else f"{s['out_of_region_rate']:.0%}"
        vt = s["after_minus_teamtr"]
        per_seed = "; ".join(ci(c) for c in s["per_seed_change"].values())
        walls = s["train_wall_s"]
        wall = (f"{next(iter(walls.values()))['mean']:.0f} s" if len(walls) == 1 else
                "; ".join(f"{w['mean']:.0f} s ({w['runs']} on {k})" for k, w in walls.items()))
        lines.append(f"| {m} | {s['seeds']} | {s['before']:.3f} -> {s['after']:.3f} | {ci(s)} | {per_seed} | "
                     f"{ci(s['after_minus_base_alone'])} (base {s['base_alone']:.3f}) | "
                     f"{'-' if vt is None else ci(vt)} | {s['tokens']:.0f} | {wall} | "
                     f"{oor} | {s['out_of_region_events']} | {s['no_signal']}/{s['updates']} |")
    lines.append("\nIntervals are paired t intervals over held-out prompts x seeds: they cover the evaluation's "
                 "sampling noise given these training runs, not the spread between training seeds (read that in "
                 "'change per seed'). 'after - teamtr's after' pairs each method's trained team with teamtr's on the "
                 "seeds both ran (same prompts, same sampling seeds). Wall times are means over runs of one machine: "
                 "runs on different machines are listed apart, never averaged.")
    return "\n".join(lines)


def provenance(runs: list[dict[str, Any]], a: argparse.Namespace) -> str:
    """Where the table's figures come from, from the run log itself: per seed, the runs in the order they were
    appended, how to reproduce one, what of the full comparison (`--quick`'s, for a quick folder) has not run yet;
    then OUT/NOTES verbatim when the folder has one."""
    full = parse(["--quick"] if a.quick else [])
    by_seed: dict[int, list[str]] = {}
    for r in runs:
        by_seed.setdefault(r["seed"], []).append(r["method"])
    order = "; ".join(f"seed {s}: {', '.join(ms)}" for s, ms in sorted(by_seed.items()))
    missing = [f"{m} seed {s}" for s in range(full.seeds) for m in full.methods if m not in by_seed.get(s, [])]
    parts = [f"{r['method']} seed {r['seed']} ({r['parts']} parts on {r['machine']})" for r in runs if r.get("parts")]
    text = (f"Runs in runs.jsonl, each appended when it ended, in the order they ran ({order or 'none'}). Method M on "
            f"seed S is reproduced by `python benchmarks/learning.py --resume --methods M --seeds S+1` (`--resume` "
            f"keeps the runs already logged and refuses a log made with another setting). The runtime line at the "
            f"end is the last invocation's (one run, or a re-summary that ran nothing); each run's own time is "
            f"`total_wall_s` in runs.jsonl. " +
            (f"Continued from a stage-end snapshot after an interruption (wall times are sums over the parts): "
             f"{', '.join(parts)}. " if parts else "") +
            (f"Not run yet: {', '.join(missing)}; `python benchmarks/learning.py --resume` continues." if missing
             else "Every method of the full comparison has run on every seed."))
    notes = a.out / NOTES
    return textwrap.fill(text, 114) + (f"\n\n{notes.read_text().strip()}" if notes.is_file() else "")


def curve_mean(rs: list[dict[str, Any]], key: str, n_samples: int) -> tuple[list[float], list[float], list[list[float]]]:
    """Per evaluation point of a method's runs (the points fall at the same budget fractions in every seed): the
    mean x (`key`: tokens or wall_s) and accuracy over seeds, and a 95% Wilson interval of that accuracy over the
    seeds' held-out samples (`n_samples` per evaluation). Points past the shortest run are left out."""
    from scipy.stats import binomtest

    n_points = min(len(r["curve"]) for r in rs)
    xs, ys, cis = [], [], []
    for k in range(n_points):
        acc = [r["curve"][k]["accuracy"] for r in rs]
        hits = round(sum(acc) * n_samples)
        ci = binomtest(hits, n_samples * len(rs)).proportion_ci(method="wilson")
        xs.append(sum(r["curve"][k][key] for r in rs) / len(rs))
        ys.append(sum(acc) / len(acc))
        cis.append([float(ci.low), float(ci.high)])
    return xs, ys, cis


def plot(runs: list[dict[str, Any]], a: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_samples = a.eval_n * a.eval_k
    # the wall-time panel averages only the runs of the machine most runs ran on; others are drawn dashed, alone
    ref = next(iter(wall_groups(runs)))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.9), sharey=True)
    for ax, key, label in ((axes[0], "tokens", "training tokens generated"),
                           (axes[1], "wall_s", f"training wall time (s), runs on: {ref}")):
        for m in dict.fromkeys(r["method"] for r in runs):
            rs = [x for x in runs if x["method"] == m]
            others = [x for x in rs if key == "wall_s" and x.get("machine", UNRECORDED) != ref]
            for r in others:
                ax.plot([p[key] for p in r["curve"]], [p["accuracy"] for p in r["curve"]], "--", lw=0.8, alpha=0.6,
                        color=COLOURS[m])
            rs = [x for x in rs if x not in others]
            for r in rs if len(rs) > 1 else []:  # each seed, faint, under the mean
                ax.plot([p[key] for p in r["curve"]], [p["accuracy"] for p in r["curve"]], "-", lw=0.8, alpha=0.3,
                        color=COLOURS[m])
            if not rs:
                continue
            xs, ys, cis = curve_mean(rs, key, n_samples)
            ax.errorbar(xs, ys, yerr=[[y - c[0] for y, c in zip(ys, cis)], [c[1] - y for y, c in zip(ys, cis)]],
                        fmt="o-", ms=3, lw=1.4, capsize=2, elinewidth=0.8, alpha=0.85, color=COLOURS[m],
                        label=f"{m} ({len(rs)} seed{'s' if len(rs) > 1 else ''})")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"held-out accuracy ({a.eval_n} prompts x {a.eval_k} per seed)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Held-out accuracy while training math-trio (embedded SmolLM2-135M): mean over seeds, bars 95% "
                 f"Wilson intervals\nover held-out samples, faint lines single seeds, dashed (wall time) runs on "
                 f"other machines\n"
                 f"budget {a.budget} tokens, P {a.prompts} x G {a.group_size}, {a.steps} steps, lr {a.lr}, "
                 f"delta {a.delta}, <= {a.max_new_tokens} tokens/message, temperature {a.temperature or 'of the spec'}, "
                 f"difficulty {a.difficulty}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    a = parse(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from teamtr_adapters.registry import Registry
    from teamtr_adapters.spec import load_spec

    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log = a.out / "runs.jsonl"
    runs = [json.loads(x) for x in log.read_text().splitlines()] if a.resume and log.exists() else []
    check_resumable(runs, a, log)
    if not a.resume:
        log.write_text("")
        shutil.rmtree(a.out / PARTIAL, ignore_errors=True)
    done = {(r["method"], r["seed"]) for r in runs}
    untrained = {(r["seed"], r["method"] == "single"): {"accuracy": r["curve"][0]["accuracy"], "scores": r["before"]}
                 for r in runs}
    with tempfile.TemporaryDirectory(prefix="learning-team-") as tmp:
        template = Path(tmp) / "home"
        spec = load_spec("math-trio")
        levels = [int(x) for x in a.difficulty.split(",")]
        spec = replace(spec, task=replace(spec.task, params={**spec.task.params, "difficulty": levels}))
        if a.temperature is not None:
            spec = replace(spec, sampling=replace(spec.sampling, temperature=a.temperature))
        Registry(template).init_team(spec)
        for seed in range(a.seeds):
            for m in a.methods:
                if (m, seed) in done:
                    continue
                print(f"{m} seed {seed} ...", file=sys.stderr, flush=True)
                runs.append(run_one(m, seed, a, template, untrained))
                with open(log, "a") as f:
                    f.write(json.dumps(runs[-1]) + "\n")
                shutil.rmtree(partial_dir(a, m, seed))
        # the base model alone on each seed's evaluation set: the `single` run's start, else measured once (kept in
        # learning.json, so a re-summary on another machine does not re-sample it)
        known = known_alone(a) if a.resume else {}
        alone = {seed: untrained.get((seed, True)) or known.get(seed) or base_alone(seed, a, template)
                 for seed in sorted({r["seed"] for r in runs})}
    summary = analyse(runs, alone)
    result = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
              "base_alone": {str(k): v for k, v in alone.items()}, "runtime_s": round(time.perf_counter() - t0, 1), "summary": summary, "runs": runs}
    (a.out / "learning.json").write_text(json.dumps(result, indent=1))
    md = table(summary)
    (a.out / "learning.md").write_text(f"{md}\n\n{provenance(runs, a)}\n\nruntime {result['runtime_s']:.0f} s\n")
    plot(runs, a, a.out / "learning.png")
    print(md)
    print(f"runtime {result['runtime_s']:.0f} s; results in {a.out}")
    return result


if __name__ == "__main__":
    main()
