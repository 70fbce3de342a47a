"""The sweep's MLflow tracker (a Tune callback) across a driver restart, on a real sqlite store."""

from __future__ import annotations

from types import SimpleNamespace

from mlflow import MlflowClient

from paretorl.report.tracking import MLflowSweepLogger, ensure_experiment

METRICS = ("eval/pass_at_4", "eval/mean_tokens")


def result(step: int, evaluated: bool = False, **extra) -> dict:
    out = {"step": step, "evaluated": evaluated, "train/reward_mean": step / 10, "timestamp": 1_700_000_000 + step}
    if evaluated:
        out.update({"eval/pass_at_4": step / 4, "eval/mean_tokens": 10.0 - step, "eval/pass_at_1": step / 8})
    return {**out, **extra}


def test_a_restored_trial_reports_again_and_only_the_missed_step_is_logged(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = ensure_experiment(client, "t", uri)
    parent = client.create_run(exp).info.run_id
    trial = SimpleNamespace(trial_id="t1", config={"algo.objective": "grpo"}, error_file=None)

    first = MLflowSweepLogger(uri, exp, parent, METRICS, tmp_path / "state.json")
    first.on_trial_start(0, [], trial)
    first.on_trial_result(0, [], trial, result(1))
    first.on_trial_result(0, [], trial, result(2, evaluated=True, checkpoint_path="/ck/2"))
    # the driver dies here: step 3's checkpoint was persisted, its report never reached this callback

    resumed = MLflowSweepLogger(uri, exp, parent, METRICS, tmp_path / "state.json")  # as Tuner.restore rebuilds it
    resumed.on_trial_start(0, [], trial)
    resumed.on_trial_result(0, [], trial, result(3, evaluated=True, checkpoint_path="/ck/3"))  # the loop's re-report
    resumed.on_trial_result(0, [], trial, result(3, evaluated=True))  # said twice: logged once
    resumed.on_trial_complete(0, [], trial)

    (run_id,) = resumed.runs.values()
    assert [m.step for m in client.get_metric_history(run_id, "train/reward_mean")] == [1, 2, 3]
    assert [(p["step"], p.get("checkpoint")) for p in resumed.points] == [(2, "/ck/2"), (3, "/ck/3")]
    assert client.get_run(run_id).info.status == "FINISHED"
