"""The scheduler, stopper and callbacks a sweep's Tuner gets, built from the space file's
`scheduler:`, `hypervolume:` and `budget:` settings (search/stopping.py) by `run` (sweep/run.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paretorl import storage
from paretorl.report.search_progress import HypervolumeTrace
from paretorl.search.hypervolume import CpuBudget, trial_cpus
from paretorl.search.moasha import MOASHA
from paretorl.search.stopping import SCHEDULER_STATE, TRACE_FILE, EndTags, reference_point
from paretorl.sweep.trial import ReleaseTrialApps


@dataclass
class TuneExtras:
    """The scheduler, stopper and callbacks a sweep's Tuner gets, and its trials' end-of-run MLflow tags."""

    scheduler: Any = None  # None: Tune's FIFO
    stop: Any = None
    callbacks: list = field(default_factory=list)
    end_tags: EndTags | None = None


def tune_extras(space, sweep_dir: Path, tracking_uri: str, parent_run_id: str, base_eval: dict | None = None) -> TuneExtras:
    cfg = space.trial_config({})
    metrics, reference, cpus = space.metrics, reference_point(space, cfg), trial_cpus(cfg)
    base = (base_eval[metrics[0]], base_eval[metrics[1]]) if base_eval and all(m in base_eval for m in metrics) else None
    trace = HypervolumeTrace(tracking_uri, parent_run_id, metrics, reference, cpus, storage.join(sweep_dir, TRACE_FILE), base_point=base)
    extras = TuneExtras(callbacks=[trace, ReleaseTrialApps()])
    if space.budget.cpu_seconds:
        extras.stop = CpuBudget(space.budget.cpu_seconds, cpus, trace.state_path)
    spec, state = space.scheduler, None
    if spec.type == "moasha":
        state = storage.join(sweep_dir, SCHEDULER_STATE)
        extras.scheduler = MOASHA(
            metrics, cfg.train.steps, spec.grace_steps, spec.reduction_factor,
            scale=(1.0 - reference[0], reference[1]), state_path=state, tie_break=spec.tie_break,
        )
    extras.end_tags = EndTags(state, trace.state_path, space.budget.cpu_seconds)
    return extras
