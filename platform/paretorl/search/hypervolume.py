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
from pathlib import Path

import numpy as np
from ray.tune.stopper import Stopper

from paretorl import storage


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


class CpuBudget(Stopper):
    """Tune stopper: ends the sweep once its trials have used `budget` CPU-seconds (`budget.cpu_seconds`).

    Trials still running then are stopped where they are; their evaluations so far stay.
    Counts reports as HypervolumeTrace (report/search_progress.py) does; a restored sweep starts from the trace's count.
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
