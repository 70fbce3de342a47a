"""How far a sweep has got: the hypervolume of its front against the CPU-seconds its trials used.

Hypervolume (moocore's): the area the front dominates inside the box between the ideal point
(pass@k 1, 0 tokens) and the reference point (the space file's `hypervolume.reference`; default
pass@k 0 and the evaluation's max_new_tokens), divided by the box's area, so it lies in [0, 1].

CPU-seconds of a trial: its wall time (Tune's `time_this_iter_s`, summed over every report,
retries and re-reports included: that time was spent) times the Ray CPUs its learner workers
and rollout replicas reserve. Reserved, not measured: on a shared machine a trial's processes
get the cores Ray reserved for them, and the figure does not depend on what else runs there.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
from ray.tune import Callback
from ray.tune.stopper import Stopper

from paretorl import storage

HV_METRIC, CPU_METRIC, TEST_HV_METRIC = "sweep/hypervolume", "sweep/cpu_seconds", "sweep/test_hypervolume"


def hypervolume(points, reference: tuple[float, float]) -> float:
    """Normalised hypervolume of (pass@k, tokens) points: pass@k maximised, tokens minimised.

    Points that are not finite, or not better than the reference in both objectives, add nothing.
    """
    import moocore

    ref_pass, ref_tokens = reference
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(axis=1) & (pts[:, 0] > ref_pass) & (pts[:, 1] < ref_tokens)]
    if len(pts) == 0:
        return 0.0
    area = moocore.hypervolume(pts, ref=[ref_pass, ref_tokens], maximise=[True, False])
    return float(area) / ((1.0 - ref_pass) * ref_tokens)


def trial_cpus(cfg) -> float:
    """Ray CPUs one trial reserves for its learner workers and rollout replicas."""
    auto = cfg.rollout.autoscaling
    replicas = auto.get("max_replicas", 1) if auto else cfg.rollout.replicas
    return cfg.resources.learner_workers * cfg.resources.learner_cpus + replicas * cfg.rollout.num_cpus


def report_cpu_seconds(result: dict, cpus: float) -> float:
    """CPU-seconds one Tune report stands for (module docstring)."""
    return float(result.get("time_this_iter_s") or 0.0) * cpus


def read_trace(path: str | Path) -> dict:
    """A sweep's hypervolume trace file: {"cpu_seconds", "points", "trace": [[cpu_s, hv], ...]}."""
    return json.loads(storage.read_text(path)) if storage.exists(path) else {"cpu_seconds": 0.0, "points": [], "trace": []}


class HypervolumeTrace(Callback):
    """Tune callback: `sweep/hypervolume` of the eval front against `sweep/cpu_seconds`, on the parent run.

    Logged at every evaluation, with the MLflow step = whole CPU-seconds, so MLflow's default
    x-axis is CPU time. The trace (and the CPU count) is rewritten to `state_path` after every
    report and read back when `Tuner.restore` unpickles this callback.
    """

    def __init__(self, tracking_uri: str, parent_run_id: str, metrics: tuple[str, str], reference: tuple[float, float],
                 cpus: float, state_path: str | Path, base_point: tuple[float, float] | None = None):
        self.tracking_uri, self.parent_run_id = tracking_uri, parent_run_id
        self.maximize, self.minimize = metrics
        self.reference, self.cpus = tuple(reference), cpus
        self.state_path = storage.resolve(state_path)  # a local file or an object-store URI
        self.base_point = base_point
        self._load()

    def _load(self) -> None:
        self._client = None
        saved = read_trace(self.state_path)
        self.cpu_seconds, self.points, self.trace = saved["cpu_seconds"], saved["points"], saved["trace"]
        if not self.points and self.base_point:  # the base policy is the front before any trial
            self.points = [["base", 0, *self.base_point]]
            self.trace = [[0.0, self.hypervolume()]]
        self._logged = {(p[0], p[1]) for p in self.points}

    def __getstate__(self):
        keep = ("tracking_uri", "parent_run_id", "maximize", "minimize", "reference", "cpus", "state_path", "base_point")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._load()

    @property
    def client(self):
        from mlflow import MlflowClient

        if self._client is None:  # at the first evaluation: opening a store can take seconds
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def hypervolume(self) -> float:
        return hypervolume([p[2:] for p in self.points], self.reference)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from mlflow.entities import Metric

        self.cpu_seconds += report_cpu_seconds(result, self.cpus)
        key = (trial.trial_id, int(result.get("step", 0)))
        if result.get("evaluated") and key not in self._logged:  # a step reported again after a retry counts once
            self._logged.add(key)
            self.points.append([*key, float(result.get(self.maximize, math.nan)), float(result.get(self.minimize, math.nan))])
            hv = self.hypervolume()
            self.trace.append([self.cpu_seconds, hv])
            ts, step = int(time.time() * 1000), int(self.cpu_seconds)
            self.client.log_batch(self.parent_run_id, metrics=[Metric(HV_METRIC, hv, ts, step), Metric(CPU_METRIC, self.cpu_seconds, ts, step)])
        self._save()

    def _save(self) -> None:
        storage.write_text(self.state_path, json.dumps({"cpu_seconds": self.cpu_seconds, "reference": self.reference, "points": self.points, "trace": self.trace}))


class CpuBudget(Stopper):
    """Tune stopper: ends the sweep once its trials have used `budget` CPU-seconds (`budget.cpu_seconds`).

    Trials still running then are stopped where they are; their evaluations so far stay.
    Counts reports as HypervolumeTrace does; a restored sweep starts from the trace's count.
    """

    def __init__(self, budget: float, cpus: float, trace_path: str | Path):
        self.budget, self.cpus, self.trace_path = budget, cpus, storage.resolve(trace_path)
        self.used = read_trace(self.trace_path)["cpu_seconds"]

    def __getstate__(self):
        return {"budget": self.budget, "cpus": self.cpus, "trace_path": self.trace_path}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.used = read_trace(self.trace_path)["cpu_seconds"]

    def __call__(self, trial_id: str, result: dict) -> bool:
        if not result.get("done"):  # Tune's end-of-trial marker repeats the last report
            self.used += report_cpu_seconds(result, self.cpus)
        return False

    def stop_all(self) -> bool:
        return self.used >= self.budget


def log_test_hypervolume(tracking_uri: str, parent_run_id: str, points, reference: tuple[float, float], cpu_seconds: float) -> float:
    """Log `sweep/test_hypervolume` of a test front ((pass@k, tokens) pairs) on the parent run; returns it.

    For the end of a sweep whose front is re-evaluated on a test split: call it with the test
    values of the front's points, the same reference and the sweep's final `sweep/cpu_seconds`.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    hv = hypervolume(points, reference)
    MlflowClient(tracking_uri).log_batch(parent_run_id, metrics=[Metric(TEST_HV_METRIC, hv, int(time.time() * 1000), int(cpu_seconds))])
    return hv
