#!/usr/bin/env bash
# MONAI Label test (tests/label) in its own virtual environment: monailabel pins numpy<2, which the main
# environment (numpy 2.x) cannot take. Called from .ci/run; also runnable alone.
#
# Usage: .ci/label_tests.sh [VENV_DIR]      (default: $LABEL_VENV or .venv-label; reused when it exists)
# Exit code: pytest's (0 = passed).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${1:-${LABEL_VENV:-.venv-label}}"
PYTHON="${PYTHON:-python}"
start=$(date +%s)

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

# Keep torch at the main environment's CPU build: without the constraint, monailabel's torchvision/sam2
# requirements pull the newest torch (a multi-GB CUDA build).
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "torch==2.13.0" > "$constraints"

"$PY" -m pip install --quiet "torch==2.13.0"
"$PY" -m pip install --quiet -c "$constraints" monailabel pytest
"$PY" -m pip install --quiet -c "$constraints" .
"$PY" -c "import monailabel, numpy, torch, monai; print('monailabel', monailabel.__version__, '| numpy', numpy.__version__, '| torch', torch.__version__, '| monai', monai.__version__)"
echo "label environment ready in $(( $(date +%s) - start )) s"

rc=0
"$PY" -m pytest -q -p no:cacheprovider -m label tests/label || rc=$?
echo "label tests finished in $(( $(date +%s) - start )) s (exit code $rc)"
exit "$rc"
