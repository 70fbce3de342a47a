"""Task rows on disk: train, eval and test Parquet files per task, written once, read by Ray Data."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

META = "meta.json"
FORMAT_VERSION = 1


def validate_rows(rows: list[dict], source: str) -> None:
    """ValueError naming `source`, the row index and the field unless every row is a dict with
    non-empty str "prompt" and "answer" and the same columns as row 0."""
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{source}: expected a non-empty list of rows, got {type(rows).__name__} "
                         f"of length {len(rows) if hasattr(rows, '__len__') else '?'}")
    columns = None
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{source}: row {i} is a {type(row).__name__}, not a dict")
        for field in ("prompt", "answer"):
            if field not in row:
                raise ValueError(f"{source}: row {i} has no {field!r} field (fields: {sorted(row)})")
            value = row[field]
            if not isinstance(value, str):
                raise ValueError(f"{source}: row {i} field {field!r} is a {type(value).__name__}, "
                                 f"not a str: {value!r}")
            if not value.strip():
                raise ValueError(f"{source}: row {i} field {field!r} is empty")
        if columns is None:
            columns = set(row)
        elif set(row) != columns:
            raise ValueError(f"{source}: row {i} has fields {sorted(row)}, row 0 has {sorted(columns)}")


def write_splits(task, out_dir: str | os.PathLike, n_train: int, n_eval: int, seed: int, *, n_test: int) -> dict[str, str]:
    """Write `train.parquet`, `eval.parquet` and `test.parquet` under `out_dir`; return {split: path}.

    Idempotent: when `meta.json` there records the same task, knobs, sizes and seed, the files
    are reused. Rows of a later split (eval, then test) whose prompt occurs in an earlier one are
    dropped (built-in tasks never produce any; a plugin might), and a split left empty is an
    error. A task that knows no "test" split (its `generate` raises ValueError for it) gets its
    test rows from a larger eval draw, minus the eval split's prompts. Files are written to a
    temporary name and renamed, so concurrent callers with the same parameters are safe.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    paths = {split: str(out / f"{split}.parquet") for split in ("train", "eval", "test")}
    params = _jsonable({"task": f"{type(task).__module__}.{type(task).__qualname__}",
                        "knobs": _knobs(task), "n_train": n_train, "n_eval": n_eval, "n_test": n_test,
                        "seed": seed, "format": FORMAT_VERSION})
    meta_path = out / META
    if meta_path.is_file() and all(Path(p).is_file() for p in paths.values()):
        try:
            if json.loads(meta_path.read_text()).get("params") == params:
                return paths
        except json.JSONDecodeError:
            pass  # a damaged meta.json: regenerate

    name = type(task).__name__
    train = _generate(task, "train", n_train, seed)
    seen = {row["prompt"] for row in train}
    evals = _disjoint(_generate(task, "eval", n_eval, seed), seen, name, "eval")
    seen |= {row["prompt"] for row in evals}
    tests = _disjoint(_test_draw(task, n_eval, n_test, seed), seen, name, "test")[:n_test]

    out.mkdir(parents=True, exist_ok=True)
    splits = {"train": train, "eval": evals, "test": tests}
    for split, rows in splits.items():
        _replace(paths[split], lambda tmp, rows=rows: pq.write_table(pa.Table.from_pylist(rows), tmp))
    meta = {"params": params, "rows": {split: len(rows) for split, rows in splits.items()}}
    _replace(str(meta_path), lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2) + "\n"))
    return paths


def _generate(task, split: str, n: int, seed: int) -> list[dict]:
    rows = task.generate(split, n, seed)
    validate_rows(rows, f"{type(task).__name__}.generate({split!r}, {n}, {seed})")
    return rows


def _test_draw(task, n_eval: int, n_test: int, seed: int) -> list[dict]:
    """The task's own test split, or (a task written for train/eval only) a larger eval draw."""
    try:
        rows = task.generate("test", n_test, seed)
    except ValueError as e:
        log.warning("%s: no 'test' split (%s); its test prompts come from an eval draw of %d rows, minus the eval split",
                    type(task).__name__, e, n_eval + n_test)
        return _generate(task, "eval", n_eval + n_test, seed)
    validate_rows(rows, f"{type(task).__name__}.generate('test', {n_test}, {seed})")
    return rows


def _disjoint(rows: list[dict], seen: set[str], name: str, split: str) -> list[dict]:
    """`rows` without those whose prompt is in an earlier split; an empty result is an error."""
    kept = [row for row in rows if row["prompt"] not in seen]
    if not kept:
        raise ValueError(f"{name}: every {split} prompt also occurs in an earlier split; make generate() keep "
                         "the splits apart (e.g. by a hash of the prompt, see tasks/base.py)")
    if len(kept) < len(rows):
        log.warning("%s: dropped %d of %d %s rows whose prompt is in an earlier split", name, len(rows) - len(kept), len(rows), split)
    return kept


def read_rows(path: str | os.PathLike) -> list[dict]:
    """All rows of a Parquet file written by `write_splits`, as dicts."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def _replace(path: str, write) -> None:
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    write(tmp)
    os.replace(tmp, path)


def _knobs(task) -> dict:
    if dataclasses.is_dataclass(task):
        return dataclasses.asdict(task)
    return {k: v for k, v in vars(task).items() if not k.startswith("_")} if hasattr(task, "__dict__") else {}


def _jsonable(obj):
    # repr() for anything JSON cannot hold; an object's repr with an address never matches,
    # which only costs a regeneration.
    return json.loads(json.dumps(obj, sort_keys=True, default=repr))
