"""Where a team rollout's time goes on this machine: prompt prefill, decode forwards, the sampler; then the
matmul rates of the base model's decode shapes per dtype (what bounds the rest).

The workload is `rollout_throughput.py`'s (a fresh `math-trio`, N episodes = N/G prompts x G samples, the
spec's sampling, the dtype `auto` picks unless `--dtype`). The phases are wall times of `TeamModel`'s own
steps, read by wrapping them for this process only (`_prefill`, one-position `_forward` calls, the sampler);
`--profile` adds torch's operator table for the same rollout (slower: the profiler's overhead). The matmul
table times `F.linear` at batch 1, 24 and 512 rows for the decoder's MLP and output-layer shapes in float32
and bfloat16 (GFLOP/s; on a CPU without native bf16 the bf16 rows are far slower, which is why `auto` picks
float32 there).

    python benchmarks/rollout_phases.py [--episodes 32] [--group 4] [--backend hf] [--threads 1] [--profile]
                                        [--no-matmul]
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _timed(table: dict[str, list[float]], key: Callable[..., str | None], fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` wrapped to add its wall time and one call to `table[key(*args)]` (no entry when key is None)."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        k = key(*args, **kwargs)
        if k is not None:
            table[k][0] += time.perf_counter() - t
            table[k][1] += 1
        return out
    return wrapper


def phases(team: Any, items: list[Any], group: int, seed: int, profile: bool) -> None:
    import torch

    from teamtr_adapters.runtime import team_model as tm

    table: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    saved = (tm.TeamModel._prefill, tm.TeamModel._forward, tm._pick_fast, tm._pick)
    tm.TeamModel._prefill = _timed(table, lambda *a, **k: "prompt prefill", saved[0])  # type: ignore[method-assign]
    # one-position forwards are decode steps; the others are the reference path's whole-batch prefill or a
    # shared prefix (inside `_prefill`, already counted there)
    tm.TeamModel._forward = _timed(  # type: ignore[method-assign]
        table, lambda self, ids, *a, **k: "decode forwards" if ids.shape[1] == 1 else
        (None if team.backend.fast else "prompt prefill"), saved[1])
    tm._pick_fast = _timed(table, lambda *a, **k: "sampler", saved[2])
    tm._pick = _timed(table, lambda *a, **k: "sampler", saved[3])
    try:
        prof: Any = None
        t = time.perf_counter()
        if profile:
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as torch_profile

            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                eps = team.rollout(items, group, seed)
        else:
            eps = team.rollout(items, group, seed)
        wall = time.perf_counter() - t
    finally:
        tm.TeamModel._prefill, tm.TeamModel._forward, tm._pick_fast, tm._pick = saved  # type: ignore[method-assign]
    tokens = sum(len(turn.message_ids) for e in eps for turn in e.turns)
    print(f"rollout: {len(eps)} episodes, {tokens} tokens in {wall:.1f} s ({tokens / wall:.1f} tok/s), "
          f"{torch.get_num_threads()} threads, dtype {team.backend.dtype}")
    for k, (s, n) in table.items():
        print(f"  {k:<16} {s:7.1f} s  {100 * s / wall:3.0f}%  ({n} calls)")
    for t in range(min(len(e.turns) for e in eps)):
        prompt = sum(len(e.turns[t].prompt_ids) for e in eps) / len(eps)
        message = sum(len(e.turns[t].message_ids) for e in eps) / len(eps)
        print(f"  turn {t} ({eps[0].turns[t].role}): prompt {prompt:.0f} tokens, message {message:.1f} tokens (means)")
    if prof is not None:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=44))


def matmul_rates(config: Any) -> None:
    import torch
    import torch.nn.functional as F

    def seconds(fn: Callable[[], Any], n: int) -> float:
        fn()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t) / n

    h, m, v = config.hidden_size, config.intermediate_size, config.vocab_size
    print(f"F.linear rates, GFLOP/s ({torch.get_num_threads()} threads; K x N: {h}x{m} MLP up, {m}x{h} down, "
          f"{h}x{v} output layer)")
    print(f"{'dtype':<10} {'rows':>5} {'up':>8} {'down':>8} {'output':>8}")
    for dtype in (torch.float32, torch.bfloat16):
        for rows in (1, 24, 512):
            rates = []
            for k, n in ((h, m), (m, h), (h, v)):
                x, w = torch.randn(rows, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
                s = seconds(lambda: F.linear(x, w), 3 if n == v and rows > 24 else 10)
                rates.append(2 * rows * k * n / s / 1e9)
            print(f"{str(dtype).split('.')[-1]:<10} {rows:>5} " + " ".join(f"{r:>8.1f}" for r in rates))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=32)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--backend", default="hf", help="hf (the fast path) or hf=reference")
    ap.add_argument("--template", default="math-trio")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="Also print torch's operator table.")
    ap.add_argument("--no-matmul", dest="matmul", action="store_false", help="Skip the matmul rates.")
    a = ap.parse_args()
    os.environ.setdefault("TEAMTR_CACHE", str(REPO / ".cache" / "teamtr"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(a.threads)
    from teamtr_adapters.registry import Registry
    from teamtr_adapters.runtime.team import load_team
    from teamtr_adapters.spec import load_spec

    with tempfile.TemporaryDirectory() as home:
        reg = Registry(home)
        spec = load_spec(a.template)
        reg.init_team(spec)
        team = load_team(reg, spec.name, backend=a.backend, dtype=a.dtype)
        items = team.task.sample(max(a.episodes // a.group, 1), seed=a.seed, split="train")
        team.rollout(items[:2], 1, a.seed + 1)  # warm-up, not timed
        phases(team, items, a.group, a.seed, a.profile)
        if a.matmul:
            backend: Any = team.backend  # the hf backend: a TeamModel
            matmul_rates(backend.model.config)


if __name__ == "__main__":
    main()
