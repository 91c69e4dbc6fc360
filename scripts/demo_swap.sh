#!/usr/bin/env bash
# The swap-gate part of `make demo`: two gated swaps of the math-trio solver on the embedded model, one
# accepted (the incumbent's tensors re-saved: a new version id with the same function) and one refused (the
# incumbent plus heavy noise), with their reports, then the history. Needs the team made by scripts/demo.sh
# (`team init math-trio`). A slightly perturbed copy is no sure accept on this model: in bf16 any weight
# change moves the sampled tokens (see docs/gate.md), so 8 prompts can lose one by chance.
set -euo pipefail
T=${TEAMTR:-teamtr-adapters}
PY=${PYTHON:-$(dirname "$(command -v "$T")")/python}
export TEAMTR_HOME=${TEAMTR_HOME:-$PWD/.demo-home}
N=${GATE_N:-8}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step "two candidate solvers made from the incumbent: re-saved as they are, and scrambled"
"$PY" - "$work" <<'PYEOF'
import sys
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file
from teamtr_adapters import Registry
reg = Registry()
incumbent = reg.version_path(reg.pins("math-trio")["solver"])
state = load_file(str(incumbent / "adapter_model.safetensors"))
gen = torch.Generator().manual_seed(0)
candidates = {
    # the same tensors in a new file (other metadata): a new version id, the same function
    "resaved": (state, {"format": "pt", "note": "re-saved copy"}),
    # every LoRA matrix plus N(0, 0.5^2) noise: far outside the trust region
    "scrambled": ({k: (v.float() + 0.5 * torch.randn(v.shape, generator=gen)).to(v.dtype) for k, v in state.items()},
                  {"format": "pt"}),
}
for name, (tensors, metadata) in candidates.items():
    out = Path(sys.argv[1]) / name
    out.mkdir()
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata=metadata)
    (out / "adapter_config.json").write_bytes((incumbent / "adapter_config.json").read_bytes())
    print(out)
PYEOF

step "gated swap, expected ACCEPTED: solver <- re-saved copy ($N held-out prompts, paired)"
$T swap solver "$work/resaved" --team math-trio --gate --n "$N"

step "gated swap, expected REFUSED (exit 3): solver <- scrambled copy"
code=0
$T swap solver "$work/scrambled" --team math-trio --gate --n "$N" || code=$?
[ "$code" -eq 3 ] || { echo "expected exit 3 (refused by the gate), got $code" >&2; exit 1; }
echo "exit code $code: refused, manifest unchanged"

step "history: who held the solver when (the refusal is recorded with its report)"
$T history --team math-trio
