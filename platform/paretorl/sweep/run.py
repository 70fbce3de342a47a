"""A whole sweep: validate, prepare data and base policies, run Tune + Optuna, log the front and its test report.

`jobs/sweep.py` parses flags and calls `prepare` then `run`. Everything that can be checked
(search space, trial configs, task, dataset) is checked in `prepare`, before Ray starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from paretorl import storage
from paretorl.search.space import SearchSpace

console = Console()


def default_cache_dir() -> str:
    """$PARETORL_CACHE (a folder or an s3:// URI), else ~/.cache/paretorl."""
    return storage.resolve(os.environ.get("PARETORL_CACHE") or Path.home() / ".cache" / "paretorl")


@dataclass
class Prepared:
    space: SearchSpace
    task_spec: str
    sweep_dir: str | Path  # a local folder or an object-store URI (paretorl.storage)
    shared: dict  # what every trial may read: base policies and train/eval paths per setting, storage
    test_splits: dict = field(default_factory=dict)  # task setting -> test split: the final report only, never a trial


def prepare(space: SearchSpace, task_spec: str, sweep_dir: str | Path, cache_dir: str | Path) -> Prepared:
    """Task rows -> Parquet splits and base policies (cached), per setting the space can sample
    (sweep/bases.py). Raises on bad input, before Ray."""
    from paretorl.sweep.bases import prepare_bases

    bases = prepare_bases(space, task_spec, storage.join(sweep_dir, "data"), cache_dir, log=console.print)
    shared = {
        **bases.reference,  # the reference setting: the sweep's base point
        "settings": bases.settings,
        "storage": storage.resolve(storage.join(sweep_dir, "ray")),
    }
    return Prepared(space, task_spec, sweep_dir, shared, bases.test_splits)


def prepare_and_record(sweep_dir: str | Path, record: dict) -> Prepared:
    """Prepare a job's recorded sweep (raises on bad input, before Ray), then write its record.

    The record is written only once preparation succeeded, so a refused input leaves no sweep.
    """
    prep = prepare(SearchSpace.model_validate(record["space"]), record["task"], sweep_dir, record["cache_dir"])
    write_record(sweep_dir, **record)
    return prep


def base_evaluation(prep: Prepared) -> dict:
    """Held-out pass@k and tokens of the base policy (the sweep's reference point), cached beside it.

    Sampled by a rollout Serve app with the trials' own rollout settings (evaluate/remote.py): on a
    GPU profile that is vLLM on a GPU worker, not the head's CPU. Needs Ray and Serve running.
    """
    from paretorl.evaluate.remote import evaluate_model_dir
    from paretorl.search.settings import reference_config
    from paretorl.tasks import load_task, read_rows

    cfg = reference_config(prep.space, prep.task_spec)  # the setting of prep.shared's base policy and eval split
    sampler = [cfg.rollout.engine, cfg.rollout.dtype]  # the engines' numerics and random streams differ
    digest = hashlib.sha256(json.dumps([cfg.eval.model_dump(), prep.shared["eval"], sampler], sort_keys=True).encode()).hexdigest()[:12]
    key = storage.join(prep.shared["base_model"], f"base_eval-{digest}.json")
    if storage.exists(key):
        return json.loads(storage.read_text(key))
    rows = read_rows(prep.shared["eval"])[: cfg.eval.n_prompts]
    task = load_task(prep.task_spec, **cfg.task.kwargs)
    metrics = evaluate_model_dir(prep.shared["base_model"], rows, task, cfg.eval, cfg.rollout, cfg.train.seed, cfg.resources.accelerator)
    metrics["eval/step"] = 0
    storage.write_text(key, json.dumps(metrics, indent=2))
    return metrics


def dashboard_port(preferred: int = 8265) -> int:
    """Ray's usual dashboard port if it is free, else one the OS gives (another Ray may hold 8265)."""
    import socket

    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port for Ray's dashboard")


def start_ray(num_cpus: int | None, verbose: bool = True) -> str | None:
    """Connect to $RAY_ADDRESS's cluster, or start a local Ray; then Serve, without an HTTP proxy.

    Serve is started here, outside any trial's placement group: rollouts go through handles only.
    Workers' output reaches this console only if `verbose`. Returns the Ray session's folder.
    """
    import ray
    from ray import serve

    from paretorl.learner.policy import clear_stale_build_locks, extensions_dir
    from paretorl.report.console import ray_init_options

    for lock in clear_stale_build_locks(extensions_dir()):
        console.print(f"removed a stale DeepSpeed build lock left by a killed run: {lock}")
    # Ray Train gives a learner group 60 s to start, then tears it down and starts over: too short
    # for a node the autoscaler is still launching (minutes on a cloud), so it would never start.
    start_timeout = os.environ.get("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "900")
    runtime_env = {"env_vars": {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": start_timeout}}
    if os.environ.get("RAY_ADDRESS"):
        context = ray.init(runtime_env=runtime_env, **ray_init_options(verbose))
    else:
        # With the dashboard: Ray's State API lives there, and Ray Train's PlacementGroupCleaner asks it
        # whether a trial's controller is dead; without it a trial Tune stops (MO-ASHA, a budget) keeps
        # its learners' placement group, and later trials wait for CPUs forever. The workers are told
        # where it is: left to find it, they give up when another Ray runs on the machine.
        port = dashboard_port()
        runtime_env["env_vars"]["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
        # Ray Train starts a preemption watcher actor per trial (a process polling for cloud drain
        # notices every 5 s, ~2.4 CPU-s per trial here, mostly its start); one machine is never preempted.
        runtime_env["env_vars"]["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
        context = ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=True, dashboard_port=port,
                           runtime_env=runtime_env, **ray_init_options(verbose))
    serve.start(proxy_location="Disabled")
    return context.address_info.get("session_dir")


def same_sweep(sweep_dir: str | Path, record: dict, keys: tuple[str, ...]) -> str | None:
    """None if `sweep_dir` is free or holds this very sweep (so running again resumes it), else why not."""
    previous = read_record(sweep_dir)
    if previous:
        differs = [k for k in keys if previous.get(k) != record.get(k)]
        if differs:
            return f"{sweep_dir} holds a sweep named {record['name']!r} with a different {', '.join(differs)}; pick another --name, or continue it with --resume {sweep_dir}"
    elif not storage.is_empty(sweep_dir):
        return f"{sweep_dir} exists and is not a ParetoRL sweep (no sweep.json); pick another --name"
    return None


RECORD = "sweep.json"  # what --resume needs: the validated space, task, tracking store, parent run


def write_record(sweep_dir: str | Path, **fields) -> dict:
    """Create or update the sweep's record (atomic replace)."""
    record = {**read_record(sweep_dir), **fields}
    storage.write_text(storage.join(sweep_dir, RECORD), json.dumps(record, indent=2))
    return record


def read_record(sweep_dir: str | Path) -> dict:
    path = storage.join(sweep_dir, RECORD)
    return json.loads(storage.read_text(path)) if storage.exists(path) else {}


def run(prep: Prepared, tracking_uri: str, experiment: str, name: str, arms: list[dict] | None = None) -> dict:
    """Run the sweep's trials under Tune and log them to MLflow; returns the front and every point.

    With `arms` (a list of {dotted param: value}), exactly those trials run, in that order, instead
    of the ones Optuna proposes: a designed experiment (jobs/reproduce.py) on the same path.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from paretorl.config import flatten
    from paretorl.report.console import stop_progress
    from paretorl.report.final_front import report_on_test
    from paretorl.report.mlflow_view import space_markdown
    from paretorl.report.search_progress import log_test_front_hypervolume
    from paretorl.report.tracking import MLflowSweepLogger, ensure_experiment
    from paretorl.search.space import optuna_search, search_plan
    from paretorl.sweep.cluster import TRIAL_DRIVER_RESOURCES
    from paretorl.sweep.trial import run_trial
    from paretorl.sweep.tune_extras import tune_extras

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
    note = {"name": name, "knobs": list(space.params), "space_md": space_markdown(space)}  # the parent run's description
    extras = tune_extras(space, prep.sweep_dir, tracking_uri, parent_id, base_eval)  # scheduler, CPU budget, hypervolume trace
    logger = MLflowSweepLogger(
        tracking_uri, exp_id, parent_id, (maximize, minimize), storage.join(prep.sweep_dir, "trials_state.json"),
        base_point={"trial": "base", "step": 0, **base_eval}, note=note, end_tags=extras.end_tags,
    )
    logger.refresh_front()  # the base point and the description, before the first trial reports

    if arms is None:
        plan = search_plan(space)
        console.print(plan.describe())
        if plan.warning():
            console.print(f"[yellow]warning:[/yellow] {plan.warning()}")
        searcher = optuna_search(space)
        param_space, num_samples = None, space.budget.trials
    else:  # each point replaces one sample: num_samples = len(arms) runs exactly the arms
        keys = sorted({k for arm in arms for k in arm})
        param_space = {k: tune.choice(sorted({arm[k] for arm in arms if k in arm}, key=str)) for k in keys}
        # Tune applies max_concurrent_trials to a Searcher only, not to this generator: set it here
        searcher = BasicVariantGenerator(points_to_evaluate=[dict(a) for a in arms], max_concurrent=space.budget.max_concurrent)
        num_samples = len(arms)
    base = deep_copy_trial(space, prep.task_spec)
    trainable = tune.with_resources(tune.with_parameters(run_trial, base=base, shared=prep.shared), TRIAL_DRIVER_RESOURCES)
    tune_storage = storage.ray_storage(storage.join(prep.sweep_dir, "tune"))
    restore = storage.ray_storage(storage.join(prep.sweep_dir, "tune", name))
    if tune.Tuner.can_restore(restore["storage_path"], storage_filesystem=restore.get("storage_filesystem")):
        # finished trials stay finished; unfinished ones continue from their checkpoints
        tuner = tune.Tuner.restore(restore["storage_path"], trainable, resume_unfinished=True, resume_errored=False, restart_errored=False,
                                   storage_filesystem=restore.get("storage_filesystem"))
    else:
        tuner = _new_tuner(trainable, searcher, space, tune_storage, name, logger, param_space, num_samples, extras)
    started = time.time()
    try:
        grid = tuner.fit()
    except BaseException:  # Ctrl-C or a driver error: the parent run must not stay RUNNING forever
        stop_progress()
        client.set_terminated(parent_id, status="KILLED")
        raise
    # the record on disk is current whichever copy of the callback ran (a restored Tuner unpickles its own)
    logger = MLflowSweepLogger(tracking_uri, exp_id, parent_id, (maximize, minimize), logger.state_path, note=note)
    eval_front = logger.refresh_front()
    try:  # the eval front's checkpoints and the base policy on the test split: the reported front
        report = report_on_test(prep, logger.points, eval_front, client, parent_id, log=console.print)
        logger.describe_test_front(report["front"], report["base"])
    except BaseException:
        client.set_terminated(parent_id, status="FAILED")
        raise
    log_test_front_hypervolume(space, prep.sweep_dir, tracking_uri, parent_id, report["front"])
    client.set_terminated(parent_id, status="FINISHED")
    errors = {r.metrics.get("trial_id", "?"): str(r.error).splitlines()[-1] if str(r.error) else repr(r.error) for r in grid if r.error}
    return {**report, "eval_front": eval_front, "points": logger.points, "errors": errors or logger.errors, "seconds": time.time() - started,
            "parent_run_id": parent_id, "experiment_id": exp_id, "trials": len(grid)}


def _new_tuner(trainable, searcher, space: SearchSpace, tune_storage: dict, name: str, logger, param_space: dict | None, num_samples: int, extras):
    from ray import tune

    from paretorl.report.console import ProgressView

    progress = ProgressView(*space.metrics, steps=space.trial_config({}).train.steps)

    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=extras.scheduler, num_samples=num_samples, max_concurrent_trials=space.budget.max_concurrent),
        run_config=tune.RunConfig(
            name=name,
            **tune_storage,  # storage_path (and storage_filesystem for object storage)
            callbacks=[logger, progress, *extras.callbacks],
            stop=extras.stop,
            verbose=0,  # our ProgressView replaces Tune's table; per-evaluation lines come from the MLflow logger
        ),
    )


def deep_copy_trial(space: SearchSpace, task_spec: str) -> dict:
    """The fixed part of every trial's config (JSON-safe), with the task chosen for the sweep."""
    return json.loads(json.dumps(space.trial_config({}, {"task": {"name": task_spec}}).model_dump()))


def print_front(front: list[dict], maximize: str, minimize: str, params: list[str], cutoff: list[dict] | None = None, base: dict | None = None) -> None:
    """The reported front (test values with 95% intervals) as a table; see report/final_front.py."""
    from paretorl.report.final_front import front_table

    # at least 160 columns: in a log (80 by default) or a narrow terminal rich would cut the intervals to "0.1…"
    wide = Console(file=console.file, width=max(console.width, 160), color_system=console.color_system)
    wide.print(front_table(front, maximize, minimize, params, cutoff, base))
