"""Advantage estimators: hand-computed values, guards, loop-vs-vectorised, properties."""

import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paretorl.algos import OBJECTIVES, compute_advantages, register_objective


def close(actual, expected, tol=1e-5):
    torch.testing.assert_close(
        actual, torch.as_tensor(expected, dtype=actual.dtype), atol=tol, rtol=tol
    )


def test_registered_names():
    assert OBJECTIVES == ("grpo", "maxrl", "rloo", "dr_grpo")


# One success in four: mean 0.25, unbiased std 0.5.
@pytest.mark.parametrize(
    "objective, expected",
    [
        ("grpo", [1.5, -0.5, -0.5, -0.5]),
        ("maxrl", [3.0, -1.0, -1.0, -1.0]),  # (n - K) / K = 3 for a success
        ("rloo", [1.0, -1 / 3, -1 / 3, -1 / 3]),
        ("dr_grpo", [0.75, -0.25, -0.25, -0.25]),
    ],
)
def test_binary_group_by_hand(objective, expected):
    adv = compute_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), objective)
    close(adv, [expected], tol=1e-5)


# Shaped rewards [0.8, 0.4, 0.0]: mean 0.4, unbiased std 0.4.
@pytest.mark.parametrize(
    "objective, expected",
    [
        ("grpo", [1.0, 0.0, -1.0]),
        ("maxrl", [1.0, 0.0, -1.0]),  # divided by the mean reward: grad log E[r]
        ("rloo", [0.6, 0.0, -0.6]),  # 0.8 - (0.4 + 0.0) / 2
        ("dr_grpo", [0.4, 0.0, -0.4]),
    ],
)
def test_shaped_group_by_hand(objective, expected):
    adv = compute_advantages(torch.tensor([[0.8, 0.4, 0.0]], dtype=torch.float64), objective)
    close(adv, [expected], tol=1e-5)


@pytest.mark.parametrize(
    "objective, expected",
    [
        ("grpo", [0.5**0.5, -(0.5**0.5)]),
        ("maxrl", [1.0, -1.0]),
        ("rloo", [1.0, -1.0]),
        ("dr_grpo", [0.5, -0.5]),
    ],
)
def test_pair_by_hand(objective, expected):
    close(compute_advantages(torch.tensor([[1.0, 0.0]]), objective), [expected], tol=1e-5)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_constant_groups_are_exactly_zero(objective):
    rewards = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.1, 0.1, 0.1], [0.7, 0.7, 0.7]])
    adv = compute_advantages(rewards, objective)
    assert torch.equal(adv, torch.zeros(4, 3))


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_singleton_group_is_zero_not_huge(objective):
    adv = compute_advantages(torch.tensor([[1.0], [0.0], [0.5]]), objective)
    assert torch.equal(adv, torch.zeros(3, 1))


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_mixed_batch_rows_are_independent(objective):
    a = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    b = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    both = compute_advantages(torch.cat([a, b]), objective)
    close(both, torch.cat([compute_advantages(a, objective), compute_advantages(b, objective)]))


def test_int_and_bool_rewards_are_cast():
    adv = compute_advantages(torch.tensor([[True, False]]), "rloo")
    assert adv.dtype == torch.get_default_dtype()
    close(adv, [[1.0, -1.0]])
    close(compute_advantages(torch.tensor([[1, 0]]), "dr_grpo"), [[0.5, -0.5]])


def test_input_not_mutated():
    rewards = torch.tensor([[1.0, 0.0, 0.0]])
    before = rewards.clone()
    for objective in OBJECTIVES:
        compute_advantages(rewards, objective)
    assert torch.equal(rewards, before)


def test_unknown_objective_lists_valid_names():
    with pytest.raises(ValueError, match="grpo, maxrl, rloo, dr_grpo"):
        compute_advantages(torch.zeros(1, 2), "ppo")


def test_duplicate_registration_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_objective("maxrl")(lambda rewards, eps: rewards)
    assert compute_advantages(torch.tensor([[1.0, 0.0]]), "maxrl")[0, 1].item() == pytest.approx(
        -1.0, rel=1e-5
    )


def test_bad_shape_and_negative_maxrl_rejected():
    with pytest.raises(ValueError, match=r"\[G, n\]"):
        compute_advantages(torch.zeros(4), "grpo")
    with pytest.raises(ValueError, match="non-negative"):
        compute_advantages(torch.tensor([[-1.0, 1.0]]), "maxrl")


