#!/usr/bin/env bash
# The `make demo` job: a fresh demo registry, the embedded math-trio team, and what the tool does with it.
set -euo pipefail
T=${TEAMTR:-teamtr-adapters}
export TEAMTR_HOME=${TEAMTR_HOME:-$PWD/.demo-home}
[ "$(basename "$TEAMTR_HOME")" = ".demo-home" ] && rm -rf "$TEAMTR_HOME"   # only ever the demo's own registry
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "create the math-trio team on the embedded SmolLM2-135M-Instruct (fresh LoRA v1 per agent)"
$T team init math-trio
step "teams and versions in the registry ($TEAMTR_HOME)"
$T team list
$T adapter list
$T registry verify
$T history --team math-trio
