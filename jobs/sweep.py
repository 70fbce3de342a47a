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
import os
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
        "task": {"n_train": 400, "n_eval": 16},
        "sft": {"steps": 150, "n_demos": 1500},
        "train": {"steps": 2, "prompts_per_step": 8, "samples_per_prompt": 4},
        "eval": {"every": 2, "n_prompts": 16, "n_samples": 4},
    },
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default=str(ROOT / "searchspaces" / "default.yaml"), help="search-space YAML (default: searchspaces/default.yaml)")
    p.add_argument("--task", default=None, help="built-in task name (arith, maze) or 'path/to/file.py:Class' / 'module:Class'; overrides the space file's task")
    p.add_argument("--profile", default=None, help="settings for a kind of machine: a name in profiles/ (e.g. gpu, cpu-small) or a YAML path; laid over the space file")
    p.add_argument("--smoke-test", action="store_true", help="a minimal sweep: 2 trials of 2 steps each, small SFT; minutes on 2 cores")
    p.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (else $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--experiment", default="paretorl", help="MLflow experiment name (default: paretorl)")
    p.add_argument("--name", default=None, help="sweep name: the Tune run, the MLflow parent run and the folder under --output-dir (default: <space>-<task>[-smoke]-<date-time>)")
    p.add_argument("--output-dir", default="runs", help="where data splits, Tune and Train results go (default: ./runs)")
    p.add_argument("--cache-dir", default=None, help="cache of SFT base policies (default: $PARETORL_CACHE or ~/.cache/paretorl)")
    p.add_argument("--trials", type=int, default=None, help="override the space's budget.trials")
    p.add_argument("--max-concurrent", type=int, default=None, help="override the space's budget.max_concurrent")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (default: all); ignored when connecting to a cluster")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from paretorl.config import deep_merge
    from paretorl.sweep.profiles import ProfileError, load_profile
    from paretorl.sweep.space import SpaceError, load_space

    try:
        overrides = load_profile(args.profile) if args.profile else {}
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
    task_spec = args.task or space.task or "arith"
    name = args.name or "-".join([Path(args.space).stem, Path(task_spec.split(":")[0]).stem, *(["smoke"] if args.smoke_test else []), time.strftime("%Y%m%d-%H%M%S")])
    sweep_dir = (Path(args.output_dir) / name).resolve()
    if sweep_dir.exists():
        print(f"error: {sweep_dir} already holds a sweep named {name!r}; pick another --name (resuming a sweep is not supported yet)", file=sys.stderr)
        return 2

    from paretorl.sweep.run import console, default_cache_dir, prepare, print_front, run
    from paretorl.sweep.tracking import mlflow_ui_command, resolve_tracking_uri
    from paretorl.tasks import TaskLoadError, resolve_spec

    task_spec = resolve_spec(task_spec)  # absolute file path: Tune changes the trials' cwd
    try:
        prep = prepare(space, task_spec, sweep_dir, Path(args.cache_dir) if args.cache_dir else default_cache_dir())
    except (TaskLoadError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    import ray

    from paretorl.learner.policy import clear_stale_build_locks, extensions_dir

    for lock in clear_stale_build_locks(extensions_dir()):
        console.print(f"removed a stale DeepSpeed build lock left by a killed run: {lock}")
    started = time.time()
    runtime_env = {"env_vars": {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env=runtime_env)
    else:
        ray.init(num_cpus=args.num_cpus or os.cpu_count(), include_dashboard=False, runtime_env=runtime_env)
    from ray import serve

    serve.start(proxy_location="Disabled")  # rollouts go through handles only; started here, outside any trial's placement group
    uri = resolve_tracking_uri(args.mlflow_uri)
    result = run(prep, uri, args.experiment, name)
    maximize, minimize = space.metrics
    print_front(result["front"], maximize, minimize, list(space.params))
    for trial_id, error in result["errors"].items():
        console.print(f"[red]trial {trial_id} failed:[/red] {error}")
    console.print(f"{result['trials']} trials, {len(result['points'])} evaluated checkpoints, sweep took {time.time() - started:.0f} s")
    console.print(f"results: {sweep_dir}")
    console.print(f"browse the front (parent run {result['parent_run_id']}): {mlflow_ui_command(uri)}")
    return 0 if len(result["errors"]) < result["trials"] else 1


if __name__ == "__main__":
    sys.exit(main())
