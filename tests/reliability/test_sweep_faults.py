"""Sweep-level faults on the real stack: a NaN trial fails alone; a killed driver resumes."""

from __future__ import annotations

import json
import os
import re
import signal

import yaml

from tests.jobs.test_sweep_job import mlflow_runs
from tests.reliability.sweeps import Job, tiny_space

OBJECTIVE = {"algo.objective": {"type": "categorical", "choices": ["grpo", "maxrl"]}}


def test_a_trial_whose_loss_turns_nan_fails_alone(tmp_path, cache_dir):
    space = tiny_space(
        tmp_path / "nan.yaml",
        params={**OBJECTIVE, "faults.nan_loss_at_step": {"type": "categorical", "choices": [0, 2]}},
        initial_points=[{"algo.objective": "grpo", "faults.nan_loss_at_step": 0}, {"algo.objective": "grpo", "faults.nan_loss_at_step": 2}],
        trials=2, max_concurrent=2,
    )
    job = Job(["--space", str(space), "--name", "nan", "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(cache_dir)], tmp_path)
    assert job.finish(timeout=900) == 0, job.output[-4000:]  # one trial survived: the sweep succeeded
    flat = " ".join(job.output.split())  # rich wraps long lines
    assert re.search(r"trial \S+ failed: \S*NonFiniteLossError: policy loss is nan at step 2", flat), job.output[-3000:]
    assert "1 of 2 trials failed" in flat

    client, parents, children = mlflow_runs(tmp_path / "mlflow.db")
    by_status = {c.info.status: c for c in children}
    assert sorted(by_status) == ["FAILED", "FINISHED"]
    failed = by_status["FAILED"]
    assert failed.data.params["faults.nan_loss_at_step"] == "2"
    assert "NonFiniteLossError" in failed.data.tags["paretorl.error"]
    # the failed trial's step 1 was logged; its NaN step 2 never was
    assert [m.step for m in client.get_metric_history(failed.info.run_id, "train/reward_mean")] == [1]
    assert [m.step for m in client.get_metric_history(by_status["FINISHED"].info.run_id, "train/reward_mean")] == [1, 2, 3]
    assert parents[0].info.status == "FINISHED"


def test_a_killed_driver_resumes_without_rerunning_or_duplicating(tmp_path, cache_dir):
    space = tiny_space(
        tmp_path / "resume.yaml",
        params={**OBJECTIVE, "train.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}},
        initial_points=[{"algo.objective": "grpo", "train.lr": 1e-3}, {"algo.objective": "maxrl", "train.lr": 1e-3}],
        trials=3, max_concurrent=1,
    )
    # MO-ASHA that records every trial at its rung (step 2) and stops none (eta ~1: eta * rank < n for
    # n < 101), so the test also sees the scheduler's state carried over the restart
    tree = yaml.safe_load(space.read_text())
    space.write_text(yaml.safe_dump({**tree, "scheduler": {"type": "moasha", "grace_steps": 2, "reduction_factor": 1.01}}))
    args = ["--space", str(space), "--name", "resume", "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(cache_dir)]
    job = Job(args, tmp_path)
    first = job.wait_for(lambda line: line.startswith("[trial]") and line.split()[2] == "started", 600).split()[1]
    job.wait_for(lambda line: line.startswith(f"[trial] {first} finished"), 600)
    second = job.wait_for(lambda line: line.startswith("[trial]") and line.split()[2] == "started", 600).split()[1]
    job.wait_for(lambda line: line.startswith(f"[eval] trial {second} step 2"), 600)
    os.killpg(job.proc.pid, signal.SIGKILL)  # the job and its local Ray die together, as when an allocation ends
    job.proc.wait(timeout=60)

    client, _, children = mlflow_runs(tmp_path / "mlflow.db")
    ended = {c.data.tags["paretorl.trial_id"]: c.info.end_time for c in children}
    assert set(ended) == {first, second} and ended[first] is not None

    resumed = Job(["--resume", str(tmp_path / "runs" / "resume")], tmp_path)
    assert resumed.finish(timeout=900) == 0, resumed.output[-4000:]
    assert f"[trial] {second} resumed" in resumed.output
    assert f"[trial] {first} " not in resumed.output  # the finished trial was not run again
    assert "3 trials" in resumed.output

    client, parents, children = mlflow_runs(tmp_path / "mlflow.db")
    assert len(parents) == 1 and len(children) == 3  # no duplicate runs
    assert parents[0].info.status == "FINISHED"
    for child in children:
        assert child.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train/reward_mean")]
        assert steps == [1, 2, 3], (child.data.tags["paretorl.trial_id"], steps)
    assert {c.data.tags["paretorl.trial_id"]: c.info.end_time for c in children}[first] == ended[first]
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"pareto_front.csv", "cutoff_front.csv"} <= artifacts  # the resumed sweep ends with its test report
    assert "Pareto front on the test split" in resumed.output
    front = (tmp_path / "runs" / "resume" / "trials_state.json").read_text()
    assert all(t in front for t in (first, second))
    # the second trial was ranked at its rung before the kill; its re-reported step 2 is not ranked again
    assert f"[moasha] trial {second} at rung 2" in job.output and f"[moasha] trial {second} at rung 2" not in resumed.output
    rung = json.loads((tmp_path / "runs" / "resume" / "moasha_state.json").read_text())["recorded"]["2"]
    assert len(rung) == 3 and {first, second} <= set(rung)
