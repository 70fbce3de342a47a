"""Train/eval/test disjointness for every task, and write_splits / read_rows on disk."""

import json

import pytest

from paretorl.tasks import ArithTask, MazeTask, WordProblemTask, load_task, read_rows, write_splits
from paretorl.tasks.base import split_of


@pytest.mark.parametrize("task", [ArithTask(), MazeTask(), WordProblemTask()], ids=["arith", "maze", "wordproblems"])
def test_splits_share_no_prompt(task):
    train = {r["prompt"] for r in task.generate("train", 600, seed=0)}
    evals = {r["prompt"] for r in task.generate("eval", 200, seed=1)}
    tests = {r["prompt"] for r in task.generate("test", 256, seed=0)}
    assert not train & evals and not train & tests and not evals & tests
    assert all(split_of(p) == "eval" for p in evals) and all(split_of(p) == "test" for p in tests)


@pytest.mark.parametrize("task", [ArithTask(), MazeTask()], ids=["arith", "maze"])
def test_unknown_split_is_refused(task):
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        task.generate("valid", 1, seed=0)


def test_write_splits_round_trip(tmp_path):
    task = ArithTask(max_ops=2)
    paths = write_splits(task, tmp_path / "arith", n_train=50, n_eval=20, seed=0, n_test=30)
    assert set(paths) == {"train", "eval", "test"}
    assert read_rows(paths["train"]) == task.generate("train", 50, seed=0)
    assert read_rows(paths["eval"]) == task.generate("eval", 20, seed=0)
    assert read_rows(paths["test"]) == task.generate("test", 30, seed=0)
    meta = json.loads((tmp_path / "arith" / "meta.json").read_text())
    assert meta["rows"] == {"train": 50, "eval": 20, "test": 30}
    assert meta["params"]["knobs"]["max_ops"] == 2


def test_builtin_tasks_default_to_256_test_prompts(tmp_path):
    from paretorl.config import TaskConfig

    cfg = TaskConfig()
    paths = write_splits(ArithTask(), tmp_path, cfg.n_train, cfg.n_eval, cfg.seed, n_test=cfg.n_test)
    assert cfg.n_test >= 256 and len(read_rows(paths["test"])) == cfg.n_test


def test_write_splits_is_idempotent(tmp_path):
    task = MazeTask()
    paths = write_splits(task, tmp_path, 30, 10, seed=0, n_test=10)
    stamp = {s: (tmp_path / f"{s}.parquet").stat().st_mtime_ns for s in paths}
    assert write_splits(MazeTask(), tmp_path, 30, 10, seed=0, n_test=10) == paths
    assert {s: (tmp_path / f"{s}.parquet").stat().st_mtime_ns for s in paths} == stamp
    # Any change of parameters regenerates.
    write_splits(MazeTask(), tmp_path, 30, 10, seed=1, n_test=10)
    assert read_rows(paths["train"]) == MazeTask().generate("train", 30, seed=1)
    write_splits(MazeTask(), tmp_path, 30, 10, seed=1, n_test=12)
    assert len(read_rows(paths["test"])) == 12
    write_splits(MazeTask(max_size=5), tmp_path, 30, 10, seed=1, n_test=12)
    assert max(r["size"] for r in read_rows(paths["train"])) == 5


class Overlapping:
    """A careless plugin: eval draws from the same pool as train."""

    def generate(self, split, n, seed):
        return [{"prompt": f"q{i % 5}", "answer": str(i % 5)} for i in range(n)]

    def score(self, row, completion):
        return completion == row["answer"]

    def demonstrate(self, row, rng):
        return row["answer"]


class Partial(Overlapping):
    def generate(self, split, n, seed):
        offset = {"train": 0, "eval": 3, "test": 6}[split]
        return [{"prompt": f"q{i + offset}", "answer": "1"} for i in range(n)]


def test_eval_and_test_are_deduplicated_against_earlier_splits(tmp_path):
    paths = write_splits(Partial(), tmp_path, n_train=5, n_eval=5, seed=0, n_test=6)
    assert [r["prompt"] for r in read_rows(paths["eval"])] == ["q5", "q6", "q7"]
    assert [r["prompt"] for r in read_rows(paths["test"])] == ["q8", "q9", "q10", "q11"]


class TwoSplits(Overlapping):
    """A plugin written for train and eval only, as the interface once was."""

    def generate(self, split, n, seed):
        if split not in ("train", "eval"):
            raise ValueError(f"unknown split {split!r}")
        offset = 1000 if split == "eval" else 0
        return [{"prompt": f"q{i + offset}", "answer": "1"} for i in range(n)]


def test_a_two_split_task_gets_its_test_rows_from_a_larger_eval_draw(tmp_path):
    paths = write_splits(TwoSplits(), tmp_path, n_train=5, n_eval=3, seed=0, n_test=4)
    assert [r["prompt"] for r in read_rows(paths["eval"])] == ["q1000", "q1001", "q1002"]
    assert [r["prompt"] for r in read_rows(paths["test"])] == ["q1003", "q1004", "q1005", "q1006"]


def test_fully_overlapping_splits_are_an_error(tmp_path):
    with pytest.raises(ValueError, match="every eval prompt also occurs in an earlier split"):
        write_splits(Overlapping(), tmp_path, n_train=10, n_eval=5, seed=0, n_test=5)


def test_invalid_rows_are_refused_before_writing(tmp_path):
    class NoAnswer(Overlapping):
        def generate(self, split, n, seed):
            return [{"prompt": "p", "answer": 1}]

    with pytest.raises(ValueError, match=r"NoAnswer.generate\('train', 3, 0\): row 0 field 'answer'"):
        write_splits(NoAnswer(), tmp_path / "x", 3, 3, seed=0, n_test=3)
    assert not (tmp_path / "x").exists()


def test_loaded_task_writes_splits(tmp_path):
    paths = write_splits(load_task("maze", max_size=3), tmp_path, 10, 5, seed=0, n_test=5)
    assert all(r["size"] == 3 for r in read_rows(paths["eval"]))
