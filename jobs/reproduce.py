"""Reproduce the papers' headline effects on a built-in task, through the sweep's own path.

    python jobs/reproduce.py                       # maze, all three studies, 3 seeds: about an hour on 2 cores
    python jobs/reproduce.py --quick               # 1 seed, 2 steps per arm: minutes (CI)
    python jobs/reproduce.py --space searchspaces/reproduce-coverage.yaml --studies objectives
    python jobs/reproduce.py --space searchspaces/reproduce-ablation.yaml --studies ablation
    ray job submit --working-dir . -- python jobs/reproduce.py

A designed experiment instead of a search: every arm is one Tune trial (Serve rollouts, Ray
Train + DeepSpeed learner, MLflow child run), all at equal compute. Its studies (--studies,
default all three):

  objectives   the file's objectives (GRPO, MaxRL, optionally RLOO) at alpha = 0, one trial per seed
  alpha        the length penalty with RLOO for each of the file's alphas, per seed
  ablation     GRPO (advantage divided by the group std) against RLOO, both at alpha = 0.2, per seed

The fixed trial settings, the objectives, alphas and seeds are in the space file (its `params`
list the levels; every arm of a chosen study must be among them). At the end the job writes
report.md with pass@k curves, the samples-to-match ratio, tokens against pass@1 per alpha, the
ablation over training and each arm's training logs (the evidence where a claim did not show),
to the sweep folder and to the MLflow parent run (artifacts under report/), and prints the
verdicts; a study the run did not make is "not measured". Running the same command again (same
--name) resumes an interrupted run.
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

QUICK = {  # one seed, alpha 0 and 0.2 only, two steps: every study's path in minutes
    "trial": {
        "task": {"n_train": 300, "n_eval": 16, "n_test": 32},
        "sft": {"steps": 120, "n_demos": 1000},
        "train": {"steps": 2, "prompts_per_step": 4, "samples_per_prompt": 4},
        "eval": {"every": 1, "n_prompts": 8, "n_samples": 8, "test_samples": 8},
    },
    "objectives": {"pass_k": 8},
}


def parse_args(argv=None) -> argparse.Namespace:
    from paretorl.sweep.cli import add_run_flags

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default=str(ROOT / "searchspaces" / "reproduce.yaml"), help="settings and levels (default: searchspaces/reproduce.yaml)")
    p.add_argument("--task", default=None, help="built-in task (maze, arith) or any --task of jobs/sweep.py; overrides the file's task")
    p.add_argument("--quick", action="store_true", help="one seed, alpha 0 and 0.2 only, 2 steps per arm, small evaluations: the whole path in minutes")
    p.add_argument("--seeds", type=int, default=None, help="use the first N seeds of the file's train.seed levels")
    p.add_argument("--studies", type=studies_arg, default=None, metavar="LIST",
                   help="comma-separated studies to run, among objectives,alpha,ablation (default: all three)")
    p.add_argument("--report", default=None, metavar="RUN_DIR", help="only rebuild the report of a finished or interrupted run (runs/<name>) from its evaluated trials; no training")
    add_run_flags(p, experiment="paretorl-reproduce", name_default="reproduce-<task>[-quick]-<date-time>")
    return p.parse_args(argv)


def studies_arg(text: str) -> tuple[str, ...]:
    """`objectives,ablation` -> ("objectives", "ablation"); unknown names are refused by argparse (exit 2)."""
    from paretorl.evaluate.reproduction import STUDIES

    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    bad = [n for n in names if n not in STUDIES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown study {', '.join(bad) or '(none given)'}: choose among {', '.join(STUDIES)}")
    return names


def design_from(space, seeds: int | None, quick: bool, studies: tuple[str, ...] | None = None):
    """The experiment's design from the file's levels; SpaceError naming the file on a bad one."""
    from paretorl.evaluate.reproduction import ALPHA, OBJ, SEED, Design
    from paretorl.search.space import SpaceError

    missing = [k for k in (OBJ, ALPHA, SEED) if k not in space.params or space.params[k].choices is None]
    if missing:
        raise SpaceError(f"params must list categorical levels for {', '.join(missing)}")
    levels = [int(s) for s in space.params[SEED].choices]
    n = 1 if quick else (seeds or len(levels))
    if not 1 <= n <= len(levels):
        raise SpaceError(f"--seeds {n}: params.{SEED} lists {len(levels)} seeds")
    alphas = tuple(float(a) for a in space.params[ALPHA].choices)
    if quick:  # alpha 0 and the claims' alpha only
        alphas = tuple(a for a in alphas if a in (0.0, Design.ablation_alpha))
    try:
        return Design(objectives=tuple(space.params[OBJ].choices), alphas=alphas, seeds=tuple(levels[:n]), **({"studies": studies} if studies else {}))
    except ValueError as e:
        raise SpaceError(str(e)) from None


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report:
        return report(Path(args.report).resolve())
    from paretorl.config import deep_merge
    from paretorl.sweep.run import default_cache_dir, same_sweep
    from paretorl.search.space import SpaceError, load_space
    from paretorl.report.tracking import resolve_tracking_uri
    from paretorl.tasks import resolve_spec

    overrides = QUICK if args.quick else {}  # deep_merge and load_space never change their inputs
    if args.max_concurrent:
        overrides = deep_merge(overrides, {"budget": {"max_concurrent": args.max_concurrent}})
    try:
        space = load_space(args.space, overrides)
        design = design_from(space, args.seeds, args.quick, args.studies)
        arms = design.arms()
        for arm in arms:  # every arm is a valid trial, before anything runs
            space.trial_config(arm)
    except (SpaceError, ValueError) as e:
        print(f"error: {args.space}: {e}" if not str(e).startswith(str(args.space)) else f"error: {e}", file=sys.stderr)
        return 2
    task_spec = resolve_spec(args.task or space.task or "maze")
    name = args.name or "-".join(["reproduce", Path(task_spec.split(":")[0]).stem, *(["quick"] if args.quick else []), time.strftime("%Y%m%d-%H%M%S")])
    if "://" in args.output_dir:  # the report is written with plain file I/O
        print(f"error: --output-dir {args.output_dir}: jobs/reproduce.py needs a local folder (object storage is for jobs/sweep.py)", file=sys.stderr)
        return 2
    sweep_dir = (Path(args.output_dir) / name).resolve()
    record = {
        "name": name,
        "space": space.model_dump(mode="json"),
        "task": task_spec,
        "arms": arms,
        "design": design.as_record(),
        "tracking_uri": resolve_tracking_uri(args.mlflow_uri),
        "artifact_location": None,
        "experiment": args.experiment,
        "cache_dir": str(Path(args.cache_dir).resolve() if args.cache_dir else default_cache_dir()),
    }
    problem = same_sweep(sweep_dir, record, ("space", "task", "arms", "tracking_uri", "experiment"))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    return launch(sweep_dir, record, design, args)


def launch(sweep_dir: Path, record: dict, design, args) -> int:
    from paretorl.report.console import link_worker_logs, quiet_driver
    from paretorl.sweep.run import console, prepare_and_record, run, start_ray, write_record
    from paretorl.tasks import TaskLoadError

    quiet_driver(args.verbose)
    try:
        prep = prepare_and_record(sweep_dir, record)
    except (TaskLoadError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg = prep.space.trial_config({})
    studies = {
        "objectives": f"objectives {list(design.objectives)} at alpha 0",
        "alpha": f"alpha {list(design.alphas)} with {design.alpha_objective}",
        "ablation": f"ablation {design.ablation_objective} vs {design.alpha_objective} at alpha {design.ablation_alpha:g}",
    }
    console.print(
        f"{len(record['arms'])} arms on {record['task']}: {'; '.join(v for k, v in studies.items() if k in design.studies)}; "
        f"seeds {list(design.seeds)}; each {cfg.train.steps} steps x {cfg.train.prompts_per_step} prompts x {cfg.train.samples_per_prompt} samples, "
        f"evaluated on {cfg.eval.n_prompts} held-out prompts x {cfg.eval.n_samples} samples"
    )
    started = time.time()
    link_worker_logs(sweep_dir, start_ray(args.num_cpus, args.verbose))
    result = run(prep, record["tracking_uri"], record["experiment"], record["name"], arms=record["arms"])
    command = "python jobs/reproduce.py " + " ".join(sys.argv[1:]) if argv_is_cli() else "jobs/reproduce.py (in-process)"
    write_record(sweep_dir, minutes=round((time.time() - started) / 60, 1), trials=result["trials"], failed=len(result["errors"]), command=command.strip())
    for trial_id, error in result["errors"].items():
        console.print(f"[red]trial {trial_id} failed:[/red] {error}")
    report(sweep_dir)
    return 0 if len(result["errors"]) < result["trials"] else 1


def report(sweep_dir: Path) -> int:
    """Write the run's report from its record and evaluated points, log it to the parent run, print the verdicts."""
    import json

    from mlflow import MlflowClient

    from paretorl.evaluate.reproduction import Design, read_train_logs, summarize
    from paretorl.evaluate.reproduction_report import write_report
    from paretorl.sweep.run import console, read_record
    from paretorl.search.space import SearchSpace
    from paretorl.report.tracking import mlflow_ui_command

    record = read_record(sweep_dir)
    state = sweep_dir / "trials_state.json"
    if "arms" not in record or not state.exists():
        print(f"error: {sweep_dir} is not a reproduction run with evaluated trials (no sweep.json with arms, or no trials_state.json)", file=sys.stderr)
        return 2
    cfg = SearchSpace.model_validate(record["space"]).trial_config({})
    saved = json.loads(state.read_text())
    points = saved["points"]
    base = next(p for p in points if p.get("trial") == "base")
    design = Design.from_record(record)
    logs = read_train_logs(record["tracking_uri"], saved.get("runs", {}).values())
    summary = summarize(points, design, base, final_step=cfg.train.steps, train_logs=logs)
    header = {
        "name": record["name"],
        "command": f"`{record.get('command', 'python jobs/reproduce.py')}`",
        "task": record["task"],
        "studies": ", ".join(design.studies),
        "wall time": f"{record['minutes']} min for {record['trials']} trials ({record['failed']} failed)" if "minutes" in record else "not recorded (interrupted run)",
        "compute per arm": f"{cfg.train.steps} steps x {cfg.train.prompts_per_step} prompts x {cfg.train.samples_per_prompt} samples, lr {cfg.train.lr:g}, kl {cfg.algo.kl_coef:g}, "
        f"max {cfg.train.max_new_tokens} new tokens",
        "evaluation": f"{cfg.eval.n_prompts} held-out prompts x {cfg.eval.n_samples} samples at temperature {cfg.eval.temperature:g}, every {cfg.eval.every} steps",
        "MLflow": f"experiment {record['experiment']}, parent run {record.get('parent_run_id')}",
    }
    out_dir = sweep_dir / "report"
    path = write_report(summary, out_dir, header)
    if record.get("parent_run_id"):
        MlflowClient(record["tracking_uri"]).log_artifacts(record["parent_run_id"], str(out_dir), "report")
    for v in summary.verdicts:
        mark = {True: "[green]shown[/green]", False: "[red]not shown[/red]", None: "[yellow]not measured[/yellow]"}[v["shown"]]
        console.print(f"{mark}: {v['claim']}\n    {v['evidence']}")
    console.print(f"report: {path} (also on MLflow run {record.get('parent_run_id')}, under report/)")
    console.print(f"browse: {mlflow_ui_command(record['tracking_uri'])}")
    return 0


def argv_is_cli() -> bool:
    return Path(sys.argv[0]).name == "reproduce.py"


if __name__ == "__main__":
    sys.exit(main())
