"""A whole sweep: validate, prepare data and the base policy, run Tune + Optuna, log the front.

`jobs/sweep.py` parses flags and calls `prepare` then `run`. Everything that can be checked
(search space, trial configs, task, dataset) is checked in `prepare`, before Ray starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from paretorl.sweep.space import SearchSpace

console = Console()


def default_cache_dir() -> Path:
    return Path(os.environ.get("PARETORL_CACHE", Path.home() / ".cache" / "paretorl"))


@dataclass
class Prepared:
    space: SearchSpace
    task_spec: str
    sweep_dir: Path
    shared: dict  # paths and base-policy facts every trial needs


def prepare(space: SearchSpace, task_spec: str, sweep_dir: Path, cache_dir: Path) -> Prepared:
    """Task rows -> Parquet splits, base policy (cached). Raises on bad input, before Ray."""
    from paretorl.tasks import load_task, read_rows, validate_rows, write_splits

    base_cfg = space.trial_config({}, {"task": {"name": task_spec}})
    task = load_task(task_spec, **base_cfg.task.kwargs)
    data_dir = sweep_dir / "data"
    splits = write_splits(task, data_dir, base_cfg.task.n_train, base_cfg.task.n_eval, base_cfg.task.seed)
    train_rows = read_rows(splits["train"])
    eval_rows = read_rows(splits["eval"])
    validate_rows(train_rows, splits["train"])
    validate_rows(eval_rows, splits["eval"])
    if len(train_rows) < base_cfg.train.prompts_per_step:
        raise ValueError(f"{splits['train']}: {len(train_rows)} rows, fewer than train.prompts_per_step = {base_cfg.train.prompts_per_step}")
    base_model = _base_policy(task, task_spec, base_cfg, train_rows, eval_rows, cache_dir)
    shared = {
        "base_model": str(base_model),
        "train": str(Path(splits["train"]).resolve()),
        "eval": str(Path(splits["eval"]).resolve()),
        "storage": str((sweep_dir / "ray").resolve()),
    }
    return Prepared(space, task_spec, sweep_dir, shared)


def prepare_and_record(sweep_dir: Path, record: dict) -> Prepared:
    """Prepare a job's recorded sweep (raises on bad input, before Ray), then write its record.

    The record is written only once preparation succeeded, so a refused input leaves no sweep.
    """
    prep = prepare(SearchSpace.model_validate(record["space"]), record["task"], sweep_dir, Path(record["cache_dir"]))
    write_record(sweep_dir, **record)
    return prep


def _base_policy(task, task_spec: str, cfg, train_rows: list[dict], eval_rows: list[dict], cache_dir: Path) -> Path:
    """The tiny model warm-started by SFT, or the pretrained model (converted once), SFT only if asked."""
    from paretorl.models.sft import warm_start

    init = None
    if cfg.model.pretrained:
        from paretorl.models.pretrained import check_context, convert_pretrained

        init = convert_pretrained(cfg.model.pretrained, cache_dir, log=console.print)
        check_context(init, [r["prompt"] for r in train_rows + eval_rows], max(cfg.train.max_new_tokens, cfg.eval.max_new_tokens))
        if not cfg.sft.on_pretrained:
            return init
    _check_demonstrations(task, train_rows, task_spec)
    return warm_start(task, cfg.task, cfg.model, cfg.sft, train_rows, cache_dir, log=console.print, init_dir=init)


def _check_demonstrations(task, rows: list[dict], spec: str, n: int = 20) -> None:
    """A task whose own demonstrations fail its verifier would train on noise: refuse it."""
    rng = random.Random(0)
    bad = [i for i, row in enumerate(rows[:n]) if not task.score(row, task.demonstrate(row, rng))]
    if bad:
        raise ValueError(f"task {spec}: demonstrate() produced solutions that score() rejects for rows {bad[:5]} of the training split")


def base_evaluation(prep: Prepared) -> dict:
    """Held-out pass@k and tokens of the base policy (the sweep's reference point), cached."""
    from paretorl.evaluate.passk_eval import evaluate_policy
    from paretorl.models.build import load_policy
    from paretorl.rollout.engine import EmbeddedEngine
    from paretorl.tasks import load_task, read_rows

    cfg = prep.space.trial_config({}, {"task": {"name": prep.task_spec}})
    digest = hashlib.sha256(json.dumps([cfg.eval.model_dump(), prep.shared["eval"]], sort_keys=True).encode()).hexdigest()[:12]
    key = Path(prep.shared["base_model"]) / f"base_eval-{digest}.json"
    if key.exists():
        return json.loads(key.read_text())
    model, tokenizer = load_policy(prep.shared["base_model"])
    engine = EmbeddedEngine(model, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, dtype=cfg.rollout.dtype, threads=os.cpu_count())

    class _Local:  # the evaluation's rollout interface, without Serve, for the driver
        def generate(self, prompts, params, version):
            out = engine.generate(prompts, params)
            out.version = version
            return out

    rows = read_rows(prep.shared["eval"])[: cfg.eval.n_prompts]
    metrics = evaluate_policy(_Local(), 0, tokenizer, load_task(prep.task_spec, **cfg.task.kwargs), rows, cfg.eval, seed=cfg.train.seed)
    metrics["eval/step"] = 0
    key.write_text(json.dumps(metrics, indent=2))
    return metrics


def start_ray(num_cpus: int | None) -> None:
    """Connect to $RAY_ADDRESS's cluster, or start a local Ray; then Serve, without an HTTP proxy.

    Serve is started here, outside any trial's placement group: rollouts go through handles only.
    """
    import ray
    from ray import serve

    from paretorl.learner.policy import clear_stale_build_locks, extensions_dir

    for lock in clear_stale_build_locks(extensions_dir()):
        console.print(f"removed a stale DeepSpeed build lock left by a killed run: {lock}")
    runtime_env = {"env_vars": {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env=runtime_env)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, runtime_env=runtime_env)
    serve.start(proxy_location="Disabled")


def same_sweep(sweep_dir: Path, record: dict, keys: tuple[str, ...]) -> str | None:
    """None if `sweep_dir` is free or holds this very sweep (so running again resumes it), else why not."""
    previous = read_record(sweep_dir)
    if previous:
        differs = [k for k in keys if previous.get(k) != record.get(k)]
        if differs:
            return f"{sweep_dir} holds a sweep named {record['name']!r} with a different {', '.join(differs)}; pick another --name, or continue it with --resume {sweep_dir}"
    elif sweep_dir.exists() and any(sweep_dir.iterdir()):
        return f"{sweep_dir} exists and is not a ParetoRL sweep (no sweep.json); pick another --name"
    return None


RECORD = "sweep.json"  # what --resume needs: the validated space, task, tracking store, parent run


def write_record(sweep_dir: Path, **fields) -> dict:
    """Create or update the sweep's record (atomic replace)."""
    path = Path(sweep_dir) / RECORD
    record = {**read_record(sweep_dir), **fields}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)
    return record


