#!/usr/bin/env bash
# Create the separate benchmark environment for bench_lightly.py: lightly 1.6 + torchvision, MONAI and this package,
# all on one torch, so DCL-CsTP and lightly's methods run side by side in one process.
#
#   bash benchmarks/setup_lightly_env.sh [VENV_DIR]      (default: benchmarks/.venv-lightly, git-ignored)
#
# torch/torchvision pair: torchvision from PyPI does not import beside the torch 2.13.0 CPU build of the main
# environment, so this environment takes torch 2.14.1 + torchvision 0.29.1 (on aarch64: torch 2.9.1 + torchvision
# 0.24.1). Override with TORCH_SPEC="torch==X torchvision==Y".
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
venv="${1:-$here/.venv-lightly}"
if [[ -z "${TORCH_SPEC:-}" ]]; then
  if [[ "$(uname -m)" == "aarch64" ]]; then TORCH_SPEC="torch==2.9.1 torchvision==0.24.1"; else TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"; fi
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --upgrade pip
# shellcheck disable=SC2086
"$venv/bin/pip" install $TORCH_SPEC
"$venv/bin/pip" install "lightly==1.6.0" "monai==1.6.1" "pytorch-ignite==0.5.5" einops matplotlib
"$venv/bin/pip" install -e "$repo" --no-deps
"$venv/bin/python" -c "import lightly, torch, torchvision, monai, monai_dclcstp.networks; print('lightly', lightly.__version__, 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'monai', monai.__version__)"
