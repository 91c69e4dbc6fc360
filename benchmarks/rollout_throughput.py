"""Team-rollout throughput: batched backend vs one episode at a time, and raw `generate`, per backend.

One workload for every backend: a fresh `math-trio` team (three LoRA agents over the embedded
SmolLM2-135M-Instruct, budgets 64/48/24 tokens), N arithmetic prompts, the spec's sampling
(temperature 0.8, top-p 1.0). For each backend it measures, in one process:
- batched:    `Team.rollout` over all N episodes (each turn one batch of N rows);
- sequential: the same N prompts, one `Team.rollout` call per episode;
- raw:        the backend's raw generate (for `hf`: transformers `model.generate` on the bare base,
              sampling, EOS stop) on exactly the batched run's per-turn prompts and budgets, so
              the protocol's overhead (templates, records, adapters, log-probs) is visible.
Tokens/s counts generated tokens (EOS included) over wall time, and over this process's CPU time (with
`--threads 1` the steadier figure on a machine shared with other jobs). Runs differ in sampled lengths, so
compare tokens/s, not wall times.

    python benchmarks/rollout_throughput.py [--episodes 32] [--group 1] [--backends hf,hf=reference,hf=unmerged]
                                            [--no-sequential] [--json]

`hf` is the fast rollout path; `hf=reference` the previous one (kept for this comparison); `vs_first` compares
them when listed in that order. `--group G` rolls out episodes/G prompts x G samples, as training does.

A backend measured here is any name `runtime.backend.create_backend` knows (`NAME` or `NAME=ARG`);
its raw-generate function comes from `RAW_GENERATE` (a backend without one reports no raw line).
`vllm` and `vllm-server` run in the vLLM environment (docs/vllm.md); a bare `vllm-server` starts a local
server on loopback for the run (`runtime.vllm_server.local_servers`), `vllm-server#N` starts N replicas
(each bound to its share of the cores; docs/scaling.md), `vllm-server=URL` uses a running one.
`vs_first` is each backend's batched tok/s over the first backend's.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def raw_generate_hf(backend: Any, turns: list[tuple[list[list[int]], int]], temperature: float, seed: int) -> int:
    """transformers `generate` on the bare base (adapters off) for each turn's batch; returns tokens."""
    from contextlib import nullcontext

    import torch

    model, pad = backend.model, backend.tokenizer.pad_token_id
    eos = set(backend.eos_ids.tolist())
    tokens = 0
    for t, (prompts, budget) in enumerate(turns):
        ids, mask = backend._left_pad(prompts)
        torch.manual_seed(seed + t)
        with torch.no_grad(), (backend.peft.disable_adapter() if backend.peft is not None else nullcontext()):
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=budget, do_sample=True,
                                 temperature=temperature, top_p=1.0, top_k=0, pad_token_id=pad)
        for row in out[:, ids.shape[1]:].tolist():
            stop = next((i for i, x in enumerate(row) if x in eos), len(row) - 1)
            tokens += stop + 1
    return tokens


def raw_generate_vllm(backend: Any, turns: list[tuple[list[list[int]], int]], temperature: float, seed: int) -> int:
    """vLLM's `LLM.generate` on the bare base (no LoRA, no log-probs) for each turn's batch; returns tokens."""
    from vllm import SamplingParams

    tokens = 0
    for t, (prompts, budget) in enumerate(turns):
        params = SamplingParams(temperature=temperature, top_p=1.0, max_tokens=budget, seed=seed + t,
                                stop_token_ids=backend.eos_ids, detokenize=False)
        outs = backend.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        tokens += sum(len(o.outputs[0].token_ids) for o in outs)
    return tokens


# backend name -> raw generate(backend, [(turn prompts, budget)], temperature, seed) -> tokens
RAW_GENERATE: dict[str, Callable[..., int]] = {"hf": raw_generate_hf, "vllm": raw_generate_vllm}


