"""A sweep submitted with `ray job submit` to an autoscaling cluster (Ray's fake multi-node provider,
cluster/fake-multinode.yaml): the head offers no trial CPUs, `fake_gpu` worker nodes scale 0..2.

One run shows: workers are launched when trials ask for them; the trials' learners run on them, and
the base policy's evaluation replica too;
`max_concurrent: auto` follows the declared capacity; a worker node lost mid-trial (its raylet
killed) costs the trials on it a retry from their checkpoints, with no gap and no repeat in MLflow;
idle workers are terminated after the sweep. It prints the measured times (the figures in docs/clusters.md).
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.cluster.fake_cluster import fake_cluster, submit, wait_until
from tests.jobs.test_sweep_job import mlflow_runs
from tests.reliability.sweeps import tiny_space

STEPS = 16  # long enough that both trials are mid-run together when a node is killed (steps take ~0.6 s since the report-poll fix; at 6 the window was ~2 s and the poll missed it)
OBJECTIVE = {"algo.objective": {"type": "categorical", "choices": ["grpo", "maxrl"]}}


def logged_steps(db) -> dict[str, list[int]]:
    """MLflow step history of train/reward_mean per trial (empty before the first trial starts)."""
    if not db.exists():
        return {}
    try:
        client, _, children = mlflow_runs(db)
    except Exception:  # the job is still creating the database
        return {}
    return {c.data.tags["paretorl.trial_id"]: [m.step for m in client.get_metric_history(c.info.run_id, "train/reward_mean")] for c in children}


def step_times(db, submitted: float, killed: float) -> dict[str, float]:
    """For docs/clusters.md: submission -> the first learner step on a launched worker (MLflow's record of
    step 1), and node killed -> the first step a retried learner logged."""
    client, _, children = mlflow_runs(db)
    first = min(m.timestamp for c in children for m in client.get_metric_history(c.info.run_id, "train/reward_mean") if m.step == 1)
    retried = [m.timestamp for c in children for m in client.get_metric_history(c.info.run_id, "train/restored_from_step") if m.value >= 0]
    return {"submit_to_first_learner_step_s": round(first / 1000 - submitted, 1),
            "node_killed_to_first_retried_step_s": round(min(retried) / 1000 - killed, 1) if retried else None}


@pytest.fixture(scope="module")
def autoscaled(tmp_path_factory, cache_dir):
    tmp = tmp_path_factory.mktemp("autoscaling")
    space = tiny_space(tmp / "space.yaml", params=OBJECTIVE, trials=2, max_concurrent=1, steps=STEPS,
                       initial_points=[{"algo.objective": "grpo"}, {"algo.objective": "maxrl"}])
    db = tmp / "mlflow.db"
    args = ["--space", str(space), "--profile", "fake-cluster", "--name", "auto", "--output-dir", str(tmp / "runs"),
            "--cache-dir", str(cache_dir), "--mlflow-uri", f"sqlite:///{db}"]
    env = {
        "AUTOSCALER_HEARTBEAT_TIMEOUT_S": "10",  # a lost node is replaced once the autoscaler stops hearing from it (30 s by default)
        "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",  # one actor less per trial (~230 MB) on this small machine; nothing is drained here
    }
    with fake_cluster(tmp, declared_gpus=4, env_overrides=env) as cluster:
        head = wait_until(lambda: [n["node_id"] for n in cluster.nodes() if n["head"]], 60, "the head in the state API")[0]
        before = cluster.nodes()
        submitted = time.time()
        job = submit(cluster, args, cwd=tmp)
        try:
            wait_until(lambda: [n for n in cluster.nodes() if not n["head"]], 600, "a worker node")
            node_up = time.time() - submitted
            # both trials under way and neither near its end: kill the node of a live learner
            wait_until(lambda: (s := logged_steps(db)) and len(s) == 2 and all(1 <= max(v, default=0) <= STEPS - 3 for v in s.values()),
                       600, "both trials past step 1", interval=0.5)
            first_step = time.time() - submitted
            learner = wait_until(lambda: cluster.actors("RayTrainWorker", "ALIVE"), 60, "a live learner", interval=0.5)[0]
            os.kill(cluster.raylet_pid(learner.node_id), signal.SIGKILL)
            killed_at = time.time() - submitted
            rc = job.finish(timeout=900)
        except AssertionError as e:
            job.proc.kill()
            raise AssertionError(f"{e}\njob output:\n{job.output[-6000:]}") from None
        job_s = time.time() - submitted
        learners = cluster.actors("RayTrainWorker")
        base_eval = cluster.actors("ServeReplica:paretorl-eval-")  # the base policy's evaluation app
        scaled_down = wait_until(lambda: len(cluster.nodes()) == 1, 180, "idle workers to be terminated", interval=2)
        print(json.dumps({"submit_to_first_worker_node_s": round(node_up, 1), **step_times(db, submitted, submitted + killed_at),
                          "submit_to_both_trials_past_step_1_s": round(first_step, 1), "node_killed_at_s": round(killed_at, 1),
                          "job_s": round(job_s, 1), "idle_workers_gone_after_job_s": round(time.time() - submitted - job_s, 1)}))
    return {"rc": rc, "output": job.output, "db": db, "head": head, "before": before,
            "killed": learner.node_id, "learners": learners, "base_eval": base_eval, "scaled_down": scaled_down}


def test_autoscaling_sweep_runs_its_trials_on_launched_workers(autoscaled):
    assert autoscaled["rc"] == 0, autoscaled["output"][-5000:]
    assert [n["head"] for n in autoscaled["before"]] == [True]  # no worker before the trials asked for one
    assert "fake_gpu" not in autoscaled["before"][0]["resources"] and "CPU" not in autoscaled["before"][0]["resources"]
    flat = " ".join(autoscaled["output"].split())
    assert "max_concurrent auto: 2 trials at once (2 fake_gpu each)" in flat  # 4 declared slots / 2 per trial
    nodes = {a.node_id for a in autoscaled["learners"]}
    assert autoscaled["head"] not in nodes and len(nodes) >= 2  # learners on launched workers, and on more than one
    assert autoscaled["killed"] in nodes
    # the base policy was evaluated by a rollout replica on a worker, not on the head
    assert autoscaled["base_eval"] and all(a.node_id != autoscaled["head"] for a in autoscaled["base_eval"])


def test_autoscaled_trials_ran_at_once_and_a_lost_node_costs_only_a_retry(autoscaled):
    client, parents, children = mlflow_runs(autoscaled["db"])
    assert len(children) == 2 and parents[0].info.status == "FINISHED"
    starts, ends = sorted(c.info.start_time for c in children), sorted(c.info.end_time for c in children)
    assert starts[1] < ends[0]  # the second trial started before the first ended: two at once
    restored = []
    for child in children:
        assert child.info.status == "FINISHED"
        history = client.get_metric_history(child.info.run_id, "train/reward_mean")
        assert [m.step for m in history] == list(range(1, STEPS + 1))  # no gap, no repeat
        restored += [m.value for m in client.get_metric_history(child.info.run_id, "train/restored_from_step") if m.value >= 0]
    assert restored, "no trial was retried from a checkpoint after its node was killed"


def test_idle_workers_are_terminated_after_the_sweep(autoscaled):
    assert autoscaled["scaled_down"]
