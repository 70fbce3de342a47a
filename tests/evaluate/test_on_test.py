"""A policy on the test split: scored samples per response, and cached beside the policy."""

import numpy as np
from paretorl.config import EvalConfig
from paretorl.evaluate.on_test import TestSamples, evaluate_on_test, local_rollout
from paretorl.tasks import load_task, read_rows

from tests.conftest import COIN_TASK


def test_real_engine_samples_every_test_prompt_and_caches(tiny_prepared):
    rows = read_rows(next(iter(tiny_prepared.test_splits.values())))
    task = load_task(COIN_TASK)
    cfg = EvalConfig(max_new_tokens=24, temperature=1.0)
    model_dir = tiny_prepared.shared["base_model"]
    calls = []

    def counting(model_dir, dtype):
        calls.append(model_dir)
        return local_rollout(model_dir, dtype)

    got = evaluate_on_test(model_dir, rows, cfg, task, n_samples=3, seed=5, make_rollout=counting)
    assert got.correct.shape == got.lengths.shape == (len(rows), 3)
    assert got.lengths.min() >= 1 and got.lengths.max() <= 24
    again = evaluate_on_test(model_dir, rows, cfg, task, n_samples=3, seed=5, make_rollout=counting)
    assert len(calls) == 1  # the second call read the cache
    assert np.array_equal(again.correct, got.correct) and np.array_equal(again.lengths, got.lengths)
    evaluate_on_test(model_dir, rows, cfg, task, n_samples=3, seed=6, make_rollout=counting)
    assert len(calls) == 2  # another seed is another draw


def test_truncated_responses_are_wrong(tmp_path):
    from paretorl.rollout.types import FINISH_LENGTH, FINISH_STOP, Rollouts

    class Always:  # a task that accepts any text: only truncation can make a response wrong
        def score(self, row, completion):
            return True

    class Fixed:
        def generate(self, prompts, params, version):
            n = params.n
            lengths = np.array([2, params.max_new_tokens] * (len(prompts) * n // 2))
            reasons = [FINISH_STOP, FINISH_LENGTH] * (len(prompts) * n // 2)
            return Rollouts(np.zeros((len(lengths), params.max_new_tokens), dtype=np.int64), np.zeros((len(lengths), params.max_new_tokens), np.float32), lengths, reasons, n)

    def make(model_dir, dtype):
        from paretorl.models.tokenizer import build_tokenizer

        return Fixed(), build_tokenizer(["a b c"], 300)

    rows = [{"prompt": "a", "answer": "x"}, {"prompt": "b", "answer": "y"}]
    got = evaluate_on_test(tmp_path, rows, EvalConfig(max_new_tokens=8), Always(), n_samples=2, seed=0, make_rollout=make)
    assert got.correct.tolist() == [[True, False], [True, False]]
    assert got.lengths.tolist() == [[2, 8], [2, 8]]
    assert isinstance(TestSamples.from_json(got.to_json()), TestSamples)
