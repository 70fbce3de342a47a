"""Search benchmark: hypervolume of the sweep's front against the CPU-seconds its trials used.

Methods, each on the same task and space (default: arith, searchspaces/default.yaml), per seed:
  random       Optuna's RandomSampler, `--random-trials` full trials; what it uses is the budget
  tpe          multi-objective TPE sized for the budget (below), stopped at the budget
  tpe_moasha   the same TPE with MO-ASHA early stopping (grace = eval.every, eta 3), stopped at the budget
  nsga2        NSGA-II (Optuna's default population), stopped at the budget: only with --methods

Equal compute: the budget B is the median, over seeds, of the CPU-seconds random search used for
its trials; every other method's sweep ends when its trials have used B (`budget.cpu_seconds`), so
a method that stops trials early runs more of them. CPU-seconds are trial wall time x the CPUs
its learner and rollout replicas reserve (paretorl/search/hypervolume.py). Hypervolume: the eval
front's share of the box between (pass@k 1, 0 tokens) and the reference (pass@k 0, eval
max_new_tokens), the base policy included, as logged in `sweep/hypervolume`.

Searcher sizing: the product's rule (search/space.py `search_plan`) for the trials random search
runs, not for the trial cap a budgeted run gets (which would leave TPE random for its budget).

Every method-seed run is a sweep of its own (`<out>/runs/<method>-s<seed>`, one process and one
local Ray each, experiment `paretorl-bench-search` in `<out>/mlflow.db`), so a crash loses one
run; running the same command again skips finished runs and resumes an interrupted one.

Output: a table, `<out>/search_hv.png` (hypervolume against CPU-seconds, per method), and as the
LAST line one JSON object: {"task", "budget_cpu_s", "seeds", "hv": {method: [per seed]},
"cpu_to_match_random": {method: median}, ...}, where cpu_to_match_random is the CPU a method needs
to reach random search's final median hypervolume, over B (lower is better; null if never reached).

  python benchmarks/search.py                  # 3 seeds x random, tpe, tpe_moasha
  python benchmarks/search.py --quick          # 1 seed, tiny trials: the whole path in minutes
  python benchmarks/search.py --methods random,tpe,tpe_moasha,nsga2 --seeds 5
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))  # runs from a checkout

METHODS = ("random", "tpe", "tpe_moasha", "nsga2")
EXPERIMENT = "paretorl-bench-search"
QUICK = {  # jobs/sweep.py --smoke-test's trials, 4 steps: every method's path (rungs at step 2) in minutes
    "trial": {
        "task": {"n_train": 400, "n_eval": 16, "n_test": 32},
        "sft": {"steps": 150, "n_demos": 1500},
        "train": {"steps": 4, "prompts_per_step": 8, "samples_per_prompt": 4},
        "eval": {"every": 2, "n_prompts": 16, "n_samples": 4, "test_samples": 4},
    },
    "initial_points": [],  # else every method would spend the tiny budget on the same fixed points
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default=str(ROOT / "searchspaces" / "default.yaml"), help="search space (default: searchspaces/default.yaml)")
    p.add_argument("--task", default=None, help="task (default: the space file's, else arith)")
    p.add_argument("--methods", default="random,tpe,tpe_moasha", help=f"comma-separated, from {', '.join(METHODS)}; random is always run")
    p.add_argument("--seeds", type=int, default=3, help="seeds per method (default 3)")
    p.add_argument("--random-trials", type=int, default=12, help="trials of random search; their CPU-seconds are the budget (default 12)")
    p.add_argument("--steps", type=int, default=None, help="RL steps per trial (default: the space file's); longer trials leave early stopping more to save")
    p.add_argument("--grace", type=int, default=None, help="MO-ASHA's grace period in steps, its first rung (default: eval.every)")
    p.add_argument("--max-trials-factor", type=float, default=4.0, help="a budgeted method may start this many times --random-trials (default 4)")
    p.add_argument("--retries", type=int, default=1, help="resume a run that died this many times before giving up (default 1)")
    p.add_argument("--quick", action="store_true", help="1 seed, 4 random trials of 4 steps, tiny evaluations, no initial points: minutes")
    p.add_argument("--out", default=None, help="output folder (default: runs/bench-search[-quick])")
    p.add_argument("--cache-dir", default=None, help="SFT cache (default: $PARETORL_CACHE or ~/.cache/paretorl)")
    p.add_argument("--_one", dest="one", default=None, help=argparse.SUPPRESS)  # internal: run one sweep in this process
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.random_trials = 1, 4
    args.methods = ["random", *[m for m in args.methods.split(",") if m and m != "random"]]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown methods {unknown}; valid: {', '.join(METHODS)}")
    args.out = Path(args.out or ROOT / "runs" / ("bench-search-quick" if args.quick else "bench-search")).resolve()
    return args


# --- one method-seed run ---------------------------------------------------------------------
def run_space(args, method: str, seed: int, budget: float | None) -> dict:
    """The space file of one run: the benchmark's space with the method's sampler, scheduler and budget."""
    from paretorl.config import deep_merge

    space = yaml.safe_load(Path(args.space).read_text())
    if args.quick:
        space = deep_merge(space, QUICK)
    space = deep_merge(space, {
        "sampler": "tpe" if method.startswith("tpe") else method,
        "seed": seed,
        "trial": {"train": {"seed": seed}},
        "budget": {"trials": args.random_trials if budget is None else math.ceil(args.random_trials * args.max_trials_factor)},
    })
    if args.steps:
        space = deep_merge(space, {"trial": {"train": {"steps": args.steps}}})
    if budget is not None:
        space["budget"]["cpu_seconds"] = round(budget, 1)
    if method == "tpe_moasha":
        every = space.get("trial", {}).get("eval", {}).get("every", 4)
        space["scheduler"] = {"type": "moasha", "grace_steps": args.grace or every, "reduction_factor": 3}
    return space


def search_plan(args, space: dict):
    """The searcher's plan (startup trials or population) for the trials random search runs."""
    from paretorl.search.space import SearchSpace, search_plan

    return search_plan(SearchSpace.model_validate({**space, "budget": {**space["budget"], "trials": args.random_trials, "cpu_seconds": None}}))


