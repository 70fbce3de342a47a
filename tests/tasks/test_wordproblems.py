"""The generated word-problem task and the math-verify grader with a time limit."""

from __future__ import annotations

import random
import threading

import pytest

from paretorl.tasks import load_task, write_splits, read_rows
from paretorl.tasks.base import split_of
from paretorl.tasks.grading import INSTRUCTION, MathGrader, last_boxed, normalize_gold
from paretorl.tasks.wordproblems import WordProblemTask, _parse_step

OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}


@pytest.fixture(scope="module")
def rows():
    return WordProblemTask().generate("train", 300, seed=0)


def test_rows_are_word_problems_with_the_papers_instruction(rows):
    for row in rows:
        story, instruction = row["prompt"].rsplit("\n", 1)
        assert instruction == INSTRUCTION
        assert story.endswith("?") and len(story.split(". ")) >= 2  # several sentences, a question
        assert 2 <= row["difficulty"] <= 4
        assert int(row["answer"]) >= 0


def test_answer_is_the_last_step_and_every_step_is_integer_arithmetic(rows):
    for row in rows:
        steps = [_parse_step(s) for s in row["steps"].split(";")]
        assert len(steps) == row["difficulty"]
        for a, op, b, c in steps:
            assert OPS[op](a, b) == c and c >= 0
            if op == "/":
                assert a % b == 0
        assert steps[-1][3] == int(row["answer"])
        assert str(steps[0][0]) in row["prompt"]  # the quantities come from the story


def test_every_difficulty_and_both_story_kinds_occur(rows):
    assert {r["difficulty"] for r in rows} == {2, 3, 4}
    assert any("change" in r["prompt"] or "spend" in r["prompt"] for r in rows)
    assert any("have now" in r["prompt"] for r in rows)


def test_generation_is_deterministic_and_splits_are_disjoint():
    task = WordProblemTask()
    assert task.generate("eval", 30, seed=3) == task.generate("eval", 30, seed=3)
    assert task.generate("eval", 30, seed=3) != task.generate("eval", 30, seed=4)
    train, evals = task.generate("train", 200, 0), task.generate("eval", 30, 0)
    assert all(split_of(r["prompt"]) == "train" for r in train)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in evals}


def test_registered_and_written_to_parquet(tmp_path):
    task = load_task("wordproblems", max_ops=3)
    paths = write_splits(task, tmp_path, n_train=50, n_eval=10, seed=0, n_test=10)
    back = read_rows(paths["eval"])
    assert len(back) == 10 and max(r["difficulty"] for r in back) <= 3


def test_demonstrations_pass_the_verifier(rows):
    task, rng = WordProblemTask(), random.Random(0)
    demos = [task.demonstrate(row, rng) for row in rows[:100]]
    assert all(task.score(row, demo) for row, demo in zip(rows, demos))
    assert any("Check:" in d for d in demos) and any("Check:" not in d for d in demos)


@pytest.mark.parametrize("completion, expected", [
    ("So she has 27 left. \\boxed{27}", True),
    ("\\boxed{27.0}", True),
    ("\\boxed{27 marbles}", True),
    ("\\boxed{27\\text{ marbles}}", True),
    ("\\boxed{\\$27}", True),
    ("\\boxed{x = 27}", True),
    ("first \\boxed{26} then \\boxed{27}", True),  # the last box counts
    ("\\boxed{27} no wait \\boxed{28}", False),
    ("The answer is 27.", True),  # no box: the last number (math-verify's default extraction)
    ("27 or maybe 28", False),
    ("\\boxed{28 marbles}", False),
    ("\\boxed{27", True),  # an unclosed box is no box: the last number counts
    ("\\boxed{28", False),
    ("", False),
])
def test_score(completion, expected):
    assert WordProblemTask().score({"answer": "27"}, completion) is expected


def test_require_boxed_ignores_unboxed_numbers():
    task = WordProblemTask(require_boxed=True)
    assert not task.score({"answer": "27"}, "The answer is 27.")
    assert task.score({"answer": "27"}, "The answer is \\boxed{27}.")


def test_one_step_problems_for_very_small_models():
    rows = WordProblemTask(min_ops=1, max_ops=1).generate("train", 30, 0)
    assert {r["difficulty"] for r in rows} == {1}


def test_last_boxed_and_gold_normalisation():
    assert last_boxed("a \\boxed{\\frac{1}{2}} b") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{" + "1" * 400 + "}") is None
    assert normalize_gold("She pays 3*4=12.\n#### 1,234") == "1234"
    assert normalize_gold("so the area is $\\boxed{\\frac{\\pi}{2}}$.") == "\\frac{\\pi}{2}"
    assert normalize_gold(" $42$ ") == "42"


def test_grader_gives_up_on_an_answer_sympy_never_finishes_and_recovers():
    grader = MathGrader(timeout_s=1.0)
    try:
        assert grader.grade("1", "\\boxed{9^{9^{9^{9}}}}") is False
        assert grader.timeouts == 1
        assert grader.grade("\\frac{1}{2}", "\\boxed{0.5}") is True  # a fresh worker took over
        assert grader.timeouts == 1
    finally:
        grader.close()


def test_grader_works_outside_the_main_thread():
    """Ray Train loops and Serve replicas call score() in threads, where signal.alarm fails."""
    grader, verdicts = MathGrader(timeout_s=30.0), []
    worker = threading.Thread(target=lambda: verdicts.extend(
        [grader.grade("\\frac{1}{2}", "\\boxed{\\frac{2}{4}}"), grader.grade("3", "\\boxed{3 apples}"), grader.grade("3", "\\boxed{4}")]))
    worker.start()
    worker.join()
    grader.close()
    assert verdicts == [True, True, False]


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="min_ops"):
        WordProblemTask(min_ops=0)
    with pytest.raises(ValueError, match="verbose_prob"):
        WordProblemTask(verbose_prob=2)
