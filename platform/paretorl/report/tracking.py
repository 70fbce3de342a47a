"""MLflow tracking of a sweep, from the Tune driver: one parent run, one nested run per trial.

All logging happens in the driver process (a Tune callback), so trials never contend for
the tracking store. The Pareto front on the parent run is refreshed as trials finish.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from ray.tune import Callback

from paretorl import storage
from paretorl.report.mlflow_view import NOTE_TAG, mark_training_experiment, sweep_note, trial_run_name
from paretorl.report.front_files import plot_coverage, write_front
from paretorl.search.pareto import pareto_front
from paretorl.search.stopping import STOPPED_TAG

LOGGED_PREFIXES = ("train/", "rollout/", "eval/")


def resolve_tracking_uri(cli_uri: str | None) -> str:
    """--mlflow-uri, else $MLFLOW_TRACKING_URI, else an absolute sqlite file in the cwd.

    Absolute because Tune changes a trial's working directory (docs/architecture.md).
    """
    import os

    uri = cli_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def mlflow_ui_command(uri: str) -> str:
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"


def ensure_experiment(client, name: str, uri: str, artifact_location: str | None = None) -> str:
    """The experiment's id, created if new: with `artifact_location` (e.g. s3://bucket/paretorl) if given.

    An existing experiment keeps the artifact location it was created with (MLflow cannot move it).
    """
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        mark_training_experiment(client, exp.experiment_id)
        return exp.experiment_id
    if artifact_location is None and uri.startswith("sqlite:///"):  # keep artifacts beside the database, not relative to a cwd
        artifact_location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts" / name).resolve().as_uri()
    exp_id = client.create_experiment(name, artifact_location=artifact_location)
    mark_training_experiment(client, exp_id)
    return exp_id


def coverage_from(result: dict) -> dict[int, float]:
    prefix = "eval/pass_at_"
    return {int(k[len(prefix):]): v for k, v in result.items() if k.startswith(prefix)}


class MLflowSweepLogger(Callback):
    """Tune callback: trial results -> MLflow runs, the Pareto front -> the parent run.

    Its record (`state_path`: run ids, evaluated points, curves, last logged step per trial,
    errors) is rewritten after every change, so a resumed sweep (`Tuner.restore`, which
    unpickles this callback) continues the same MLflow runs and never logs a step twice.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, metrics: tuple[str, str], state_path: str | Path, base_point: dict | None = None, note: dict | None = None,
                 end_tags=None):
        self.tracking_uri = tracking_uri
        self.note = note  # sweep_note's name, knobs and space_md: the parent run's description follows the front
        self.end_tags = end_tags  # search.stopping.EndTags: tags for a run that ends before its last step; picklable
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.maximize, self.minimize = metrics
        self.state_path = storage.resolve(state_path)  # a local file or an object-store URI
        self.runs: dict[str, str] = {}  # trial id -> MLflow run id
        self.points: list[dict] = [base_point] if base_point else []  # every evaluated checkpoint
        self.curves: dict[str, dict[str, dict[int, float]]] = {}
        self.last_step: dict[str, int] = {}
        self.errors: dict[str, str] = {}
        self._connect()

    def _connect(self) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(self.tracking_uri)
        if storage.exists(self.state_path):  # a resumed sweep: continue the record
            saved = json.loads(storage.read_text(self.state_path))
            self.runs, self.points, self.errors = saved["runs"], saved["points"], saved["errors"]
            self.curves = {t: {s: {int(k): v for k, v in c.items()} for s, c in by_step.items()} for t, by_step in saved.get("curves", {}).items()}
            self.last_step = saved.get("last_step", {})

    def __getstate__(self):
        keep = ("tracking_uri", "experiment_id", "parent_run_id", "maximize", "minimize", "state_path", "note", "end_tags")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state):
        self.__dict__.update({"note": None, "end_tags": None, **state})  # a sweep pickled before descriptions (or end tags) existed
        self.runs, self.points, self.curves, self.last_step, self.errors = {}, [], {}, {}, {}
        self._connect()

    # --- Tune hooks -------------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id in self.runs:  # resumed: the same run continues
            self.client.update_run(self.runs[trial.trial_id], status="RUNNING")
            print(f"[trial] {trial.trial_id} resumed (MLflow run {self.runs[trial.trial_id]})", flush=True)
            return
        run = self.client.create_run(
            self.experiment_id,
            run_name=trial_run_name(trial.trial_id, trial.config),
            tags={"mlflow.parentRunId": self.parent_run_id, "paretorl.trial_id": trial.trial_id},
        )
        self.runs[trial.trial_id] = run.info.run_id
        from mlflow.entities import Param

        params = [Param(k, str(v)) for k, v in sorted(trial.config.items())]
        self.client.log_batch(run.info.run_id, params=params)
        self._save()
        print(f"[trial] {trial.trial_id} started (MLflow run {run.info.run_id}): {run.info.run_name}", flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from mlflow.entities import Metric

        run_id = self.runs[trial.trial_id]
        step = int(result["step"])
        if step <= self.last_step.get(trial.trial_id, 0):
            return  # a step re-run after a retry from an older checkpoint: its first run was logged
        self.last_step[trial.trial_id] = step
        evaluated = bool(result.get("evaluated"))
        ts = int(result.get("timestamp", 0) * 1000)
        metrics = [
            Metric(k, float(v), ts, step)
            for k, v in result.items()
            if k.startswith(LOGGED_PREFIXES) and isinstance(v, (int, float)) and math.isfinite(v) and (evaluated or not k.startswith("eval/"))
        ]
        self.client.log_batch(run_id, metrics=metrics)
        self._save()
        if evaluated:
            point = {"trial": trial.trial_id, "step": step, **{k: v for k, v in result.items() if k.startswith("eval/")}}
            point.update({k: v for k, v in trial.config.items()})
            if result.get("checkpoint_path"):
                point["checkpoint"] = result["checkpoint_path"]
            self.points.append(point)
            self.curves.setdefault(trial.trial_id, {})[f"step {step}"] = coverage_from(result)
            self._save()
            print(
                f"[eval] trial {trial.trial_id} step {step}: {self.maximize} = {result.get(self.maximize, float('nan')):.3f}, "
                f"{self.minimize} = {result.get(self.minimize, float('nan')):.1f}",
                flush=True,
            )

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, "FINISHED", self.end_tags(trial.trial_id) if self.end_tags else None)

    def on_experiment_end(self, trials, **info):
        # A spent CPU budget (budget.cpu_seconds) ends the sweep with trials running, without
        # on_trial_complete: close their runs here. After a crash, end_tags says None: the runs
        # stay open for --resume to continue.
        for trial in trials:
            run_id = self.runs.get(trial.trial_id)
            tags = self.end_tags.sweep_end(trial.trial_id) if self.end_tags and run_id else None
            if tags is not None and self.client.get_run(run_id).info.status == "RUNNING":
                self._finish(trial, "FINISHED", tags)

    def on_trial_error(self, iteration, trials, trial, **info):
        message = _error_message(trial)
        self.errors[trial.trial_id] = message
        self.client.set_tag(self.runs[trial.trial_id], "paretorl.error", message[:5000])
        self._finish(trial, "FAILED")

    # --- helpers ------------------------------------------------------------------------
    def _finish(self, trial, status: str, tags: dict | None = None) -> None:
        run_id = self.runs.get(trial.trial_id)
        if run_id is None:
            return
        for key, value in (tags or {}).items():
            self.client.set_tag(run_id, key, value)
        curves = self.curves.get(trial.trial_id)
        if curves:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "coverage_curve.png"
                plot_coverage(curves, path, f"trial {trial.trial_id}: pass@k by evaluation step")
                (Path(tmp) / "coverage_curve.json").write_text(json.dumps(curves, indent=2))
                self.client.log_artifacts(run_id, tmp)
        self.client.set_terminated(run_id, status=status)
        self._save()
        stopped = (tags or {}).get(STOPPED_TAG)
        print(f"[trial] {trial.trial_id} {status.lower()}" + (f" (stopped early: {stopped})" if stopped else ""), flush=True)
        self.refresh_front()

    def refresh_front(self) -> list[dict]:
        front = pareto_front(self.points, self.maximize, self.minimize)
        if front:
            with tempfile.TemporaryDirectory() as tmp:
                write_front(self.points, front, self.maximize, self.minimize, tmp)
                self.client.log_artifacts(self.parent_run_id, tmp)
        if self.note:
            base = next((p for p in self.points if p.get("trial") == "base"), None)
            self.client.set_tag(self.parent_run_id, NOTE_TAG, sweep_note(front=front, base=base, maximize=self.maximize, minimize=self.minimize, **self.note))
        return front

    def describe_test_front(self, front: list[dict], base: dict) -> None:
        """The parent run's description shows the reported (test) front once the sweep has ended."""
        if not self.note:
            return
        as_eval = lambda p: {**p, self.maximize: p.get("test_pass_at_k"), self.minimize: p.get("test_mean_tokens")}  # noqa: E731
        split = "the test split (report only: never seen by the search; 95% intervals in pareto_front.csv)"
        note = sweep_note(front=[as_eval(p) for p in front], base=as_eval(base), maximize=self.maximize, minimize=self.minimize, split=split, **self.note)
        self.client.set_tag(self.parent_run_id, NOTE_TAG, note)

    def _save(self) -> None:
        record = {"runs": self.runs, "points": self.points, "errors": self.errors, "curves": self.curves, "last_step": self.last_step}
        storage.write_text(self.state_path, json.dumps(record, indent=1, default=str))


def _error_message(trial) -> str:
    path = getattr(trial, "error_file", None) or ""
    try:
        text = Path(path).read_text() if path else ""
    except OSError:
        text = ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    # the last line of a traceback names the exception; keep it first
    return (lines[-1] if lines else "trial failed (no error file)") + ("\n" + text[-3000:] if text else "")
