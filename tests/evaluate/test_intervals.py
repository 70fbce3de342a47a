"""Bootstrap intervals over prompts (no Ray): exact per-prompt values, and coverage of the truth."""

import numpy as np
import pytest
from paretorl.evaluate.intervals import (
    TEST_COLUMNS,
    bootstrap_interval,
    interval_summary,
    per_prompt_pass_at_k,
)
from scipy.special import betaln


def test_per_prompt_pass_at_k_by_hand():
    correct = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=bool)
    # n = 4, k = 2: 1 - C(4-c, 2) / C(4, 2) = 1 - C(4-c, 2) / 6
    assert per_prompt_pass_at_k(correct, 2) == pytest.approx([1 - 3 / 6, 1 - 1 / 6, 0.0, 1.0])
    assert per_prompt_pass_at_k(correct, 1) == pytest.approx([0.25, 0.5, 0.0, 1.0])


@pytest.mark.parametrize("a, b", [(2.0, 1.0), (0.5, 2.0)], ids=["easy", "hard"])
def test_95_interval_covers_the_true_pass_at_k(a, b):
    """Prompts with pass rates p ~ Beta(a, b), 16 samples each: the true pass@4 over the task's
    prompts is E[1 - (1-p)^4] = 1 - B(a, b+4) / B(a, b). 256 prompts per draw (the default test
    split), 100 seeded draws: the 95% interval must cover it at least 90 times."""
    k, n, prompts = 4, 16, 256
    truth = 1 - np.exp(betaln(a, b + k) - betaln(a, b))
    covered = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        p = rng.beta(a, b, prompts)
        correct = rng.random((prompts, n)) < p[:, None]
        lo, hi = bootstrap_interval(per_prompt_pass_at_k(correct, k), seed=seed)
        covered += lo <= truth <= hi
    assert covered >= 90, covered


def test_95_interval_covers_the_true_mean_tokens():
    n, prompts, truth = 16, 256, 26.0  # per-prompt means ~ U(10, 40), lengths 1 + Poisson(mean): E = 26
    covered = 0
    for seed in range(100):
        rng = np.random.default_rng(1000 + seed)
        lengths = 1 + rng.poisson(rng.uniform(10, 40, prompts)[:, None], (prompts, n))
        lo, hi = bootstrap_interval(lengths.mean(1), seed=seed)
        covered += lo <= truth <= hi
    assert covered >= 90, covered


def test_interval_narrows_with_more_prompts():
    rng = np.random.default_rng(0)
    widths = []
    for prompts in (64, 1024):
        values = rng.random(prompts)
        lo, hi = bootstrap_interval(values)
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2  # ~ 1/sqrt(prompts): 4x narrower expected


def test_degenerate_values_give_the_point():
    assert bootstrap_interval(np.ones(50)) == (1.0, 1.0)
    assert bootstrap_interval(np.array([0.3])) == (0.3, 0.3)


def test_summary_has_the_test_columns_and_orders_them():
    rng = np.random.default_rng(1)
    correct = rng.random((64, 8)) < 0.4
    lengths = rng.integers(5, 40, (64, 8))
    out = interval_summary(correct, lengths, k=4)
    assert tuple(out) == TEST_COLUMNS
    assert out["test_pass_at_k_lo"] < out["test_pass_at_k"] < out["test_pass_at_k_hi"] <= 1.0
    assert out["test_mean_tokens_lo"] < out["test_mean_tokens"] < out["test_mean_tokens_hi"]
    assert out["test_mean_tokens"] == pytest.approx(lengths.mean())
    assert interval_summary(correct, lengths, k=4) == out  # seeded: the same samples give the same interval
