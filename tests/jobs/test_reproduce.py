"""jobs/reproduce.py --quick end to end: every arm a Tune trial, the report on disk and in MLflow."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, env_with_venv


def run_job(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "reproduce.py"), *args],
        cwd=cwd, env=env_with_venv(), capture_output=True, text=True, timeout=timeout,
    )


def test_quick_reproduction(tmp_path, cache_dir):
    proc = run_job(["--quick", "--name", "r", "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(cache_dir)], cwd=tmp_path)
    out = proc.stdout.replace("\n", " ")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for claim in ("MaxRL's pass@8 above GRPO's", "alpha = 0.2 cuts mean tokens", "dividing by the group std"):
        assert claim in out

    report_dir = tmp_path / "runs" / "r" / "report"
    report = (report_dir / "report.md").read_text()
    for needle in ("## Verdicts", "| grpo | 1 |", "| maxrl | 1 |", "| rloo | 1 |", "| 0.2 | 1 |", "grpo a=0.2: step 0:", "5 trials (0 failed)",
                   "- studies: objectives, alpha, ablation", "## Training logs", "| grpo a=0.2 | 1 |"):
        assert needle in report, needle

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("paretorl-reproduce")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    # quick: objectives x 1 seed at alpha 0, RLOO at alpha 0.2, GRPO (group std) at alpha 0.2
    arms = {(c.data.params["algo.objective"], float(c.data.params["algo.alpha"]), c.data.params["train.seed"]) for c in children}
    assert arms == {("grpo", 0.0, "0"), ("maxrl", 0.0, "0"), ("rloo", 0.0, "0"), ("rloo", 0.2, "0"), ("grpo", 0.2, "0")}
    assert all(c.info.status == "FINISHED" for c in children)
    for child in children:  # every arm evaluated after each of its 2 steps; the ablation's evidence logged per step
        assert [m.step for m in client.get_metric_history(child.info.run_id, "eval/pass_at_8")] == [1, 2]
        assert [m.step for m in client.get_metric_history(child.info.run_id, "train/all_correct_groups_frac")] == [1, 2]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/passk_curves.png", "report/alpha_tokens.png", "report/ablation.png", "report/training.png", "report/summary.json"} <= logged


def test_bad_design_is_refused_before_ray_starts(tmp_path):
    space = tmp_path / "r.yaml"
    space.write_text((ROOT / "searchspaces" / "reproduce.yaml").read_text().replace("choices: [0.0, 0.05, 0.1, 0.2, 0.4]", "choices: [0.05, 0.2]"))
    proc = run_job(["--space", str(space), "--output-dir", str(tmp_path / "runs")], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "r.yaml" in proc.stderr and "must include 0.0" in proc.stderr, proc.stderr
    proc = run_job(["--seeds", "7", "--output-dir", str(tmp_path / "runs")], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "--seeds 7" in proc.stderr and "lists 3 seeds" in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()


def load_job():
    spec = importlib.util.spec_from_file_location("reproduce_job", ROOT / "jobs" / "reproduce.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    return job


@pytest.mark.parametrize("space, studies, arms", [
    ("reproduce-coverage.yaml", ("objectives",), {("grpo", 0.0), ("maxrl", 0.0)}),
    ("reproduce-coverage-arith.yaml", ("objectives",), {("grpo", 0.0), ("maxrl", 0.0)}),
    ("reproduce-coverage-arith-1024.yaml", ("objectives",), {("grpo", 0.0), ("maxrl", 0.0)}),
    ("reproduce-ablation.yaml", ("ablation",), {("grpo", 0.2), ("rloo", 0.2)}),
    ("reproduce.yaml", None, {(o, 0.0) for o in ("grpo", "maxrl", "rloo")} | {("rloo", a) for a in (0.05, 0.1, 0.2, 0.4)} | {("grpo", 0.2)}),
])
def test_each_space_file_makes_its_studies(space, studies, arms):
    from paretorl.search.space import load_space

    job = load_job()
    design = job.design_from(load_space(ROOT / "searchspaces" / space), None, False, studies)
    assert {(a["algo.objective"], a["algo.alpha"]) for a in design.arms()} == arms
    assert len(design.seeds) >= 3


def test_studies_are_checked_before_ray_starts(tmp_path):
    proc = run_job(["--studies", "objectives,coverage", "--output-dir", str(tmp_path / "runs")], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "unknown study coverage" in proc.stderr, proc.stderr
    # the ablation file lists no alpha 0 and no MaxRL: the default (all studies) is refused, naming the study and the flag
    proc = run_job(["--space", str(ROOT / "searchspaces" / "reproduce-ablation.yaml"), "--output-dir", str(tmp_path / "runs")], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "reproduce-ablation.yaml" in proc.stderr and "the objectives study" in proc.stderr and "--studies" in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()
