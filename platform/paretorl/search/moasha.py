"""MO-ASHA: Pareto-aware early stopping of trials, as a Ray Tune scheduler.

Schmucker et al. 2021, "Multi-objective Asynchronous Successive Halving" (arXiv 2106.12639):
asynchronous successive halving (Li et al. 2020) whose rungs rank results by non-dominated
sorting instead of by one metric. Here a rung is a training step (grace_steps * eta^i, below the
trials' last step); a trial's result at a rung is its first evaluation at or after that step.
When a trial reaches a rung, the results recorded there (its own included) are ranked: by
non-dominated front (maximise pass@k, minimise tokens), inside a front by the epsilon-net order
(or NSGA-II's crowding distance), results still tied by arrival. The trial continues if it is in
the top 1/eta of them (0-based position p among n: continue iff eta * p < n; a trial alone at a
rung continues); otherwise Tune stops it. As in ASHA, a decision is never revisited.

Non-dominated sorting is moocore's (`pareto_rank`). The epsilon-net and crowding orders are
short numpy here: no light library exposes them (pymoo's crowding distance is internal to its
survival operator, and moocore has neither).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from paretorl import storage

log = logging.getLogger(__name__)

TIE_BREAKS = ("epsilon_net", "crowding")


def rungs(grace_steps: int, reduction_factor: float, max_steps: int) -> list[int]:
    """Rung steps grace * eta^i below `max_steps` (a trial's last step needs no decision), ascending."""
    out, r = [], float(grace_steps)
    while round(r) < max_steps:
        if not out or round(r) > out[-1]:
            out.append(round(r))
        r *= reduction_factor
    return out


def epsilon_net_order(costs: np.ndarray) -> np.ndarray:
    """Indices of `costs` (n x d, minimised, comparably scaled) in epsilon-net order.

    Seed: the lexicographically best point (best first objective); then, repeatedly, the point
    farthest (Euclidean) from those already chosen. Equal distances go to the lower index.
    """
    n = len(costs)
    if n == 0:
        return np.zeros(0, dtype=int)
    seed = np.lexsort(costs.T[::-1])[0]  # lexsort's last key is the primary one
    order = [int(seed)]
    nearest = np.linalg.norm(costs - costs[seed], axis=1)
    nearest[seed] = -np.inf
    for _ in range(n - 1):
        pick = int(np.argmax(nearest))
        order.append(pick)
        nearest = np.minimum(nearest, np.linalg.norm(costs - costs[pick], axis=1))
        nearest[order] = -np.inf
    return np.array(order)


def crowding_order(costs: np.ndarray) -> np.ndarray:
    """Indices of `costs` (n x d, one front) by NSGA-II crowding distance, largest first (Deb et al. 2002).

    Per objective, the extreme points get infinity and the others the gap between their
    neighbours divided by the objective's range; distances sum over objectives.
    """
    n, d = costs.shape
    dist = np.zeros(n)
    for m in range(d):
        by = np.argsort(costs[:, m], kind="stable")
        span = costs[by[-1], m] - costs[by[0], m]
        dist[by[0]] = dist[by[-1]] = np.inf
        if n > 2 and span > 0:
            dist[by[1:-1]] += (costs[by[2:], m] - costs[by[:-2], m]) / span
    return np.argsort(-dist, kind="stable")


def rank_order(values: np.ndarray, scale: tuple[float, float], tie_break: str = "epsilon_net") -> np.ndarray:
    """Indices of `values` (n x 2: pass@k to maximise, tokens to minimise), best first.

    `scale` (pass@k span, tokens span) puts both objectives on comparable units for the
    tie-break's distances (the hypervolume box: pass@k 0..1, tokens 0..reference).
    """
    import moocore

    if tie_break not in TIE_BREAKS:
        raise ValueError(f"unknown tie_break {tie_break!r}; valid: {', '.join(TIE_BREAKS)}")
    values = np.asarray(values, dtype=float).reshape(-1, 2)
    costs = np.column_stack([-values[:, 0], values[:, 1]]) / np.asarray(scale, dtype=float)
    fronts = moocore.pareto_rank(costs)  # 0: non-dominated; identical points share a front
    within = epsilon_net_order if tie_break == "epsilon_net" else crowding_order
    order: list[int] = []
    for front in np.unique(fronts):
        members = np.flatnonzero(fronts == front)
        order.extend(members[within(costs[members])].tolist())
    return np.array(order, dtype=int)


class MOASHA(FIFOScheduler):
    """Tune scheduler: stops a trial at a rung unless its evaluation ranks in the top 1/eta there.

    Only results with `evaluated: True` count (the learner reports every step; `eval/*` are fresh
    only on evaluation steps). Results are recorded per (rung, trial) once, so a step reported
    again after a retry or a driver restart is not counted twice, and a trial already stopped
    is stopped again if it ever reports (a driver killed between the decision and the stop).

    The state (recorded results, stopped trials) is rewritten to `state_path` after every
    decision; `Tuner.restore` unpickles the scheduler as it was when the sweep started, and the
    unpickled copy reads that file, so a resumed sweep continues with its rungs as they were.
    """

    def __init__(self, metrics: tuple[str, str], max_steps: int, grace_steps: int, reduction_factor: float,
                 scale: tuple[float, float], state_path: str | Path, tie_break: str = "epsilon_net"):
        super().__init__()
        if tie_break not in TIE_BREAKS:
            raise ValueError(f"unknown tie_break {tie_break!r}; valid: {', '.join(TIE_BREAKS)}")
        if reduction_factor <= 1:
            raise ValueError(f"reduction_factor must be > 1, got {reduction_factor}")
        self.maximize, self.minimize = metrics
        self.max_steps, self.grace_steps, self.eta = max_steps, grace_steps, float(reduction_factor)
        self.scale, self.tie_break = tuple(scale), tie_break
        self.state_path = storage.resolve(state_path)  # a local file or an object-store URI
        self.rung_steps = rungs(grace_steps, reduction_factor, max_steps)
        self._load()

    # --- state ---------------------------------------------------------------------------
    def _load(self, path: str | None = None) -> None:
        path = path or self.state_path
        # rung step -> {trial id: [pass@k, tokens]}, in arrival order (the last tie-break)
        self.recorded: dict[int, dict[str, list[float]]] = {r: {} for r in self.rung_steps}
        self.stopped: dict[str, int] = {}  # trial id -> the rung it was stopped at
        if storage.exists(path):
            saved = json.loads(storage.read_text(path))
            for r, results in saved["recorded"].items():
                self.recorded.setdefault(int(r), {}).update(results)
            self.stopped = saved["stopped"]

    def _state(self) -> dict:
        return {"rungs": self.rung_steps, "recorded": {str(r): v for r, v in self.recorded.items()}, "stopped": self.stopped}

    def _save(self, path: str | None = None) -> None:
        storage.write_text(path or self.state_path, json.dumps(self._state(), indent=1))

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("recorded", "stopped")}  # the file holds those

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._load()

    def save(self, checkpoint_path: str):
        self._save(str(checkpoint_path))

    def restore(self, checkpoint_path: str):
        self._load(str(checkpoint_path))

    # --- decisions ------------------------------------------------------------------------
    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self.decide(trial.trial_id, result)

    def decide(self, trial_id: str, result: dict) -> str:
        """CONTINUE or STOP for one reported result (the whole algorithm; Tune-free for tests)."""
        if trial_id in self.stopped:
            return TrialScheduler.STOP
        if not result.get("evaluated"):
            return TrialScheduler.CONTINUE
        step = int(result["step"])
        if step >= self.max_steps:  # the trial ends here anyway: no decision to make, nothing to record
            return TrialScheduler.CONTINUE
        rung = next((r for r in reversed(self.rung_steps) if r <= step), None)
        if rung is None or trial_id in self.recorded[rung]:
            return TrialScheduler.CONTINUE
        value = [result.get(self.maximize), result.get(self.minimize)]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value):
            log.warning("MO-ASHA: trial %s step %s has no finite %s/%s; not ranked", trial_id, step, self.maximize, self.minimize)
            return TrialScheduler.CONTINUE
        at_rung = self.recorded[rung]
        at_rung[trial_id] = [float(v) for v in value]
        order = rank_order(np.array(list(at_rung.values())), self.scale, self.tie_break)
        position = int(np.flatnonzero(order == len(at_rung) - 1)[0])  # the new result is the last one recorded
        decision = TrialScheduler.CONTINUE if self.eta * position < len(at_rung) else TrialScheduler.STOP
        if decision == TrialScheduler.STOP:
            self.stopped[trial_id] = rung
        self._save()
        print(f"[moasha] trial {trial_id} at rung {rung} (step {step}): rank {position + 1} of {len(at_rung)}, "
              f"{'continues' if decision == TrialScheduler.CONTINUE else 'stopped'}", flush=True)
        return decision

    def debug_string(self) -> str:
        rows = ", ".join(f"step {r}: {len(v)} recorded" for r, v in self.recorded.items())
        return f"Using MO-ASHA (eta {self.eta:g}, {self.tie_break}): {rows}; {len(self.stopped)} stopped"
