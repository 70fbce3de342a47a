"""jobs/sweep.py as a new user runs it: their own task file (a task the project does not ship) through
the same path as the built-in ones, with a space that sweeps the LoRA rank over {0, 8} (a full
fine-tune and a LoRA trial in one sweep)."""

from __future__ import annotations

import csv
import textwrap
import yaml

from tests.conftest import ROOT
from tests.conftest import run_sweep_job as run_job
from tests.jobs.test_sweep_job import USER_TASK, assert_sweep_logged, mlflow_runs


def test_lora_and_full_trials_in_one_sweep_of_a_users_task(tmp_path, cache_dir):
    task_file = tmp_path / "my_tasks" / "parity.py"
    task_file.parent.mkdir()
    task_file.write_text(textwrap.dedent(USER_TASK))
    space = yaml.safe_load((ROOT / "searchspaces" / "lora.yaml").read_text())
    space["params"]["model.lora.rank"] = {"type": "categorical", "choices": [0, 8]}
    space["initial_points"] = [
        {**space["initial_points"][0], "model.lora.rank": 8, "train.lr": 3e-3},
        {**space["initial_points"][1], "model.lora.rank": 0, "train.lr": 3e-4},
    ]
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    proc = run_job(
        ["--smoke-test", "--space", "space.yaml", "--task", "my_tasks/parity.py:Parity", "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(cache_dir)],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_sweep_logged(tmp_path / "mlflow.db", n_trials=2)
    _, _, children = mlflow_runs(tmp_path / "mlflow.db")
    assert sorted(c.data.params["model.lora.rank"] for c in children) == ["0", "8"]
    import pyarrow.parquet as pq

    (table,) = [pq.read_table(p) for p in (tmp_path / "runs").glob("*/data/train.parquet")]
    assert table.column("prompt")[0].as_py().startswith("parity ")  # the user's task wrote the splits

    # Both kinds of checkpoint: PEFT adapter folders for the LoRA trial, full models for the other.
    checkpoints = [p.parent for p in (tmp_path / "runs").rglob("trial_state.json")]
    adapters = [c for c in checkpoints if (c / "adapter_config.json").exists()]
    full = [c for c in checkpoints if (c / "model.safetensors").exists()]
    assert adapters and full and len(adapters) + len(full) == len(checkpoints)
    assert not any((c / "model.safetensors").exists() for c in adapters)
    # Each adapter's sync was small: the LoRA trial logged its bytes per step, a fraction of the full one's.
    synced = {c.data.params["model.lora.rank"]: c.data.metrics["rollout/sync_bytes"] for c in children}
    assert 0 < synced["8"] < synced["0"] / 4

    # The test report samples a LoRA checkpoint as its base with the adapter merged: exactly as the
    # merged model folder (jobs/merge_adapter.py) samples.
    from paretorl.evaluate.on_test import local_rollout
    from paretorl.models.build import merge_adapter
    from paretorl.rollout.types import SamplingParams

    params = SamplingParams(n=4, max_new_tokens=16, temperature=1.0, seed=7)
    prompts = [[5, 6, 7, 8], [9, 10, 11]]
    adapter_out = local_rollout(adapters[-1], "float32")[0].generate(prompts, params, 0)
    merged_out = local_rollout(merge_adapter(adapters[-1], tmp_path / "merged"), "float32")[0].generate(prompts, params, 0)
    assert (adapter_out.tokens == merged_out.tokens).all()

    # The test report sampled every point of the eval front, adapter folders as well as full models.
    import io

    import mlflow.artifacts

    client, parents, _ = mlflow_runs(tmp_path / "mlflow.db")
    rows = list(csv.DictReader(io.StringIO(mlflow.artifacts.load_text(f"{parents[0].info.artifact_uri}/pareto_front.csv"))))
    tested = [r for r in rows if r["test_pass_at_k"] and r["trial"] != "base"]
    tested_dirs = {p.parent for p in (tmp_path / "runs").rglob("test_eval-*.json")}
    assert len(tested_dirs) == len(tested) and tested_dirs <= set(checkpoints)
