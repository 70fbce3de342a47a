"""Exact expectations of the per-group gradient estimate on a tabular softmax policy.

A policy pi = softmax(theta) over a handful of answers, some correct; p = P(correct).
Every outcome of n i.i.d. samples is enumerated with its probability, and the per-group
estimate g = (1/n) sum_i A_i grad_theta log pi(y_i) is averaged exactly. docs/algorithms.md s. 2:

    E[g_maxrl] = ((1 - (1-p)^(n-1)) / p) grad p      (baseline costs one order)
    E[g_rloo]  = grad p
    E[g_drgrpo] = (n-1)/n grad p
"""

import itertools

import pytest
import torch

from paretorl.algos import compute_advantages

CORRECT = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
POLICIES = {
    "easy": [0.3, -1.2, 0.8, 0.1, -0.5],
    "hard": [-2.5, 1.0, -3.0, 0.5, 0.2],  # p ~ 0.03: where MaxRL's weight 1/p matters
}


def expected_estimate(theta, n, objective, eps):
    """Exact E[(1/n) sum_i A_i grad log pi(y_i)] by enumerating all |answers|^n outcomes."""
    pi = torch.softmax(theta, dim=0)
    m = len(pi)
    outcomes = torch.tensor(list(itertools.product(range(m), repeat=n)))  # [M, n]
    prob = pi[outcomes].prod(dim=1)  # [M]
    rewards = CORRECT[outcomes]  # [M, n]: every outcome is one group
    adv = compute_advantages(rewards, objective, eps=eps)  # [M, n]
    grad_log_pi = torch.eye(m, dtype=torch.float64)[outcomes] - pi  # [M, n, m]: e_y - pi
    per_group = (adv[..., None] * grad_log_pi).sum(dim=1) / n  # [M, m]
    return (prob[:, None] * per_group).sum(dim=0)


def grad_p(theta):
    """Analytic grad_theta p with p = sum_{correct} pi_j: pi_j (c_j - p)."""
    pi = torch.softmax(theta, dim=0)
    p = (pi * CORRECT).sum()
    return p, pi * (CORRECT - p)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("n", [2, 3, 5])
def test_maxrl_expectation(policy, n):
    theta = torch.tensor(POLICIES[policy], dtype=torch.float64)
    p, gp = grad_p(theta)
    expected = (1 - (1 - p) ** (n - 1)) / p * gp
    torch.testing.assert_close(
        expected_estimate(theta, n, "maxrl", eps=0.0), expected, rtol=1e-10, atol=1e-12
    )
    # With the default eps = 1e-6 the bias is ~eps / mean(r): small, not zero.
    torch.testing.assert_close(
        expected_estimate(theta, n, "maxrl", eps=1e-6), expected, rtol=1e-4, atol=1e-7
    )


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("n", [2, 3, 5])
def test_rloo_expectation_is_grad_p(policy, n):
    theta = torch.tensor(POLICIES[policy], dtype=torch.float64)
    _, gp = grad_p(theta)
    torch.testing.assert_close(
        expected_estimate(theta, n, "rloo", eps=0.0), gp, rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("n", [2, 4])
def test_dr_grpo_expectation(n):
    theta = torch.tensor(POLICIES["easy"], dtype=torch.float64)
    _, gp = grad_p(theta)
    torch.testing.assert_close(
        expected_estimate(theta, n, "dr_grpo", eps=0.0), (n - 1) / n * gp, rtol=1e-10, atol=1e-12
    )


def test_maxrl_weights_hard_prompts_more_than_rloo():
    """Per-prompt weight on grad p: RLOO 1, MaxRL (1 - (1-p)^(n-1)) / p >> 1 for small p."""
    theta = torch.tensor(POLICIES["hard"], dtype=torch.float64)
    p, gp = grad_p(theta)
    ratio = expected_estimate(theta, 5, "maxrl", eps=0.0) / expected_estimate(
        theta, 5, "rloo", eps=0.0
    )
    torch.testing.assert_close(ratio, torch.full_like(ratio, float((1 - (1 - p) ** 4) / p)))
    assert ratio[0] > 3.5
