"""Clipped importance-ratio policy loss and its aggregation over tokens.

Per token (PPO, Schulman et al. 2017; clip-higher as in DAPO when ``clip_eps_high`` is set):

    rho_t  = exp(log pi(y_t) - log pi_old(y_t))
    l_t    = -min(rho_t * A_t, clip(rho_t, 1 - eps_low, 1 + eps_high) * A_t)
             [+ beta * kl_t   when the KL sits in the loss]

On-policy (``old_logprobs == logprobs.detach()``), rho = 1 with gradient ``grad log pi``, the
clip does not bind, and ``grad l_t = -A_t grad log pi(y_t)``: exactly REINFORCE.

Aggregation (:data:`AGGREGATIONS`), an option independent of the loss, over a batch of B
responses with mask ``m`` and ``N`` = the ``normalizer`` or, when it is None, the batch's
own count (tokens for ``token_mean``, responses for the ``seq_*`` modes):

    token_mean            sum_{b,t} m l / N_tokens        (MaxRL reference code)
    seq_mean_token_sum    sum_b (sum_t m l) / N_seqs      (MaxRL paper, Algorithm 1)
    seq_mean_token_mean   sum_b (sum_t m l / sum_t m) / N_seqs   (GRPO paper)

Gradient accumulation: pass the *global* batch's count as ``normalizer`` and the micro-batch
losses sum to the full-batch loss in every mode. With ``normalizer=None`` each micro-batch
is normalised by its own count; averaging k equal-sized micro-batches then reproduces the
full batch for the ``seq_*`` modes, but not for ``token_mean`` when token counts differ.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._registry import Registry
from .kl import kl_penalty

_REGISTRY: Registry = Registry("aggregation")


@_REGISTRY.register("token_mean")
def _token_mean(values: Tensor, mask: Tensor, normalizer: float | None) -> Tensor:
    total = mask.sum().clamp(min=1) if normalizer is None else normalizer
    return values.sum() / total


@_REGISTRY.register("seq_mean_token_sum")
def _seq_mean_token_sum(values: Tensor, mask: Tensor, normalizer: float | None) -> Tensor:
    total = max(values.shape[0], 1) if normalizer is None else normalizer
    return values.sum() / total


@_REGISTRY.register("seq_mean_token_mean")
def _seq_mean_token_mean(values: Tensor, mask: Tensor, normalizer: float | None) -> Tensor:
    per_seq = values.sum(dim=1) / mask.sum(dim=1).clamp(min=1)  # empty response: 0
    total = max(values.shape[0], 1) if normalizer is None else normalizer
    return per_seq.sum() / total


AGGREGATIONS: tuple[str, ...] = _REGISTRY.names


def aggregate(values: Tensor, mask: Tensor, mode: str, normalizer: float | None = None) -> Tensor:
    """Reduce per-token ``values`` ``[B, T]`` under ``mask`` ``[B, T]`` to a scalar.

    ``mode`` is one of :data:`AGGREGATIONS`; ``normalizer`` as in the module docstring.
    Padding may hold anything (inf, nan): it is selected away, not multiplied by 0.
    """
    fn = _REGISTRY.get(mode)
    if values.shape != mask.shape or values.dim() != 2:
        raise ValueError(
            f"values and mask must share one [B, T] shape, got "
            f"{tuple(values.shape)}, {tuple(mask.shape)}"
        )
    if normalizer is not None and not normalizer > 0:
        raise ValueError(f"normalizer must be > 0, got {normalizer}")
    keep = mask.bool()
    return fn(torch.where(keep, values, 0.0), keep.to(values.dtype), normalizer)


def _masked_mean(values: Tensor, keep: Tensor) -> float:
    """Mean of ``values`` over the tokens in ``keep`` as a python float (0.0 if none)."""
    count = int(keep.sum())
    return float(torch.where(keep, values, 0.0).sum()) / count if count else 0.0


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    aggregation: str = "token_mean",
    ref_logprobs: Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    entropy: Tensor | None = None,
    normalizer: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Clipped surrogate loss (module docstring), aggregated; plus metrics.

    Args:
        logprobs: ``[B, T]`` log pi of the sampled tokens, with gradient.
        old_logprobs: ``[B, T]`` log pi_old at sampling time (detached here).
        advantages: ``[B, T]`` per-token advantages (see ``token_advantages``; detached).
        mask: ``[B, T]`` bool/float, 1 on response tokens.
        clip_eps, clip_eps_high: ratio clipped to ``[1 - clip_eps, 1 + clip_eps_high]``;
            ``clip_eps_high=None`` means symmetric.
        aggregation: one of :data:`AGGREGATIONS`.
        ref_logprobs, kl_coef, kl_estimator: ``kl_coef * kl_t`` is added to each token's
            loss (differentiated through ``logprobs``) only if ``ref_logprobs`` is given and
            ``kl_coef > 0``.
        entropy: ``[B, T]`` per-token entropy, logged only (no entropy bonus: 0 in both
            papers' reference code).
        normalizer: global token count (``token_mean``) or response count (``seq_*``) for
            gradient accumulation; None normalises within this batch.

    Returns:
        ``(loss, metrics)``: a scalar tensor, and python floats averaged over this batch's
        response tokens: ``clip_frac`` (share of tokens where the clipped term is the
        minimum, so the token gets no gradient), ``ratio_mean``, ``pg_loss`` (the loss
        without the KL term), and ``kl`` if ``ref_logprobs`` is given, ``entropy`` if given.
    """
    shapes = {tuple(t.shape) for t in (logprobs, old_logprobs, advantages, mask)}
    if len(shapes) != 1 or logprobs.dim() != 2:
        raise ValueError(
            f"logprobs, old_logprobs, advantages, mask must share one [B, T] "
            f"shape, got {sorted(shapes)}"
        )
    high = clip_eps if clip_eps_high is None else clip_eps_high
    keep = mask.bool()
    # Padding is zeroed before any exp, so garbage there (even inf) cannot reach the gradient.
    lp = torch.where(keep, logprobs, 0.0)
    ratio = torch.exp(lp - torch.where(keep, old_logprobs.detach(), 0.0))
    adv = torch.where(keep, advantages.detach(), 0.0)
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + high) * adv
    pg_tokens = -torch.minimum(unclipped, clipped)
    loss = aggregate(pg_tokens, mask, aggregation, normalizer)

    metrics: dict[str, float] = {"pg_loss": float(loss.detach())}
    if ref_logprobs is not None:
        kl_tokens = kl_penalty(lp, torch.where(keep, ref_logprobs.detach(), 0.0), kl_estimator)
        metrics["kl"] = _masked_mean(kl_tokens.detach(), keep)
        if kl_coef > 0:  # aggregation is linear: same as aggregating pg + beta * kl per token
            loss = loss + kl_coef * aggregate(kl_tokens, mask, aggregation, normalizer)
    with torch.no_grad():
        metrics["clip_frac"] = _masked_mean((clipped < unclipped).to(ratio.dtype), keep)
        metrics["ratio_mean"] = _masked_mean(ratio, keep)
        if entropy is not None:
            metrics["entropy"] = _masked_mean(entropy, keep)
    return loss, metrics
