"""The example user plugin (examples/tasks/reverse.py) loads by file path and works end to end."""

import random
from pathlib import Path

from paretorl.tasks import Task, load_task, read_rows, write_splits

SPEC = str(Path(__file__).parents[2] / "examples" / "tasks" / "reverse.py") + ":Reverse"


def test_plugin_loads_and_demonstrations_score():
    task = load_task(SPEC, max_len=4)
    assert isinstance(task, Task)
    rows = task.generate("train", 200, seed=0)
    rng = random.Random(0)
    demos = [task.demonstrate(r, rng) for r in rows]
    assert all(task.score(r, d) for r, d in zip(rows, demos))
    assert any(len(d) > len(r["answer"]) for r, d in zip(rows, demos))  # some verbose ones
    assert not task.score(rows[0], rows[0]["answer"][::-1] + "x")


def test_plugin_writes_disjoint_splits(tmp_path):
    # Reverse knows train and eval only: its test rows are carved from a larger eval draw
    paths = write_splits(load_task(SPEC), tmp_path, n_train=100, n_eval=20, seed=0, n_test=30)
    train = {r["prompt"] for r in read_rows(paths["train"])}
    evals = [r["prompt"] for r in read_rows(paths["eval"])]
    tests = [r["prompt"] for r in read_rows(paths["test"])]
    assert len(evals) == 20 and not train & set(evals)
    assert tests and not (train | set(evals)) & set(tests)
