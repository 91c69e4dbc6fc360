"""Candidate solvers for the swap gate on the embedded model (used by `benchmarks/gate_calibration.py
--embedded`, `scripts/demo.sh` and `scripts/demo_swap.sh`). Run as a script:
`python -m benchmarks.gate_candidates OUT_DIR [KIND ...] [--steps N] [--prompts N]` writes OUT_DIR/KIND for the
`math-trio` team of $TEAMTR_HOME (KIND: equal, worse, scrambled; default: equal and worse).

- `equal`: a fresh LoRA init with another seed (A random, B = 0): it computes exactly what the base
  computes, like the incumbent v1 of a fresh team, but its bytes (and id) differ: an equally good candidate.
- `worse`: the incumbent's solver fine-tuned (a few Adam steps on its own contexts) to end every message with
  a wrong answer (`Answer: <right + 1>`) and nothing else: the critic and refiner read a wrong draft.
- `scrambled`: the incumbent's solver plus N(0, sigma^2) noise on every LoRA matrix (no model load, a second):
  it writes garbage, far outside one trust-region update, so the gate's D_tok check refuses it.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

KINDS = ("equal", "worse", "scrambled")


def make_equal(reg, team: str, out: Path, seed: int = 1234) -> Path:
    from teamtr_adapters.runtime.lora import init_adapters
    from teamtr_adapters.runtime.open import team_base

    return init_adapters(team_base(reg, team), reg.team_spec(team).lora, {"equal": seed}, out)["equal"]


def make_scrambled(reg, team: str, role: str, out: Path, *, sigma: float = 0.5, seed: int = 0) -> Path:
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    src = reg.version_path(reg.pins(team)[role])
    target = out / "scrambled"
    shutil.copytree(src, target)
    weights = target / "adapter_model.safetensors"
    gen = torch.Generator().manual_seed(seed)
    tensors = {k: v + sigma * torch.randn(v.shape, generator=gen).to(v.dtype) for k, v in load_file(weights).items()}
    save_file(tensors, weights)
    return target


def make_worse(reg, team: str, role: str, out: Path, *, prompts: int = 16, steps: int = 30, lr: float = 3e-3,
               seed: int = 7) -> Path:
    import torch
    from peft import LoraConfig, PeftModel

    from teamtr_adapters.runtime.open import open_team_model
    from teamtr_adapters.runtime.protocol import rollout
    from teamtr_adapters.runtime.rows import agent_rows
    from teamtr_adapters.tasks import get_task

    spec = reg.team_spec(team)
    tm, pins = open_team_model(reg, team, dtype="float32")
    items = get_task(spec.task).sample(prompts, seed, split="train")
    eps = rollout(tm, spec, items, group_size=1, seed=seed, pins=pins)
    rows = agent_rows(eps, role, [0.0] * len(eps))
    tok = tm.tokenizer
    data = []
    for prompt, e in zip(rows.prompts, rows.episode):
        try:
            wrong = str(int(float(items[eps[e].item_index].answer)) + 1)
        except ValueError:
            wrong = "0"
        data.append((prompt, tok(f"Answer: {wrong}", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]))
    src = reg.version_path(pins[role])
    from teamtr_adapters.runtime.base import load_base_model

    model, _ = load_base_model(tm.base, "float32", "cpu")
    del tm
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = PeftModel.from_pretrained(model, str(src), is_trainable=True)
    params = [p for n, p in pm.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    torch.manual_seed(seed)
    for step in range(steps):
        loss_sum = 0.0
        for prompt, target in data:
            ids = torch.tensor([prompt + target])
            labels = torch.tensor([[-100] * len(prompt) + target])
            loss = pm(input_ids=ids, labels=labels).loss / len(data)
            loss.backward()
            loss_sum += float(loss.detach())
        opt.step()
        opt.zero_grad(set_to_none=True)
        print(f"worse solver: step {step + 1}/{steps} loss {loss_sum:.3f}", file=sys.stderr)
    target = out / "worse"
    pm.save_pretrained(str(target), save_embedding_layers=False)  # no Hub lookup of the base's config
    (target / "README.md").unlink(missing_ok=True)
    LoraConfig.from_pretrained(str(target))
    return target


if __name__ == "__main__":
    import argparse

    from teamtr_adapters import Registry

    ap = argparse.ArgumentParser(prog="python -m benchmarks.gate_candidates", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("kinds", nargs="*", metavar="KIND", help=f"{', '.join(KINDS)} (default: equal worse)")
    ap.add_argument("--steps", type=int, default=30, help="worse: Adam steps (the wrong-answer loss is ~0.004 "
                    "after 10 steps at 16 prompts)")
    ap.add_argument("--prompts", type=int, default=16, help="worse: training prompts")
    args = ap.parse_args()
    kinds = dict.fromkeys(args.kinds or ["equal", "worse"])
    if unknown := sorted(set(kinds) - set(KINDS)):
        ap.error(f"unknown candidate kind(s) {unknown}; choose from {', '.join(KINDS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    reg = Registry()
    for kind in kinds:
        if kind == "equal":
            print(make_equal(reg, "math-trio", args.out))
        elif kind == "worse":
            print(make_worse(reg, "math-trio", "solver", args.out, prompts=args.prompts, steps=args.steps))
        else:
            print(make_scrambled(reg, "math-trio", "solver", args.out))
