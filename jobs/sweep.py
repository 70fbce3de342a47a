"""ParetoRL's main job: sweep RL post-training knobs and log the tokens-vs-pass@k Pareto front.

    python jobs/sweep.py                                  # embedded default on this machine
    python jobs/sweep.py --smoke-test                     # 2 short trials, a few minutes
    python jobs/sweep.py --task examples/tasks/reverse.py:Reverse --smoke-test
    ray job submit --working-dir . -- python jobs/sweep.py --space searchspaces/default.yaml

Validates the search space, trial config, task and data before Ray starts; exits non-zero
with a message naming the problem if anything is wrong.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
try:
    import paretorl  # noqa: F401
except ImportError:  # running from a checkout (e.g. `ray job submit --working-dir .`) without an install
    sys.path.insert(0, str(ROOT / "platform"))

SMOKE = {
    "budget": {"trials": 2, "max_concurrent": 2},
    "trial": {
        "task": {"n_train": 400, "n_eval": 16, "n_test": 32},
        "sft": {"steps": 150, "n_demos": 1500},
        "train": {"steps": 2, "prompts_per_step": 8, "samples_per_prompt": 4},
        "eval": {"every": 2, "n_prompts": 16, "n_samples": 4, "test_samples": 4},
    },
}


def parse_args(argv=None) -> argparse.Namespace:
    from paretorl.sweep.cli import add_run_flags

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default=str(ROOT / "searchspaces" / "default.yaml"), help="search-space YAML (default: searchspaces/default.yaml)")
    p.add_argument("--task", default=None, help="built-in task name (arith, maze, wordproblems), 'path/to/file.py:Class' / 'module:Class', or a dataset file (.jsonl/.parquet with prompt/answer columns); overrides the space file's task")
    p.add_argument("--profile", default=None, help="settings for a kind of machine: a name in profiles/ (e.g. gpu, cpu-small) or a YAML path; laid over the space file")
    p.add_argument("--smoke-test", action="store_true", help="a minimal sweep: 2 trials of 2 steps each, small SFT; minutes on 2 cores")
    add_run_flags(p, experiment="paretorl", name_default="<space>-<task>[-smoke]-<date-time>")
    p.add_argument("--trials", type=int, default=None, help="override the space's budget.trials")
    p.add_argument("--resume", default=None, metavar="SWEEP_DIR", help="continue an interrupted sweep from its folder (runs/<name>, or s3://bucket/prefix/<name>): finished trials are kept, unfinished ones continue from their checkpoints, in the same MLflow runs; other flags are taken from the sweep's record")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.resume:
        return resume(args)
    from paretorl.config import deep_merge
    from paretorl.sweep.profiles import ProfileError, load_profile, tracking_settings
    from paretorl.search.space import SpaceError, load_space

    try:
        overrides = load_profile(args.profile) if args.profile else {}
        tracking = tracking_settings(args.profile, args.mlflow_uri) if args.profile else {"uri": args.mlflow_uri, "artifact_location": None}
    except ProfileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.smoke_test:
        overrides = deep_merge(overrides, SMOKE)
    budget = {k: v for k, v in (("trials", args.trials), ("max_concurrent", args.max_concurrent)) if v is not None}
    if budget:
        overrides = deep_merge(overrides, {"budget": budget})
    try:
        space = load_space(args.space, overrides)
    except SpaceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if space.budget.max_concurrent == "auto":  # sized once Ray is up; a trial without GPUs cannot be sized
        from paretorl.sweep.cluster import gpus_per_trial

        if gpus_per_trial(space.trial_config({})) <= 0:
            print(f"error: {args.space}: budget.max_concurrent is 'auto' (from --profile {args.profile}) but a trial uses no GPUs; pass --max-concurrent N", file=sys.stderr)
            return 2
    task_spec = args.task or space.task or "arith"
    name = args.name or "-".join([Path(args.space).stem, Path(task_spec.split(":")[0]).stem, *(["smoke"] if args.smoke_test else []), time.strftime("%Y%m%d-%H%M%S")])
    from paretorl import storage

    sweep_dir = storage.join(storage.resolve(args.output_dir), name)  # a folder, or a URI: s3://bucket/prefix/<name>

    from paretorl.sweep.run import default_cache_dir, same_sweep
    from paretorl.report.tracking import resolve_tracking_uri
    from paretorl.tasks import resolve_spec

    task_spec = resolve_spec(task_spec)  # absolute file path: Tune changes the trials' cwd
    record = {
        "name": name,
        "space": space.model_dump(mode="json"),
        "task": task_spec,
        "tracking_uri": resolve_tracking_uri(tracking["uri"]),
        # with --output-dir on object storage, MLflow artifacts of a new experiment go to the same store
        "artifact_location": tracking["artifact_location"] or (storage.join(storage.resolve(args.output_dir), "mlartifacts", args.experiment) if storage.is_uri(args.output_dir) else None),
        "experiment": args.experiment,
        "cache_dir": storage.resolve(args.cache_dir) if args.cache_dir else default_cache_dir(),
    }
    problem = same_sweep(sweep_dir, record, ("space", "task", "tracking_uri", "experiment"))  # the same command again resumes
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    return launch(sweep_dir, record, args.num_cpus, args.verbose)


def resume(args) -> int:
    from paretorl import storage
    from paretorl.sweep.run import read_record

    sweep_dir = storage.resolve(args.resume)
    record = read_record(sweep_dir)
    if not record:
        print(f"error: {sweep_dir} is not a ParetoRL sweep folder (no sweep.json); it should be <output-dir>/<sweep name>", file=sys.stderr)
        return 2
    return launch(sweep_dir, record, args.num_cpus, args.verbose)


def launch(sweep_dir: str, record: dict, num_cpus: int | None, verbose: bool = False) -> int:
    """Prepare, record in `sweep_dir`/sweep.json, and run (or continue) the sweep."""
    from paretorl.report.console import link_worker_logs, quiet_driver
    from paretorl.report.mlflow_view import run_url, ui_address
    from paretorl.sweep.run import console, prepare_and_record, print_front, run, start_ray
    from paretorl.report.tracking import mlflow_ui_command
    from paretorl.tasks import TaskLoadError

    quiet_driver(verbose)
    try:
        prep = prepare_and_record(sweep_dir, record)
    except (TaskLoadError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    space, name = prep.space, record["name"]

    import ray

    started = time.time()
    logs = link_worker_logs(sweep_dir, start_ray(num_cpus, verbose))
    if space.budget.max_concurrent == "auto":
        from paretorl.sweep.cluster import gpus_per_trial, resolve_max_concurrent

        try:
            space.budget.max_concurrent = resolve_max_concurrent("auto", space.trial_config({}), ray.cluster_resources())
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        cfg = space.trial_config({})
        console.print(f"max_concurrent auto: {space.budget.max_concurrent} trials at once ({gpus_per_trial(cfg):g} {cfg.resources.accelerator} each)")
    uri = record["tracking_uri"]
    result = run(prep, uri, record["experiment"], name)
    maximize, minimize = space.metrics
    for trial_id, error in result["errors"].items():
        console.print(f"[red]trial {trial_id} failed:[/red] {error}")
    console.print(f"{result['trials']} trials, {len(result['points'])} evaluated checkpoints, sweep took {time.time() - started:.0f} s")
    if result["errors"]:
        console.print(f"[red]{len(result['errors'])} of {result['trials']} trials failed[/red] (errors above, and tagged paretorl.error on their MLflow runs)")
    console.print(f"results: {sweep_dir}" + (f" (worker logs: {logs})" if logs else ""), soft_wrap=True)
    url = run_url(ui_address(uri), result["experiment_id"], result["parent_run_id"])
    console.print(f"browse the front: {mlflow_ui_command(uri)}\n  then open {url}", soft_wrap=True)
    print_front(result["front"], maximize, minimize, list(space.params), result["cutoff"], result["base"])  # the console ends with the product
    return 0 if len(result["errors"]) < result["trials"] else 1


if __name__ == "__main__":
    sys.exit(main())
