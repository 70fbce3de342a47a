"""Trial checkpoints restore the optimizer and RNG state exactly (real DeepSpeed, CPU)."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.conftest import ROOT, env_with_venv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_resumed_engine_takes_the_same_step_as_the_uninterrupted_one(tmp_path):
    env = env_with_venv()
    from paretorl.learner.policy import extensions_dir

    env["TORCH_EXTENSIONS_DIR"] = extensions_dir()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "learner" / "ds_resume_check.py"), str(free_port())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (line,) = [l for l in proc.stdout.splitlines() if l.startswith("RESUME_MAX_DIFF")]
    assert float(line.split()[1]) == 0.0
