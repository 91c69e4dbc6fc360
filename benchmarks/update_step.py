"""One `single`-method update on a fixed workload against TRL's GRPOTrainer doing one step on the same one,
like with like: TRL in bf16 and in float32, the same LoRA config, the same prompts and token budget.

Workload: the embedded SmolLM2-135M-Instruct, 8 prompts x 4 samples, 64 new tokens, temperature 0.8, top-p 1,
LoRA r16 (alpha 32, dropout 0) on q/k/v/o, the same arithmetic prompts and exact-number reward, one optimiser
step at lr 1e-4. Timed: rollout + one optimiser step (+ for teamtr-adapters the trust-region measurement pass
and the registry commit); model loading and trainer construction are not timed. Our trainer always computes
the update in float32 (exact trust-region numbers); `--ours-dtypes` sets the rollout dtype (bfloat16: a
separate bf16 engine samples, float32: the trainer's own model). Diagnostics that TRL does not compute are off
on our side (`probe_prompts=0`: the held-out D_tok probe rollout; L_stale and the final reward rollout do not
run in a single update). Both sides print their phase breakdown: ours rollout / loss passes (forward +
backward, the measurement forward) / the rest of the update / commit; TRL generation + scoring
(`_generate_and_score_completions`) / the rest of the step (loss, backward, optimiser). The ratio of step times
is printed with the ratio per generated token beside it: the two sides sample different completions, and EOS
ends some early.

TRL runs in its own environment (scripts/trl_env.sh -> .venv-trl); when that is missing only our side is
measured. `--threads 1` gives steadier numbers on a machine shared with other jobs.

    python benchmarks/update_step.py [--betas 0.04] [--trl-dtypes bfloat16,float32] [--ours-dtypes bfloat16,float32]
                                     [--trl-python .venv-trl/bin/python] [--threads 1] [--json]
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
SYSTEM = "Solve the problem. End with 'Answer: <number>'."


def _reward(text: str, answer: str) -> float:
    import re

    m = re.findall(r"-?\d+(?:\.\d+)?", text.split("Answer:")[-1]) or re.findall(r"-?\d+(?:\.\d+)?", text)
    try:
        return float(bool(m) and float(m[-1]) == float(answer))
    except ValueError:
        return 0.0


def trl_worker(cfg: dict) -> dict:
    """Runs inside .venv-trl: one GRPOTrainer step on the workload; returns its timing and phases."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(cfg["model"])
    tok.padding_side = "left"
    dtype = getattr(torch, cfg["dtype"])
    model = AutoModelForCausalLM.from_pretrained(cfg["model"], dtype=dtype)
    answers = {p: a for p, a in zip(cfg["prompts"], cfg["answers"])}
    ds = Dataset.from_list([{"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": p}],
                             "question": p} for p in cfg["prompts"]])

    def reward(completions, question, **_):
        return [_reward(c[0]["content"] if isinstance(c, list) else c, answers[q]) for c, q in zip(completions, question)]

    n = len(cfg["prompts"]) * cfg["group"]
    args = GRPOConfig(output_dir=cfg["out"], per_device_train_batch_size=n, num_generations=cfg["group"],
                      max_completion_length=cfg["new_tokens"], beta=cfg["beta"], max_steps=1, use_cpu=True,
                      temperature=0.8, top_p=1.0, learning_rate=1e-4, logging_steps=1, save_strategy="no",
                      report_to="none", seed=0, bf16=cfg["dtype"] == "bfloat16")
    lora = LoraConfig(r=cfg["rank"], lora_alpha=2 * cfg["rank"], lora_dropout=0.0,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=tok,
                          peft_config=lora)
    phases = {"generate_and_score_s": 0.0, "tokens": 0}
    inner = trainer._generate_and_score_completions

    def timed(*a, **kw):
        t = time.perf_counter()
        out = inner(*a, **kw)
        phases["generate_and_score_s"] += time.perf_counter() - t
        mask = out.get("completion_mask") if isinstance(out, dict) else None
        phases["tokens"] += int(mask.sum()) if mask is not None else 0
        return out

    trainer._generate_and_score_completions = timed
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "beta": cfg["beta"], "dtype": cfg["dtype"], "tokens": phases["tokens"],
            "phases": {"generate_and_score_s": phases["generate_and_score_s"],
                       "loss_backward_step_s": wall - phases["generate_and_score_s"]},
            "gradient_checkpointing": args.gradient_checkpointing}


