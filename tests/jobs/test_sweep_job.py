"""jobs/sweep.py end to end: the smoke sweep, a user's task file, bad input refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, env_with_venv
from tests.conftest import run_sweep_job as run_job


def mlflow_runs(db: Path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("paretorl")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def assert_sweep_logged(db: Path, n_trials: int) -> None:
    client, parents, children = mlflow_runs(db)
    assert len(parents) == 1 and len(children) == n_trials
    parent = parents[0]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto_front.csv", "pareto_front.html", "pareto_front.png"} <= artifacts
    assert "base/pass_at_1" in parent.data.metrics
    assert "### Pareto front, on the test split" in parent.data.tags["mlflow.note.content"]  # the run's description in the UI: the reported front
    assert client.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    for child in children:
        assert child.info.status == "FINISHED"
        assert {"algo.alpha", "algo.objective", "train.lr", "algo.kl_coef"} <= set(child.data.params)
        assert child.info.run_name.startswith(f"{child.data.params['algo.objective']} alpha=")
        history = client.get_metric_history(child.info.run_id, "eval/pass_at_1")
        assert [m.step for m in history] == [2]
        assert [m.step for m in client.get_metric_history(child.info.run_id, "train/reward_mean")] == [1, 2]
        assert "eval/mean_tokens" in child.data.metrics


def test_smoke_sweep(smoke_sweep, tmp_path):
    proc = smoke_sweep.proc
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Pareto front" in proc.stdout
    assert f"mlflow ui --backend-store-uri {smoke_sweep.uri}" in proc.stdout.replace("\n", "")
    assert "?workflowType=machine_learning" in proc.stdout  # the link that opens MLflow's training view
    lines = (proc.stdout + proc.stderr).splitlines()  # the console as a person sees it
    assert len(lines) < 150, f"{len(lines)} lines; worker logs belong in runs/<name>/logs/ray:\n" + "\n".join(lines[:200])
    assert len([line for line in lines if line.startswith("[eval]")]) == 2  # one line per evaluation
    assert_sweep_logged(smoke_sweep.db, n_trials=2)
    _, _, children = mlflow_runs(smoke_sweep.db)
    assert {c.data.params["algo.objective"] for c in children} == {"grpo", "maxrl"}

    # the dashboard script rebuilds the same front from the store
    out = tmp_path / "front"
    dash = subprocess.run(
        [sys.executable, str(ROOT / "dashboards" / "front.py"), "--mlflow-uri", smoke_sweep.uri, "--out", str(out)],
        env=env_with_venv(), capture_output=True, text=True, timeout=300,
    )
    assert dash.returncode == 0, dash.stderr[-2000:]
    assert "2 evaluated checkpoints" in dash.stdout
    assert all((out / f).stat().st_size > 0 for f in ("pareto_front.csv", "pareto_front.html", "pareto_front.png", "coverage.png"))


def test_smoke_sweep_reports_the_test_front(smoke_sweep):
    """The parent run holds the test columns and the cutoff curve; the console shows the test front."""
    import csv
    import io

    import mlflow.artifacts

    from paretorl.evaluate.cutoff import CUTOFF_COLUMNS
    from paretorl.evaluate.intervals import TEST_COLUMNS

    assert smoke_sweep.proc.returncode == 0, smoke_sweep.proc.stdout[-3000:] + smoke_sweep.proc.stderr[-3000:]
    client, parents, _ = mlflow_runs(smoke_sweep.db)
    uri = parents[0].info.artifact_uri

    def rows(name):
        return list(csv.DictReader(io.StringIO(mlflow.artifacts.load_text(f"{uri}/{name}"))))

    front = rows("pareto_front.csv")
    assert {"k", *TEST_COLUMNS} <= set(front[0])
    tested = [r for r in front if r["test_pass_at_k"]]
    assert any(r["trial"] == "base" for r in tested) and len(tested) >= 2  # the base and the eval front
    assert any(r["on_front"] == "True" for r in tested) and not any(r["on_front"] == "True" for r in front if not r["test_pass_at_k"])
    for r in tested:
        v, lo, hi = (float(r[c]) for c in TEST_COLUMNS[:3])  # value, then its interval
        assert r["k"] == "4" and 0 <= lo <= v <= hi <= 1
        v, lo, hi = (float(r[c]) for c in TEST_COLUMNS[3:])
        assert 1 <= lo <= v <= hi <= 64  # eval.max_new_tokens
    cutoff = rows("cutoff_front.csv")
    assert tuple(cutoff[0]) == CUTOFF_COLUMNS and len(cutoff) >= 6
    assert all(0 <= float(r["test_pass_at_k_lo"]) <= float(r["test_pass_at_k"]) <= float(r["test_pass_at_k_hi"]) <= 1 for r in cutoff)
    out = " ".join(smoke_sweep.proc.stdout.split())  # rich wraps long lines at 80 columns in a pipe
    assert "Pareto front on the test split" in out and "(the base)" in out
    assert "searcher: tpe" in out and "random search" in out  # 2 trials cannot leave random search: warned


USER_TASK = '''
import random

class Parity:
    """Is the count of 1s in a bit string even or odd? (written for this test only)"""

    def generate(self, split, n, seed):
        rng = random.Random(f"{split}-{seed}")
        rows = []
        while len(rows) < n:
            bits = "".join(rng.choice("01") for _ in range(rng.randint(6, 14)))  # long enough that a smoke SFT does not solve it
            if (hash(bits) % 5 == 0) == (split == "eval"):
                rows.append({"prompt": f"parity {bits}", "answer": "even" if bits.count("1") % 2 == 0 else "odd"})
        return rows

    def score(self, row, completion):
        return completion.strip().split()[-1:] == [row["answer"]]

    def demonstrate(self, row, rng):
        bits = row["prompt"].split()[-1]
        return f"{bits.count('1')} ones so {row['answer']}"
'''


@pytest.mark.parametrize(
    "args, message",
    [
        (["--space", "nope.yaml"], "search space file not found: nope.yaml"),
        (["--task", "no_such_task"], "no_such_task"),
        (["--task", "missing.py:Task"], "task file not found"),
    ],
)
def test_bad_input_is_refused_before_ray_starts(tmp_path, args, message):
    proc = run_job(args + ["--output-dir", str(tmp_path / "runs")], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Started a local Ray instance" not in proc.stdout + proc.stderr


def test_help_documents_every_flag():
    proc = run_job(["--help"], cwd=ROOT, timeout=60)
    assert proc.returncode == 0
    for flag in ("--space", "--task", "--profile", "--resume", "--smoke-test", "--mlflow-uri", "--experiment", "--name", "--output-dir", "--cache-dir", "--trials", "--max-concurrent", "--num-cpus"):
        assert flag in proc.stdout


def test_an_existing_folder_is_never_overwritten(tmp_path):
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    (tmp_path / "runs" / "taken" / "notes.txt").write_text("not a sweep")
    proc = run_job(["--name", "taken", "--output-dir", str(tmp_path / "runs")], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "exists and is not a ParetoRL sweep" in proc.stderr


def test_the_same_name_with_other_settings_is_refused(tmp_path):
    import json

    sweep = tmp_path / "runs" / "taken"
    sweep.mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({"name": "taken", "space": {"params": {}}, "task": "arith"}))
    proc = run_job(["--name", "taken", "--output-dir", str(tmp_path / "runs")], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "holds a sweep named 'taken' with a different space" in proc.stderr
    assert "--resume" in proc.stderr


def test_resume_needs_a_sweep_folder(tmp_path):
    proc = run_job(["--resume", str(tmp_path)], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "is not a ParetoRL sweep folder (no sweep.json)" in proc.stderr
