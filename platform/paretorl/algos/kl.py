"""KL to the reference policy: per-token estimators, where the penalty goes, which KL it follows.

Estimators of ``KL(pi || pi_ref)`` from tokens sampled from ``pi`` (Schulman, "Approximating
KL divergence", 2020), with ``d = log pi - log pi_ref`` per token:

    k1 = d                      unbiased, high variance, can be negative
    k2 = d^2 / 2                biased, low variance, >= 0
    k3 = exp(-d) - 1 + d        unbiased, low variance, >= 0

A penalty is trained on through its gradient, not its value, and the gradient depends on the
placement (:data:`KL_PLACEMENTS`). docs/algorithms.md ("KL to the reference") derives which KL
each pair follows; tests/algos/test_kl_gradients.py checks it by exact enumeration:

- ``reward`` (:func:`token_advantages`): ``-beta * k_t`` is a detached per-token reward, as in
  the Arora & Zanette reference code (OpenRLHF, k1, beta = 1e-3). With k1 its REINFORCE
  gradient is exactly that of ``beta * KL(pi || pi_ref)`` over whole responses. k2 and k3 are
  refused there (:data:`KL_REFUSED`).
- ``loss`` (:func:`kl_loss_tokens`, added by :func:`paretorl.algos.policy_loss`): the per-token
  estimate is differentiated, weighted by the importance ratio so that its expected gradient is
  that of ``KL(pi || pi_ref)`` at each position (GRPO-style placement, corrected).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._registry import Registry

_REGISTRY: Registry = Registry("KL estimator")


@_REGISTRY.register("k1")
def _k1(log_ratio: Tensor) -> Tensor:
    return log_ratio


@_REGISTRY.register("k2")
def _k2(log_ratio: Tensor) -> Tensor:
    return 0.5 * log_ratio**2


@_REGISTRY.register("k3")
def _k3(log_ratio: Tensor) -> Tensor:
    return torch.expm1(-log_ratio) + log_ratio  # expm1: exact near d = 0, where k3 ~ d^2/2


KL_ESTIMATORS: tuple[str, ...] = _REGISTRY.names
KL_PLACEMENTS: tuple[str, ...] = ("reward", "loss")

_REWARD_NOT_KL = (
    "as a detached reward, {est} gives the expected gradient E[{est} * grad log pi], which is "
    "not the gradient of a KL: near pi_ref it shrinks with the square of the distance (a KL's "
    "gradient shrinks linearly) and it can point away from pi_ref, so the penalty regularises "
    "nothing (docs/algorithms.md, 'KL to the reference'). Use kl_estimator k1 with "
    "kl_placement reward (Arora & Zanette), or kl_placement loss (k3 or k2)"
)
KL_REFUSED: dict[tuple[str, str], str] = {
    ("k2", "reward"): _REWARD_NOT_KL.format(est="k2"),
    ("k3", "reward"): _REWARD_NOT_KL.format(est="k3"),
}
"""``(estimator, placement)`` pairs that regularise nothing, with the reason; the config refuses
them when ``kl_coef > 0``."""


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: str) -> Tensor:
    """Per-token KL estimate ``k(log pi - log pi_ref)``.

    Args:
        logprobs: ``[B, T]`` log pi of the sampled tokens (gradients flow through it).
        ref_logprobs: ``[B, T]`` log pi_ref of the same tokens.
        estimator: one of :data:`KL_ESTIMATORS`.

    Returns:
        ``[B, T]`` estimates, unmasked: the caller masks padding.
    """
    fn = _REGISTRY.get(estimator)
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(f"shape mismatch {tuple(logprobs.shape)} vs {tuple(ref_logprobs.shape)}")
    return fn(logprobs - ref_logprobs)


def kl_loss_tokens(
    logprobs: Tensor, old_logprobs: Tensor, ref_logprobs: Tensor, estimator: str
) -> Tensor:
    """Per-token KL term of the ``loss`` placement: its gradient follows ``KL(pi || pi_ref)``.

    Differentiating an estimate ``k_t`` directly does not: ``grad k1 = grad log pi`` has mean 0,
    and ``grad k3 = (1 - pi_ref/pi) grad log pi`` has mean ``grad KL(pi_ref || pi)``, the other
    direction. With the importance weight ``w_t = pi / pi_old`` (gradient flowing; 1 on-policy)
    the tokens drawn from ``pi_old`` give

        k1, k3:  grad(w k) = w (k + d k / d log pi) grad log pi,  mean  grad E_pi[k] = grad KL
        k2:      grad(sg(w) k) = w d grad log pi,                 mean  grad KL

    k2 keeps a detached weight: its own gradient is already KL's score-function gradient, and a
    flowing weight would follow ``grad E_pi[k2]``, a different divergence. k3 then has exactly
    k2's per-sample gradient ``w d grad log pi``; k1 adds ``w grad log pi``, zero-mean noise.
    (Rethinking KL regularization in RLHF, Liu et al., 2025, analyse the placements this way.)

    Args:
        logprobs: ``[B, T]`` log pi, with gradient.
        old_logprobs: ``[B, T]`` log pi_old, the sampling policy (detached here).
        ref_logprobs: ``[B, T]`` log pi_ref (detached here).
        estimator: one of :data:`KL_ESTIMATORS`.

    Returns:
        ``[B, T]`` per-token terms, unmasked; on-policy their value is ``k_t``.
    """
    k = kl_penalty(logprobs, ref_logprobs.detach(), estimator)
    weight = torch.exp(logprobs - old_logprobs.detach())
    if estimator == "k2":
        weight = weight.detach()
    return weight * k


def kl_metric(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor) -> float:
    """Mean per-token ``KL(pi || pi_ref)`` of the sampled tokens, for logging (``train/kl``).

    Estimated with k3 (unbiased, >= 0, low variance) whatever the trial trains with, so trials
    with different estimators or placements compare. 0.0 when the mask is empty.

    Args:
        logprobs, ref_logprobs: ``[B, T]`` log pi (the sampling policy's) and log pi_ref.
        mask: ``[B, T]`` bool/float, 1 on response tokens; padding may hold anything.
    """
    keep = mask.bool()
    count = int(keep.sum())
    if not count:
        return 0.0
    lp = torch.where(keep, logprobs.detach(), 0.0)
    kl = kl_penalty(lp, torch.where(keep, ref_logprobs.detach(), 0.0), "k3")
    return float(torch.where(keep, kl, 0.0).sum()) / count


def token_advantages(
    advantages: Tensor,
    mask: Tensor,
    *,
    kl_coef: float = 0.0,
    kl_placement: str = "reward",
    logprobs: Tensor | None = None,
    ref_logprobs: Tensor | None = None,
    kl_estimator: str = "k1",
) -> Tensor:
    """Per-token advantages: each response's advantage on each of its tokens, KL shaped.

    Without a KL reward (``kl_placement == "loss"`` or ``kl_coef == 0``):
    ``A_{b,t} = A_b * mask_{b,t}``.

    With ``kl_placement == "reward"`` and ``kl_coef = beta > 0``, the reference code's
    scheme: each token gets the reward ``-beta * kl_t`` (the response's own reward sits on
    its last token), and its advantage is the undiscounted return-to-go,

        A_{b,t} = A_b - beta * sum_{s >= t, mask} kl_{b,s}

    (OpenRLHF ``compute_reward`` + ``get_cumulative_returns`` with gamma = 1). This is the
    REINFORCE gradient of ``E[r - beta * sum_t kl_t]`` with causality: token t's choice
    only affects the penalties from t on. The penalty is detached: it shapes the reward,
    it is not differentiated, so only k1 makes it ``beta * KL(pi || pi_ref)`` (the config
    refuses k2 and k3 here, :data:`KL_REFUSED`). Group baselines and normalisation apply to
    ``A_b`` before this step (the reference whitens after it, over tokens).

    Args:
        advantages: ``[B]`` one advantage per response (``compute_advantages(...).flatten()``).
        mask: ``[B, T]`` bool/float, 1 on response tokens.
        logprobs, ref_logprobs: ``[B, T]``, needed for the ``reward`` placement; ``logprobs``
            are the sampling policy's (``pi_old``).

    Returns:
        ``[B, T]`` advantages in ``advantages``' dtype, 0 on padding.
    """
    if kl_placement not in KL_PLACEMENTS:
        raise ValueError(
            f"unknown kl_placement {kl_placement!r}; valid: {', '.join(KL_PLACEMENTS)}"
        )
    if advantages.dim() != 1 or mask.dim() != 2 or advantages.shape[0] != mask.shape[0]:
        shapes = f"{tuple(advantages.shape)}, {tuple(mask.shape)}"
        raise ValueError(f"need advantages [B] and mask [B, T], got {shapes}")
    keep = mask.bool()
    out = torch.where(keep, advantages[:, None], 0.0).to(advantages.dtype)
    if kl_placement == "reward" and kl_coef > 0:
        if logprobs is None or ref_logprobs is None:
            raise ValueError("a KL reward needs logprobs and ref_logprobs")
        kl = kl_penalty(logprobs.detach(), ref_logprobs.detach(), kl_estimator)
        kl = torch.where(keep, kl, 0.0).to(advantages.dtype)
        return_to_go = kl.flip(-1).cumsum(-1).flip(-1)
        out = out - kl_coef * torch.where(keep, return_to_go, 0.0)
    return out
