"""Task names a sweep can use, and loading user tasks from a file or a module.

A task spec is one of:

    arith                           a registered name (TASKS)
    path/to/file.py:ClassName       a class in a Python file (relative to the cwd)
    package.module:ClassName        a class in an importable module
    path/to/data.jsonl | .parquet   a dataset file with question/answer columns (`files.FileTask`)

Processes other than the driver (Ray workers, Tune trials, whose cwd Tune may change) should
receive the spec from `resolve_spec` and call `load_task` themselves rather than receive a
task object: a class loaded from a file lives in a module no other process can import.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from paretorl.tasks.arith import ArithTask
from paretorl.tasks.files import FileTask, is_data_file
from paretorl.tasks.maze import MazeTask
from paretorl.tasks.wordproblems import WordProblemTask

REQUIRED_METHODS = ("generate", "score", "demonstrate")

TASKS: dict[str, type] = {}


class TaskLoadError(ValueError):
    """A task spec that cannot be turned into a task; the message names the problem."""


def register_task(name: str, cls: type) -> type:
    """Make `cls` loadable as `name`; a name already taken is a ValueError."""
    if name in TASKS:
        raise ValueError(f"task {name!r} is already registered (as {TASKS[name].__qualname__})")
    _check_methods(cls, name)
    TASKS[name] = cls
    return cls


def load_task(spec: str, **kwargs):
    """Instantiate the task named by `spec` with `kwargs` (its knobs, e.g. max_ops=3)."""
    cls = load_task_class(spec)
    try:
        return FileTask(spec, **kwargs) if cls is FileTask else cls(**kwargs)
    except TypeError as e:
        raise TaskLoadError(f"cannot construct task {spec!r} with {kwargs}: {e}") from e


def load_task_class(spec: str) -> type:
    """The class named by `spec` (see module doc), checked for the three task methods."""
    if spec in TASKS:
        return TASKS[spec]
    if is_data_file(spec):
        return FileTask
    if ":" not in spec:
        raise TaskLoadError(
            f"unknown task {spec!r}; valid names: {', '.join(TASKS)}; "
            "or give path/to/file.py:ClassName, package.module:ClassName or a data file (.jsonl, .parquet)"
        )
    where, _, name = spec.rpartition(":")
    module = _import_file(where) if _is_file(where) else _import_module(where)
    cls = getattr(module, name, None)
    if cls is None:
        found = sorted(k for k, v in vars(module).items() if isinstance(v, type) and not k.startswith("_"))
        raise TaskLoadError(f"no class {name!r} in {where}; classes there: {', '.join(found) or 'none'}")
    if not isinstance(cls, type):
        raise TaskLoadError(f"{spec} is a {type(cls).__name__}, not a class")
    _check_methods(cls, spec)
    return cls


def resolve_spec(spec: str) -> str:
    """`spec` with a file path made absolute, so that it loads from any working directory."""
    if is_data_file(spec):
        return str(Path(spec).resolve())
    where, sep, name = spec.rpartition(":")
    if sep and _is_file(where):
        return f"{Path(where).resolve()}:{name}"
    return spec


def _is_file(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


def _import_file(where: str):
    path = Path(where).resolve()
    if not path.is_file():
        raise TaskLoadError(f"task file not found: {where} (resolved to {path})")
    # One module name per file path, so loading the same file twice gives the same classes.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    mod_name = f"paretorl_user_task_{path.stem}_{digest}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    module_spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[mod_name] = module  # dataclasses and pickling look the module up by name
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[mod_name]
        raise TaskLoadError(f"error while importing task file {where}: {type(e).__name__}: {e}") from e
    return module


def _import_module(where: str):
    try:
        return importlib.import_module(where)
    except ImportError as e:
        raise TaskLoadError(f"cannot import task module {where!r}: {e}") from e


def _check_methods(cls: type, spec: str) -> None:
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(cls, m, None))]
    if missing:
        raise TaskLoadError(
            f"{spec} is not a task: missing method(s) {', '.join(missing)} "
            f"(a task needs {', '.join(REQUIRED_METHODS)}; see paretorl/tasks/base.py)"
        )


register_task("arith", ArithTask)
register_task("maze", MazeTask)
register_task("wordproblems", WordProblemTask)