def size_searcher_for(trials: int) -> None:
    """From now on, this process's sweeps size their sampler for `trials`, whatever their budget.trials."""
    import paretorl.search.space as space_mod

    product_sampler = space_mod.optuna_sampler

    def sized(space):  # optuna_search looks optuna_sampler up at call time
        return product_sampler(space.model_copy(update={"budget": space.budget.model_copy(update={"trials": trials})}))

    space_mod.optuna_sampler = sized


def run_one(spec_json: str) -> int:
    """In a child process: size the searcher for `sized_trials` if given, then jobs/sweep.py's main."""
    import importlib.util

    spec = json.loads(spec_json)
    if spec["sized_trials"]:
        size_searcher_for(spec["sized_trials"])
    loader = importlib.util.spec_from_file_location("sweep_job", ROOT / "jobs" / "sweep.py")
    job = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(job)
    return job.main(spec["argv"])


def ensure_run(args, method: str, seed: int, budget: float | None) -> dict:
    """Run (or resume, or skip if done) one method-seed sweep; its summary."""
    name = f"{method}-s{seed}"
    sweep_dir = args.out / "runs" / name
    done = sweep_dir / "bench_run.json"
    if done.exists():
        summary = json.loads(done.read_text())
        if budget is not None and summary.get("budget") != round(budget, 1):
            raise SystemExit(f"{name} was run with a budget of {summary.get('budget')} CPU-s, now {budget:.1f} (other random runs?): use another --out")
        return summary
    space = run_space(args, method, seed, budget)
    space_path = args.out / "spaces" / f"{name}.yaml"
    space_path.parent.mkdir(parents=True, exist_ok=True)
    space_path.write_text(yaml.safe_dump(space, sort_keys=False))
    argv = ["--space", str(space_path), "--name", name, "--output-dir", str(args.out / "runs"),
            "--mlflow-uri", f"sqlite:///{args.out / 'mlflow.db'}", "--experiment", EXPERIMENT]
    argv += ["--task", args.task] if args.task else []
    argv += ["--cache-dir", args.cache_dir] if args.cache_dir else []
    sized = args.random_trials if budget is not None else None
    plan = f", {search_plan(args, space).describe()} (sized for {sized} trials)" if sized else ""
    print(f"== {name}: {f'budget {budget:.0f} CPU-s' if budget else f'{args.random_trials} trials'}{plan} ({sweep_dir})", flush=True)
    started = time.time()
    log = args.out / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(args.retries + 1):  # the same command resumes the sweep where it died
        with open(log, "a") as out:
            proc = subprocess.run([sys.executable, __file__, "--_one", json.dumps({"argv": argv, "sized_trials": sized})],
                                  stdout=out, stderr=subprocess.STDOUT, cwd=args.out, check=False)
        if proc.returncode == 0:
            break
        print(f"{name} failed (exit {proc.returncode}, attempt {attempt + 1} of {args.retries + 1}); its output: {log}", flush=True)
    else:
        raise SystemExit(f"{name} failed {args.retries + 1} times; its output: {log}; the same command resumes it")
    summary = {**summarize_run(sweep_dir, method, seed, time.time() - started), "budget": None if budget is None else round(budget, 1),
               "test_hv": test_hypervolume(args.out / "mlflow.db", name)}
    done.write_text(json.dumps(summary, indent=1))
    return summary


