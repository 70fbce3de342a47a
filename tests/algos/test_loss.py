"""Policy loss and aggregation: hand values, REINFORCE on-policy, clipping, grad accumulation."""

import math

import pytest
import torch

from paretorl.algos import (
    AGGREGATIONS,
    aggregate,
    loss_normalizer,
    merge_micro_metrics,
    policy_loss,
)

F64 = torch.float64


def t(x):
    return torch.tensor(x, dtype=F64)


def test_names():
    assert AGGREGATIONS == (
        "token_mean",
        "seq_mean_token_sum",
        "seq_mean_token_mean",
        "seq_mean_token_sum_norm",
    )


VALUES = t([[1.0, 2.0, 3.0], [4.0, float("nan"), float("inf")]])  # padding holds garbage
MASK = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)


@pytest.mark.parametrize(
    "mode, own, global_10",
    [
        ("token_mean", 10 / 4, 1.0),  # sum 10 over 4 tokens
        ("seq_mean_token_sum", (6 + 4) / 2, 1.0),  # sequence sums 6 and 4
        ("seq_mean_token_mean", (2 + 4) / 2, 0.6),  # sequence means 2 and 4
        ("seq_mean_token_sum_norm", 10 / (2 * 5), 1.0),  # Dr.GRPO: 2 sequences x budget 5
    ],
)
def test_aggregation_by_hand(mode, own, global_10):
    assert aggregate(VALUES, MASK, mode, max_new_tokens=5).item() == pytest.approx(own)
    assert aggregate(VALUES, MASK.double(), mode, normalizer=10).item() == pytest.approx(global_10)


def test_dr_grpo_normalizer_is_constant_per_response():
    """Unlike token_mean, a response's tokens weigh the same whatever the other lengths are."""
    short = t([[1.0, 0.0, 0.0]])
    mask_short, mask_long = torch.tensor([[1, 0, 0]]), torch.tensor([[1, 1, 1]])
    for mask in (mask_short, mask_long):
        out = aggregate(short, mask, "seq_mean_token_sum_norm", max_new_tokens=3)
        assert out.item() == pytest.approx(1 / 3)
    assert aggregate(short, mask_long, "token_mean").item() != aggregate(
        short, mask_short, "token_mean"
    ).item()


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("token_mean", 4.0),
        ("seq_mean_token_sum", 2.0),
        ("seq_mean_token_mean", 2.0),
        ("seq_mean_token_sum_norm", 2.0 * 5),
    ],
)
def test_loss_normalizer(mode, expected):
    assert loss_normalizer(mode, MASK, max_new_tokens=5) == expected
    assert loss_normalizer(mode, MASK.float(), max_new_tokens=5) == expected


def test_aggregation_errors_and_empty_mask():
    names = "token_mean, seq_mean_token_sum, seq_mean_token_mean, seq_mean_token_sum_norm"
    with pytest.raises(ValueError, match=names):
        aggregate(VALUES, MASK, "sum")
    with pytest.raises(ValueError, match=names):
        loss_normalizer("sum", MASK)
    with pytest.raises(ValueError, match="normalizer"):
        aggregate(VALUES, MASK, "token_mean", normalizer=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        aggregate(VALUES, MASK, "seq_mean_token_sum_norm")
    with pytest.raises(ValueError, match="max_new_tokens"):
        loss_normalizer("seq_mean_token_sum_norm", MASK)
    empty = torch.zeros_like(MASK)
    for mode in AGGREGATIONS:
        assert aggregate(VALUES, empty, mode, max_new_tokens=3).item() == 0.0


def make_loss_inputs(ratios, adv):
    logp = t([[-1.0] * len(ratios)]).requires_grad_(True)
    old = logp.detach() - torch.log(t([ratios]))
    return logp, old, t([adv]), torch.ones(1, len(ratios), dtype=torch.bool)


def test_clipped_surrogate_by_hand():
    # token 0: ratio 1.5, A = 1 -> clip binds, -1.2; token 1: ratio 0.5, A = 1 -> -0.5
    # token 2: ratio 1, A = -2 -> 2; token 3: ratio 0.5, A = -1 -> clip binds, 0.8
    logp, old, adv, mask = make_loss_inputs([1.5, 0.5, 1.0, 0.5], [1.0, 1.0, -2.0, -1.0])
    loss, metrics = policy_loss(logp, old, adv, mask, clip_eps=0.2)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 2.0 + 0.8) / 4)
    assert metrics["clip_frac"] == pytest.approx(0.5)
    assert metrics["ratio_mean"] == pytest.approx(3.5 / 4)
    assert metrics["pg_loss"] == pytest.approx(loss.item())
    assert "kl" not in metrics and "entropy" not in metrics
    loss.backward()
    # clipped tokens get no gradient; the others -A * rho / N
    torch.testing.assert_close(logp.grad, t([[0.0, -0.5 / 4, 2.0 / 4, 0.0]]))


