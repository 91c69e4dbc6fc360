#!/usr/bin/env bash
# The `make demo` job on the embedded SmolLM2-135M-Instruct: a fresh demo registry, the math-trio team,
# a held-out evaluation, one short TeamTR stage with accuracy before and after, the run's curves, two gated
# swaps (an equally good candidate: accepted or inconclusive; a wrong-answer one: refused) and the history.
# 8 min 19 s on the 2 idle CPU cores of the development machine (2026-11-30).
set -euo pipefail
T=${TEAMTR:-teamtr-adapters}
export TEAMTR_HOME=${TEAMTR_HOME:-$PWD/.demo-home}
[ "$(basename "$TEAMTR_HOME")" = ".demo-home" ] && rm -rf "$TEAMTR_HOME"   # only ever the demo's own registry
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "create the math-trio team on the embedded SmolLM2-135M-Instruct (fresh LoRA v1 per agent)"
$T team init math-trio
$T team list

step "one episode, turn by turn"
$T run --team math-trio "What is 7 + 5?" --answer 12

step "held-out accuracy of the team, and of the base model answering alone on the same prompts"
$T eval --team math-trio --n 16

step "one TeamTR stage (each agent updated once, the team resampled after every update; trust region in float32)"
# --eval: the same 32 held-out prompts, same sampling seeds, before and after: a paired change with its 95% interval
$T train --team math-trio --stages 1 -P 4 -G 4 --max-new-tokens 32 --steps 2 --lr 1e-3 --eval 32
run=$(ls -t "$TEAMTR_HOME/runs" | head -n 1)
$T report "$run"

step "plug-and-play: gated swaps"
TEAMTR=$T bash "$(dirname "$0")/demo_swap.sh"

step "the registry after the demo ($TEAMTR_HOME)"
$T team show math-trio
$T registry verify
