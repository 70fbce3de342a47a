"""Held-out sampling in bounded calls: every prompt scored once, in order, with its own seed per call."""

import numpy as np
from paretorl.evaluate import passk_eval
from paretorl.evaluate.on_test import local_rollout
from paretorl.evaluate.passk_eval import chunk_seed, sample_and_score, score_rollouts
from paretorl.models.tokenizer import build_tokenizer, encode_prompt
from paretorl.rollout.types import FINISH_STOP, Rollouts, SamplingParams
from paretorl.tasks import load_task, read_rows

from tests.conftest import COIN_TASK


class Recording:
    """Answers the i-th prompt it has been sent (over all calls) with samples of length i + 1, and
    records each call's size and seed."""

    def __init__(self):
        self.calls, self.sent = [], 0

    def generate(self, prompts, params, version):
        self.calls.append((len(prompts), params.seed))
        lengths = np.repeat(np.arange(self.sent, self.sent + len(prompts)) + 1, params.n)
        self.sent += len(prompts)
        tokens = np.zeros((len(lengths), 1), dtype=np.int64)
        return Rollouts(tokens, np.zeros(tokens.shape, np.float32), lengths, [FINISH_STOP] * len(lengths), params.n)


class FirstWord:
    def score(self, row, completion):
        return row["answer"] == "yes"


def test_large_evaluations_are_sampled_in_bounded_calls(monkeypatch):
    monkeypatch.setattr(passk_eval, "MAX_RESPONSES_PER_CALL", 7)  # 2 prompts of 3 samples per call
    tokenizer = build_tokenizer(["a b c d e"], 300)
    rows = [{"prompt": w, "answer": "yes" if i % 2 else "no"} for i, w in enumerate("a b c d e".split())]
    rollout = Recording()
    got = sample_and_score(rollout, 0, tokenizer, FirstWord(), rows, n=3, max_new_tokens=4, temperature=1.0, seed=11)
    assert [size for size, _ in rollout.calls] == [2, 2, 1]
    seeds = [seed for _, seed in rollout.calls]
    assert seeds[0] == 11 and len(set(seeds)) == 3  # the first call as unchunked, the others independent
    assert got.lengths.tolist() == np.repeat([1, 2, 3, 4, 5], 3).tolist()  # prompt order kept across calls
    assert got.correct.tolist() == np.repeat([i % 2 == 1 for i in range(5)], 3).tolist()
    assert got.truncated.shape == (15,) and not got.truncated.any()


def test_chunk_seeds_are_stable_and_distinct():
    assert chunk_seed(None, 3) is None and chunk_seed(5, 0) == 5
    assert chunk_seed(5, 1) == chunk_seed(5, 1) != chunk_seed(5, 2)
    assert chunk_seed(5, 1) != chunk_seed(6, 1)


def test_an_evaluation_within_one_call_samples_as_a_direct_call(tiny_prepared):
    """Evaluations up to the call size (all that shipped before chunking) keep their samples."""
    rows = read_rows(next(iter(tiny_prepared.test_splits.values())))
    task = load_task(COIN_TASK)
    rollout, tokenizer = local_rollout(tiny_prepared.shared["base_model"], "float32")
    got = sample_and_score(rollout, 0, tokenizer, task, rows, n=4, max_new_tokens=16, temperature=1.0, seed=3)
    params = SamplingParams(n=4, max_new_tokens=16, temperature=1.0, seed=3)
    direct = rollout.generate([encode_prompt(tokenizer, r["prompt"]) for r in rows], params, 0)
    assert np.array_equal(got.lengths, direct.lengths)
    assert np.array_equal(got.correct, score_rollouts(task, rows, direct, tokenizer))
