"""ArithTask: generation, demonstrations, and math-verify grading (incl. threads and hostile text)."""

import random
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paretorl.tasks.arith import ArithTask, last_boxed, parse_expr, solve

TASK = ArithTask()
ROW = {"prompt": "Compute 7+5-3*2.", "answer": "6", "expr": "7+5-3*2", "difficulty": 3}


@pytest.fixture(scope="module")
def rows():
    return TASK.generate("train", 400, seed=0)


def test_solve_follows_precedence():
    assert solve([7, 5, 3, 2], ["+", "-", "*"]) == [(3, "*", 2, 6), (7, "+", 5, 12), (12, "-", 6, 6)]
    assert solve([9, 4], ["-"]) == [(9, "-", 4, 5)]
    assert parse_expr("12+3*4") == ([12, 3, 4], ["+", "*"])


def test_rows_match_python_eval(rows):
    for row in rows:
        assert row["prompt"] == f"Compute {row['expr']}."
        assert row["answer"] == str(eval(row["expr"]))  # the expression is plain Python too
        assert row["difficulty"] == len(parse_expr(row["expr"])[1])
        assert "**" not in row["expr"]  # no adjacent products
        assert all(c >= 0 for *_, c in solve(*parse_expr(row["expr"])))


def test_rows_spread_over_difficulties(rows):
    counts = {d: sum(r["difficulty"] == d for r in rows) for d in range(1, 5)}
    assert all(c > 60 for c in counts.values()), counts


def test_generate_is_deterministic_and_seeded():
    assert TASK.generate("train", 50, seed=3) == TASK.generate("train", 50, seed=3)
    assert TASK.generate("train", 50, seed=3) != TASK.generate("train", 50, seed=4)


def test_knobs_are_respected():
    task = ArithTask(min_ops=2, max_ops=2, max_operand=20, ops="+-", allow_negative=True)
    rows = task.generate("train", 200, seed=0)
    assert {r["difficulty"] for r in rows} == {2}
    assert not any("*" in r["expr"] for r in rows)
    assert max(max(parse_expr(r["expr"])[0]) for r in rows) > 9
    assert any(int(r["answer"]) < 0 for r in rows)


@pytest.mark.parametrize("bad", [dict(min_ops=0), dict(min_ops=3, max_ops=2), dict(ops="+/"),
                                 dict(max_operand=0), dict(verbose_prob=1.5)])
def test_bad_knobs_raise(bad):
    with pytest.raises(ValueError):
        ArithTask(**bad)


@pytest.mark.parametrize("completion, expected", [
    ("3*2=6. 7+5=12. 12-6=6. \\boxed{6}", True),
    ("\\boxed{6}", True),
    ("\\boxed{6.0}", True),
    ("\\boxed{ +6 }", True),
    ("\\boxed{7} no wait \\boxed{6}", True),  # the last box counts
    ("\\boxed{6} no wait \\boxed{7}", False),
    ("3*2=6. 7+5=12. 12-6=6. \\boxed{5}", False),
    ("\\boxed{-6}", False),
    ("the answer is 6", False),  # no box
    ("\\boxed{6", False),  # unclosed
    ("\\boxed{}", False),
    ("\\boxed{7+5-3*2}", False),  # boxing the question is not an answer
    ("\\boxed{12-6}", False),
    ("\\boxed{x}", False),
    ("", False),
])
def test_score(completion, expected):
    assert TASK.score(ROW, completion) is expected


def test_score_negative_answer():
    row = {**ROW, "answer": "-4"}
    assert TASK.score(row, "\\boxed{-4}") and not TASK.score(row, "\\boxed{4}")


@pytest.mark.parametrize("completion", [
    "\\boxed{9^9^9^9^9}", "\\boxed{99999999!}", "\\boxed{" + "9" * 100_000 + "}",
    "\\boxed{\\exp{\\exp{\\exp{999}}}}", "\\boxed{" * 20_000, "}{\\" * 100_000 + "\\boxed{6}",
    "1" * 1_000_000, "\\boxed{(" * 5000 + "6" + ")}" * 5000,
])
def test_hostile_completions_are_fast(completion):
    start = time.perf_counter()
    TASK.score(ROW, completion)
    assert time.perf_counter() - start < 0.5


def test_last_boxed_caps_length():
    assert last_boxed("a \\boxed{12} b") == "12"
    assert last_boxed("\\boxed{" + "1" * 41 + "}") is None
    assert last_boxed("nothing") is None


def test_grading_works_in_a_thread():
    # math-verify's default signal.alarm timeout raises outside the main thread.
    results, errors = [], []

    def grade():
        try:
            results.extend([TASK.score(ROW, "\\boxed{6}"), TASK.score(ROW, "\\boxed{5}")])
        except Exception as e:  # pragma: no cover - the failure being tested for
            errors.append(e)

    threads = [threading.Thread(target=grade) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors and results == [True, False] * 4


def test_every_demonstration_scores(rows):
    rng = random.Random(0)
    for row in rows:
        demo = TASK.demonstrate(row, rng)
        assert TASK.score(row, demo), (row, demo)


def test_verbose_demos_are_longer_and_fit_the_context(rows):
    rng = random.Random(1)
    concise = [ArithTask(verbose_prob=0.0).demonstrate(r, rng) for r in rows]
    verbose = [ArithTask(verbose_prob=1.0).demonstrate(r, rng) for r in rows]
    assert all(c.endswith(f"\\boxed{{{r['answer']}}}") for c, r in zip(concise, rows))
    ratio = sum(map(len, verbose)) / sum(map(len, concise))
    assert 1.5 <= ratio <= 2.5, ratio
    assert all(len(v) > len(c) for v, c in zip(verbose, concise))
    assert max(len(r["prompt"]) + len(v) for r, v in zip(rows, verbose)) <= 120


def test_verbose_prob_mixes_demos(rows):
    rng = random.Random(2)
    share = sum("Check:" in TASK.demonstrate(r, rng) for r in rows) / len(rows)
    assert 0.4 < share < 0.6


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="0123456789+-*/.^!{}\\boxed ", max_size=60))
def test_score_never_raises(text):
    assert TASK.score(ROW, text) in (True, False)


def test_impossible_settings_raise_instead_of_looping():
    with pytest.raises(ValueError, match="stays non-negative"):
        ArithTask(min_ops=2, max_ops=2, ops="-", max_operand=1).generate("train", 1, seed=0)
    with pytest.raises(ValueError, match="too small"):  # 3 problems in all, none of them eval
        ArithTask(max_ops=1, max_operand=1).generate("eval", 1, seed=0)
