"""The cutoff baseline front: the base policy's answers cut at a token budget (Arora & Zanette, 2025).

The cheapest way to spend fewer tokens is no training at all: stop the base policy after B
tokens. An answer whose end (EOS) does not fall within the budget is cut before its final
answer, so it is wrong (the same rule as a response truncated at max_new_tokens), and it costs
B tokens. All budgets are computed from ONE set of base samples: a response of length L is
right under budget B iff it was right and L <= B, and costs min(L, B). No re-sampling per budget,
so the curve's points differ only by the cut, not by sampling noise.

A front point *beats* the cutoff curve when its test pass@k is strictly above the curve at the
point's test mean tokens: the curve is the piecewise-linear interpolation of the cutoff points
(ordered by mean tokens), from (0 tokens, pass@k 0) (a zero budget answers nothing) and flat
after the last point (the uncut base: more budget changes nothing).
"""

from __future__ import annotations

import numpy as np

from paretorl.evaluate.intervals import LEVEL, bootstrap_interval, per_prompt_pass_at_k

N_BUDGETS = 8  # the issue asks for at least 6 budgets between the shortest and longest answer

CUTOFF_COLUMNS = ("budget", "test_pass_at_k", "test_pass_at_k_lo", "test_pass_at_k_hi", "test_mean_tokens")


def cutoff_budgets(lengths: np.ndarray, n_budgets: int = N_BUDGETS) -> list[int]:
    """`n_budgets` integer budgets evenly spaced from the shortest to the longest response (both
    included); every integer in between when there are fewer."""
    lengths = np.asarray(lengths)
    lo, hi = int(lengths.min()), int(lengths.max())
    if hi - lo + 1 <= n_budgets:
        return list(range(lo, hi + 1))
    return sorted({round(float(b)) for b in np.linspace(lo, hi, n_budgets)})


def cutoff_front(correct: np.ndarray, lengths: np.ndarray, k: int, budgets: list[int] | None = None, level: float = LEVEL, seed: int = 0) -> list[dict]:
    """One row per budget (CUTOFF_COLUMNS), from the base's test samples: correct and lengths
    are [P, n] (lengths in tokens, EOS included)."""
    correct, lengths = np.asarray(correct, dtype=bool), np.asarray(lengths)
    rows = []
    for budget in budgets or cutoff_budgets(lengths):
        per_prompt = per_prompt_pass_at_k(correct & (lengths <= budget), k)
        lo, hi = bootstrap_interval(per_prompt, level, seed=seed)
        tokens = np.minimum(lengths, budget).mean()
        rows.append(dict(zip(CUTOFF_COLUMNS, (int(budget), float(per_prompt.mean()), lo, hi, float(tokens)))))
    return rows


def cutoff_pass_at(cutoff: list[dict], tokens: float) -> float:
    """The cutoff curve's pass@k at `tokens` mean tokens (see the module doc)."""
    points = sorted((r["test_mean_tokens"], r["test_pass_at_k"]) for r in cutoff)
    xs, ys = [0.0, *(x for x, _ in points)], [0.0, *(y for _, y in points)]
    return float(np.interp(tokens, xs, ys))


def beats_cutoff(point: dict, cutoff: list[dict]) -> bool:
    """True when the point's test pass@k is strictly above the cutoff curve at its test tokens
    (by more than float rounding: a point on the curve does not beat it)."""
    return point["test_pass_at_k"] > cutoff_pass_at(cutoff, point["test_mean_tokens"]) + 1e-9
