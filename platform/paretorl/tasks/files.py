"""A user's dataset file (JSONL or Parquet) as a task: `--task path/to/data.jsonl`.

Each row needs a question and an answer. The question column is the first present of
`prompt`, `question`, `problem` (or `prompt_key`); the answer column the first of `answer`,
`solution` (or `answer_key`). Answers are normalised (`grading.normalize_gold`): GSM8K's
``... #### 42`` becomes ``42``, a MATH solution its last ``\\boxed{...}``. The paper's instruction
is appended to every question that does not already contain it. Rows are split into train,
eval and test by a hash of the prompt (`split_of`, as the generated tasks do); `generate(split, n, seed)`
returns up to n rows of the split, shuffled by `seed`. Grading: math-verify on the last boxed
answer, with a time limit (`grading.MathGrader`).

A file holds no worked solutions, so `demonstrate` raises: use it with a pretrained model
(`model.pretrained`) and without SFT.
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from paretorl.tasks.base import check_split, split_of
from paretorl.tasks.grading import INSTRUCTION, normalize_gold, shared_grader

SUFFIXES = (".jsonl", ".parquet")
PROMPT_KEYS = ("prompt", "question", "problem")
ANSWER_KEYS = ("answer", "solution")


class NoDemonstrationsError(ValueError):
    """SFT was asked of a task that has no worked solutions (a dataset file)."""


def is_data_file(spec: str) -> bool:
    return Path(spec).suffix in SUFFIXES


@dataclass(frozen=True)
class FileTask:
    """Rows of a JSONL/Parquet file; see the module doc. `fingerprint` (size, mtime) makes the
    cached Parquet splits follow edits to the file."""

    path: str
    prompt_key: str | None = None
    answer_key: str | None = None
    instruction: str = INSTRUCTION  # appended on its own line unless the question already has it
    timeout_s: float = 5.0
    require_boxed: bool = False  # True: only a boxed answer counts; False: else the last number
    fingerprint: str = field(init=False, default="")

    def __post_init__(self):
        path = Path(self.path)
        if path.suffix not in SUFFIXES:
            raise ValueError(f"dataset {self.path}: expected a {' or '.join(SUFFIXES)} file")
        if not path.is_file():
            raise FileNotFoundError(f"dataset file not found: {self.path} (resolved to {path.resolve()})")
        stat = path.stat()
        object.__setattr__(self, "fingerprint", f"{stat.st_size}-{stat.st_mtime_ns}")

    def rows(self) -> list[dict]:
        """All rows as {"prompt", "answer", "source_row"}, validated (cached per file version)."""
        return _load(str(Path(self.path).resolve()), self.fingerprint, self.prompt_key, self.answer_key, self.instruction)

    def generate(self, split: str, n: int, seed: int) -> list[dict]:
        check_split(split)
        rows = [r for r in self.rows() if split_of(r["prompt"]) == split]
        if not rows:
            raise ValueError(f"dataset {self.path}: no rows fall in the {split!r} split (it has {len(self.rows())} rows; "
                             "about 10% of prompts go to eval and 10% to test, by a hash of the prompt)")
        random.Random(f"file:{split}:{seed}").shuffle(rows)
        return rows[:n]

    def score(self, row: dict, completion: str) -> bool:
        return shared_grader(self.timeout_s, self.require_boxed).grade(str(row["answer"]), completion)

    def demonstrate(self, row: dict, rng: random.Random) -> str:
        raise NoDemonstrationsError(
            f"dataset {self.path} has no worked solutions to fine-tune on: set model.pretrained "
            "(e.g. smollm2-135m-instruct) and leave sft.on_pretrained off, or use a task with demonstrate()"
        )


@functools.lru_cache(maxsize=8)
def _load(path: str, fingerprint: str, prompt_key: str | None, answer_key: str | None, instruction: str) -> list[dict]:
    raw = _read(path)
    if not raw:
        raise ValueError(f"dataset {path}: no rows")
    p_key = prompt_key or next((k for k in PROMPT_KEYS if k in raw[0]), None)
    a_key = answer_key or next((k for k in ANSWER_KEYS if k in raw[0]), None)
    if p_key is None or a_key is None:
        raise ValueError(f"dataset {path}: row 0 has columns {sorted(raw[0])}; need a question column "
                         f"({' / '.join(PROMPT_KEYS)}) and an answer column ({' / '.join(ANSWER_KEYS)}), "
                         "or set task.kwargs.prompt_key / answer_key")
    rows = []
    for i, row in enumerate(raw):
        for key in (p_key, a_key):
            value = row.get(key)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise ValueError(f"dataset {path}: row {i} has no {key!r} (or it is empty)")
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError(f"dataset {path}: row {i} field {key!r} is a {type(value).__name__}, not text or a number")
        question, answer = str(row[p_key]).strip(), normalize_gold(str(row[a_key]))
        if not answer:
            raise ValueError(f"dataset {path}: row {i}: answer {row[a_key]!r} is empty once normalised")
        if instruction and instruction not in question:
            question = f"{question}\n{instruction}"
        rows.append({"prompt": question, "answer": answer, "source_row": i})
    return rows


def _read(path: str) -> list[dict]:
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"dataset {path}: line {line_no} is not valid JSON: {e}") from None
            if not isinstance(row, dict):
                raise ValueError(f"dataset {path}: line {line_no} is a JSON {type(row).__name__}, not an object")
            rows.append(row)
    return rows