def summarize_run(sweep_dir: Path, method: str, seed: int, wall_s: float) -> dict:
    from paretorl.search.hypervolume import read_trace
    from paretorl.search.stopping import SCHEDULER_STATE, TRACE_FILE

    trace = read_trace(sweep_dir / TRACE_FILE)
    trials = json.loads((sweep_dir / "trials_state.json").read_text())["runs"]
    moasha = sweep_dir / SCHEDULER_STATE
    stopped = len(json.loads(moasha.read_text())["stopped"]) if moasha.exists() else 0
    return {"method": method, "seed": seed, "wall_s": round(wall_s, 1), "cpu_seconds": trace["cpu_seconds"],
            "trials": len(trials), "stopped_at_rung": stopped, "trace": trace["trace"]}


def test_hypervolume(db: Path, run_name: str) -> float | None:
    """The sweep's `sweep/test_hypervolume` (its reported front re-evaluated on the test split), from
    its MLflow parent run; None where the sweep logged none."""
    from mlflow.tracking import MlflowClient

    from paretorl.report.search_progress import TEST_HV_METRIC

    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{run_name}'") if experiment else []
    values = [r.data.metrics[TEST_HV_METRIC] for r in runs if TEST_HV_METRIC in r.data.metrics]
    return round(values[0], 4) if values else None


# --- the comparison ----------------------------------------------------------------------------
def hv_at(trace: list[list[float]], cpu: float) -> float:
    """The hypervolume a trace had reached by `cpu` CPU-seconds (0 before its first point)."""
    return max((hv for c, hv in trace if c <= cpu), default=0.0)


def cpu_to_reach(trace: list[list[float]], target: float, limit: float) -> float | None:
    """The CPU-seconds at which a trace first reaches `target` within `limit`, else None."""
    return next((c for c, hv in trace if hv >= target - 1e-12 and c <= limit), None)


def median_or_none(values: list[float | None]) -> float | None:
    """Median with None as 'never' (+inf); None if the median itself is never."""
    m = statistics.median([math.inf if v is None else v for v in values])
    return None if math.isinf(m) else m


