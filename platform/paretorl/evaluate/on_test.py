"""A checkpoint on the test split: n samples per prompt, kept per response (the intervals and the
cutoff baseline need them), cached beside the checkpoint.

`evaluate_on_test` is the one place the sweep's report samples from a policy. It takes a
`make_rollout(model_dir, dtype) -> (rollout, tokenizer)` whose rollout has the learner's
interface, `.generate(prompts, params, version) -> Rollouts`; the default samples with the
embedded engine in this process (the tiny model samples ~50k tokens/s on 2 cores), and a
Serve-backed evaluator can be passed in its place.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from paretorl.evaluate.passk_eval import sample_and_score

CACHE_VERSION = 1


@dataclass
class TestSamples:
    """One policy's scored test samples: correct and lengths are [P, n] (lengths in tokens, EOS
    included; a response cut at max_new_tokens is incorrect)."""

    __test__ = False  # not a pytest class, whatever its name

    correct: np.ndarray
    lengths: np.ndarray

    def to_json(self) -> dict:
        return {"correct": self.correct.astype(int).tolist(), "lengths": self.lengths.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> TestSamples:
        return cls(np.asarray(data["correct"], dtype=bool), np.asarray(data["lengths"], dtype=np.int64))


def local_rollout(model_dir: str | Path, dtype: str = "bfloat16"):
    """(rollout, tokenizer): the embedded engine on this process, all its cores (the sweep's
    trials have ended when the report samples)."""
    from paretorl.models.build import load_policy
    from paretorl.rollout.engine import EmbeddedEngine

    model, tokenizer = load_policy(model_dir)
    engine = EmbeddedEngine(model, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, dtype=dtype, threads=os.cpu_count())

    class _Local:  # the learner's rollout interface, without Serve
        def generate(self, prompts, params, version):
            out = engine.generate(prompts, params)
            out.version = version
            return out

    return _Local(), tokenizer


def evaluate_on_test(model_dir: str | Path, rows: list[dict], eval_cfg, task, n_samples: int, seed: int,
                     dtype: str = "bfloat16", make_rollout=local_rollout) -> TestSamples:
    """`n_samples` responses per test row from the policy in `model_dir`, at the eval split's
    temperature and token limit (`eval_cfg`), scored by `task`. Cached in `model_dir` by content
    (rows, task knobs, sampling settings, seed), so a resumed sweep does not sample again."""
    from paretorl import storage

    key = _cache_key(rows, task, eval_cfg, n_samples, seed, dtype)
    cache = storage.join(model_dir, f"test_eval-{key}.json")  # model_dir: a folder or an s3:// URI
    if storage.exists(cache):
        return TestSamples.from_json(json.loads(storage.read_text(cache)))
    rollout, tokenizer = make_rollout(model_dir, dtype)
    scored = sample_and_score(rollout, 0, tokenizer, task, rows, n_samples, eval_cfg.max_new_tokens, eval_cfg.temperature, seed)
    samples = TestSamples(scored.correct.reshape(-1, n_samples), scored.lengths.reshape(-1, n_samples))
    try:
        storage.write_text(cache, json.dumps(samples.to_json()))
    except OSError:  # a read-only model directory: sample again next time
        pass
    return samples


def _cache_key(rows: list[dict], task, eval_cfg, n_samples: int, seed: int, dtype: str) -> str:
    from paretorl.tasks.data import _knobs

    blob = {
        "v": CACHE_VERSION,
        "rows": rows,
        "task": [type(task).__qualname__, _knobs(task)],
        "sampling": [n_samples, eval_cfg.max_new_tokens, eval_cfg.temperature, seed, dtype],
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=repr).encode()).hexdigest()[:16]
