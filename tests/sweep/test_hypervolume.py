"""The hypervolume trace, the CPU budget and the end-of-run tags, on a real sqlite MLflow store."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest
from mlflow import MlflowClient

from paretorl.config import TrialConfig
from paretorl.report.search_progress import HypervolumeTrace, log_test_hypervolume
from paretorl.search.hypervolume import CpuBudget, hypervolume, read_trace, trial_cpus
from paretorl.report.tracking import MLflowSweepLogger, ensure_experiment

METRICS = ("eval/pass_at_4", "eval/mean_tokens")
REF = (0.0, 64.0)


def report(step: int, seconds: float, point: tuple[float, float] | None = None) -> dict:
    out = {"step": step, "evaluated": point is not None, "time_this_iter_s": seconds}
    if point:
        out.update(zip(METRICS, point))
    return out


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"  # one store: creating one takes seconds
    client = MlflowClient(uri)
    return uri, client, ensure_experiment(client, "t", uri)


@pytest.fixture
def store(experiment):
    uri, client, exp = experiment
    return uri, client, exp, client.create_run(exp).info.run_id


def test_hypervolume_is_the_dominated_share_of_the_box():
    # (0.5, 10) and (0.7, 20) dominate 0.5 x (20 - 10) + 0.7 x (64 - 20) = 35.8 of the 1 x 64 box
    assert hypervolume([(0.5, 10.0), (0.7, 20.0)], REF) == pytest.approx(35.8 / 64)
    # a dominated point, a point outside the box and a NaN add nothing
    assert hypervolume([(0.5, 10.0), (0.7, 20.0), (0.4, 30.0), (0.9, 70.0), (float("nan"), 5.0)], REF) == pytest.approx(35.8 / 64)
    assert hypervolume([], REF) == 0.0
    assert hypervolume([(0.5, 32.0)], (0.25, 64.0)) == pytest.approx((0.25 * 32) / (0.75 * 64))


def test_trial_cpus_counts_learner_workers_and_rollout_replicas():
    cfg = TrialConfig.model_validate({"resources": {"learner_workers": 2, "learner_cpus": 0.5}, "rollout": {"replicas": 3, "num_cpus": 0.25}})
    assert trial_cpus(cfg) == pytest.approx(2 * 0.5 + 3 * 0.25)
    auto = TrialConfig.model_validate({"rollout": {"autoscaling": {"min_replicas": 1, "max_replicas": 4}, "num_cpus": 0.5}})
    assert trial_cpus(auto) == pytest.approx(0.4 + 4 * 0.5)


def test_trace_logs_hypervolume_against_cpu_seconds_and_survives_a_restart(tmp_path, store):
    uri, client, _, parent = store
    path = tmp_path / "trace.json"
    trace = HypervolumeTrace(uri, parent, METRICS, REF, cpus=0.5, state_path=path, base_point=(0.25, 32.0))
    as_pickled_at_start = pickle.dumps(trace)
    t1, t2 = SimpleNamespace(trial_id="t1"), SimpleNamespace(trial_id="t2")
    trace.on_trial_result(0, [], t1, report(1, 10.0))  # 5 CPU-s, no evaluation: nothing logged
    trace.on_trial_result(0, [], t1, report(2, 10.0, (0.5, 10.0)))  # 10 CPU-s
    trace.on_trial_result(0, [], t2, report(2, 30.0, (0.7, 20.0)))  # 25 CPU-s

    restored = pickle.loads(as_pickled_at_start)  # as Tuner.restore rebuilds it
    restored.on_trial_result(0, [], t2, report(2, 4.0, (0.7, 20.0)))  # re-reported after a retry: time counts, the point once
    assert restored.cpu_seconds == pytest.approx(27.0)
    assert len(restored.points) == 3  # base, t1@2, t2@2

    base_hv = hypervolume([(0.25, 32.0)], REF)
    history = client.get_metric_history(parent, "sweep/hypervolume")
    assert [(m.step, round(m.value, 6)) for m in history] == [(10, round(hypervolume([(0.25, 32.0), (0.5, 10.0)], REF), 6)), (25, round(35.8 / 64, 6))]
    assert [m.value for m in client.get_metric_history(parent, "sweep/cpu_seconds")] == [10.0, 25.0]
    saved = read_trace(path)
    assert saved["trace"][0] == [0.0, pytest.approx(base_hv)] and saved["trace"][-1] == [25.0, pytest.approx(35.8 / 64)]

    assert log_test_hypervolume(uri, parent, [(0.6, 16.0)], REF, cpu_seconds=27.0) == pytest.approx(0.6 * 48 / 64)
    assert [m.step for m in client.get_metric_history(parent, "sweep/test_hypervolume")] == [27]


def test_cpu_budget_ends_the_sweep_once_spent_and_counts_on_after_a_restart(tmp_path, store):
    uri, _, _, parent = store
    path = tmp_path / "trace.json"
    budget = CpuBudget(20.0, cpus=0.5, trace_path=path)
    assert budget("t1", report(1, 30.0)) is False and not budget.stop_all()  # 15 of 20
    assert budget("t1", {**report(1, 30.0), "done": True}) is False and not budget.stop_all()  # Tune's end marker repeats a report
    budget("t1", report(2, 10.0))
    assert budget.stop_all()  # 20 of 20

    trace = HypervolumeTrace(uri, parent, METRICS, REF, cpus=0.5, state_path=path)
    trace.on_trial_result(0, [], SimpleNamespace(trial_id="t1"), report(1, 30.0))
    assert not pickle.loads(pickle.dumps(budget)).stop_all()  # restored: 15 CPU-s from the trace
    trace.on_trial_result(0, [], SimpleNamespace(trial_id="t1"), report(2, 10.0))
    assert pickle.loads(pickle.dumps(budget)).stop_all()


@pytest.mark.parametrize("budget_spent", [True, False])
def test_a_stopped_trial_run_is_finished_and_tagged(tmp_path, store, budget_spent):
    from paretorl.search.moasha import MOASHA
    from paretorl.search.stopping import EndTags

    uri, client, exp, parent = store
    moasha = MOASHA(METRICS, 20, 4, 3, (1.0, 64.0), tmp_path / "moasha.json")
    moasha.decide("done", report(4, 1.0, (0.5, 10.0)))
    moasha.decide("stopped", report(4, 1.0, (0.4, 20.0)))  # dominated: stopped at rung 4
    (tmp_path / "trace.json").write_text('{"cpu_seconds": %d, "points": [], "trace": []}' % (50 if budget_spent else 10))
    end_tags = EndTags(moasha.state_path, tmp_path / "trace.json", cpu_budget=50.0)
    logger = MLflowSweepLogger(uri, exp, parent, METRICS, tmp_path / "state.json", end_tags=end_tags)
    trials = [SimpleNamespace(trial_id=t, config={}, error_file=None) for t in ("stopped", "done", "cut")]
    for trial in trials:
        logger.on_trial_start(0, trials, trial)
        logger.on_trial_result(0, trials, trial, {**report(4, 1.0, (0.5, 10.0)), "timestamp": 1})
    logger.on_trial_complete(0, trials, trials[0])
    logger.on_trial_complete(0, trials, trials[1])
    logger.on_experiment_end(trials)  # Tune ended the sweep while "cut" was running

    runs = {t.trial_id: client.get_run(logger.runs[t.trial_id]) for t in trials}
    if not budget_spent:  # the sweep died (e.g. the driver was killed): "cut" stays open for --resume
        assert runs["cut"].info.status == "RUNNING" and "paretorl.stopped_early" not in runs["cut"].data.tags
        return
    assert {t: r.info.status for t, r in runs.items()} == {"stopped": "FINISHED", "done": "FINISHED", "cut": "FINISHED"}
    assert {t: r.data.tags.get("paretorl.stopped_early") for t, r in runs.items()} == {"stopped": "rung-4", "done": None, "cut": "budget"}
    assert {p["trial"] for p in logger.points} == {"stopped", "done", "cut"}  # their evaluations stay on the front
