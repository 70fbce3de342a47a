"""Clipped importance-ratio policy loss and its aggregation over tokens.

Per token (PPO, Schulman et al. 2017; clip-higher as in DAPO when ``clip_eps_high`` is set):

    rho_t  = exp(log pi(y_t) - log pi_old(y_t))
    l_t    = -min(rho_t * A_t, clip(rho_t, 1 - eps_low, 1 + eps_high) * A_t)
             [+ beta * kl_t   when the KL sits in the loss, see ``kl_loss_tokens``]

On-policy (``old_logprobs == logprobs.detach()``), rho = 1 with gradient ``grad log pi``, the
clip does not bind, and ``grad l_t = -A_t grad log pi(y_t)``: exactly REINFORCE.

Aggregation (:data:`AGGREGATIONS`), an option independent of the loss, over a batch of B
responses with mask ``m``, divided by ``N`` = the ``normalizer`` or, when it is None, this
batch's own :func:`loss_normalizer`:

    token_mean               sum_{b,t} m l / N_tokens                 (MaxRL reference code)
    seq_mean_token_sum       sum_b (sum_t m l) / N_seqs               (MaxRL paper, Algorithm 1)
    seq_mean_token_mean      sum_b (sum_t m l / sum_t m) / N_seqs     (GRPO paper)
    seq_mean_token_sum_norm  sum_{b,t} m l / (N_seqs * max_new_tokens)   (Dr.GRPO: a constant)

Gradient accumulation and data parallelism: pass the *global* count (the whole mini-batch's,
summed over micro-batches and ranks, :func:`loss_normalizer`) as ``normalizer`` and the
micro-batch losses sum to the mini-batch loss in every mode. With ``normalizer=None`` each
micro-batch is normalised by its own count: averaging k equal-sized micro-batches then
reproduces the full batch for the ``seq_*`` modes, but not for ``token_mean``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from ._registry import Registry
from .kl import kl_loss_tokens


class _Aggregation(NamedTuple):
    total: Callable[[Tensor, Tensor], Tensor]  # (masked values, float mask) -> summed loss
    count: Callable[[Tensor, int | None], float]  # (bool mask, max_new_tokens) -> its divisor


def _token_sum(values: Tensor, mask: Tensor) -> Tensor:
    return values.sum()


def _sequence_means_sum(values: Tensor, mask: Tensor) -> Tensor:
    return (values.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).sum()  # empty response: 0


def _tokens(mask: Tensor, max_new_tokens: int | None) -> float:
    return float(mask.sum())


def _sequences(mask: Tensor, max_new_tokens: int | None) -> float:
    return float(mask.shape[0])


def _token_budget(mask: Tensor, max_new_tokens: int | None) -> float:
    # Dr.GRPO: a constant per response, so a long response's tokens weigh what a short one's do.
    if max_new_tokens is None or max_new_tokens < 1:
        raise ValueError(
            "seq_mean_token_sum_norm divides by sequences x max_new_tokens: "
            f"pass max_new_tokens >= 1, got {max_new_tokens}"
        )
    return float(mask.shape[0] * max_new_tokens)


_REGISTRY: Registry = Registry("aggregation")
_REGISTRY.register("token_mean")(_Aggregation(_token_sum, _tokens))
_REGISTRY.register("seq_mean_token_sum")(_Aggregation(_token_sum, _sequences))
_REGISTRY.register("seq_mean_token_mean")(_Aggregation(_sequence_means_sum, _sequences))
_REGISTRY.register("seq_mean_token_sum_norm")(_Aggregation(_token_sum, _token_budget))

AGGREGATIONS: tuple[str, ...] = _REGISTRY.names
SUMMED_METRICS: tuple[str, ...] = ("pg_loss", "kl_loss")
""":func:`policy_loss` metrics that are a batch's share of the loss: summed, not averaged."""


def loss_normalizer(aggregation: str, mask: Tensor, max_new_tokens: int | None = None) -> float:
    """What ``aggregation`` divides the summed loss by, for the responses in ``mask``.

    Tokens for ``token_mean``; responses for ``seq_mean_token_sum`` and
    ``seq_mean_token_mean``; responses x ``max_new_tokens`` for ``seq_mean_token_sum_norm``
    (required there). Pass it to :func:`policy_loss` as ``normalizer``.

    It must be global across micro-batches AND ranks: compute it on this rank's whole
    mini-batch, sum it over ranks (all_reduce), and multiply each micro-batch's loss by the
    world size, because DeepSpeed averages gradients over ranks. The summed gradient is then
    that of the whole mini-batch's loss, however it is split.

    Args:
        aggregation: one of :data:`AGGREGATIONS`.
        mask: ``[B, T]`` bool/float, 1 on response tokens.
        max_new_tokens: the generation budget per response (``train.max_new_tokens``).
    """
    return _REGISTRY.get(aggregation).count(mask.bool(), max_new_tokens)


