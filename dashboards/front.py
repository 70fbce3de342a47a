"""Rebuild a sweep's Pareto front and coverage curves from the MLflow store.

    python dashboards/front.py --mlflow-uri sqlite:///$PWD/mlflow.db [--sweep NAME] [--out DIR]

Reads every evaluation of every trial run under the sweep's parent run (the newest parent
run if --sweep is not given), recomputes the front (pass@k up, mean tokens down) and writes
pareto_front.{csv,html,png} plus coverage.png (pass@k against k, one line per trial's last
evaluation) to --out. The sweep itself logs the same front on the parent run as it goes;
this rebuilds it for any store, e.g. after merging runs or changing k.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
try:
    import paretorl  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT / "platform"))


def collect(client, parent, k: int) -> list[dict]:
    runs = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    points = []
    for run in runs:
        histories = {
            name: {m.step: m.value for m in client.get_metric_history(run.info.run_id, name)}
            for name in run.data.metrics
            if name.startswith("eval/")
        }
        for step in sorted(histories.get(f"eval/pass_at_{k}", {})):
            point = {"trial": run.data.tags.get("paretorl.trial_id", run.info.run_name), "step": step}
            point.update({name: values[step] for name, values in histories.items() if step in values})
            point.update(run.data.params)
            points.append(point)
    return points


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mlflow-uri", required=True, help="tracking URI of the sweep's store")
    p.add_argument("--experiment", default="paretorl", help="MLflow experiment (default: paretorl)")
    p.add_argument("--sweep", default=None, help="the sweep's parent run name (default: the newest)")
    p.add_argument("--pass-k", type=int, default=4, help="k of the pass@k objective (default: 4)")
    p.add_argument("--out", default="front", help="output directory (default: ./front)")
    args = p.parse_args(argv)

    from mlflow import MlflowClient

    from paretorl.sweep.pareto import pareto_front, plot_coverage, write_front

    client = MlflowClient(args.mlflow_uri)
    exp = client.get_experiment_by_name(args.experiment)
    if exp is None:
        print(f"error: no experiment {args.experiment!r} in {args.mlflow_uri}", file=sys.stderr)
        return 2
    query = "tags.`paretorl.sweep` != ''" + (f" and tags.`paretorl.sweep` = '{args.sweep}'" if args.sweep else "")
    parents = client.search_runs([exp.experiment_id], filter_string=query, order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        print(f"error: no sweep{' named ' + repr(args.sweep) if args.sweep else ''} in experiment {args.experiment!r}", file=sys.stderr)
        return 2
    maximize, minimize = f"eval/pass_at_{args.pass_k}", "eval/mean_tokens"
    points = collect(client, parents[0], args.pass_k)
    front = pareto_front(points, maximize, minimize)
    paths = write_front(points, front, maximize, minimize, args.out)
    last = {}
    for point in points:  # each trial's last evaluation
        if point["step"] >= last.get(point["trial"], {}).get("step", -1):
            last[point["trial"]] = point
    curves = {f"{t} ({p.get('algo.objective', '?')}, alpha={p.get('algo.alpha', '?')})": {int(k.rsplit('_', 1)[1]): v for k, v in p.items() if k.startswith("eval/pass_at_")} for t, p in last.items()}
    plot_coverage(curves, Path(args.out) / "coverage.png", f"sweep {parents[0].info.run_name}: pass@k at each trial's last evaluation")
    print(f"{len(points)} evaluated checkpoints, {len(front)} on the front; wrote {', '.join(str(v) for v in paths.values())} and {Path(args.out) / 'coverage.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
