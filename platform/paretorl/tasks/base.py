"""The task plugin interface.

A task is any class with these three methods (built-in tasks use the same interface):

    generate(split: str, n: int, seed: int) -> list[dict]   rows with at least "prompt" and "answer"
    score(row: dict, completion: str) -> bool                 the verifier
    demonstrate(row: dict, rng: random.Random) -> str         a correct worked solution (SFT warm start)

`split` is "train", "eval" (selection during a sweep) or "test" (the final report only); the
splits must not share prompts. `generate` is deterministic in (split, n, seed). A task written
for "train" and "eval" only (its `generate` raises ValueError on "test") still works: its test
prompts are carved from a larger eval draw (`tasks/data.py:write_splits`). Row values must be Parquet-friendly (str, int, float, bool) and every row has
the same columns; "prompt" and "answer" are non-empty strings. Rows come back from Parquet with
all their columns, so `score` and `demonstrate` may rely on any column `generate` wrote.

The completion passed to `score` is the decoded response text, without the prompt and without
the EOS token. `score` must be cheap, must never raise and must never hang on any text: it runs
on every sampled response, in non-main threads (Ray Train loops, Serve replicas), so it may not
use `signal.alarm`. `demonstrate(row, rng)` must return a completion that `score` accepts.

A plugin needs no paretorl import: `examples/tasks/reverse.py` is a complete one.
"""

from __future__ import annotations

import hashlib
import random
from typing import Protocol, runtime_checkable

SPLITS = ("train", "eval", "test")
EVAL_PERCENT = 10  # share of the problem space (by prompt hash) reserved for "eval"
TEST_PERCENT = 10  # the next share, reserved for "test" (taken from train's: eval stays as it was)


@runtime_checkable
class Task(Protocol):
    def generate(self, split: str, n: int, seed: int) -> list[dict]: ...

    def score(self, row: dict, completion: str) -> bool: ...

    def demonstrate(self, row: dict, rng: random.Random) -> str: ...


def check_split(split: str) -> None:
    """ValueError unless `split` is one of SPLITS."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")


def split_of(prompt: str) -> str:
    """The split a prompt belongs to, from a stable hash of its text.

    Generators draw problems and keep those whose prompt falls in the requested split, so the
    three splits are disjoint by construction whatever the seeds and sizes, and each
    difficulty level keeps the same share of problems in each split.
    """
    bucket = int.from_bytes(hashlib.blake2b(prompt.encode(), digest_size=8).digest(), "big") % 100
    if bucket < EVAL_PERCENT:
        return "eval"
    return "test" if bucket < EVAL_PERCENT + TEST_PERCENT else "train"


def split_rng(task: str, split: str, seed: int) -> random.Random:
    """A generator's RNG: independent per (task, split, seed), stable across Python runs."""
    check_split(split)
    return random.Random(f"{task}:{split}:{seed}")  # str seeds are hashed with SHA-512


def check_attempts(attempts: int, n: int, task: str) -> None:
    """Stop a generator that keeps drawing problems it has to reject: its problem space (at
    these knobs, in this split) is too small or empty."""
    if attempts > 1000 + 100 * n:
        raise ValueError(f"{task}: {attempts} draws gave fewer than {n} usable problems; "
                         "the problem space at these settings is too small")
