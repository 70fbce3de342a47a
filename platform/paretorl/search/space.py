"""Search-space files (searchspaces/*.yaml): loaded, validated before any compute, turned
into Optuna distributions.

A parameter is named by its dotted path in `paretorl.config.TrialConfig` (`algo.alpha`,
`train.lr`, ...). Validation builds a trial config at every corner of the space (each
bound, each choice), so a learning rate <= 0, an alpha outside [0, 1) or an unknown
objective is refused here, with the file and key named, instead of inside a trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from paretorl.config import TrialConfig, deep_merge, set_path
from paretorl.search.stopping import FIFOSpec, HypervolumeSpec, SchedulerSpec, check_scheduler

SAMPLERS = ("tpe", "nsga2", "random")


class SpaceError(ValueError):
    """A search-space file is malformed; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParamSpec(_Strict):
    type: Literal["float", "int", "categorical"] = Field(description="float or int range, or a list of choices")
    low: float | None = Field(None, description="lower bound of a float or int range")
    high: float | None = Field(None, description="upper bound of a float or int range (> low)")
    log: bool = Field(False, description="sample the range on a log scale (needs low > 0)")
    choices: list[Any] | None = Field(None, description="the values of a categorical parameter")

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

    cpu_seconds: float | None = Field(None, gt=0, description="end the sweep once its trials have used this many CPU-seconds (search/hypervolume.py); None: no limit")

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
    objectives: Objectives = Field(default_factory=Objectives, description="what the sweep maximises (pass@k) and minimises (mean tokens)")
    budget: Budget = Field(default_factory=Budget, description="how many trials, how many at once, how much CPU")
    sampler: Literal["tpe", "nsga2", "random"] = Field("tpe", description="Optuna sampler: multi-objective TPE, NSGA-II, or random search")
    seed: int = Field(0, description="seed of Optuna's sampler")
    scheduler: SchedulerSpec = Field(default_factory=FIFOSpec, description="fifo | moasha (early stopping at rungs; search/stopping.py)")
    hypervolume: HypervolumeSpec = Field(default_factory=HypervolumeSpec, description="reference point of the sweep/hypervolume trace")
    params: dict[str, ParamSpec] = Field(description="the searched parameters, keyed by dotted trial-config path (e.g. algo.alpha)")
    initial_points: list[dict[str, Any]] = Field(default_factory=list, description="points (dotted path -> value, every params key) evaluated first; they count as the sampler's startup trials")
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
    for key, spec in space.params.items():
        problem = unpreparable(key, spec)
        if problem:
            raise SpaceError(f"{path}: params.{key}: {problem}")
    problem = check_scheduler(space, base)
    if problem:
        raise SpaceError(f"{path}: {problem}")
    for field in ("n_samples", "test_samples"):
        if space.objectives.pass_k > getattr(base.eval, field):
            raise SpaceError(f"{path}: objectives.pass_k = {space.objectives.pass_k} exceeds eval.{field} = {getattr(base.eval, field)}")
    if space.objectives.pass_k & (space.objectives.pass_k - 1):
        raise SpaceError(f"{path}: objectives.pass_k must be a power of two (1, 2, 4, ...), got {space.objectives.pass_k}")
    return space


# Keys that shape what every trial starts from: the base policy (model.*, sft.*) and the data
# (task.*). They are prepared before Ray starts, once per distinct value (sweep/bases.py), so a
# space may sweep them only over listed values.
PREPARED_SECTIONS = ("model", "sft", "task")


def shapes_base(key: str) -> bool:
    """Whether a swept key shapes the base policy or the data; model.lora.* shape only the trial
    (one base, adapters of any rank on it)."""
    return key.split(".", 1)[0] in PREPARED_SECTIONS and not key.startswith("model.lora.")


def unpreparable(key: str, spec: ParamSpec) -> str | None:
    """Why a space may not sweep `key` (None if it may)."""
    section = key.split(".", 1)[0]
    if key == "task.name":
        return "the task is chosen by --task or the space's `task:`; pass@k on different tasks cannot share a front: run one sweep per task"
    if section == "eval":
        return ("eval.* decides how every checkpoint is measured (selection on eval, the report on test); "
                "points measured differently cannot share a front: set it under `trial:` instead")
    if shapes_base(key) and spec.type != "categorical":
        return (f"a {spec.type} range cannot be prepared ahead: each value of a {section}.* key needs its own "
                f"{'splits' if section == 'task' else 'base policy'}, built before Ray starts; "
                "list the values instead: {type: categorical, choices: [...]}")
    return None


