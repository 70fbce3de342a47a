"""The Pareto front of evaluated checkpoints: maximise pass@k, minimise mean tokens.

Every evaluation of every trial is a point (a checkpoint). Optuna does the non-dominated
selection (points are added to an in-memory two-objective study); report/front_files.py
writes the front to files.
"""

from __future__ import annotations

import math


def pareto_front(points: list[dict], maximize: str, minimize: str) -> list[dict]:
    """The non-dominated points, sorted by tokens; points missing either value are skipped."""
    import optuna
    from optuna.distributions import IntDistribution

    usable = [p for p in points if _finite(p.get(maximize)) and _finite(p.get(minimize))]
    if not usable:
        return []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    for i, p in enumerate(usable):
        study.add_trial(
            optuna.trial.create_trial(
                values=[float(p[maximize]), float(p[minimize])],
                params={"i": i},
                distributions={"i": IntDistribution(0, len(usable) - 1)},
            )
        )
    front = [usable[t.params["i"]] for t in study.best_trials]
    return sorted(front, key=lambda p: (p[minimize], -p[maximize]))


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
