"""Search-space files (searchspaces/*.yaml): loaded, validated before any compute, turned
into Optuna distributions.

A parameter is named by its dotted path in `paretorl.config.TrialConfig` (`algo.alpha`,
`train.lr`, ...). Validation builds a trial config at every corner of the space (each
bound, each choice), so a learning rate <= 0, an alpha outside [0, 1) or an unknown
objective is refused here, with the file and key named, instead of inside a trial.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from paretorl.config import TrialConfig, deep_merge, set_path
from paretorl.sweep.stopping import FIFOSpec, HypervolumeSpec, SchedulerSpec, check_scheduler

SAMPLERS = ("tpe", "nsga2", "random")


class SpaceError(ValueError):
    """A search-space file is malformed; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParamSpec(_Strict):
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _consistent(self):
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
            if self.low is not None or self.high is not None:
                raise ValueError("a categorical parameter takes 'choices', not 'low'/'high'")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"a {self.type} parameter needs 'low' and 'high'")
            if self.choices is not None:
                raise ValueError(f"a {self.type} parameter takes 'low'/'high', not 'choices'")
            if not self.low < self.high:
                raise ValueError(f"empty or inverted range: low={self.low} must be < high={self.high}")
            if self.log and self.low <= 0:
                raise ValueError(f"a log-scale range needs low > 0, got {self.low}")
        return self

    def corners(self) -> list[Any]:
        if self.type == "categorical":
            return list(self.choices)
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]

    def distribution(self):
        import optuna.distributions as d

        if self.type == "categorical":
            return d.CategoricalDistribution(self.choices)
        if self.type == "int":
            return d.IntDistribution(int(self.low), int(self.high), log=self.log)
        return d.FloatDistribution(self.low, self.high, log=self.log)


class Budget(_Strict):
    trials: int = Field(6, gt=0, description="trials Optuna proposes (initial points included)")
    max_concurrent: int | Literal["auto"] = Field(
        2, description="trials running at once; 'auto': the cluster's GPUs // one trial's GPUs, once Ray is up (paretorl.sweep.cluster)"
    )

    cpu_seconds: float | None = Field(None, gt=0, description="end the sweep once its trials have used this many CPU-seconds (sweep/hypervolume.py); None: no limit")

    @field_validator("max_concurrent")
    @classmethod
    def _positive(cls, v):
        if v != "auto" and v <= 0:
            raise ValueError(f"must be a positive integer or 'auto', got {v}")
        return v


class Objectives(_Strict):
    pass_k: int = Field(4, gt=0, description="maximise eval/pass_at_<pass_k>; eval/mean_tokens is minimised")


class SearchSpace(_Strict):
    task: str | None = Field(None, description="task name or 'file.py:Class' (the --task flag overrides it)")
    objectives: Objectives = Field(default_factory=Objectives)
    budget: Budget = Field(default_factory=Budget)
    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    seed: int = 0
    scheduler: SchedulerSpec = Field(default_factory=FIFOSpec, description="fifo | moasha (early stopping at rungs; sweep/stopping.py)")
    hypervolume: HypervolumeSpec = Field(default_factory=HypervolumeSpec)
    params: dict[str, ParamSpec]
    initial_points: list[dict[str, Any]] = Field(default_factory=list)
    trial: dict[str, Any] = Field(default_factory=dict, description="fixed TrialConfig fields for every trial")

    @property
    def metrics(self) -> tuple[str, str]:
        return f"eval/pass_at_{self.objectives.pass_k}", "eval/mean_tokens"

    def trial_config(self, sampled: dict[str, Any], extra: dict | None = None) -> TrialConfig:
        tree = deep_merge(self.trial, extra or {})
        for key, value in sampled.items():
            set_path(tree, key, value)
        return TrialConfig.model_validate(tree)


def _where(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<top>'}: {e['msg']}" for e in err.errors())


def load_space(path: str | Path, overrides: dict | None = None) -> SearchSpace:
    """Parse and fully validate a search-space file; raises SpaceError naming file and key."""
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"search space file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpaceError(f"{path}: YAML syntax error: {e}") from None
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    raw = deep_merge(raw, overrides or {})
    try:
        space = SearchSpace.model_validate(raw)
    except ValidationError as e:
        raise SpaceError(f"{path}: {_where(e)}") from None
    if not space.params:
        raise SpaceError(f"{path}: 'params' is empty: nothing to search")
    try:
        base = space.trial_config({})
    except ValidationError as e:
        raise SpaceError(f"{path}: trial: {_where(e)}") from None
    for key, spec in space.params.items():
        for value in spec.corners():
            try:
                space.trial_config({key: value})
            except ValidationError as e:
                raise SpaceError(f"{path}: params.{key} = {value!r} is not a valid trial setting: {_where(e)}") from None
    for i, point in enumerate(space.initial_points):
        unknown = set(point) - set(space.params)
        if unknown:
            raise SpaceError(f"{path}: initial_points[{i}] names keys not in params: {sorted(unknown)}")
        missing = set(space.params) - set(point)
        if missing:
            raise SpaceError(f"{path}: initial_points[{i}] lacks keys {sorted(missing)}")
        try:
            space.trial_config(point)
        except ValidationError as e:
            raise SpaceError(f"{path}: initial_points[{i}]: {_where(e)}") from None
    problem = check_scheduler(space, base)
    if problem:
        raise SpaceError(f"{path}: {problem}")
    if space.objectives.pass_k > base.eval.n_samples:
        raise SpaceError(f"{path}: objectives.pass_k = {space.objectives.pass_k} exceeds eval.n_samples = {base.eval.n_samples}")
    if space.objectives.pass_k & (space.objectives.pass_k - 1):
        raise SpaceError(f"{path}: objectives.pass_k must be a power of two (1, 2, 4, ...), got {space.objectives.pass_k}")
    return space


def optuna_sampler(space: SearchSpace):
    import optuna

    if space.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=space.seed)
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=space.seed)
    return optuna.samplers.TPESampler(seed=space.seed, multivariate=True)
