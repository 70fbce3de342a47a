"""The cutoff baseline: the base's own samples cut at token budgets, and what beating it means."""

import numpy as np
import pytest
from paretorl.evaluate.cutoff import (
    CUTOFF_COLUMNS,
    beats_cutoff,
    cutoff_budgets,
    cutoff_front,
    cutoff_pass_at,
)
from paretorl.evaluate.intervals import interval_summary


def test_hand_example():
    # two prompts x two samples; lengths include EOS
    correct = np.array([[True, True], [False, True]])
    lengths = np.array([[3, 9], [5, 7]])
    rows = cutoff_front(correct, lengths, k=1, budgets=[3, 7, 9])
    assert [tuple(r) for r in rows] == [CUTOFF_COLUMNS] * 3
    # budget 3: only the 3-token answer ends in time -> prompt pass@1 0.5 and 0; tokens min(L, 3) = 3 each
    # budget 7: + the correct 7-token answer      -> 0.5 and 0.5;           tokens (3 + 7 + 5 + 7) / 4
    # budget 9: nothing is cut                    -> 1.0 and 0.5;           tokens (3 + 9 + 5 + 7) / 4
    assert [r["test_pass_at_k"] for r in rows] == pytest.approx([0.25, 0.5, 0.75])
    assert [r["test_mean_tokens"] for r in rows] == pytest.approx([3.0, 5.5, 6.0])


def test_budgets_span_shortest_to_longest_answer():
    lengths = np.array([[4, 30], [12, 61]])
    budgets = cutoff_budgets(lengths)
    assert len(budgets) >= 6 and budgets[0] == 4 and budgets[-1] == 61 and budgets == sorted(set(budgets))
    assert cutoff_budgets(np.array([[3, 5]])) == [3, 4, 5]  # fewer integers than budgets: all of them


def test_curve_rises_with_the_budget_and_ends_at_the_uncut_base():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 60, (128, 8))
    correct = (rng.random((128, 8)) < 0.6) & (lengths < 55)  # the longest are truncated: wrong
    rows = cutoff_front(correct, lengths, k=4)
    assert len(rows) >= 6
    passes, tokens = [r["test_pass_at_k"] for r in rows], [r["test_mean_tokens"] for r in rows]
    assert passes == sorted(passes) and tokens == sorted(tokens)
    base = interval_summary(correct, lengths, k=4)
    assert rows[-1]["test_pass_at_k"] == pytest.approx(base["test_pass_at_k"])
    assert rows[-1]["test_mean_tokens"] == pytest.approx(base["test_mean_tokens"])
    assert all(r["test_pass_at_k_lo"] <= r["test_pass_at_k"] <= r["test_pass_at_k_hi"] for r in rows)


def test_beating_the_curve():
    cutoff = [
        {"budget": 10, "test_pass_at_k": 0.2, "test_mean_tokens": 10.0},
        {"budget": 30, "test_pass_at_k": 0.6, "test_mean_tokens": 20.0},
    ]
    assert cutoff_pass_at(cutoff, 5.0) == pytest.approx(0.1)  # from (0, 0): a zero budget answers nothing
    assert cutoff_pass_at(cutoff, 15.0) == pytest.approx(0.4)  # linear between cutoff points
    assert cutoff_pass_at(cutoff, 50.0) == pytest.approx(0.6)  # flat past the uncut base
    assert beats_cutoff({"test_pass_at_k": 0.45, "test_mean_tokens": 15.0}, cutoff)
    assert not beats_cutoff({"test_pass_at_k": 0.4, "test_mean_tokens": 15.0}, cutoff)  # on the curve is not above it
    assert not beats_cutoff({"test_pass_at_k": 0.55, "test_mean_tokens": 40.0}, cutoff)