def read_record(sweep_dir: Path) -> dict:
    path = Path(sweep_dir) / RECORD
    return json.loads(path.read_text()) if path.exists() else {}


def run(prep: Prepared, tracking_uri: str, experiment: str, name: str, arms: list[dict] | None = None) -> dict:
    """Run the sweep's trials under Tune and log them to MLflow; returns the front and every point.

    With `arms` (a list of {dotted param: value}), exactly those trials run, in that order, instead
    of the ones Optuna proposes: a designed experiment (jobs/reproduce.py) on the same path.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    from paretorl.config import flatten
    from paretorl.sweep.space import optuna_sampler
    from paretorl.sweep.stopping import tune_extras
    from paretorl.sweep.tracking import MLflowSweepLogger, ensure_experiment
    from paretorl.sweep.trial import run_trial

    space = prep.space
    maximize, minimize = space.metrics
    base_eval = base_evaluation(prep)
    prep.shared["base_eval"] = base_eval
    console.print(f"base policy on held-out prompts: pass@1 = {base_eval['eval/pass_at_1']:.3f}, {maximize} = {base_eval.get(maximize, float('nan')):.3f}, mean tokens = {base_eval['eval/mean_tokens']:.1f}")

    client = MlflowClient(tracking_uri)
    record = read_record(prep.sweep_dir)
    if record.get("parent_run_id"):  # resuming: the same parent run, the same child runs
        exp_id, parent_id = record["experiment_id"], record["parent_run_id"]
        client.update_run(parent_id, status="RUNNING")
        console.print(f"resuming sweep {name!r}: MLflow parent run {parent_id}")
    else:
        exp_id = ensure_experiment(client, experiment, tracking_uri, record.get("artifact_location"))  # a profile's tracking.artifact_location
        parent = client.create_run(exp_id, run_name=name, tags={"paretorl.sweep": name, "paretorl.task": prep.task_spec})
        parent_id = parent.info.run_id
        base_tree = space.trial_config({}, {"task": {"name": prep.task_spec}}).model_dump()
        client.log_batch(
            parent_id,
            params=[Param(k, str(v)[:6000]) for k, v in flatten(base_tree).items()] + [Param("sweep.space", json.dumps(space.model_dump(mode="json"))[:6000])],
            metrics=[Metric(f"base/{k.split('/', 1)[1]}", float(v), int(time.time() * 1000), 0) for k, v in base_eval.items()],
        )
        write_record(prep.sweep_dir, experiment_id=exp_id, parent_run_id=parent_id)
    extras = tune_extras(space, prep.sweep_dir, tracking_uri, parent_id, base_eval)  # scheduler, CPU budget, hypervolume trace
    logger = MLflowSweepLogger(
        tracking_uri, exp_id, parent_id, (maximize, minimize), prep.sweep_dir / "trials_state.json",
        base_point={"trial": "base", "step": 0, **base_eval}, end_tags=extras.end_tags,
    )

    if arms is None:
        searcher = OptunaSearch(
            space={k: spec.distribution() for k, spec in space.params.items()},
            metric=[maximize, minimize],  # multi-objective; metric/mode are NOT set in TuneConfig (design.md)
            mode=["max", "min"],
            points_to_evaluate=space.initial_points or None,
            sampler=optuna_sampler(space),
        )
        param_space, num_samples = None, space.budget.trials
    else:  # each point replaces one sample: num_samples = len(arms) runs exactly the arms
        keys = sorted({k for arm in arms for k in arm})
        param_space = {k: tune.choice(sorted({arm[k] for arm in arms if k in arm}, key=str)) for k in keys}
        # Tune applies max_concurrent_trials to a Searcher only, not to this generator: set it here
        searcher = BasicVariantGenerator(points_to_evaluate=[dict(a) for a in arms], max_concurrent=space.budget.max_concurrent)
        num_samples = len(arms)
    base = deep_copy_trial(space, prep.task_spec)
    trainable = tune.with_resources(tune.with_parameters(run_trial, base=base, shared=prep.shared), {"cpu": 0.01})
    storage = str((prep.sweep_dir / "tune").resolve())
    tune_path = str(Path(storage) / name)
    if tune.Tuner.can_restore(tune_path):  # finished trials stay finished; unfinished ones continue from their checkpoints
        tuner = tune.Tuner.restore(tune_path, trainable, resume_unfinished=True, resume_errored=False, restart_errored=False)
    else:
        tuner = _new_tuner(trainable, searcher, space, storage, name, logger, param_space, num_samples, extras)
    started = time.time()
    try:
        grid = tuner.fit()
    except BaseException:  # Ctrl-C or a driver error: the parent run must not stay RUNNING forever
        client.set_terminated(parent_id, status="KILLED")
        raise
    # the record on disk is current whichever copy of the callback ran (a restored Tuner unpickles its own)
    logger = MLflowSweepLogger(tracking_uri, exp_id, parent_id, (maximize, minimize), logger.state_path)
    front = logger.refresh_front()
    client.set_terminated(parent_id, status="FINISHED")
    errors = {r.metrics.get("trial_id", "?"): str(r.error).splitlines()[-1] if str(r.error) else repr(r.error) for r in grid if r.error}
    return {"front": front, "points": logger.points, "errors": errors or logger.errors, "seconds": time.time() - started,
            "parent_run_id": parent_id, "experiment_id": exp_id, "trials": len(grid)}


def _new_tuner(trainable, searcher, space: SearchSpace, storage: str, name: str, logger, param_space: dict | None, num_samples: int, extras):
    from ray import tune

    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=extras.scheduler, num_samples=num_samples, max_concurrent_trials=space.budget.max_concurrent),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            callbacks=[logger, *extras.callbacks],
            stop=extras.stop,
            verbose=1,  # Tune's status table; per-evaluation lines come from the MLflow logger
        ),
    )


def deep_copy_trial(space: SearchSpace, task_spec: str) -> dict:
    """The fixed part of every trial's config (JSON-safe), with the task chosen for the sweep."""
    return json.loads(json.dumps(space.trial_config({}, {"task": {"name": task_spec}}).model_dump()))


def print_front(front: list[dict], maximize: str, minimize: str, params: list[str]) -> None:
    table = Table(title=f"Pareto front: {maximize} (max) vs {minimize} (min)")
    for col in ["trial", "step", maximize.split("/")[-1], "tokens", *(k.split(".")[-1] for k in params)]:
        table.add_column(col)
    for p in front:
        values = (f"{v:.3g}" if isinstance(v, float) else str(v) for v in (p.get(k, "-") for k in params))
        table.add_row(str(p["trial"]), str(p["step"]), f"{p[maximize]:.3f}", f"{p[minimize]:.1f}", *values)
    console.print(table)
