"""Data-parallel component update: the update of one agent timed with 1 and with N processes.

Workload: a fresh `math-trio` over the embedded SmolLM2-135M-Instruct (float32 trainer), P prompts x G
samples, the solver's update with S optimiser steps. The rollout is made once by rank 0 (the same seeds as
one process; not timed); what is timed is `Trainer.update` + `Trainer.commit`: the passes over the loss
rows (split across the ranks, gradients all-reduced, the trust-region measurement gathered) and the
registry write. The reward is synthetic (the solver's message starts with an even token id), so every
group has a learning signal at any P x G; probe rollouts and the fresh-rollout diagnostics are off, so
only the split work is timed.

    python benchmarks/dp_update.py --launch 1,2 [--prompts 8 --group 4 --tokens 48 --steps 2] [--json]

`--launch 1,2` runs the workload once per process count, each through `torchrun --standalone`
(`torch.distributed.run`; one OpenMP thread per process, gloo on CPU), in one run each, and prints the
comparison. Each launched run writes its own fresh registry.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def even_first_token(episode) -> float:
    return float(episode.turns[0].message_ids[0] % 2 == 0) if episode.turns and episode.turns[0].message_ids else 0.0


def worker(a: argparse.Namespace) -> None:
    from teamtr_adapters.registry import Registry
    from teamtr_adapters.spec import load_spec
    from teamtr_adapters.train.stage import TrainConfig, Trainer

    reg = Registry(a.home)
    if int(os.environ.get("RANK", "0")) == 0:
        reg.init_team(load_spec("math-trio"))
    cfg = TrainConfig(order="solver", steps=a.steps, prompts=a.prompts, group_size=a.group, max_new_tokens=a.tokens,
                      micro_batch=a.micro_batch, probe_prompts=0, redraws=0, lr=1e-4)
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # rank 0 creates the team before the others open it
        dist.init_process_group("gloo")
        dist.barrier()
    with Trainer(reg, "math-trio", cfg, device="cpu", single_role="solver", reward_fn=even_first_token) as t:
        items = t.task.sample(a.prompts, seed=0, split="train")
        t0 = time.perf_counter()
        data = t.training_rollout(items, 1, None, set(), 0, 0)
        rollout_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        rec, work = t.update("solver", data, stage=0, stage_start=data, fresh=None)
        t.commit([(rec, work)])
        update_s = time.perf_counter() - t0
        rows = [turn for e in data.episodes for turn in e.turns if turn.role == "solver" and turn.message_ids]
        out = {"world": t.dp.world, "rows": len(rows), "trained_tokens": sum(len(x.message_ids) for x in rows),
               "rank0_rows_computed": t.dp.local_rows, "rollout_s": round(rollout_s, 1),
               "update_s": round(update_s, 1), "steps": rec.steps, "accepted_steps": rec.accepted_steps,
               "backtracks": rec.backtracks, "d_tok": rec.d_tok_mean, "version": rec.version,
               "rollout_tokens": data.tokens}
        if t.dp.is_main:
            print("RESULT " + json.dumps(out), flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()


def launch(n: int, a: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as home:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
               __file__, "--worker", "--home", home, "--prompts", str(a.prompts), "--group", str(a.group),
               "--tokens", str(a.tokens), "--steps", str(a.steps), "--micro-batch", str(a.micro_batch)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            sys.exit(f"error: the {n}-process run failed:\n{proc.stderr[-3000:]}")
        line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
        return {**json.loads(line[7:]), "processes": n, "command_wall_s": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--launch", default="1,2", help="Process counts to compare, e.g. 1,2.")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--home", help=argparse.SUPPRESS)
    a = ap.parse_args()
    os.environ.setdefault("TEAMTR_CACHE", str(REPO / ".cache" / "teamtr"))
    if a.worker:
        worker(a)
        return
    results = [launch(int(n), a) for n in a.launch.split(",")]
    for r in results:
        r["speedup"] = round(results[0]["update_s"] / r["update_s"], 2)
    if a.json:
        print(json.dumps({"load_avg_1m": round(os.getloadavg()[0], 1), "results": results}, indent=2))
        return
    print(f"data-parallel update: math-trio solver, {a.prompts} prompts x {a.group} samples, <= {a.tokens} tokens, "
          f"{a.steps} steps, 1 thread per process, load average {os.getloadavg()[0]:.1f}")
    print(f"{'processes':>9} {'rows':>5} {'update s':>9} {'speedup':>8} {'steps':>6} {'accepted':>9} {'D_tok':>10} "
          f"{'rollout s':>10}")
    for r in results:
        print(f"{r['processes']:>9} {r['rows']:>5} {r['update_s']:>9} {r['speedup']:>8} {r['steps']:>6} "
              f"{r['accepted_steps']:>9} {r['d_tok']:>10.3g} {r['rollout_s']:>10}")


if __name__ == "__main__":
    main()
