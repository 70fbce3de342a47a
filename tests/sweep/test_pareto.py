"""The Pareto front of checkpoints (pass@k up, tokens down) and its artifacts."""

import csv
import itertools
import random

from paretorl.report.front_files import write_front
from paretorl.search.pareto import pareto_front

MAX, MIN = "eval/pass_at_4", "eval/mean_tokens"


def pt(trial, acc, tokens, step=4):
    return {"trial": trial, "step": step, MAX: acc, MIN: tokens, "algo.alpha": 0.1}


def brute_front(points):
    def dominated(p):
        return any(q[MAX] >= p[MAX] and q[MIN] <= p[MIN] and (q[MAX] > p[MAX] or q[MIN] < p[MIN]) for q in points)

    return [p for p in points if not dominated(p)]


def test_hand_example():
    a, b, c, d = pt("a", 0.5, 30), pt("b", 0.7, 40), pt("c", 0.6, 45), pt("d", 0.4, 20)
    front = pareto_front([a, b, c, d], MAX, MIN)
    assert [p["trial"] for p in front] == ["d", "a", "b"]  # c is dominated by b


def test_matches_brute_force_on_random_points():
    rng = random.Random(0)
    for _ in range(20):
        points = [pt(str(i), round(rng.random(), 2), rng.randint(10, 60)) for i in range(rng.randint(1, 15))]
        got = sorted(p["trial"] for p in pareto_front(points, MAX, MIN))
        assert got == sorted(p["trial"] for p in brute_front(points))


def test_points_without_values_are_skipped():
    points = [pt("a", 0.5, 30), {"trial": "b", "step": 1, MIN: 10.0}, pt("c", float("nan"), 5)]
    assert [p["trial"] for p in pareto_front(points, MAX, MIN)] == ["a"]
    assert pareto_front([], MAX, MIN) == []


def test_write_front_artifacts(tmp_path):
    points = [pt(str(i), acc, tok) for i, (acc, tok) in enumerate(itertools.product([0.2, 0.6], [20, 50]))]
    front = pareto_front(points, MAX, MIN)
    paths = write_front(points, front, MAX, MIN, tmp_path)
    rows = list(csv.DictReader(open(paths["csv"])))
    assert len(rows) == 4
    assert sum(r["on_front"] == "True" for r in rows) == len(front) == 1
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Pareto front" in paths["html"].read_text()
