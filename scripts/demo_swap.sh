#!/usr/bin/env bash
# `make demo-swap`, the gate's longer demo (`make demo` shows one refusal): gated swaps of the math-trio solver on
# the embedded model with candidates that exercise the score test: an equally good solver with other bytes (a
# fresh LoRA init: it computes what the incumbent v1 computes; accepted, or inconclusive at a small budget, never
# refused by the score test more than alpha of the time) and a worse one (the solver fine-tuned to end with a
# wrong answer; refused), then the history. Needs a math-trio team in $TEAMTR_HOME (`make demo-swap` makes a
# fresh one in .demo-swap-home). The gate stops at the first of GATE_LOOKS looks that decides; GATE_N prompts is
# a demo budget, the default is 360 (docs/gate.md).
set -euo pipefail
T=${TEAMTR:-teamtr-adapters}
PY=${PYTHON:-$(dirname "$(command -v "$T")")/python}
export TEAMTR_HOME=${TEAMTR_HOME:-$PWD/.demo-home}
N=${GATE_N:-48}
LOOKS=${GATE_LOOKS:-2}
step() { printf '\n\033[1m== %s\033[0m  [%d:%02d]\n' "$*" $((SECONDS / 60)) $((SECONDS % 60)); }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$(dirname "$0")/.."

step "two candidate solvers: an equally good one (fresh LoRA init, other bytes) and a worse one (trained toward wrong answers)"
"$PY" -m benchmarks.gate_candidates "$work" equal worse --steps 10

step "gated swap, equally good candidate: ACCEPTED (exit 0) or INCONCLUSIVE (exit 7), not refused ($N prompts, $LOOKS looks)"
code=0
$T swap solver "$work/equal" --team math-trio --gate --n "$N" --looks "$LOOKS" || code=$?
[ "$code" -eq 0 ] || [ "$code" -eq 7 ] || { echo "expected exit 0 or 7, got $code" >&2; exit 1; }
echo "exit code $code"

step "gated swap, worse candidate: expected REFUSED (exit 3)"
code=0
$T swap solver "$work/worse" --team math-trio --gate --n "$N" --looks "$LOOKS" || code=$?
[ "$code" -eq 3 ] || { echo "expected exit 3 (refused by the gate), got $code" >&2; exit 1; }
echo "exit code $code: refused, manifest unchanged"

step "history: who held the solver when (the refusal is recorded with its report)"
$T history --team math-trio
