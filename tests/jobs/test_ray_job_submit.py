"""`ray job submit --working-dir . -- python jobs/sweep.py --smoke-test` against a real cluster.

The test starts its own head node (`ray start --head --block` on free ports, in its own temp
dir) and stops exactly that node by ending the process it started: nothing broader.
Ray >= 2.59 turns token authentication on for `ray start` clusters; the test sets
RAY_AUTH_MODE explicitly on both the cluster and the submitting client.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, env_with_venv
from tests.jobs.test_sweep_job import assert_sweep_logged


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    import sys

    ray_bin = str(Path(sys.executable).parent / "ray")
    gcs, dashboard = free_port(), free_port()
    env = env_with_venv()
    env["RAY_AUTH_MODE"] = "disabled"  # a private single-machine test cluster; see docs/clusters.md for token auth
    temp_dir = Path("/tmp") / f"ray-test-{os.getpid()}-{gcs}"  # short: Ray's socket paths have a length limit
    proc = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 180
    while True:  # wait until the job API answers (bounded)
        probe = subprocess.run([ray_bin, "job", "list", "--address", address], env=env, capture_output=True, text=True)
        if probe.returncode == 0:
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"ray head did not come up: {probe.stderr[-2000:]}")
        time.sleep(2)
    yield ray_bin, address, env
    os.killpg(proc.pid, signal.SIGTERM)  # --block stops the node's processes when it is terminated
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def test_ray_job_submit_smoke_sweep(ray_head, tmp_path, cache_dir):
    ray_bin, address, env = ray_head
    db = tmp_path / "mlflow.db"
    # The job API answers before the head's dashboard agent has registered; until it has, a
    # submission is refused ("No available agent") and nothing starts, so retrying is safe.
    deadline = time.monotonic() + 120
    while True:
        proc = subprocess.run(
            [ray_bin, "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
             "python", "jobs/sweep.py", "--smoke-test", "--trials", "1", "--mlflow-uri", f"sqlite:///{db}",
             "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(cache_dir)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
        )
        if "No available agent to submit job" not in proc.stderr or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "succeeded" in proc.stdout.lower()  # "Job 'raysubmit_...' succeeded"
    assert_sweep_logged(db, n_trials=1)  # the 2-trial smoke sweep is test_sweep_job.py's
