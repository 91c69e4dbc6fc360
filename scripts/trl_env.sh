#!/usr/bin/env bash
# A side environment with TRL for benchmarks/update_step.py (TRL is a benchmark comparison, not a
# dependency of teamtr-adapters). Creates .venv-trl next to the repo's .venv; idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${TRL_VENV:-.venv-trl}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# Pin torch first: on these machines pip then takes the local CPU build instead of CUDA wheels.
"$VENV/bin/pip" install -q --disable-pip-version-check "torch==2.13.0"
"$VENV/bin/pip" install -q --disable-pip-version-check "torch==2.13.0" "trl==1.16.0" "peft==0.21.2" \
  "transformers==5.24.0" "accelerate==1.15.0" "safetensors==0.8.0"
"$VENV/bin/python" -c "import trl, torch; print('trl', trl.__version__, 'torch', torch.__version__)"
