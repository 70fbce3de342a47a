"""The reported front without Ray: eval-front checkpoints and the base re-evaluated on the test
split, the artifacts on the parent run, the cutoff curve and the final table."""

import csv
import io

import pytest
from paretorl.evaluate.cutoff import CUTOFF_COLUMNS
from paretorl.evaluate.intervals import TEST_COLUMNS

MAX, MIN = "eval/pass_at_4", "eval/mean_tokens"


@pytest.fixture(scope="module")
def reported(tiny_prepared, tmp_path_factory):
    import torch
    from mlflow import MlflowClient
    from paretorl.models.build import load_policy, save_policy
    from paretorl.report.final_front import report_on_test
    from paretorl.report.tracking import ensure_experiment

    tmp = tmp_path_factory.mktemp("final")
    model, tok = load_policy(tiny_prepared.shared["base_model"])
    with torch.no_grad():  # a checkpoint that differs from the base
        for p in model.parameters():
            p.mul_(0.9)
    ckpt = save_policy(model, tok, tmp / "ckpt")
    points = [
        {"trial": "base", "step": 0, MAX: 0.5, MIN: 20.0},
        {"trial": "a", "step": 2, MAX: 0.6, MIN: 25.0, "algo.alpha": 0.2, "checkpoint": str(ckpt)},
        {"trial": "b", "step": 2, MAX: 0.7, MIN: 30.0, "algo.alpha": 0.0, "checkpoint": str(tmp / "gone")},
        {"trial": "c", "step": 2, MAX: 0.1, MIN: 40.0, "algo.alpha": 0.0, "checkpoint": str(ckpt)},
    ]
    eval_front = points[:3]  # c is dominated on eval: never tested
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    parent = client.create_run(ensure_experiment(client, "final", uri)).info.run_id
    logged = []
    report = report_on_test(tiny_prepared, points, eval_front, client, parent, log=logged.append)
    return report, points, client, parent, logged


def read_artifact(client, run_id, name):
    import mlflow.artifacts

    return mlflow.artifacts.load_text(f"{client.get_run(run_id).info.artifact_uri}/{name}")


def test_candidates_are_the_eval_front_and_the_base(reported):
    report, points, _, _, logged = reported
    base, a, b, c = points
    assert all(key in base and key in a for key in TEST_COLUMNS)
    assert not any(key in b or key in c for key in TEST_COLUMNS)  # b's checkpoint is gone; c was not on the eval front
    assert any("no checkpoint" in line and "trial b" in line for line in logged)
    assert all(p["k"] == 4 for p in points)
    assert report["base"] is base and report["front"] and all(p in (base, a) for p in report["front"])
    for p in (base, a):
        assert 0 <= p["test_pass_at_k_lo"] <= p["test_pass_at_k"] <= p["test_pass_at_k_hi"] <= 1
        assert 1 <= p["test_mean_tokens_lo"] <= p["test_mean_tokens"] <= p["test_mean_tokens_hi"] <= 48


def test_parent_run_holds_the_csvs(reported):
    report, _, client, parent, _ = reported
    names = {f.path for f in client.list_artifacts(parent)}
    assert {"pareto_front.csv", "pareto_front.html", "pareto_front.png", "cutoff_front.csv"} <= names
    rows = list(csv.DictReader(io.StringIO(read_artifact(client, parent, "pareto_front.csv"))))
    assert {"k", *TEST_COLUMNS} <= set(rows[0])
    assert sum(r["on_front"] == "True" for r in rows) == len(report["front"])
    assert {r["trial"] for r in rows if r["test_pass_at_k"]} == {"base", "a"}
    cutoff = list(csv.DictReader(io.StringIO(read_artifact(client, parent, "cutoff_front.csv"))))
    assert tuple(cutoff[0]) == CUTOFF_COLUMNS and len(cutoff) >= 6
    budgets = [int(r["budget"]) for r in cutoff]
    assert budgets == sorted(budgets)
    assert float(cutoff[-1]["test_pass_at_k"]) == pytest.approx(report["base"]["test_pass_at_k"])  # the uncut base


def test_table_shows_intervals_and_the_cutoff_verdict(reported):
    from paretorl.report.final_front import front_table
    from rich.console import Console

    report, *_ = reported
    console = Console(file=io.StringIO(), width=250)
    console.print(front_table(report["front"], MAX, MIN, ["algo.alpha"], report["cutoff"], report["base"]))
    text = console.file.getvalue()
    assert "Pareto front on the test split" in text and "(the base)" in text
    base = report["base"]
    assert f"{base['test_pass_at_k']:.3f} [{base['test_pass_at_k_lo']:.3f}, {base['test_pass_at_k_hi']:.3f}]" in text
    if any(p is not base for p in report["front"]):
        assert "beat" in text
