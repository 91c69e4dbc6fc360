"""One `single`-method update on a fixed workload against TRL's GRPOTrainer doing one step on the same one.

Workload: the embedded SmolLM2-135M-Instruct, 8 prompts x 4 samples, 64 new tokens, LoRA r16 (alpha 32)
on q/k/v/o, the same arithmetic prompts and exact-number reward. Timed: rollout + one optimiser step
(+ for teamtr-adapters the trust-region measurement pass and the registry commit); model loading and
trainer construction are not timed. TRL runs in its own environment (scripts/trl_env.sh -> .venv-trl);
when that is missing only our side is measured.

    python benchmarks/update_step.py [--betas 0,0.04] [--trl-python .venv-trl/bin/python] [--json]
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
    """Runs inside .venv-trl: one GRPOTrainer step on the workload; returns its timing."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(cfg["model"])
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(cfg["model"], dtype=getattr(torch, cfg["dtype"]))
    answers = {p: a for p, a in zip(cfg["prompts"], cfg["answers"])}
    ds = Dataset.from_list([{"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": p}],
                             "question": p} for p in cfg["prompts"]])

    def reward(completions, question, **_):
        return [_reward(c[0]["content"] if isinstance(c, list) else c, answers[q]) for c, q in zip(completions, question)]

    n = len(cfg["prompts"]) * cfg["group"]
    args = GRPOConfig(output_dir=cfg["out"], per_device_train_batch_size=n, num_generations=cfg["group"],
                      max_completion_length=cfg["new_tokens"], beta=cfg["beta"], max_steps=1, use_cpu=True,
                      temperature=0.8, learning_rate=1e-4, logging_steps=1, save_strategy="no", report_to="none",
                      seed=0)
    lora = LoraConfig(r=cfg["rank"], lora_alpha=2 * cfg["rank"], target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=tok,
                          peft_config=lora)
    t0 = time.perf_counter()
    trainer.train()
    return {"wall_s": time.perf_counter() - t0, "beta": cfg["beta"],
            "gradient_checkpointing": args.gradient_checkpointing}


def ours(prompts: int, group: int, new_tokens: int, rank: int, home: Path) -> tuple[dict, list, list]:
    """One `single` update through the library: rollout, trust-region step, measurement, commit."""
    from teamtr_adapters.registry import Registry
    from teamtr_adapters.spec import parse_spec
    from teamtr_adapters.train.stage import TrainConfig, Trainer, _seed

    spec = parse_spec(f"""
name = "bench"
[task]
name = "arithmetic"
params = {{ difficulty = 1 }}
[lora]
rank = {rank}
alpha = {2 * rank}
target_modules = ["q_proj", "k_proj", "v_proj", "o_proj"]
[trust_region]
group_size = {group}
prompts_per_update = {prompts}
[[roles]]
name = "solver"
system_prompt = "{SYSTEM}"
max_new_tokens = {new_tokens}
""")
    reg = Registry(home)
    reg.init_team(spec)
    trainer = Trainer(reg, "bench", TrainConfig(method="single", steps=1), single_role="solver")
    items = trainer.task.sample(prompts, seed=_seed(0, "stage", 0), split="train")
    t0 = time.perf_counter()
    ro = trainer.rollout(items, seed=1)
    t1 = time.perf_counter()
    rec, work = trainer.update("solver", ro, stage=0, stage_start=ro, fresh=ro)
    trainer.commit([(rec, work)])
    t2 = time.perf_counter()
    return ({"wall_s": t2 - t0, "rollout_s": t1 - t0, "update_s": t2 - t1, "tokens": ro.tokens,
             "d_tok": rec.d_tok_mean, "version": rec.version_name, "dtype": trainer.tm.dtype},
            [i.prompt for i in items], [i.answer for i in items])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--betas", default="0,0.04", help="TRL KL coefficients to run (comma-separated)")
    ap.add_argument("--trl-python", default=str(REPO / ".venv-trl" / "bin" / "python"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--trl-worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.trl_worker:
        print(json.dumps(trl_worker(json.loads(Path(a.trl_worker).read_text()))))
        return
    os.environ.setdefault("TEAMTR_CACHE", str(REPO / ".cache" / "teamtr"))
    with tempfile.TemporaryDirectory() as tmp:
        mine, prompt_texts, answers = ours(a.prompts, a.group, a.new_tokens, a.rank, Path(tmp) / "home")
        result = {"workload": {"prompts": a.prompts, "group": a.group, "new_tokens": a.new_tokens, "rank": a.rank},
                  "teamtr_adapters": mine, "trl": []}
        if Path(a.trl_python).is_file():
            from teamtr_adapters.runtime.base import resolve_base

            for beta in [float(b) for b in a.betas.split(",") if b]:
                cfg = {"model": str(resolve_base("embedded", "float32").path), "dtype": "float32",  # TRL default
                       "prompts": prompt_texts, "answers": answers, "group": a.group, "new_tokens": a.new_tokens,
                       "rank": a.rank, "beta": beta, "out": str(Path(tmp) / "trl")}
                (Path(tmp) / "trl.json").write_text(json.dumps(cfg))
                proc = subprocess.run([a.trl_python, __file__, "--trl-worker", str(Path(tmp) / "trl.json")],
                                      capture_output=True, text=True, cwd=REPO)
                if proc.returncode != 0:
                    sys.exit(f"TRL worker failed:\n{proc.stderr[-3000:]}")
                trl = json.loads(proc.stdout.strip().splitlines()[-1])
                trl["ratio_vs_ours"] = trl["wall_s"] / mine["wall_s"]
                result["trl"].append(trl)
    if a.json:
        print(json.dumps(result, indent=2))
        return
    w = result["workload"]
    print(f"workload: {w['prompts']} prompts x {w['group']} samples, {w['new_tokens']} new tokens, LoRA r{w['rank']}")
    print(f"teamtr-adapters single update: {mine['wall_s']:.1f} s (rollout {mine['rollout_s']:.1f} s, "
          f"update+measure+commit {mine['update_s']:.1f} s, {mine['tokens']} tokens, {mine['dtype']})")
    for t in result["trl"]:
        print(f"TRL GRPOTrainer one step, beta {t['beta']}: {t['wall_s']:.1f} s -> ours is {t['ratio_vs_ours']:.2f}x faster")
    if not result["trl"]:
        print("TRL not measured: run scripts/trl_env.sh to create .venv-trl")


if __name__ == "__main__":
    main()
