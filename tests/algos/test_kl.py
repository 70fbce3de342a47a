"""KL estimators and KL placement (token_advantages): hand values and edge cases."""

import math

import pytest
import torch

from paretorl.algos import (
    KL_ESTIMATORS,
    KL_PLACEMENTS,
    KL_REFUSED,
    kl_loss_tokens,
    kl_metric,
    kl_penalty,
    token_advantages,
)

F64 = torch.float64


def t(x, dtype=F64):
    return torch.tensor(x, dtype=dtype)


def test_names():
    assert KL_ESTIMATORS == ("k1", "k2", "k3")
    assert KL_PLACEMENTS == ("reward", "loss")


@pytest.mark.parametrize(
    "estimator, expected",
    [
        ("k1", [0.5, -1.0]),
        ("k2", [0.125, 0.5]),
        ("k3", [math.exp(-0.5) - 1 + 0.5, math.exp(1.0) - 1 - 1.0]),
    ],
)
def test_estimators_by_hand(estimator, expected):
    # d = log pi - log pi_ref = [0.5, -1.0]
    out = kl_penalty(t([[-1.0, -2.0]]), t([[-1.5, -1.0]]), estimator)
    torch.testing.assert_close(out, t([expected]))


def test_estimators_are_unbiased_where_claimed():
    """Exact expectations under pi over 4 tokens: E[k1] = E[k3] = KL(pi || ref)."""
    pi = torch.softmax(t([0.2, -1.0, 0.7, 0.0]), 0)
    ref = torch.softmax(t([-0.3, 0.4, 0.1, 0.9]), 0)
    kl = (pi * (pi.log() - ref.log())).sum()
    for estimator in ("k1", "k3"):
        mean = (pi * kl_penalty(pi.log()[None], ref.log()[None], estimator)[0]).sum()
        torch.testing.assert_close(mean, kl)
    assert (kl_penalty(pi.log()[None], ref.log()[None], "k3") >= 0).all()


def test_kl_errors():
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_penalty(t([[0.0]]), t([[0.0]]), "k4")
    with pytest.raises(ValueError, match="shape"):
        kl_penalty(t([[0.0]]), t([[0.0, 1.0]]), "k1")


MASK = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
ADV = t([2.0, -1.0])
LOGP = t([[0.1, 0.2, 0.3], [0.4, 0.5, 9.0]])  # k1 = these (ref = 0); 9.0 is padding


def test_plain_broadcast():
    out = token_advantages(ADV, MASK)
    assert torch.equal(out, t([[2.0, 2.0, 2.0], [-1.0, -1.0, 0.0]]))
    # the loss placement and a zero coefficient leave it a plain broadcast
    same = token_advantages(
        ADV, MASK, kl_coef=0.5, kl_placement="loss", logprobs=LOGP, ref_logprobs=0 * LOGP
    )
    assert torch.equal(same, out)
    assert torch.equal(token_advantages(ADV, MASK, kl_coef=0.0, kl_placement="reward"), out)


def test_kl_in_reward_is_return_to_go_by_hand():
    logp = LOGP.clone().requires_grad_(True)
    out = token_advantages(
        ADV,
        MASK,
        kl_coef=0.1,
        kl_placement="reward",
        logprobs=logp,
        ref_logprobs=torch.zeros_like(LOGP),
    )
    # row 0: sum_{s >= t} kl = [0.6, 0.5, 0.3]; row 1: [0.9, 0.5] and the padding 9.0 ignored
    torch.testing.assert_close(out, t([[1.94, 1.95, 1.97], [-1.09, -1.05, 0.0]]))
    assert not out.requires_grad  # the penalty shapes the reward; it is not differentiated


def test_kl_in_reward_with_k3_and_float_mask():
    lp, ref = t([[0.0, -1.0]]), t([[-1.0, 0.0]])  # d = [1, -1]
    k3 = [math.exp(-1) - 1 + 1, math.exp(1) - 1 - 1]
    out = token_advantages(
        t([1.0]),
        torch.ones(1, 2),
        kl_coef=0.5,
        kl_placement="reward",
        logprobs=lp,
        ref_logprobs=ref,
        kl_estimator="k3",
    )
    torch.testing.assert_close(out, t([[1 - 0.5 * (k3[0] + k3[1]), 1 - 0.5 * k3[1]]]))


def test_token_advantages_errors():
    with pytest.raises(ValueError, match="reward, loss"):
        token_advantages(ADV, MASK, kl_placement="advantage")
    with pytest.raises(ValueError, match="logprobs"):
        token_advantages(ADV, MASK, kl_coef=0.1, kl_placement="reward")
    with pytest.raises(ValueError, match=r"\[B\]"):
        token_advantages(ADV[None], MASK)


# --- the loss placement's per-token term, and the logged KL ---------------------------------


@pytest.mark.parametrize("estimator", KL_ESTIMATORS)
def test_kl_loss_tokens_on_policy_value_and_gradient(estimator):
    """On-policy the value is the estimate; the gradient is d (k2, k3) or d + 1 (k1) per token."""
    lp = t([[-1.0, -2.0]]).requires_grad_(True)
    ref = t([[-1.5, -1.0]])  # d = [0.5, -1.0]
    out = kl_loss_tokens(lp, lp.detach(), ref, estimator)
    torch.testing.assert_close(out.detach(), kl_penalty(lp.detach(), ref, estimator))
    (g,) = torch.autograd.grad(out.sum(), lp)
    d = t([[0.5, -1.0]])
    torch.testing.assert_close(g, d + 1 if estimator == "k1" else d)


def test_kl_loss_tokens_off_policy_weight():
    """w = pi / pi_old = e^0.2: k3's term is w * k3 and its gradient w * d."""
    lp = t([[-1.0]]).requires_grad_(True)
    old, ref = t([[-1.2]]), t([[-1.5]])
    w, d = math.exp(0.2), 0.5
    k3 = math.exp(-d) - 1 + d
    out = kl_loss_tokens(lp, old, ref, "k3")
    assert out.item() == pytest.approx(w * k3)
    (g,) = torch.autograd.grad(out.sum(), lp)
    assert g.item() == pytest.approx(w * d)
    (g2,) = torch.autograd.grad(kl_loss_tokens(lp, old, ref, "k2").sum(), lp)
    assert g2.item() == pytest.approx(w * d)  # k2 and k3 give the same gradient


def test_kl_metric_is_masked_mean_k3():
    lp, ref = t([[0.0, -1.0, 5.0]]), t([[-1.0, 0.0, float("inf")]])  # d = [1, -1], padding
    mask = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    expected = ((math.exp(-1) - 1 + 1) + (math.exp(1) - 1 - 1)) / 2
    assert kl_metric(lp, ref, mask) == pytest.approx(expected)
    assert kl_metric(lp, ref, torch.zeros_like(mask)) == 0.0


def test_refused_pairs_are_the_detached_biased_ones():
    assert set(KL_REFUSED) == {("k2", "reward"), ("k3", "reward")}
    assert all("k1" in reason and "docs/algorithms.md" in reason for reason in KL_REFUSED.values())