def test_clip_eps_high():
    logp, old, adv, mask = make_loss_inputs([1.5, 1.5, 0.7], [1.0, 1.0, -1.0])
    loss, metrics = policy_loss(logp, old, adv, mask, clip_eps=0.2, clip_eps_high=0.4)
    # upper bound 1.4 binds on tokens 0, 1 (-1.4 each); lower bound 0.8 binds on token 2 (0.8)
    assert loss.item() == pytest.approx((-1.4 - 1.4 + 0.8) / 3)
    assert metrics["clip_frac"] == pytest.approx(1.0)
    loss, metrics = policy_loss(logp, old, adv, mask, clip_eps=0.2, clip_eps_high=0.6)
    assert loss.item() == pytest.approx((-1.5 - 1.5 + 0.8) / 3)  # 1.5 < 1.6: no upper clip
    assert metrics["clip_frac"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_on_policy_is_exactly_reinforce(mode):
    gen = torch.Generator().manual_seed(0)
    logp = (-torch.rand(3, 5, generator=gen, dtype=F64)).requires_grad_(True)
    adv = torch.randn(3, 5, generator=gen, dtype=F64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    opts = dict(aggregation=mode, max_new_tokens=5)
    loss, metrics = policy_loss(logp, logp.detach(), adv, mask, clip_eps=0.01, **opts)
    surrogate = aggregate(-adv * logp, mask, mode, max_new_tokens=5)  # REINFORCE: -A log pi
    (g_loss,) = torch.autograd.grad(loss, logp)
    (g_reinforce,) = torch.autograd.grad(surrogate, logp)
    torch.testing.assert_close(g_loss, g_reinforce, rtol=1e-12, atol=1e-12)
    assert loss.item() == pytest.approx(aggregate(-adv, mask, mode, max_new_tokens=5).item())
    assert metrics["clip_frac"] == 0.0 and metrics["ratio_mean"] == pytest.approx(1.0)


def test_kl_in_loss_entropy_and_metrics():
    logp = t([[-1.0, -2.0, -5.0]]).requires_grad_(True)
    ref = t([[-1.5, -1.0, 0.0]])  # d = [0.5, -1.0, padding]
    mask = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    adv = torch.zeros(1, 3, dtype=F64)
    k3 = [math.exp(-0.5) - 0.5, math.exp(1.0) - 2.0]
    loss, metrics = policy_loss(
        logp,
        logp.detach(),
        adv,
        mask,
        ref_logprobs=ref,
        kl_coef=0.1,
        kl_estimator="k3",
        entropy=t([[0.3, 0.5, 99.0]]),
    )
    assert loss.item() == pytest.approx(0.1 * sum(k3) / 2)
    assert metrics["kl_loss"] == pytest.approx(0.1 * sum(k3) / 2)
    assert metrics["pg_loss"] == 0.0 and metrics["tokens"] == 2.0
    assert metrics["entropy"] == pytest.approx(0.4)
    loss.backward()  # on-policy the importance-weighted k3 has gradient d = log pi - log ref
    torch.testing.assert_close(logp.grad, t([[0.1 * 0.5 / 2, 0.1 * -1.0 / 2, 0.0]]))
    # ref given, coefficient 0: no KL term (train/kl is logged from kl_metric, both placements)
    loss0, metrics0 = policy_loss(
        logp, logp.detach(), adv, mask, ref_logprobs=ref, kl_coef=0.0, kl_estimator="k1"
    )
    assert loss0.item() == 0.0 and "kl_loss" not in metrics0


def test_padding_garbage_does_not_reach_loss_or_gradient():
    logp = t([[-1.0, float("-inf")]]).requires_grad_(True)
    old = t([[-1.2, float("nan")]])
    loss, metrics = policy_loss(
        logp,
        old,
        t([[1.0, float("nan")]]),
        torch.tensor([[1.0, 0.0]]),
        ref_logprobs=t([[-1.0, float("inf")]]),
        kl_coef=0.1,
    )
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(logp.grad).all()
    assert all(math.isfinite(v) for v in metrics.values())


def test_shape_mismatch_rejected():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="shape"):
        policy_loss(x, x, torch.zeros(2, 4), x.bool())


# --- gradient accumulation: 8 micro-batches of 1 == 1 batch of 8 -----------------------


def accumulation_case():
    gen = torch.Generator().manual_seed(5)
    b, T = 8, 7
    logp = (-torch.rand(b, T, generator=gen, dtype=F64) * 3).requires_grad_(True)
    old = logp.detach() + 0.3 * torch.randn(b, T, generator=gen, dtype=F64)  # some clips bind
    ref = logp.detach() + 0.2 * torch.randn(b, T, generator=gen, dtype=F64)
    adv = torch.randn(b, 1, generator=gen, dtype=F64).expand(b, T)
    lengths = torch.tensor([7, 1, 3, 5, 2, 7, 4, 6])  # unequal, so token_mean needs the normalizer
    mask = torch.arange(T)[None] < lengths[:, None]
    return logp, old, ref, adv, mask


T_BUDGET = 7  # max_new_tokens of the accumulation case


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_grad_accumulation_with_global_normalizer(mode):
    logp, old, ref, adv, mask = accumulation_case()
    opts = dict(aggregation=mode, kl_coef=0.05, clip_eps=0.2, max_new_tokens=T_BUDGET)
    normalizer = loss_normalizer(mode, mask, T_BUDGET)
    full, metrics = policy_loss(logp, old, adv, mask, ref_logprobs=ref, **opts)
    assert 0 < metrics["clip_frac"] < 1
    full_n, _ = policy_loss(logp, old, adv, mask, ref_logprobs=ref, normalizer=normalizer, **opts)
    assert full_n.item() == pytest.approx(full.item(), rel=1e-12)  # own count == global count
    (g_full,) = torch.autograd.grad(full, logp)
    total = 0.0
    for i in range(8):
        rows = slice(i, i + 1)
        micro, _ = policy_loss(
            logp[rows],
            old[rows],
            adv[rows],
            mask[rows],
            ref_logprobs=ref[rows],
            normalizer=normalizer,
            **opts,
        )
        total = total + micro
    (g_micro,) = torch.autograd.grad(total, logp)
    assert total.item() == pytest.approx(full.item(), rel=1e-12)
    torch.testing.assert_close(g_micro, g_full, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_grad_accumulation_without_normalizer(mode):
    """Averaging equal-sized micro-batches: promised by the seq_* modes, not by token_mean."""
    logp, old, ref, adv, mask = accumulation_case()
    opts = dict(aggregation=mode, max_new_tokens=T_BUDGET)
    full, _ = policy_loss(logp, old, adv, mask, **opts)
    micro = (
        sum(
            policy_loss(logp[i : i + 1], old[i : i + 1], adv[i : i + 1], mask[i : i + 1], **opts)[0]
            for i in range(8)
        )
        / 8
    )
    if mode == "token_mean":
        assert abs(micro.item() - full.item()) > 1e-3
    else:
        assert micro.item() == pytest.approx(full.item(), rel=1e-12)


def data_parallel_grad(mode, normalizer_of_rank, world_size_factor):
    """2 ranks x 2 micro-batches of 2 rows; gradients averaged over ranks as DeepSpeed does."""
    logp, old, ref, adv, mask = accumulation_case()
    opts = dict(aggregation=mode, kl_coef=0.05, max_new_tokens=T_BUDGET)
    ranks = [torch.arange(0, 4), torch.arange(4, 8)]
    global_norm = sum(loss_normalizer(mode, mask[r], T_BUDGET) for r in ranks)  # all_reduce SUM
    per_rank = []
    for r in ranks:
        norm = global_norm if normalizer_of_rank == "global" else loss_normalizer(mode, mask[r], T_BUDGET)
        loss = 0.0
        for micro in (r[:2], r[2:]):
            part, _ = policy_loss(
                logp[micro], old[micro], adv[micro], mask[micro],
                ref_logprobs=ref[micro], normalizer=norm, **opts,
            )
            loss = loss + world_size_factor * part
        per_rank.append(torch.autograd.grad(loss, logp)[0])
    full, _ = policy_loss(logp, old, adv, mask, ref_logprobs=ref, **opts)
    return sum(per_rank) / len(ranks), torch.autograd.grad(full, logp)[0]


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_data_parallel_with_global_normalizer_is_the_full_batch(mode):
    """Normalizer summed over ranks, loss x world size: the averaged gradient is the batch's."""
    got, full = data_parallel_grad(mode, "global", world_size_factor=2)
    torch.testing.assert_close(got, full, rtol=1e-12, atol=1e-14)


def test_token_mean_per_rank_normalizer_is_a_mean_of_rank_means():
    """What a per-rank count gives: each rank's tokens weigh by 1/(its count), not 1/(all)."""
    got, full = data_parallel_grad("token_mean", "rank", world_size_factor=1)
    assert (got - full).abs().max() > 1e-3


def test_pg_loss_metric_sums_over_micro_batches():
    """Each micro-batch's pg_loss is its share: summed they are the batch's, averaged 1/k of it."""
    logp, old, ref, adv, mask = accumulation_case()
    opts = dict(aggregation="token_mean", kl_coef=0.05, ref_logprobs=ref, entropy=-logp.detach())
    _, full = policy_loss(logp, old, adv, mask, **opts)
    norm = loss_normalizer("token_mean", mask)
    parts = []
    for rows in (slice(0, 3), slice(3, 5), slice(5, 8)):
        sub = dict(opts, ref_logprobs=ref[rows], entropy=-logp.detach()[rows])
        parts.append(
            policy_loss(logp[rows], old[rows], adv[rows], mask[rows], normalizer=norm, **sub)[1]
        )
    merged = merge_micro_metrics(parts)
    assert set(merged) == set(full)
    for key in full:
        assert merged[key] == pytest.approx(full[key], rel=1e-12), key
    mean_of_parts = sum(p["pg_loss"] for p in parts) / len(parts)  # what averaging logs
    assert mean_of_parts == pytest.approx(full["pg_loss"] / 3, rel=1e-12)
    with pytest.raises(ValueError, match="no micro-batch"):
        merge_micro_metrics([])