def _rate(tokens: int, wall: float, cpu: float) -> dict[str, Any]:
    return {"tokens": tokens, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "tok_s": round(tokens / wall, 1),
            "tok_cpu_s": round(tokens / cpu, 1)}


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """fn()'s result, wall seconds and this process's CPU seconds (with --threads 1 the CPU figure hardly
    moves when other jobs share the machine; wall time does)."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def measure(spec_name: str, team: Any, items: list[Any], seed: int, sequential: bool = True,
            group: int = 1) -> dict[str, Any]:
    """Batched rollout, raw generate on its batches, then (with `sequential`) one-at-a-time rollout, on the
    same prompts (`group` samples per prompt)."""
    eps, wall, cpu = _timed(lambda: team.rollout(items, group, seed))
    batched_tok = sum(len(t.message_ids) for e in eps for t in e.turns)
    out = {"backend": spec_name, "episodes": len(eps), "batched": _rate(batched_tok, wall, cpu)}
    raw = RAW_GENERATE.get(spec_name.partition("=")[0])
    if raw is not None:
        turns = [([e.turns[t].prompt_ids for e in eps], team.spec.roles[t].max_new_tokens)
                 for t in range(team.spec.n_turns)]
        raw_tok, wall, cpu = _timed(lambda: raw(team.backend, turns, team.spec.sampling.temperature, seed))
        out["raw_generate"] = _rate(raw_tok, wall, cpu)
        out["protocol_vs_raw"] = round(out["batched"]["tok_s"] / out["raw_generate"]["tok_s"], 2)
        out["protocol_vs_raw_cpu"] = round(out["batched"]["tok_cpu_s"] / out["raw_generate"]["tok_cpu_s"], 2)
    if not sequential:
        return out
    seq_tok, wall, cpu = _timed(lambda: sum(len(t.message_ids) for item in items
                                            for e in team.rollout([item], group, seed) for t in e.turns))
    out["sequential"] = _rate(seq_tok, wall, cpu)
    out["ratio"] = round(out["batched"]["tok_s"] / out["sequential"]["tok_s"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=32)
    ap.add_argument("--group", type=int, default=1, help="Samples per prompt (episodes / group prompts); training "
                                                          "rollouts use the spec's group size (4 for math-trio).")
    ap.add_argument("--backends", default="hf", help="Comma-separated backend specs (e.g. hf,hf=unmerged).")
    ap.add_argument("--template", default="math-trio")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 gives a fair figure on a "
                                                 "machine shared with other jobs)")
    ap.add_argument("--no-sequential", dest="sequential", action="store_false",
                    help="Skip the one-episode-at-a-time loop (batched and raw generate only).")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    os.environ.setdefault("TEAMTR_CACHE", str(REPO / ".cache" / "teamtr"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)

    from teamtr_adapters.registry import Registry
    from teamtr_adapters.runtime.team import load_team
    from teamtr_adapters.spec import load_spec

    results = []
    with tempfile.TemporaryDirectory() as home:
        reg = Registry(home)
        spec = load_spec(a.template)
        reg.init_team(spec)
        for spec_name in a.backends.split(","):
            with ExitStack() as stack:
                team = load_team(reg, spec.name, backend=_backend_spec(spec_name, spec.base, stack),
                                 device=a.device, dtype=a.dtype)
                items = team.task.sample(max(a.episodes // a.group, 1), seed=a.seed, split="train")
                team.rollout(items[:2], 1, a.seed + 1)  # warm-up (kernels, caches), not timed
                results.append(measure(spec_name, team, items, a.seed, a.sequential, a.group))
                getattr(team.backend, "close", lambda: None)()  # the vllm engine's worker processes
                del team
        for r in results:
            r["vs_first"] = round(r["batched"]["tok_s"] / results[0]["batched"]["tok_s"], 2)
            r["vs_first_cpu"] = round(r["batched"]["tok_cpu_s"] / results[0]["batched"]["tok_cpu_s"], 2)
    meta = {"episodes": a.episodes, "group": a.group, "template": a.template, "device": a.device, "dtype": a.dtype,
            "threads": _threads(), "cpu": _cpu(), "load_avg_1m": round(os.getloadavg()[0], 1)}
    if a.json:
        print(json.dumps({"meta": meta, "results": results}, indent=2))
        return
    print(f"team rollout throughput: {a.template}, {a.episodes} episodes (group {a.group}), {meta['threads']} threads, {meta['cpu']}, "
          f"load average {meta['load_avg_1m']}")
    print(f"{'backend':<20} {'batched tok/s':>14} {'one-at-a-time tok/s':>20} {'ratio':>6} {'raw generate tok/s':>19}"
          f" {'protocol/raw':>13} {'vs first':>9}")
    for r in results:
        raw = r.get("raw_generate", {}).get("tok_s", "-")
        seq = r.get("sequential", {}).get("tok_s", "-")
        print(f"{r['backend']:<20} {r['batched']['tok_s']:>14} {seq:>20} {r.get('ratio', '-'):>6} "
              f"{raw:>19} {r.get('protocol_vs_raw', '-'):>13} {r['vs_first']:>9}")
    print("per CPU second of this process (steadier than wall time on a shared machine with --threads 1):")
    for r in results:
        raw = r.get("raw_generate", {}).get("tok_cpu_s", "-")
        print(f"{r['backend']:<20} {r['batched']['tok_cpu_s']:>14} {'':>20} {'':>6} {raw:>19} "
              f"{r.get('protocol_vs_raw_cpu', '-'):>13} {r['vs_first_cpu']:>9}")


def _backend_spec(spec_name: str, base: str, stack: ExitStack) -> str:
    """A bare `vllm-server` starts a local vLLM server for the run (stopped with `stack`): `vllm-server=URL`;
    `vllm-server#N` starts N replicas (each on its share of the cores, `vllm_server.replica_envs`) and uses
    them all: `vllm-server=URL1,...,URLN`."""
    name, _, n = spec_name.partition("#")
    if name != "vllm-server":
        return spec_name
    from teamtr_adapters.runtime.base import resolve_base
    from teamtr_adapters.runtime.vllm_server import local_servers, replica_envs

    k = int(n or 1)
    return "vllm-server=" + ",".join(stack.enter_context(local_servers(resolve_base(base).path, k,
                                                                       envs=replica_envs(k), startup_s=900)))


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown cpu"


if __name__ == "__main__":
    main()
