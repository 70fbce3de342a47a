"""A user's JSONL / Parquet dataset as a task: columns, answer normalisation, splits, errors."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from paretorl.tasks import FileTask, NoDemonstrationsError, load_task, read_rows, resolve_spec, write_splits
from paretorl.tasks.grading import INSTRUCTION

GSM8K = [{"question": f"Tom has {i} apples and buys {i + 1} more. How many apples does he have?",
          "answer": f"He has {i}+{i + 1}={2 * i + 1} apples.\n#### {2 * i + 1:,}"} for i in range(200, 400)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_gsm8k_jsonl_answers_are_normalised_and_the_instruction_appended(tmp_path):
    task = load_task(str(write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K)))
    assert isinstance(task, FileTask)
    rows = [r for split in ("train", "eval", "test") for r in task.generate(split, 1000, seed=0)]
    assert len(rows) == len(GSM8K)
    by_source = {r["source_row"]: r for r in rows}
    row = by_source[0]
    assert row["answer"] == "401"
    assert row["prompt"] == f"{GSM8K[0]['question']}\n{INSTRUCTION}"
    assert by_source[199]["answer"] == "799"
    assert task.score(row, "200+201=401. \\boxed{401}") and not task.score(row, "\\boxed{400}")


def test_parquet_with_math_solutions_and_prompt_answer_columns(tmp_path):
    rows = [{"prompt": f"Simplify {i}/{2 * i}. {INSTRUCTION}", "answer": f"Divide: $\\boxed{{\\frac{{1}}{{2}}}}$ ({i})"} for i in range(1, 60)]
    path = tmp_path / "math.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    task = load_task(str(path))
    got = task.generate("train", 5, seed=1)
    assert got[0]["answer"] == "\\frac{1}{2}"
    assert got[0]["prompt"].count(INSTRUCTION) == 1  # already there: not appended twice
    assert task.score(got[0], "so \\boxed{0.5}")


def test_splits_follow_the_prompt_hash_and_write_to_parquet(tmp_path):
    task = load_task(str(write_jsonl(tmp_path / "d.jsonl", GSM8K)))
    train, evals, tests = (task.generate(split, 1000, 0) for split in ("train", "eval", "test"))
    prompts = [{r["prompt"] for r in rows} for rows in (train, evals, tests)]
    assert all(prompts) and sum(map(len, prompts)) == len(set.union(*prompts))  # three disjoint, non-empty splits
    assert task.generate("train", 10, 0) == task.generate("train", 10, 0)
    assert task.generate("train", 10, 0) != task.generate("train", 10, 1)  # the seed shuffles
    paths = write_splits(task, tmp_path / "splits", n_train=50, n_eval=5, seed=0, n_test=5)
    assert [len(read_rows(paths[s])) for s in ("train", "eval", "test")] == [50, 5, 5]


def test_spec_resolves_to_an_absolute_path(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "d.jsonl", GSM8K)
    monkeypatch.chdir(tmp_path)
    assert resolve_spec("d.jsonl") == str(tmp_path / "d.jsonl")
    assert load_task("d.jsonl", prompt_key="question").generate("train", 3, 0)


@pytest.mark.parametrize("rows, match", [
    ([{"question": "q1", "answer": "#### 1"}, {"question": "q2"}], r"row 1 has no 'answer'"),
    ([{"question": "q1", "answer": "#### 1"}, {"question": " ", "answer": "2"}], r"row 1 has no 'question'"),
    ([{"text": "q1", "label": "1"}], r"row 0 has columns \['label', 'text'\]"),
    ([{"question": "q1", "answer": ["1"]}], r"row 0 field 'answer' is a list"),
])
def test_bad_rows_are_refused_naming_file_and_row(tmp_path, rows, match):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ValueError, match=match) as err:
        load_task(str(path)).generate("train", 10, 0)
    assert str(path) in str(err.value)


def test_bad_json_missing_file_and_wrong_suffix(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"question": "q", "answer": "1"}\n{not json\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        load_task(str(path)).generate("train", 1, 0)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_task(str(tmp_path / "nope.jsonl"))
    with pytest.raises(ValueError, match="expected a .jsonl or .parquet file"):
        FileTask(str(tmp_path / "data.csv"))


def test_demonstrate_is_a_clear_error(tmp_path):
    task = load_task(str(write_jsonl(tmp_path / "d.jsonl", GSM8K)))
    with pytest.raises(NoDemonstrationsError, match="model.pretrained"):
        task.demonstrate(task.generate("train", 1, 0)[0], random.Random(0))


def test_sweep_with_the_tiny_model_and_sft_refuses_a_dataset_before_compute(tmp_path):
    from paretorl.sweep.run import prepare
    from paretorl.search.space import load_space

    from tests.conftest import ROOT

    path = write_jsonl(tmp_path / "d.jsonl", GSM8K)
    space = load_space(ROOT / "searchspaces" / "default.yaml")
    with pytest.raises(NoDemonstrationsError, match="no worked solutions"):
        prepare(space, str(path), tmp_path / "sweep", tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("base-*"))  # no SFT was started
