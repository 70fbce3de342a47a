"""Rebuild a sweep's Pareto front from the MLflow store, or overlay the fronts of several sweeps.

    python dashboards/front.py --mlflow-uri sqlite:///$PWD/mlflow.db [--sweep NAME] [--out DIR]
    python dashboards/front.py --mlflow-uri sqlite:///$PWD/mlflow.db --sweep A --sweep B [--out DIR]

One sweep (or none: the newest): reads every evaluation of every trial run under the sweep's
parent run, recomputes the front (pass@k up, mean tokens down) and writes
pareto_front.{csv,html,png} plus coverage.png (pass@k against k, one line per trial's last
evaluation) to --out. The sweep itself logs the same front on the parent run as it goes;
this rebuilds it for any store, e.g. after merging runs or changing k.

Two or more sweeps (parent run names or ids): overlays their fronts, each from its parent run's
pareto_front.csv, with the held-out test values and their intervals where the sweep has them
(else its evaluation values), writes fronts.{html,png,csv} to --out and logs them as a run of
their own ("compare: A vs B") in the first sweep's experiment. The HTML renders in MLflow's
artifact viewer too.
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


def find_sweep(client, experiment_id: str, sweep: str | None):
    """A sweep's parent run: by run id, else by name (the newest of that name), else the newest sweep."""
    from mlflow.exceptions import MlflowException

    if sweep and len(sweep) == 32 and all(c in "0123456789abcdef" for c in sweep):
        try:
            run = client.get_run(sweep)
            return run if run.data.tags.get("paretorl.sweep") else None
        except MlflowException:
            return None
    query = "tags.`paretorl.sweep` != ''" + (f" and tags.`paretorl.sweep` = '{sweep}'" if sweep else "")
    found = client.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time DESC"], max_results=1)
    return found[0] if found else None


def sweep_front(client, parent, pass_k: int):
    """A sweep's front for the overlay: its logged pareto_front.csv, else rebuilt from its trials' metrics."""
    import json
    import tempfile

    from paretorl.report.compare import front_from_rows, read_front_csv
    from paretorl.search.pareto import pareto_front

    try:  # the k the sweep optimised, from its recorded search space
        pass_k = json.loads(parent.data.params["sweep.space"])["objectives"]["pass_k"]
    except (KeyError, ValueError, TypeError):
        pass
    name = parent.info.run_name
    if any(a.path == "pareto_front.csv" for a in client.list_artifacts(parent.info.run_id)):
        with tempfile.TemporaryDirectory() as tmp:
            rows = read_front_csv(client.download_artifacts(parent.info.run_id, "pareto_front.csv", tmp))
    else:
        rows = collect(client, parent, pass_k)
        on_front = {id(p) for p in pareto_front(rows, f"eval/pass_at_{pass_k}", "eval/mean_tokens")}
        rows = [{**r, "on_front": id(r) in on_front} for r in rows]
    return front_from_rows(name, rows, pass_k)


def compare(client, parents, pass_k: int, out: Path) -> int:
    """Overlay the sweeps' fronts, write fronts.{html,png,csv} and log them as a run of their own."""
    from paretorl.report.compare import comparison_note, write_comparison
    from paretorl.report.mlflow_view import NOTE_TAG

    fronts = [sweep_front(client, parent, pass_k) for parent in parents]
    paths = write_comparison(fronts, out)
    ids = [p.info.run_id for p in parents]
    run = client.create_run(
        parents[0].info.experiment_id, run_name="compare: " + " vs ".join(f.name for f in fronts),
        tags={"paretorl.comparison": ",".join(ids), NOTE_TAG: comparison_note(fronts, ids)},
    )
    for path in paths.values():
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id)
    for front in fronts:
        print(f"{front.name}: {len(front.points)} points on the front ({front.source} values, pass@{front.k})")
    print(f"wrote {', '.join(str(v) for v in paths.values())}; logged as MLflow run {run.info.run_id}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mlflow-uri", required=True, help="tracking URI of the sweep's store")
    p.add_argument("--experiment", default="paretorl", help="MLflow experiment (default: paretorl)")
    p.add_argument("--sweep", action="append", default=[], help="a sweep's parent run name or id (default: the newest); give it twice or more to compare sweeps")
    p.add_argument("--pass-k", type=int, default=4, help="k of the pass@k objective (default: 4)")
    p.add_argument("--out", default="front", help="output directory (default: ./front)")
    args = p.parse_args(argv)

    from mlflow import MlflowClient

    from paretorl.report.front_files import plot_coverage, write_front
    from paretorl.search.pareto import pareto_front

    client = MlflowClient(args.mlflow_uri)
    exp = client.get_experiment_by_name(args.experiment)
    if exp is None:
        print(f"error: no experiment {args.experiment!r} in {args.mlflow_uri}", file=sys.stderr)
        return 2
    parents = [find_sweep(client, exp.experiment_id, s) for s in args.sweep or [None]]
    missing = [s for s, parent in zip(args.sweep or [None], parents) if parent is None]
    if missing:
        named = " or ".join(repr(s) for s in missing if s)
        print(f"error: no sweep {named + ' ' if named else ''}in experiment {args.experiment!r} (a sweep is named by its parent run's name or id)", file=sys.stderr)
        return 2
    if len(parents) > 1:
        return compare(client, parents, args.pass_k, Path(args.out))
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
