"""Task rows on disk: a train and an eval Parquet file per task, written once, read by Ray Data."""

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


def write_splits(task, out_dir: str | os.PathLike, n_train: int, n_eval: int, seed: int) -> dict[str, str]:
    """Write `train.parquet` and `eval.parquet` under `out_dir`; return {split: path}.

    Idempotent: when `meta.json` there records the same task, knobs, sizes and seed, the files
    are reused. Eval rows whose prompt also occurs in train are dropped (built-in tasks never
    produce any; a plugin might), and an eval split left empty is an error. Files are written
    to a temporary name and renamed, so concurrent callers with the same parameters are safe.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    paths = {split: str(out / f"{split}.parquet") for split in ("train", "eval")}
    params = _jsonable({"task": f"{type(task).__module__}.{type(task).__qualname__}",
                        "knobs": _knobs(task), "n_train": n_train, "n_eval": n_eval, "seed": seed,
                        "format": FORMAT_VERSION})
    meta_path = out / META
    if meta_path.is_file() and all(Path(p).is_file() for p in paths.values()):
        try:
            if json.loads(meta_path.read_text()).get("params") == params:
                return paths
        except json.JSONDecodeError:
            pass  # a damaged meta.json: regenerate

    name = type(task).__name__
    train = task.generate("train", n_train, seed)
    validate_rows(train, f"{name}.generate('train', {n_train}, {seed})")
    evals = task.generate("eval", n_eval, seed)
    validate_rows(evals, f"{name}.generate('eval', {n_eval}, {seed})")
    seen = {row["prompt"] for row in train}
    kept = [row for row in evals if row["prompt"] not in seen]
    if not kept:
        raise ValueError(f"{name}: every eval prompt also occurs in train; make generate() keep "
                         "the splits apart (e.g. by a hash of the prompt, see tasks/base.py)")
    if len(kept) < len(evals):
        log.warning("%s: dropped %d of %d eval rows whose prompt is in train",
                    name, len(evals) - len(kept), len(evals))

    out.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("eval", kept)):
        _replace(paths[split], lambda tmp, rows=rows: pq.write_table(pa.Table.from_pylist(rows), tmp))
    meta = {"params": params, "rows": {"train": len(train), "eval": len(kept)}}
    _replace(str(meta_path), lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2) + "\n"))
    return paths


def read_rows(path: str | os.PathLike) -> list[dict]:
    """All rows of a Parquet file written by `write_splits` (a local path or an s3:// URI), as dicts."""
    import pyarrow.parquet as pq

    from paretorl import storage

    fs, inner = storage.filesystem(path)
    return pq.read_table(inner, filesystem=fs).to_pylist()


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
