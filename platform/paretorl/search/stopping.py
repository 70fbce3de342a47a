"""What may stop a sweep's trials, and how its progress is measured: the space file's
`scheduler:` and `hypervolume:` sections, and the MLflow tags of a trial stopped early.

    scheduler: {type: fifo}                                          # every trial runs to its last step (default)
    scheduler: {type: moasha, grace_steps: 4, reduction_factor: 3}   # Pareto-aware early stopping (search/moasha.py)
    hypervolume: {reference: {pass_k: 0.0, tokens: 64}}              # default tokens: eval.max_new_tokens

The settings validate without Ray; `sweep/tune_extras.py` turns them into the Tuner's pieces.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from paretorl import storage

SCHEDULER_STATE, TRACE_FILE = "moasha_state.json", "hypervolume_trace.json"
STOPPED_TAG = "paretorl.stopped_early"  # MLflow tag of a trial's run that did not reach its last step: "rung-<step>" or "budget"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FIFOSpec(_Strict):
    type: Literal["fifo"] = Field("fifo", description="fifo: every trial runs all its steps (the default)")


class MOASHASpec(_Strict):
    type: Literal["moasha"] = Field(description="moasha: multi-objective asynchronous successive halving (stops trials at rungs)")
    grace_steps: int = Field(4, gt=0, description="first rung: a trial is ranked at its first evaluation at or after this step")
    reduction_factor: float = Field(3.0, gt=1, description="eta: rungs at grace_steps * eta^i; the top 1/eta at a rung continue")
    tie_break: Literal["epsilon_net", "crowding"] = Field("epsilon_net", description="order inside a non-dominated front")


SchedulerSpec = Annotated[FIFOSpec | MOASHASpec, Field(discriminator="type")]


class ReferencePoint(_Strict):
    pass_k: float = Field(0.0, ge=0.0, lt=1.0, description="pass@k of the reference point (the worst that counts)")
    tokens: float | None = Field(None, gt=0.0, description="mean tokens of the reference point (default: eval.max_new_tokens)")


class HypervolumeSpec(_Strict):
    reference: ReferencePoint = Field(default_factory=ReferencePoint, description="the reference point (the worst corner that counts)")


def check_scheduler(space, base_cfg) -> str | None:
    """Why the space's scheduler cannot run with its trials, or None (called by load_space)."""
    spec = space.scheduler
    if spec.type != "moasha":
        return None
    if spec.grace_steps >= base_cfg.train.steps:
        return f"scheduler.grace_steps = {spec.grace_steps} is not below train.steps = {base_cfg.train.steps}: MO-ASHA would never rank a trial"
    swept = sorted(k for k in space.params if k in ("train.steps", "eval.every"))
    if swept:
        return f"scheduler moasha needs every trial on the same steps and evaluations; params sweeps {swept}"
    return None


def reference_point(space, base_cfg) -> tuple[float, float]:
    ref = space.hypervolume.reference
    return ref.pass_k, ref.tokens if ref.tokens is not None else float(base_cfg.eval.max_new_tokens)


class EndTags:
    """The MLflow tags a trial's run gets when it ends without reaching its last step.

    Called with a trial id when the trial completes: `paretorl.stopped_early = rung-<step>` if
    MO-ASHA stopped it. `sweep_end` is asked for trials still running when Tune ends the sweep:
    `budget` if the CPU budget was spent, else None (the sweep died: leave the runs for --resume).
    Reads the scheduler's and the trace's files, so it survives pickling and restores.
    """

    def __init__(self, scheduler_state: Path | None, trace: Path, cpu_budget: float | None):
        self.scheduler_state, self.trace, self.cpu_budget = scheduler_state, storage.resolve(trace), cpu_budget

    def __call__(self, trial_id: str) -> dict[str, str]:
        if self.scheduler_state is None or not Path(self.scheduler_state).exists():
            return {}
        rung = json.loads(storage.read_text(self.scheduler_state))["stopped"].get(trial_id)
        return {STOPPED_TAG: f"rung-{rung}"} if rung is not None else {}

    def sweep_end(self, trial_id: str) -> dict[str, str] | None:
        from paretorl.search.hypervolume import read_trace

        if self.cpu_budget and read_trace(self.trace)["cpu_seconds"] >= self.cpu_budget:
            return {STOPPED_TAG: "budget"}
        return None