# Optuna's defaults (TPE: 10 random startup trials; NSGA-II: a first generation of 50) leave
# every trial of a 6-24 trial budget random. The random phase is sized from the budget instead.
STARTUP_CAP = {"tpe": 10, "nsga2": 50}


@dataclass(frozen=True)
class SearchPlan:
    """How a sweep's trials split into initial points, random trials and model-guided trials.

    startup: TPE's n_startup_trials, or NSGA-II's population_size (its random first generation):
    the completed trials the model needs before it proposes. With `concurrent` trials at once,
    the j-th trial is proposed when about j - concurrent trials are complete, so the first
    model-guided trial is the (startup + concurrent)-th; initial points count as startup.
    """

    sampler: str
    trials: int
    concurrent: int
    initial: int
    startup: int

    @property
    def guided(self) -> int:
        if self.sampler == "random":
            return 0
        return max(0, self.trials - max(self.initial, self.startup + self.concurrent - 1))

    @property
    def random(self) -> int:
        return self.trials - min(self.initial, self.trials) - self.guided

    def describe(self) -> str:
        if self.sampler == "random":
            return f"searcher: random, {self.trials} trials"
        what = "startup trials" if self.sampler == "tpe" else "population"
        return (f"searcher: {self.sampler}, {what} {self.startup} ({min(self.initial, self.trials)} initial points, "
                f"{self.random} random), {self.guided} of {self.trials} trials model-guided, {self.concurrent} at a time")

    def warning(self) -> str | None:
        if self.sampler == "random" or self.guided:
            return None
        return (f"budget.trials = {self.trials} with max_concurrent = {self.concurrent} leaves no trial to the {self.sampler} model "
                f"(it proposes once {self.startup} trials are complete): this sweep is a random search over its initial points; "
                f"raise budget.trials above {max(self.initial, self.startup + self.concurrent - 1)}")


def search_plan(space: SearchSpace) -> SearchPlan:
    """The sizing rule: startup = floor(trials / 2) - concurrent + 1, clamped to [2, cap] (cap:
    Optuna's default, 10 for TPE, 50 for NSGA-II), so that the first model-guided trial comes at
    about half the budget; 'auto' concurrency counts as 1 until Ray resolves it."""
    concurrent = space.budget.max_concurrent if isinstance(space.budget.max_concurrent, int) else 1
    trials = space.budget.trials
    startup = min(STARTUP_CAP.get(space.sampler, 10), max(2, trials // 2 - concurrent + 1))
    return SearchPlan(space.sampler, trials, concurrent, len(space.initial_points), startup)


def optuna_sampler(space: SearchSpace):
    import optuna

    plan = search_plan(space)
    if space.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=space.seed, population_size=plan.startup)
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=space.seed)
    return optuna.samplers.TPESampler(seed=space.seed, multivariate=True, n_startup_trials=plan.startup)


def optuna_search(space: SearchSpace):
    """Tune's OptunaSearch over the space, multi-objective (pass@k up, mean tokens down).

    What Optuna is told about a trial: the values in the trial's last report, which Tune hands to
    `on_trial_complete`. Every report of the learner carries its latest evaluation, so Optuna
    learns each trial's *latest* evaluation (its final checkpoint, or the last one before a
    scheduler stopped it), not its best: "best" has no meaning for two objectives without a
    weighting, and the best of several noisy evaluations is biased upward (the winner's curse
    the test split exists to avoid). Every evaluated checkpoint still competes for the front.
    """
    from ray.tune.search.optuna import OptunaSearch

    maximize, minimize = space.metrics
    return OptunaSearch(
        space={k: spec.distribution() for k, spec in space.params.items()},
        metric=[maximize, minimize],  # multi-objective; metric/mode are NOT set in TuneConfig (docs/architecture.md)
        mode=["max", "min"],
        points_to_evaluate=space.initial_points or None,
        sampler=optuna_sampler(space),
    )