def aggregate(
    values: Tensor,
    mask: Tensor,
    mode: str,
    normalizer: float | None = None,
    max_new_tokens: int | None = None,
) -> Tensor:
    """Reduce per-token ``values`` ``[B, T]`` under ``mask`` ``[B, T]`` to a scalar.

    ``mode`` is one of :data:`AGGREGATIONS`; ``normalizer`` and ``max_new_tokens`` as in the
    module docstring. Padding may hold anything (inf, nan): it is selected away, not
    multiplied by 0. An empty batch aggregates to 0.
    """
    agg = _REGISTRY.get(mode)
    if values.shape != mask.shape or values.dim() != 2:
        raise ValueError(
            f"values and mask must share one [B, T] shape, got "
            f"{tuple(values.shape)}, {tuple(mask.shape)}"
        )
    if normalizer is None:
        normalizer = max(agg.count(mask.bool(), max_new_tokens), 1.0)
    elif not normalizer > 0:
        raise ValueError(f"normalizer must be > 0, got {normalizer}")
    keep = mask.bool()
    return agg.total(torch.where(keep, values, 0.0), keep.to(values.dtype)) / normalizer


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
    max_new_tokens: int | None = None,
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
        ref_logprobs, kl_coef, kl_estimator: the KL in the loss, only if ``ref_logprobs`` is
            given and ``kl_coef > 0``: ``kl_coef * kl_loss_tokens(...)`` is added to each
            token's loss, so that the gradient follows ``kl_coef * KL(pi || pi_ref)``.
        entropy: ``[B, T]`` per-token entropy, logged only (no entropy bonus: 0 in both
            papers' reference code).
        normalizer: :func:`loss_normalizer` of the global mini-batch, for gradient
            accumulation and data parallelism; None normalises within this batch.
        max_new_tokens: the generation budget, needed by ``seq_mean_token_sum_norm`` when
            ``normalizer`` is None.

    Returns:
        ``(loss, metrics)``: a scalar tensor, and python floats. ``pg_loss`` (the loss without
        the KL term) and ``kl_loss`` (the KL term, if in the loss) are this batch's share of
        the loss: with a global normalizer, sum them over micro-batches and ranks
        (:data:`SUMMED_METRICS`, :func:`merge_micro_metrics`). The rest are means over this
        batch's ``tokens``: ``clip_frac`` (share of tokens where the clipped term is the
        minimum, so the token gets no gradient), ``ratio_mean``, ``entropy`` if given.
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
    old = torch.where(keep, old_logprobs.detach(), 0.0)
    ratio = torch.exp(lp - old)
    adv = torch.where(keep, advantages.detach(), 0.0)
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + high) * adv
    pg_tokens = -torch.minimum(unclipped, clipped)
    loss = aggregate(pg_tokens, mask, aggregation, normalizer, max_new_tokens)

    metrics: dict[str, float] = {"pg_loss": float(loss.detach()), "tokens": float(keep.sum())}
    if ref_logprobs is not None and kl_coef > 0:
        ref = torch.where(keep, ref_logprobs.detach(), 0.0)
        kl_tokens = kl_loss_tokens(lp, old, ref, kl_estimator)
        kl_loss = kl_coef * aggregate(kl_tokens, mask, aggregation, normalizer, max_new_tokens)
        metrics["kl_loss"] = float(kl_loss.detach())
        loss = loss + kl_loss  # aggregation is linear: same as aggregating pg + beta * kl
    with torch.no_grad():
        metrics["clip_frac"] = _masked_mean((clipped < unclipped).to(ratio.dtype), keep)
        metrics["ratio_mean"] = _masked_mean(ratio, keep)
        if entropy is not None:
            metrics["entropy"] = _masked_mean(entropy, keep)
    return loss, metrics


def merge_micro_metrics(parts: Sequence[dict[str, float]]) -> dict[str, float]:
    """One mini-batch's metrics from its micro-batches' :func:`policy_loss` metrics.

    Every part must come from the same global ``normalizer``. :data:`SUMMED_METRICS` are
    shares of the mini-batch loss and are summed; the other metrics are means over each
    part's ``tokens`` and are averaged weighted by them; ``tokens`` is summed. Across ranks
    the same rule applies (all_reduce the sums, and the token-weighted sums with the tokens).
    """
    if not parts:
        raise ValueError("no micro-batch metrics to merge")
    tokens = sum(p["tokens"] for p in parts)
    out: dict[str, float] = {}
    for key in parts[0]:
        if key in SUMMED_METRICS or key == "tokens":
            out[key] = sum(p[key] for p in parts)
        else:
            out[key] = sum(p[key] * p["tokens"] for p in parts) / tokens if tokens else 0.0
    return out
