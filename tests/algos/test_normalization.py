"""Advantage normalisation: hand values, GRPO identity, and the alpha-independence ablation."""

import math

import pytest
import torch

from paretorl.algos import (
    NORMALIZATIONS,
    compute_advantages,
    length_penalized_reward,
    normalize_advantages,
)

F64 = torch.float64


def t(x):
    return torch.tensor(x, dtype=F64)


def test_names():
    assert NORMALIZATIONS == ("none", "batch", "group_std")


def test_none_is_an_equal_copy():
    adv = t([[1.0, -1.0]])
    out = normalize_advantages(adv, "none")
    assert torch.equal(out, adv) and out.data_ptr() != adv.data_ptr()


def test_batch_whitening_by_hand():
    out = normalize_advantages(t([[1.0, 3.0], [5.0, 7.0]]), "batch", eps=0.0)
    # mean 4, population variance (9 + 1 + 1 + 9) / 4 = 5
    torch.testing.assert_close(out, t([[-3.0, -1.0], [1.0, 3.0]]) / math.sqrt(5.0))


def test_batch_whitening_weighted_by_tokens():
    # weights 3 and 1: mean (3 + 3) / 4 = 1.5, variance (3 * 0.25 + 2.25) / 4 = 0.75
    out = normalize_advantages(t([[1.0, 3.0]]), "batch", eps=0.0, weights=torch.tensor([[3, 1]]))
    torch.testing.assert_close(out, t([[-0.5, 1.5]]) / math.sqrt(0.75))
    # ... which is whitening the token-level tensor [1, 1, 1, 3].
    tokens = t([1.0, 1.0, 1.0, 3.0])
    torch.testing.assert_close(out[0], (t([1.0, 3.0]) - tokens.mean()) / tokens.std(correction=0))


def test_group_std_by_hand_and_singletons():
    out = normalize_advantages(
        t([[0.5, -0.5], [0.2, -0.2]]), "group_std", t([[1.0, 0.0], [0.4, 0.0]]), eps=0.0
    )
    s = math.sqrt(0.5)
    torch.testing.assert_close(out, t([[0.5 / s, -0.5 / s], [0.2 / (0.4 * s), -0.2 / (0.4 * s)]]))
    single = t([[0.0], [0.0]])
    assert torch.equal(normalize_advantages(single, "group_std", t([[1.0], [0.0]])), single)


def test_group_std_of_dr_grpo_is_grpo():
    rewards = torch.rand(32, 8, generator=torch.Generator().manual_seed(3), dtype=F64)
    rewards[0] = 1.0  # a constant group stays 0
    out = normalize_advantages(compute_advantages(rewards, "dr_grpo"), "group_std", rewards)
    torch.testing.assert_close(out, compute_advantages(rewards, "grpo"), rtol=1e-12, atol=1e-12)


def test_errors():
    with pytest.raises(ValueError, match="none, batch, group_std"):
        normalize_advantages(t([[1.0]]), "layer")
    with pytest.raises(ValueError, match="rewards"):
        normalize_advantages(t([[1.0, 0.0]]), "group_std")
    with pytest.raises(ValueError, match="weights"):
        normalize_advantages(t([[1.0, 0.0]]), "batch", weights=torch.ones(3))


@pytest.mark.parametrize("n", [8, 4000])
def test_group_std_makes_the_length_push_independent_of_alpha(n):
    """docs/algorithms.md s. 3 ablation: all correct, rewards uniform over [1 - alpha, 1]."""
    grid = torch.linspace(0.0, 1.0, n, dtype=F64)
    shortest = []
    for alpha in (0.05, 0.1, 0.2, 0.4):
        rewards = (1.0 - alpha * grid)[None]  # index 0 is the shortest answer (reward 1)
        adv = normalize_advantages(
            compute_advantages(rewards, "rloo"), "group_std", rewards, eps=0.0
        )
        shortest.append(adv[0, 0].item())
    # n/(n-1) * (alpha/2) / (alpha * std) = sqrt(3 n / (n + 1)) -> sqrt(3), whatever alpha is.
    assert shortest == pytest.approx([math.sqrt(3 * n / (n + 1))] * 4, rel=1e-10)
    if n > 1000:
        assert shortest[0] == pytest.approx(math.sqrt(3), rel=2e-4)


def test_length_push_scales_with_alpha_without_group_std():
    correct = torch.ones(1, 6, dtype=torch.bool)
    lengths = torch.tensor([[100, 250, 300, 420, 500, 900]])
    no_trunc = torch.zeros(1, 6, dtype=torch.bool)
    plain, scaled = {}, {}
    for alpha in (0.1, 0.4):
        r = length_penalized_reward(correct, lengths, no_trunc, alpha).double()
        plain[alpha] = normalize_advantages(compute_advantages(r, "rloo"), "none")
        scaled[alpha] = normalize_advantages(compute_advantages(r, "rloo"), "group_std", r, eps=0.0)
    torch.testing.assert_close(plain[0.4], 4 * plain[0.1], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(scaled[0.4], scaled[0.1], rtol=1e-5, atol=1e-6)
    assert scaled[0.1][0, 0] > 1.0 > plain[0.1][0, 0] > 0