def ours(prompts: int, group: int, new_tokens: int, rank: int, home: Path, dtype: str) -> tuple[dict, list, list]:
    """One `single` update through the library: rollout, trust-region step, measurement, commit."""
    from teamtr_adapters.registry import Registry
    from teamtr_adapters.spec import parse_spec
    from teamtr_adapters.train.policy import WorkingCopy
    from teamtr_adapters.train.stage import TrainConfig, Trainer, _seed

    spec = parse_spec(f"""
name = "bench"
[task]
name = "arithmetic"
params = {{ difficulty = 1 }}
[sampling]
temperature = 0.8
top_p = 1.0
[lora]
rank = {rank}
alpha = {2 * rank}
dropout = 0.0
target_modules = ["q_proj", "k_proj", "v_proj", "o_proj"]
[trust_region]
group_size = {group}
prompts_per_update = {prompts}
lr = 1e-4
[[roles]]
name = "solver"
system_prompt = "{SYSTEM}"
max_new_tokens = {new_tokens}
""")
    reg = Registry(home)
    reg.init_team(spec)
    trainer = Trainer(reg, "bench", TrainConfig(method="single", steps=1, probe_prompts=0, redraws=0),
                      single_role="solver", dtype=dtype)
    items = trainer.task.sample(prompts, seed=_seed(0, "stage", 0), split="train")
    passes = {"s": 0.0, "n": 0}
    run_pass = WorkingCopy.run_pass

    def timed_pass(self, *a, **kw):
        t = time.perf_counter()
        try:
            return run_pass(self, *a, **kw)
        finally:
            passes["s"] += time.perf_counter() - t
            passes["n"] += 1

    WorkingCopy.run_pass = timed_pass  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        ro = trainer.rollout(items, seed=1)
        t1 = time.perf_counter()
        rec, work = trainer.update("solver", ro, stage=0, stage_start=ro, fresh=ro)
        t2 = time.perf_counter()
        trainer.commit([(rec, work)])
        t3 = time.perf_counter()
    finally:
        WorkingCopy.run_pass = run_pass  # type: ignore[method-assign]
        trainer.close()
    return ({"wall_s": t3 - t0, "rollout_s": t1 - t0, "update_s": t3 - t1, "tokens": ro.tokens,
             "phases": {"rollout_s": t1 - t0, "loss_passes_s": passes["s"], "passes": passes["n"],
                        "update_rest_s": t2 - t1 - passes["s"], "commit_s": t3 - t2},
             "d_tok": rec.d_tok_mean, "version": rec.version_name, "rollout_dtype": dtype,
             "train_dtype": trainer.tm.dtype},
            [i.prompt for i in items], [i.answer for i in items])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--betas", default="0.04", help="TRL KL coefficients to run (comma-separated)")
    ap.add_argument("--trl-dtypes", default="bfloat16,float32", help="TRL model dtypes to run")
    ap.add_argument("--ours-dtypes", default="bfloat16,float32", help="Our rollout dtypes to run (training: float32)")
    ap.add_argument("--trl-python", default=str(REPO / ".venv-trl" / "bin" / "python"))
    ap.add_argument("--threads", type=int, help="torch CPU threads on both sides")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--trl-worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.trl_worker:
        print(json.dumps(trl_worker(json.loads(Path(a.trl_worker).read_text()))))
        return
    os.environ.setdefault("TEAMTR_CACHE", str(REPO / ".cache" / "teamtr"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    result: dict = {"workload": {"prompts": a.prompts, "group": a.group, "new_tokens": a.new_tokens, "rank": a.rank},
                    "teamtr_adapters": [], "trl": []}
    with tempfile.TemporaryDirectory() as tmp:
        prompt_texts: list = []
        answers: list = []
        for i, dtype in enumerate(d for d in a.ours_dtypes.split(",") if d):
            mine, prompt_texts, answers = ours(a.prompts, a.group, a.new_tokens, a.rank, Path(tmp) / f"home{i}", dtype)
            result["teamtr_adapters"].append(mine)
        if Path(a.trl_python).is_file() and prompt_texts:
            from teamtr_adapters.runtime.base import resolve_base

            for dtype in [d for d in a.trl_dtypes.split(",") if d]:
                for beta in [float(b) for b in a.betas.split(",") if b]:
                    cfg = {"model": str(resolve_base("embedded", "float32").path), "dtype": dtype, "threads": a.threads,
                           "prompts": prompt_texts, "answers": answers, "group": a.group, "new_tokens": a.new_tokens,
                           "rank": a.rank, "beta": beta, "out": str(Path(tmp) / "trl")}
                    (Path(tmp) / "trl.json").write_text(json.dumps(cfg))
                    proc = subprocess.run([a.trl_python, __file__, "--trl-worker", str(Path(tmp) / "trl.json")],
                                          capture_output=True, text=True, cwd=REPO)
                    if proc.returncode != 0:
                        sys.exit(f"TRL worker failed:\n{proc.stderr[-3000:]}")
                    result["trl"].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    for m in result["teamtr_adapters"]:
        m["vs_trl"] = {f"{t['dtype']}/beta{t['beta']}": m["wall_s"] / t["wall_s"] for t in result["trl"]}
        # the two sides sample different completions (EOS ends some early): time per generated token as well
        m["vs_trl_per_token"] = {f"{t['dtype']}/beta{t['beta']}":
                                 (m["wall_s"] / m["tokens"]) / (t["wall_s"] / t["tokens"])
                                 for t in result["trl"] if t["tokens"] and m["tokens"]}
    if a.json:
        print(json.dumps(result, indent=2))
        return
    w = result["workload"]
    print(f"workload: {w['prompts']} prompts x {w['group']} samples, {w['new_tokens']} new tokens, LoRA r{w['rank']}, "
          f"load average {os.getloadavg()[0]:.1f}")
    for m in result["teamtr_adapters"]:
        ph = m["phases"]
        print(f"teamtr-adapters single update, {m['rollout_dtype']} rollouts / {m['train_dtype']} update: "
              f"{m['wall_s']:.1f} s = rollout {ph['rollout_s']:.1f} + loss passes {ph['loss_passes_s']:.1f} "
              f"({ph['passes']}) + rest of update {ph['update_rest_s']:.1f} + commit {ph['commit_s']:.1f} s; "
              f"{m['tokens']} tokens")
    for t in result["trl"]:
        ph = t["phases"]
        print(f"TRL GRPOTrainer one step, {t['dtype']}, beta {t['beta']}: {t['wall_s']:.1f} s = generate+score "
              f"{ph['generate_and_score_s']:.1f} + loss/backward/step {ph['loss_backward_step_s']:.1f} s; "
              f"{t['tokens']} tokens")
    for m in result["teamtr_adapters"]:
        for k, r in m["vs_trl"].items():
            per_tok = m["vs_trl_per_token"].get(k)
            print(f"ours ({m['rollout_dtype']} rollouts) / TRL ({k}) step time: {r:.2f}"
                  + (f", per generated token: {per_tok:.2f}" if per_tok else ""))
    if not result["trl"]:
        print("TRL not measured: run scripts/trl_env.sh to create .venv-trl")


if __name__ == "__main__":
    main()
