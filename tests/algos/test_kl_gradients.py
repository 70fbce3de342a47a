"""Which KL each estimator x placement follows, by exact enumeration on tabular policies.

The expected gradient of a per-sample loss ``L(y; theta)`` over ``y ~ q`` is
``grad_theta sum_y sg(q(y)) L(y; theta)``: every outcome is enumerated, weighted by its
probability (detached), and the loss of each comes from the library's own functions
(``policy_loss``, ``token_advantages``). docs/algorithms.md, "KL to the reference", states the
results these tests check.
"""

import itertools

import pytest
import torch

from paretorl.algos import KL_ESTIMATORS, policy_loss, token_advantages

F64 = torch.float64
THETA = torch.tensor([0.4, -0.8, 1.1, 0.0, -0.3], dtype=F64)  # a one-token policy over 5 answers
REF = torch.tensor([-0.2, 0.5, 0.3, -0.6, 0.1], dtype=F64)
OLD = torch.tensor([0.1, -0.5, 0.9, 0.2, -0.4], dtype=F64)  # an earlier policy that sampled


def rkl(logp, ref_logp):
    """KL(pi || pi_ref) of distributions given by log-probabilities over the last axis."""
    return (logp.exp() * (logp - ref_logp)).sum(-1)


def grad(scalar, theta):
    return torch.autograd.grad(scalar, theta)[0]


def one(x):
    return x.reshape(1, 1)


def loss_placement_expected_grad(theta, estimator, sampler=None):
    """E_{y ~ sampler}[grad of the KL term policy_loss adds] for a one-token policy."""
    theta = theta.clone().requires_grad_(True)
    lp = torch.log_softmax(theta, 0)
    old = lp.detach() if sampler is None else torch.log_softmax(sampler, 0)
    ref = torch.log_softmax(REF, 0)
    total = 0.0
    for y in range(len(theta)):
        loss, _ = policy_loss(
            one(lp[y]),
            one(old[y]),
            torch.zeros(1, 1, dtype=F64),  # no advantage: the loss is the KL term alone
            torch.ones(1, 1, dtype=torch.bool),
            ref_logprobs=one(ref[y]),
            kl_coef=1.0,
            kl_estimator=estimator,
        )
        total = total + old[y].exp() * loss
    return grad(total, theta)


def reward_placement_expected_grad(theta, ref_logits, estimator):
    """E_{y ~ pi}[grad of the loss] with only the KL penalty in the reward (beta = 1)."""
    theta = theta.clone().requires_grad_(True)
    lp = torch.log_softmax(theta, 0)
    ref = torch.log_softmax(ref_logits, 0)
    mask = torch.ones(1, 1, dtype=torch.bool)
    total = 0.0
    for y in range(len(theta)):
        adv = token_advantages(
            torch.zeros(1, dtype=F64),
            mask,
            kl_coef=1.0,
            kl_placement="reward",
            logprobs=one(lp[y]).detach(),
            ref_logprobs=one(ref[y]),
            kl_estimator=estimator,
        )
        loss, _ = policy_loss(one(lp[y]), one(lp[y]).detach(), adv, mask)
        total = total + lp[y].exp().detach() * loss
    return grad(total, theta)


def kl_grads(theta):
    theta = theta.clone().requires_grad_(True)
    lp, ref = torch.log_softmax(theta, 0), torch.log_softmax(REF, 0)
    reverse = grad(rkl(lp, ref), theta)
    forward = grad(rkl(ref, torch.log_softmax(theta, 0)), theta)
    return reverse, forward


@pytest.mark.parametrize("estimator", KL_ESTIMATORS)
def test_kl_in_the_loss_follows_kl_pi_ref(estimator):
    """k1 (was: mean gradient 0) and k3 (was: grad KL(ref || pi)) now follow grad KL(pi || ref)."""
    reverse, forward = kl_grads(THETA)
    got = loss_placement_expected_grad(THETA, estimator)
    torch.testing.assert_close(got, reverse, rtol=1e-10, atol=1e-12)
    assert (got - forward).abs().max() > 1e-3  # the two directions differ here


@pytest.mark.parametrize("estimator", KL_ESTIMATORS)
def test_kl_in_the_loss_off_policy(estimator):
    """Tokens from pi_old != pi: the importance weight keeps the gradient on KL(pi || ref)."""
    reverse, _ = kl_grads(THETA)
    got = loss_placement_expected_grad(THETA, estimator, sampler=OLD)
    torch.testing.assert_close(got, reverse, rtol=1e-10, atol=1e-12)


def test_differentiating_the_estimates_directly_was_wrong():
    """What the loss placement did before: grad k1 has mean 0, grad k3 follows KL(ref || pi)."""

    def expected(estimate):  # E_{y ~ pi}[grad k(y)], the estimate differentiated as is
        theta = THETA.clone().requires_grad_(True)
        lp = torch.log_softmax(theta, 0)
        d = lp - torch.log_softmax(REF, 0)
        return grad((lp.exp().detach() * estimate(d)).sum(), theta)

    k1 = expected(lambda d: d)
    k3 = expected(lambda d: torch.expm1(-d) + d)
    reverse, forward = kl_grads(THETA)
    torch.testing.assert_close(k1, torch.zeros_like(k1), rtol=0, atol=1e-15)
    torch.testing.assert_close(k3, forward, rtol=1e-10, atol=1e-12)
    assert (k3 - reverse).abs().max() > 1e-3


def test_k1_in_the_reward_follows_kl_pi_ref():
    reverse, _ = kl_grads(THETA)
    torch.testing.assert_close(
        reward_placement_expected_grad(THETA, REF, "k1"), reverse, rtol=1e-10, atol=1e-12
    )


