#!/usr/bin/env bash
# The `make demo` job on the embedded SmolLM2-135M-Instruct: a fresh demo registry, the math-trio team, one
# episode, one short TeamTR stage with held-out accuracy before and after (a paired 95% interval), the run's
# curves, a gated swap that the gate refuses (a scrambled solver) and the history. The gate's longer part (an
# equally good candidate and one trained toward wrong answers) is `make demo-swap` (scripts/demo_swap.sh).
# 5 min 54 s on 2 idle CPU cores of an AMD EPYC (AVX2, no native bf16; 2026-12-02) with the environment set up;
# `make setup` on a fresh machine adds about 2.5 min (2 min 26 s there).
set -euo pipefail
T=${TEAMTR:-teamtr-adapters}
PY=${PYTHON:-$(dirname "$(command -v "$T")")/python}
export TEAMTR_HOME=${TEAMTR_HOME:-$PWD/.demo-home}
[ "$(basename "$TEAMTR_HOME")" = ".demo-home" ] && rm -rf "$TEAMTR_HOME"   # only ever the demo's own registry
step() { printf '\n\033[1m== %s\033[0m  [%d:%02d]\n' "$*" $((SECONDS / 60)) $((SECONDS % 60)); }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step "create the math-trio team on the embedded SmolLM2-135M-Instruct (fresh LoRA v1 per agent)"
# The template with the learning benchmark's sampling: temperature 0.3 and <= 24 tokens per message. At the
# template's 0.8 the untrained team rarely answers and most groups of 4 samples hold no correct one, so there is
# little to learn from (docs/training.md, "Does training make the team better?"). The stage below also takes the
# benchmark's lr 2e-3 and delta 0.05, at a demo's budget: 1 optimiser step per update (the benchmark: 4) and
# about 1000 training tokens (the benchmark: 18000).
sed -e 's/^temperature = .*/temperature = 0.3/' -e 's/^max_new_tokens = .*/max_new_tokens = 24/' \
  "$(dirname "$0")/../teamtr_adapters/teams/math-trio.toml" > "$work/math-trio.toml"
$T team init "$work/math-trio.toml"
$T team list

step "one episode, turn by turn"
$T run --team math-trio "What is 7 + 5?" --answer 12

step "one TeamTR stage (each agent updated once, the team resampled after every update; trust region in float32)"
# --eval: the same 24 held-out prompts, same sampling seeds, before and after: a paired change with its 95% interval
# (at a demo's budget the interval is wide; benchmarks/learning.py measures learning on 128 prompts).
# `teamtr-adapters eval --team math-trio --n 24` scores the team and the base model answering alone on the same
# held-out prompts.
$T train --team math-trio --stages 1 -P 3 -G 4 --steps 1 --lr 2e-3 --delta 0.05 --probe-prompts 2 --eval 24
run=$(ls -t "$TEAMTR_HOME/runs" | head -n 1)
$T report "$run"

step "gated swap of a scrambled solver (the trained one plus N(0, 0.5^2) noise): expected REFUSED (exit 3)"
(cd "$(dirname "$0")/.." && "$PY" -m benchmarks.gate_candidates "$work" scrambled)
code=0
$T swap solver "$work/scrambled" --team math-trio --gate --n 4 --looks 1 || code=$?
[ "$code" -eq 3 ] || { echo "expected exit 3 (refused by the gate), got $code" >&2; exit 1; }
echo "exit code $code: refused, manifest unchanged"

step "history: who held each role when (the refusal is recorded with its report)"
$T history --team math-trio

step "the registry after the demo ($TEAMTR_HOME)"
$T team show math-trio
$T registry verify