def compare(runs: dict[str, list[dict]], budget: float) -> dict:
    """Per method: final hypervolume per seed (at the budget), and CPU to match random, over the budget."""
    random_final = statistics.median(hv_at(r["trace"], math.inf) for r in runs["random"])
    hv = {m: [round(hv_at(r["trace"], math.inf if m == "random" else budget), 4) for r in rs] for m, rs in runs.items()}
    per_seed = {m: [None if (c := cpu_to_reach(r["trace"], random_final, budget)) is None else round(c / budget, 3) for r in rs]
                for m, rs in runs.items() if m != "random"}
    test_hv = {m: [r.get("test_hv") for r in rs] for m, rs in runs.items()}
    return {"random_final_median_hv": round(random_final, 4), "hv": hv, "test_hv": test_hv,
            "cpu_to_match_random": {m: median_or_none(v) for m, v in per_seed.items()}, "cpu_to_match_random_per_seed": per_seed}


def plot(runs: dict[str, list[dict]], budget: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (method, rs) in enumerate(runs.items()):
        color = f"C{i}"
        for j, r in enumerate(rs):
            xs = [c for c, _ in r["trace"]] + [max(r["cpu_seconds"], budget)]
            ys = [hv for _, hv in r["trace"]] + [r["trace"][-1][1]]
            ax.step(xs, ys, where="post", color=color, alpha=0.8, label=method if j == 0 else None)
    ax.axvline(budget, color="gray", ls="--", lw=1, label="budget (random's CPU)")
    ax.set_xlabel("cumulative trial CPU-seconds (reserved)")
    ax.set_ylabel("hypervolume of the eval front")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(runs: dict[str, list[dict]], result: dict) -> None:
    print("\n| method | hypervolume at budget, per seed | CPU to match random / budget, per seed (median) | test-front hypervolume, per seed | trials (stopped at a rung) | wall s |")
    print("|---|---|---|---|---|---|")
    for method, rs in runs.items():
        match = result["cpu_to_match_random_per_seed"].get(method)
        match_s = "-" if match is None else f"{', '.join('never' if v is None else f'{v:.2f}' for v in match)} ({result['cpu_to_match_random'][method]})"
        trials = ", ".join(f"{r['trials']} ({r['stopped_at_rung']})" for r in rs)
        test = ", ".join("-" if v is None else f"{v:.4f}" for v in result["test_hv"][method])
        print(f"| {method} | {', '.join(f'{v:.4f}' for v in result['hv'][method])} | {match_s} | {test} | {trials} | {sum(r['wall_s'] for r in rs):.0f} |")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.one:
        return run_one(args.one)
    from paretorl.search.space import load_space

    space = load_space(args.space)
    task = args.task or space.task or "arith"
    seeds = list(range(args.seeds))
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    runs = {"random": [ensure_run(args, "random", s, None) for s in seeds]}
    budget = statistics.median(r["cpu_seconds"] for r in runs["random"])
    print(f"budget: {budget:.0f} CPU-seconds (median of random search's {args.random_trials} trials over {len(seeds)} seeds)", flush=True)
    for method in args.methods[1:]:
        runs[method] = [ensure_run(args, method, s, budget) for s in seeds]
    result = compare(runs, budget)
    plot(runs, budget, args.out / "search_hv.png")
    print_table(runs, result)
    print(f"\nplot: {args.out / 'search_hv.png'}; runs: {args.out / 'runs'}; benchmark took {time.time() - started:.0f} s")
    out = {"task": task, "budget_cpu_s": round(budget, 1), "seeds": seeds, "hv": result["hv"],
           "cpu_to_match_random": result["cpu_to_match_random"], "cpu_to_match_random_per_seed": result["cpu_to_match_random_per_seed"],
           "test_hv": result["test_hv"], "random_final_median_hv": result["random_final_median_hv"], "random_trials": args.random_trials,
           "steps": args.steps, "grace": args.grace, "quick": args.quick}
    (args.out / "results.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