def test_k2_k3_in_the_reward_regularise_nothing():
    """Their pull toward pi_ref shrinks with the square of the distance; a KL's linearly."""
    ref = torch.zeros(4, dtype=F64)
    direction = torch.tensor([1.0, -0.5, 0.3, -0.8], dtype=F64)

    def shrink(estimator):  # |g(2 eps)| / |g(eps)|: 2 if linear in eps, 4 if quadratic
        g = [reward_placement_expected_grad(ref + e * direction, ref, estimator) for e in (2e-3, 1e-3)]
        return float(g[0].norm() / g[1].norm())

    assert shrink("k1") == pytest.approx(2.0, rel=1e-2)
    assert shrink("k2") == pytest.approx(4.0, rel=1e-2)
    assert shrink("k3") == pytest.approx(4.0, rel=1e-2)


@pytest.mark.parametrize("estimator", ["k2", "k3"])
def test_k2_k3_in_the_reward_can_push_away_from_the_reference(estimator):
    theta, ref = torch.tensor([-1.0, 0.0, 0.0], dtype=F64), torch.zeros(3, dtype=F64)
    g = reward_placement_expected_grad(theta, ref, estimator)
    before = rkl(torch.log_softmax(theta, 0), torch.log_softmax(ref, 0))
    after = rkl(torch.log_softmax(theta - 0.1 * g, 0), torch.log_softmax(ref, 0))
    assert after > before  # a descent step on the "penalty" moves pi further from pi_ref
    g1 = reward_placement_expected_grad(theta, ref, "k1")
    assert rkl(torch.log_softmax(theta - 0.1 * g1, 0), torch.log_softmax(ref, 0)) < before


# --- two tokens: the sequence KL (reward, k1) and the per-position KL (loss) ----------------

M = 3
GEN = torch.Generator().manual_seed(4)
THETA1, THETA2 = torch.randn(M, generator=GEN, dtype=F64), torch.randn(M, M, generator=GEN, dtype=F64)
REF1, REF2 = torch.randn(M, generator=GEN, dtype=F64), torch.randn(M, M, generator=GEN, dtype=F64)
SEQS = list(itertools.product(range(M), repeat=2))


def two_token(theta1, theta2):
    """Per-sequence token log-probs ``[M*M, 2]`` of pi(y1) pi(y2 | y1), and of pi_ref."""
    lp1, lp2 = torch.log_softmax(theta1, 0), torch.log_softmax(theta2, 1)
    r1, r2 = torch.log_softmax(REF1, 0), torch.log_softmax(REF2, 1)
    lp = torch.stack([torch.stack([lp1[a], lp2[a, b]]) for a, b in SEQS])
    ref = torch.stack([torch.stack([r1[a], r2[a, b]]) for a, b in SEQS])
    return lp, ref


def expected_grad_two_token(placement, estimator):
    t1, t2 = THETA1.clone().requires_grad_(True), THETA2.clone().requires_grad_(True)
    lp, ref = two_token(t1, t2)
    prob = lp.sum(1).exp().detach()
    mask = torch.ones(1, 2, dtype=torch.bool)
    total = 0.0
    for i in range(len(SEQS)):
        row, row_ref = lp[i : i + 1], ref[i : i + 1]
        if placement == "reward":
            adv = token_advantages(
                torch.zeros(1, dtype=F64), mask, kl_coef=1.0, kl_placement="reward",
                logprobs=row.detach(), ref_logprobs=row_ref, kl_estimator=estimator,
            )
            loss, _ = policy_loss(row, row.detach(), adv, mask, aggregation="seq_mean_token_sum")
        else:
            loss, _ = policy_loss(
                row, row.detach(), torch.zeros(1, 2, dtype=F64), mask,
                aggregation="seq_mean_token_sum", ref_logprobs=row_ref, kl_coef=1.0,
                kl_estimator=estimator,
            )
        total = total + prob[i] * loss
    return torch.cat([g.flatten() for g in torch.autograd.grad(total, (t1, t2))])


def target_grads():
    """grad of the sequence KL(pi || ref), and of the per-position KLs at fixed prefixes."""
    t1, t2 = THETA1.clone().requires_grad_(True), THETA2.clone().requires_grad_(True)
    lp, ref = two_token(t1, t2)
    seq_lp, seq_ref = lp.sum(1), ref.sum(1)
    sequence = torch.autograd.grad(rkl(seq_lp, seq_ref), (t1, t2))
    lp1, lp2 = torch.log_softmax(t1, 0), torch.log_softmax(t2, 1)
    r1, r2 = torch.log_softmax(REF1, 0), torch.log_softmax(REF2, 1)
    per_position = rkl(lp1, r1) + (lp1.exp().detach() * rkl(lp2, r2)).sum()
    local = torch.autograd.grad(per_position, (t1, t2))
    return torch.cat([g.flatten() for g in sequence]), torch.cat([g.flatten() for g in local])


def test_reward_k1_is_the_sequence_kl_gradient():
    sequence, local = target_grads()
    torch.testing.assert_close(expected_grad_two_token("reward", "k1"), sequence, rtol=1e-10, atol=1e-12)
    assert (sequence - local).abs().max() > 1e-3


@pytest.mark.parametrize("estimator", KL_ESTIMATORS)
def test_loss_placement_is_the_per_position_kl_gradient(estimator):
    """GRPO-style: each position's KL at prefixes drawn from pi, the prefix distribution fixed."""
    _, local = target_grads()
    torch.testing.assert_close(expected_grad_two_token("loss", estimator), local, rtol=1e-10, atol=1e-12)
