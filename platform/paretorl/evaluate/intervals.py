"""95% intervals for a checkpoint's test metrics: a bootstrap over prompts.

The prompts of a split are a draw from the task's distribution, and each prompt's n responses
are a draw from the policy. Resampling whole prompts (each with its own n responses) carries
both sources of noise, so the interval says how far the value could move on another split of
the same size. The statistic is the one reported: pass@k is the unbiased per-prompt estimator
averaged over prompts (docs/algorithms.md section 7), tokens the mean over all responses (per-prompt means,
averaged: every prompt has the same n).

Pure numpy/scipy: `scipy.stats.bootstrap` with BCa intervals (bias-corrected and accelerated,
Efron 1987), which keep their coverage for means of bounded, skewed values such as a pass@k
near 1.
"""

from __future__ import annotations

import numpy as np

from paretorl.algos.passk import pass_at_k

LEVEL = 0.95
RESAMPLES = 2000

# The six values a test-evaluated checkpoint gets: pareto_front.csv's test columns.
TEST_COLUMNS = (
    "test_pass_at_k", "test_pass_at_k_lo", "test_pass_at_k_hi",
    "test_mean_tokens", "test_mean_tokens_lo", "test_mean_tokens_hi",
)


def per_prompt_pass_at_k(correct: np.ndarray, k: int) -> np.ndarray:
    """[P] unbiased pass@k of each prompt from its verdicts: correct is [P, n] bool, k <= n."""
    correct = np.asarray(correct, dtype=bool)
    n = correct.shape[1]
    by_count = np.array([pass_at_k(n, c, k) for c in range(n + 1)])  # pass@k depends on c only
    return by_count[correct.sum(1)]


def bootstrap_interval(values: np.ndarray, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """A `level` interval for the mean of `values` (one per prompt), BCa bootstrap over prompts.

    All values equal (every prompt solved, say) or fewer than two prompts: the interval is the
    point itself; a bootstrap has nothing to resample there.
    """
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=float)
    if values.size < 2 or np.ptp(values) == 0:
        mean = float(values.mean())
        return mean, mean
    res = bootstrap((values,), np.mean, n_resamples=resamples, confidence_level=level, method="BCa", rng=np.random.default_rng(seed))
    lo, hi = res.confidence_interval
    return float(lo), float(hi)


def interval_summary(correct: np.ndarray, lengths: np.ndarray, k: int, level: float = LEVEL, seed: int = 0) -> dict[str, float]:
    """pass@k and mean tokens of one checkpoint's test samples ([P, n] each), with intervals.

    Keys are TEST_COLUMNS.
    """
    per_prompt = per_prompt_pass_at_k(correct, k)
    tokens = np.asarray(lengths, dtype=float).mean(1)
    p_lo, p_hi = bootstrap_interval(per_prompt, level, seed=seed)
    t_lo, t_hi = bootstrap_interval(tokens, level, seed=seed)
    values = (per_prompt.mean(), p_lo, p_hi, tokens.mean(), t_lo, t_hi)
    return {key: float(v) for key, v in zip(TEST_COLUMNS, values)}
