"""The search's progress on the sweep's parent run: `sweep/hypervolume` of the eval front against
`sweep/cpu_seconds` while trials report, and `sweep/test_hypervolume` of the reported (test) front
when the sweep ends. The measures are search/hypervolume.py's."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from ray.tune import Callback

from paretorl import storage
from paretorl.search.hypervolume import hypervolume, read_trace, report_cpu_seconds
from paretorl.search.stopping import TRACE_FILE, reference_point

HV_METRIC, CPU_METRIC, TEST_HV_METRIC = "sweep/hypervolume", "sweep/cpu_seconds", "sweep/test_hypervolume"


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


def log_test_front_hypervolume(space, sweep_dir: Path, tracking_uri: str, parent_run_id: str, test_front: list[dict]) -> float:
    """`sweep/test_hypervolume` of the reported (test) front on the parent run, at the sweep's final CPU-seconds."""
    points = [(p["test_pass_at_k"], p["test_mean_tokens"]) for p in test_front]
    cpu = read_trace(storage.join(sweep_dir, TRACE_FILE))["cpu_seconds"]
    return log_test_hypervolume(tracking_uri, parent_run_id, points, reference_point(space, space.trial_config({})), cpu)
