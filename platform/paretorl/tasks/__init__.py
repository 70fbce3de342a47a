"""Verifiable tasks: built-in generators (arith, maze, wordproblems), user plugins, dataset
files, and their Parquet splits.

    task = load_task("arith", max_ops=3)            # or "path/to/file.py:Class", "pkg.mod:Class", "data.jsonl"
    paths = write_splits(task, "runs/data/arith", n_train=2000, n_eval=200, seed=0)
    rows = read_rows(paths["eval"])
    task.score(rows[0], completion), task.demonstrate(rows[0], random.Random(0))

The interface a task implements is in `paretorl.tasks.base`.
"""

from paretorl.tasks.arith import ArithTask
from paretorl.tasks.base import SPLITS, Task
from paretorl.tasks.data import read_rows, validate_rows, write_splits
from paretorl.tasks.files import FileTask, NoDemonstrationsError
from paretorl.tasks.maze import MazeTask
from paretorl.tasks.registry import TASKS, TaskLoadError, load_task, load_task_class, register_task, resolve_spec
from paretorl.tasks.wordproblems import WordProblemTask

__all__ = [
    "SPLITS", "TASKS", "ArithTask", "FileTask", "MazeTask", "NoDemonstrationsError", "Task", "TaskLoadError",
    "WordProblemTask", "load_task",
    "load_task_class", "read_rows", "register_task", "resolve_spec", "validate_rows", "write_splits",
]
