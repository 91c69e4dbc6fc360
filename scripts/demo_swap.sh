#!/usr/bin/env bash
# The swap-gate part of `make demo`: two gated swaps of the math-trio solver on the embedded model, one
# accepted (a slightly perturbed copy of the incumbent) and one refused (a heavily perturbed copy), with
# their reports, then the history. Needs the team made by scripts/demo.sh (`team init math-trio`).
set -euo pipefail
T=${TEAMTR:-teamtr-adapters}
PY=${PYTHON:-$(dirname "$(command -v "$T")")/python}
export TEAMTR_HOME=${TEAMTR_HOME:-$PWD/.demo-home}
N=${GATE_N:-8}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step "two candidate solvers: the incumbent's weights plus N(0, s^2) noise on every LoRA matrix"
"$PY" - "$work" <<'PYEOF'
import sys
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file
from teamtr_adapters import Registry
reg = Registry()
incumbent = reg.version_path(reg.pins("math-trio")["solver"])
for name, scale in (("nudged", 1e-4), ("scrambled", 0.5)):
    out = Path(sys.argv[1]) / name
    out.mkdir()
    gen = torch.Generator().manual_seed(0)
    state = load_file(str(incumbent / "adapter_model.safetensors"))
    save_file({k: (v.float() + scale * torch.randn(v.shape, generator=gen)).to(v.dtype) for k, v in state.items()},
              str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_bytes((incumbent / "adapter_config.json").read_bytes())
    print(f"{out}: incumbent + N(0, {scale}^2)")
PYEOF

step "gated swap, expected ACCEPTED: solver <- nudged copy ($N held-out prompts, paired)"
$T swap solver "$work/nudged" --team math-trio --gate --n "$N"

step "gated swap, expected REFUSED (exit 3): solver <- scrambled copy"
code=0
$T swap solver "$work/scrambled" --team math-trio --gate --n "$N" || code=$?
[ "$code" -eq 3 ] || { echo "expected exit 3 (refused by the gate), got $code" >&2; exit 1; }
echo "exit code $code: refused, manifest unchanged"

step "history: who held the solver when (the refusal is recorded with its report)"
$T history --team math-trio
