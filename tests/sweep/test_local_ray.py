"""The sweep's local Ray (`start_ray`) frees the learners of a trial Tune stops.

A trial Tune stops (an MO-ASHA rung, a CPU budget) has its actor killed; Ray Train's controller
dies with it and Train's placement-group cleaner removes the learners' placement group once the
State API says the controller is dead. That API is served by Ray's dashboard: a local Ray without
it kept every stopped trial's learner CPUs reserved, and an MO-ASHA sweep waited forever after two
stops. Here a real Tune trial runs a real TorchTrainer and is stopped after two reports, in a
local Ray started exactly as jobs/sweep.py starts it (its own process: the test session's Ray
has no dashboard).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.conftest import ROOT, env_with_venv

SCRIPT = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, sys.argv[1])
    import ray
    from ray import tune
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback
    from ray.util.state import list_actors

    from paretorl.sweep.run import start_ray

    STORAGE = sys.argv[2]  # a global: the trial runs in an actor, whose sys.argv is Ray's

    def learner(config):
        import ray.train
        for i in range(10_000):  # reports until Tune stops the trial
            ray.train.report({"i": i})

    def trial(config):
        TorchTrainer(learner, torch_config=TorchConfig(backend="gloo"),
                     scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.4}),
                     run_config=RunConfig(name="learner", storage_path=STORAGE, callbacks=[TuneReportCallback()])).fit()

    start_ray(2, verbose=False)
    grid = tune.Tuner(trial, run_config=tune.RunConfig(storage_path=STORAGE, stop={"training_iteration": 2})).fit()
    result = grid[0]
    reports = {"error": repr(result.error) if result.error else None, "iterations": result.metrics.get("training_iteration"), "i": result.metrics.get("i")}
    deadline, left = time.monotonic() + 90, None
    while time.monotonic() < deadline:
        left = [pg for pg in ray.util.placement_group_table().values() if pg["state"] != "REMOVED"]
        if not left:
            break
        time.sleep(1)  # the cleaner polls the controller's state every few seconds
    # Ray's State API, at the dashboard start_ray told the workers of (another Ray on the machine
    # would make it guess); dead actors included
    api = ray.get_runtime_context().runtime_env["env_vars"]["RAY_API_SERVER_ADDRESS"]
    classes = sorted({a.class_name for a in list_actors(address=api, limit=10_000, raise_on_missing_output=False)})
    print(json.dumps({"reports": reports, "left": [{"id": pg["placement_group_id"], "state": pg["state"], "bundles": pg["bundles"]} for pg in left], "actor_classes": classes}))
""")


def test_a_stopped_trial_frees_its_learners_placement_group_and_runs_no_preemption_watcher(tmp_path):
    script = tmp_path / "stop_trial.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(ROOT / "platform"), str(tmp_path / "results")], env=env_with_venv(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["reports"] == {"error": None, "iterations": 2, "i": 1}  # Tune stopped the trial after 2 reports; Train did not end by itself
    assert result["left"] == [], f"placement groups still reserved after the stopped trial: {result['left']}"
    # a local Ray runs no preemption watcher (one machine has no cloud drain notices to watch for)
    assert "TrainController" in result["actor_classes"] and "PreemptionWatcher" not in result["actor_classes"], result["actor_classes"]
