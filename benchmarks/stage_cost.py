"""Cost of one TeamTR stage: tokens generated and wall time with `teamtr` (suffix resampling), `teamtr`
with full resampling, and `stale` (one rollout set per stage), on the same prompts, seeds and budget.

Each variant starts from the same fresh team (a new registry home per variant; `team init` is
deterministic) and runs one stage in speaking order. Training tokens only: the stale variant runs
without diagnostic rollouts, and the final-team reward rollout is not counted.

    python benchmarks/stage_cost.py [--team-template math-trio] [--prompts 4] [--group 4] [--steps 1]
                                    [--max-new-tokens 32] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VARIANTS = {"teamtr (suffix)": dict(method="teamtr", resample="suffix"),
            "teamtr (full)": dict(method="teamtr", resample="full"),
            "stale": dict(method="stale", diag_fresh=False)}


def run_variant(template: str, home: Path, opts: dict, args: argparse.Namespace) -> dict:
    from teamtr_adapters.registry import Registry
    from teamtr_adapters.spec import load_spec
    from teamtr_adapters.train.stage import TrainConfig, Trainer, run_stages

    reg = Registry(home)
    spec = load_spec(template)
    reg.init_team(spec)
    cfg = TrainConfig(steps=args.steps, prompts=args.prompts, group_size=args.group,
                      max_new_tokens=args.max_new_tokens, seed=args.seed, **opts)
    trainer = Trainer(reg, spec.name, cfg, device="cpu")
    t0 = time.perf_counter()
    res = run_stages(trainer, 1)
    wall = time.perf_counter() - t0
    final = res.records[-1].diag_tokens  # the final reward rollout is diagnostics, not stage cost
    return {"tokens": res.summary["tokens"], "wall_s": wall, "updates": len(res.records),
            "rollout_sets": sum(1 for r in res.records if r.tokens > 0), "diag_tokens_excluded": final}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--team-template", default="math-trio")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    os.environ.setdefault("TEAMTR_CACHE", str(REPO / ".cache" / "teamtr"))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, opts) in enumerate(VARIANTS.items()):
            out[name] = run_variant(a.team_template, Path(tmp) / f"home{i}", opts, a)
    ref = out["teamtr (suffix)"]
    for name, r in out.items():
        r["tokens_vs_suffix"] = r["tokens"] / ref["tokens"]
        r["time_vs_suffix"] = r["wall_s"] / ref["wall_s"]
    result = {"workload": vars(a), "variants": out}
    if a.json:
        print(json.dumps(result, indent=2))
        return
    print(f"one stage of {a.team_template}: {a.prompts} prompts x {a.group} samples, <= {a.max_new_tokens} new "
          f"tokens per message, {a.steps} optimiser step(s) per update")
    print(f"{'variant':<18}{'sets':>6}{'tokens':>9}{'x suffix':>10}{'wall s':>9}{'x suffix':>10}")
    for name, r in out.items():
        print(f"{name:<18}{r['rollout_sets']:>6}{r['tokens']:>9}{r['tokens_vs_suffix']:>10.2f}"
              f"{r['wall_s']:>9.1f}{r['time_vs_suffix']:>10.2f}")


if __name__ == "__main__":
    main()
