"""Overlaying several sweeps' fronts: test columns with intervals when a sweep has them, else eval columns."""

from __future__ import annotations

import csv
import json
import re

import pytest

from paretorl.report.compare import comparison_figure, front_from_rows, write_comparison


def row(trial, on_front, acc, tokens, **extra):
    return {"on_front": str(on_front), "trial": trial, "step": "4", "eval/pass_at_4": str(acc), "eval/mean_tokens": str(tokens), "algo.alpha": "0.2", **extra}


def test_eval_columns_when_the_sweep_has_no_test_values():
    rows = [row("b", True, 0.7, 40), row("a", True, 0.5, 30), row("c", False, 0.9, 10)]
    front = front_from_rows("s1", rows, k=4)
    assert (front.source, front.k) == ("eval", 4)
    assert [(p["x"], p["y"]) for p in front.points] == [(30.0, 0.5), (40.0, 0.7)]  # off-front rows left out, sorted by tokens
    assert front.points[0]["y_lo"] is None and "alpha=0.2" in front.points[0]["label"]


def test_test_columns_and_intervals_win_when_present():
    test = {"k": "8", "test_pass_at_k": "0.6", "test_pass_at_k_lo": "0.5", "test_pass_at_k_hi": "0.7",
            "test_mean_tokens": "31", "test_mean_tokens_lo": "29", "test_mean_tokens_hi": "33"}
    front = front_from_rows("s2", [row("a", True, 0.5, 30, **test), row("z", False, 0.1, 90)], k=4)
    assert (front.source, front.k) == ("test", 8)
    (p,) = front.points
    assert (p["x"], p["x_lo"], p["x_hi"], p["y"], p["y_lo"], p["y_hi"]) == (31.0, 29.0, 33.0, 0.6, 0.5, 0.7)
    fig = comparison_figure([front, front_from_rows("s1", [row("a", True, 0.5, 30)], k=4)])
    with_bars, without = fig.data
    assert list(with_bars.error_y.arrayminus) == [pytest.approx(0.1)] and list(with_bars.error_x.array) == [2.0]
    assert without.error_y.array is None
    assert with_bars.name == "s2 (pass@8, test, with intervals)"


def test_write_comparison_files(tmp_path):
    fronts = [front_from_rows(name, [row("a", True, acc, 30), row("b", True, acc + 0.1, 50)], k=4) for name, acc in (("s1", 0.4), ("s2", 0.5))]
    paths = write_comparison(fronts, tmp_path)
    rows = list(csv.DictReader(open(paths["csv"])))
    assert [(r["sweep"], r["y"]) for r in rows] == [("s1", "0.4"), ("s1", "0.5"), ("s2", "0.5"), ("s2", "0.6")]
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    figure = json.loads(re.search(r'<script id="figure-json"[^>]*>(.*?)</script>', paths["html"].read_text(), re.S).group(1))
    assert [t["name"] for t in figure["data"]] == ["s1 (pass@4, eval)", "s2 (pass@4, eval)"]


def test_front_py_compares_two_sweeps_and_logs_the_comparison(tmp_path, capsys):
    """dashboards/front.py with two --sweep: by name and by run id, on a real sqlite store."""
    import importlib.util

    from mlflow import MlflowClient

    from tests.conftest import ROOT

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("paretorl", artifact_location=(tmp_path / "art").as_uri())
    test = {"k": "4", "test_pass_at_k": "0.6", "test_pass_at_k_lo": "0.5", "test_pass_at_k_hi": "0.7",
            "test_mean_tokens": "31", "test_mean_tokens_lo": "29", "test_mean_tokens_hi": "33"}
    parents = {}
    for name, rows in (("sweep-a", [row("a", True, 0.5, 30), row("b", False, 0.4, 50)]), ("sweep-b", [row("c", True, 0.55, 30, **test)])):
        run = client.create_run(exp, run_name=name, tags={"paretorl.sweep": name})
        path = tmp_path / name / "pareto_front.csv"
        path.parent.mkdir()
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
            writer.writeheader()
            writer.writerows(rows)
        client.log_artifact(run.info.run_id, str(path))
        parents[name] = run.info.run_id

    spec = importlib.util.spec_from_file_location("front_dashboard", ROOT / "dashboards" / "front.py")
    front = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(front)
    assert front.main(["--mlflow-uri", uri, "--sweep", "sweep-a", "--sweep", parents["sweep-b"], "--out", str(tmp_path / "out")]) == 0
    assert "sweep-b: 1 points on the front (test values, pass@4)" in capsys.readouterr().out

    (run,) = client.search_runs([exp], filter_string="tags.`paretorl.comparison` != ''")
    assert run.info.run_name == "compare: sweep-a vs sweep-b"
    assert run.data.tags["paretorl.comparison"] == f"{parents['sweep-a']},{parents['sweep-b']}"
    assert "| sweep-b |" in run.data.tags["mlflow.note.content"]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"fronts.csv", "fronts.html", "fronts.png"}
    assert front.main(["--mlflow-uri", uri, "--sweep", "sweep-a", "--sweep", "nope", "--out", str(tmp_path / "out")]) == 2
    assert "no sweep 'nope' in experiment 'paretorl'" in capsys.readouterr().err
