"""KL to the reference policy: per-token estimators and where the penalty goes.

Estimators of ``KL(pi || pi_ref)`` from tokens sampled from ``pi`` (Schulman, "Approximating
KL divergence", 2020), with ``d = log pi - log pi_ref`` per token:

    k1 = d                      unbiased, high variance, can be negative
    k2 = d^2 / 2                biased, low variance, >= 0
    k3 = exp(-d) - 1 + d        unbiased, low variance, >= 0

Placement (:data:`KL_PLACEMENTS`), an option independent of the estimator:

- ``reward``: the penalty ``-beta * kl_t`` is a per-token reward, as in the Arora & Zanette
  reference code (OpenRLHF, k1, beta = 1e-3); see :func:`token_advantages`.
- ``loss``: ``beta * kl_t`` is added to the per-token loss and differentiated
  (GRPO-style, usually with k3); see :func:`paretorl.algos.policy_loss`.
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


def token_advantages(
    advantages: Tensor,
    mask: Tensor,
    *,
    kl_coef: float = 0.0,
    kl_placement: str = "loss",
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
    it is not differentiated. Group baselines and normalisation apply to ``A_b`` before
    this step (the reference whitens after it, over tokens).

    Args:
        advantages: ``[B]`` one advantage per response (``compute_advantages(...).flatten()``).
        mask: ``[B, T]`` bool/float, 1 on response tokens.
        logprobs, ref_logprobs: ``[B, T]``, needed for the ``reward`` placement.

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