def test_eps_enters_denominators():
    r = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    close(compute_advantages(r, "maxrl", eps=0.5), [[0.5, -0.5]])  # 0.5 / (0.5 + 0.5)
    close(compute_advantages(r, "grpo", eps=1.0), [[0.5 / (0.5**0.5 + 1), -0.5 / (0.5**0.5 + 1)]])


# --- loop reference, written from the formulas one element at a time -------------------


def loop_advantage(row, i, objective, eps=1e-6):
    n = len(row)
    if n < 2 or len(set(row)) == 1:
        return 0.0
    mean = sum(row) / n
    if objective == "grpo":
        return (row[i] - mean) / (statistics.stdev(row) + eps)
    if objective == "maxrl":
        return (row[i] - mean) / (mean + eps)
    if objective == "rloo":
        return row[i] - sum(row[j] for j in range(n) if j != i) / (n - 1)
    return row[i] - mean


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("binary", [True, False])
def test_loop_equals_vectorised(objective, binary):
    gen = torch.Generator().manual_seed(7)
    for n in (1, 2, 3, 8):
        rewards = torch.rand(16, n, generator=gen, dtype=torch.float64)
        if binary:
            rewards = (rewards > 0.6).double()
        adv = compute_advantages(rewards, objective)
        rows = rewards.tolist()
        expected = [[loop_advantage(row, i, objective) for i in range(n)] for row in rows]
        close(adv, expected, tol=1e-9)


# --- properties ---------------------------------------------------------------------

groups = st.integers(1, 6).flatmap(
    lambda g: st.integers(1, 10).flatmap(
        lambda n: st.lists(
            st.lists(st.floats(0, 1, allow_nan=False), min_size=n, max_size=n),
            min_size=g,
            max_size=g,
        )
    )
)
grid_groups = st.integers(1, 10).flatmap(  # rewards on a 1/20 grid: no subnormal spreads
    lambda n: st.lists(
        st.lists(st.integers(0, 20).map(lambda x: x / 20), min_size=n, max_size=n),
        min_size=1,
        max_size=6,
    )
)
binary_groups = st.integers(2, 16).flatmap(
    lambda n: st.lists(st.booleans(), min_size=n, max_size=n)
)


@settings(max_examples=60, deadline=None)
@given(groups)
def test_rloo_and_dr_grpo_sum_to_zero_per_group(rows):
    rewards = torch.tensor(rows, dtype=torch.float64)
    for objective in ("rloo", "dr_grpo"):
        sums = compute_advantages(rewards, objective).sum(dim=1)
        close(sums, torch.zeros(len(rows), dtype=torch.float64), tol=1e-12)


@settings(max_examples=60, deadline=None)
@given(groups)
def test_rloo_is_n_over_n_minus_1_dr_grpo(rows):
    rewards = torch.tensor(rows, dtype=torch.float64)
    n = rewards.shape[1]
    if n > 1:
        close(
            compute_advantages(rewards, "rloo"),
            n / (n - 1) * compute_advantages(rewards, "dr_grpo"),
            tol=1e-12,
        )


@settings(max_examples=80, deadline=None)
@given(binary_groups)
def test_maxrl_binary_success_gets_n_minus_k_over_k(row):
    rewards = torch.tensor([row], dtype=torch.float64)
    adv = compute_advantages(rewards, "maxrl", eps=0.0)[0]
    n, k = len(row), sum(row)
    for i, correct in enumerate(row):
        if k in (0, n):
            expected = 0.0
        else:
            expected = (n - k) / k if correct else -1.0
        assert adv[i].item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    # The default eps = 1e-6 moves this by eps / mean(r), at most 1.6e-5 relative here.
    adv_eps = compute_advantages(rewards, "maxrl")[0]
    close(adv_eps, adv, tol=1e-4)  # eps / mean(r) <= 1e-6 * n


@settings(max_examples=60, deadline=None)
@given(grid_groups)
def test_grpo_is_zero_mean_unit_std(rows):
    rewards = torch.tensor(rows, dtype=torch.float64)
    adv = compute_advantages(rewards, "grpo", eps=0.0)
    for r, a in zip(rewards, adv):
        assert a.sum().item() == pytest.approx(0.0, abs=1e-9)
        if len(r) > 1 and r.max() > r.min():
            assert a.std().item() == pytest.approx(1.0, rel=1e-9)
