"""The registry, load_task's spec forms and its errors, validate_rows."""

import pytest

from paretorl.tasks import (TASKS, ArithTask, MazeTask, Task, TaskLoadError, WordProblemTask, load_task,
                            register_task, resolve_spec, validate_rows)

GOOD = '''
class Echo:
    def generate(self, split, n, seed):
        return [{"prompt": f"say {i}", "answer": str(i)} for i in range(n)]
    def score(self, row, completion):
        return completion == row["answer"]
    def demonstrate(self, row, rng):
        return row["answer"]

class Half:
    def generate(self, split, n, seed):
        return []
'''


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "my_tasks.py"
    path.write_text(GOOD)
    return path


def test_builtin_names():
    assert TASKS == {"arith": ArithTask, "maze": MazeTask, "wordproblems": WordProblemTask}
    assert isinstance(load_task("arith"), Task)
    assert load_task("maze", max_size=5).max_size == 5


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="'arith' is already registered"):
        register_task("arith", MazeTask)
    assert TASKS["arith"] is ArithTask


def test_unknown_name_lists_valid_names():
    with pytest.raises(TaskLoadError, match="unknown task 'arth'.*arith, maze"):
        load_task("arth")


def test_bad_knob_names_the_task():
    with pytest.raises(TaskLoadError, match="cannot construct task 'arith'.*max_opps"):
        load_task("arith", max_opps=3)


def test_load_from_file(plugin):
    task = load_task(f"{plugin}:Echo")
    assert task.score({"answer": "3"}, "3")
    assert type(load_task(f"{plugin}:Echo")) is type(task)  # the file is imported once


def test_load_from_relative_file(plugin, monkeypatch):
    monkeypatch.chdir(plugin.parent)
    assert load_task("my_tasks.py:Echo").demonstrate({"answer": "1"}, None) == "1"
    assert resolve_spec("my_tasks.py:Echo") == f"{plugin}:Echo"
    assert resolve_spec("arith") == "arith"
    assert resolve_spec("paretorl.tasks.maze:MazeTask") == "paretorl.tasks.maze:MazeTask"


def test_load_from_module():
    assert isinstance(load_task("paretorl.tasks.maze:MazeTask"), MazeTask)


def test_file_not_found(tmp_path):
    with pytest.raises(TaskLoadError, match="task file not found: .*nope.py"):
        load_task(f"{tmp_path}/nope.py:Echo")


def test_no_such_class_lists_classes(plugin):
    with pytest.raises(TaskLoadError, match="no class 'Ecco' in .*classes there: Echo, Half"):
        load_task(f"{plugin}:Ecco")


def test_missing_methods_are_listed(plugin):
    with pytest.raises(TaskLoadError, match="missing method\\(s\\) score, demonstrate"):
        load_task(f"{plugin}:Half")


def test_not_a_class():
    with pytest.raises(TaskLoadError, match="not a class"):
        load_task("paretorl.tasks.arith:solve")


def test_module_not_importable():
    with pytest.raises(TaskLoadError, match="cannot import task module 'no_such_pkg.mod'"):
        load_task("no_such_pkg.mod:Task")


def test_broken_file_names_the_error(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(TaskLoadError, match="error while importing task file .*RuntimeError: boom"):
        load_task(f"{path}:X")


def test_validate_rows_accepts_good_rows():
    validate_rows([{"prompt": "p", "answer": "a", "k": 1}], "src")


@pytest.mark.parametrize("rows, message", [
    ([], "src: expected a non-empty list"),
    ([{"prompt": "p", "answer": "a"}, "row"], "src: row 1 is a str"),
    ([{"prompt": "p", "answer": "a"}, {"answer": "a"}], "src: row 1 has no 'prompt' field"),
    ([{"prompt": "p"}], "src: row 0 has no 'answer' field"),
    ([{"prompt": "p", "answer": "a"}, {"prompt": " ", "answer": "a"}], "src: row 1 field 'prompt' is empty"),
    ([{"prompt": "p", "answer": ""}], "src: row 0 field 'answer' is empty"),
    ([{"prompt": "p", "answer": 3}], "src: row 0 field 'answer' is a int"),
    ([{"prompt": "p", "answer": "a"}, {"prompt": "q", "answer": "b", "x": 1}], "src: row 1 has fields"),
])
def test_validate_rows_names_row_and_field(rows, message):
    with pytest.raises(ValueError, match=message):
        validate_rows(rows, "src")
