"""jobs/sweep.py with MO-ASHA: a dominated trial is stopped at its rung, tagged, and its evaluation kept."""

from __future__ import annotations

import json

import yaml

from tests.jobs.test_sweep_job import mlflow_runs
from tests.reliability.sweeps import Job, tiny_space


def test_a_dominated_trial_is_stopped_at_its_rung_and_tagged(tmp_path, cache_dir):
    # Two normal trials start together; the third trains from an untrained base (sft.steps 0: random
    # tokens, rarely an EOS within the limit, so pass@4 near 0 at ~48 tokens) and starts only once a
    # slot is free, so it reaches the rung at step 2 after both others and is dominated by them. With
    # eta 1.5 a trial continues iff 1.5 * rank < n (0-based): the second normal trial does whatever
    # its rank at rung 2 (1.5 < 2), the third stops at rank 2 of 3 (3 >= 3). Evaluations every 2
    # steps, so rung 3 is skipped; the third trial's base is not the sweep's reference, so its learner
    # evaluates that base itself before step 1 (Tune needs the objectives in every report).
    path = tiny_space(
        tmp_path / "moasha.yaml",
        params={"algo.objective": {"type": "categorical", "choices": ["grpo", "maxrl"]}, "sft.steps": {"type": "categorical", "choices": [20, 0]}},
        initial_points=[
            {"algo.objective": "grpo", "sft.steps": 20},
            {"algo.objective": "maxrl", "sft.steps": 20},
            {"algo.objective": "grpo", "sft.steps": 0},
        ],
        trials=3, max_concurrent=2, steps=4,
    )
    space = yaml.safe_load(path.read_text())
    space["scheduler"] = {"type": "moasha", "grace_steps": 2, "reduction_factor": 1.5}
    assert space["trial"]["eval"]["every"] == 2
    path.write_text(yaml.safe_dump(space))

    job = Job(["--space", str(path), "--name", "moasha", "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(cache_dir)], tmp_path)
    assert job.finish(timeout=600) == 0, job.output[-4000:]
    client, parents, children = mlflow_runs(tmp_path / "mlflow.db")
    by_sft = {}
    for child in children:
        by_sft.setdefault(child.data.params["sft.steps"], []).append(child)
    (stopped,) = by_sft["0"]
    trial_id = stopped.data.tags["paretorl.trial_id"]

    assert f"[moasha] trial {trial_id} at rung 2 (step 2): rank 3 of 3, stopped" in job.output
    assert f"[trial] {trial_id} finished (stopped early: rung-2)" in job.output
    assert f"[trial] {trial_id}: rollout app paretorl-rollout-{trial_id} released" in job.output  # its replicas' CPUs come back
    assert stopped.info.status == "FINISHED" and stopped.data.tags["paretorl.stopped_early"] == "rung-2"
    assert [m.step for m in client.get_metric_history(stopped.info.run_id, "train/reward_mean")] == [1, 2]
    assert [m.step for m in client.get_metric_history(stopped.info.run_id, "eval/pass_at_4")] == [2]
    for child in by_sft["20"]:
        assert child.info.status == "FINISHED" and "paretorl.stopped_early" not in child.data.tags
        assert [m.step for m in client.get_metric_history(child.info.run_id, "eval/pass_at_4")] == [2, 4]

    sweep_dir = tmp_path / "runs" / "moasha"
    points = json.loads((sweep_dir / "trials_state.json").read_text())["points"]
    assert {(p["trial"], p["step"]) for p in points if p["trial"] == trial_id} == {(trial_id, 2)}  # its evaluation stays a point
    state = json.loads((sweep_dir / "moasha_state.json").read_text())
    assert state["stopped"] == {trial_id: 2} and len(state["recorded"]["2"]) == 3 and not state["recorded"].get("3")

    parent = parents[0]
    def history(key):
        return [m.value for m in sorted(client.get_metric_history(parent.info.run_id, key), key=lambda m: (m.timestamp, m.step))]

    hv, cpu = history("sweep/hypervolume"), history("sweep/cpu_seconds")
    assert len(hv) == len(cpu) == 5  # one per evaluation: 2 + 2 + 1
    assert all(0 < v <= 1 for v in hv) and hv == sorted(hv)  # a front only grows
    assert cpu == sorted(cpu) and cpu[0] > 0
    (test_hv,) = history("sweep/test_hypervolume")  # the reported (test) front's, once at the end
    assert 0 < test_hv <= 1
