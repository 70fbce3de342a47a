"""Advantage normalisation, an option independent of the objective: none, batch, group_std.

Kept apart from the objectives because the two papers disagree on it and it changes what a
length penalty does (docs/algorithms.md section 3):

- ``group_std`` divides each group's advantages by the std of its *rewards* (GRPO-style).
  With alpha > 0 this makes the length push independent of alpha: when every response of a
  prompt is correct, the rewards ``1 - alpha * sigmoid(z)`` all scale with alpha, and so
  does their std, so alpha cancels (rewards spread uniformly over [1 - alpha, 1] give the
  shortest response advantage ~sqrt(3) whatever alpha is). Arora & Zanette report answers
  then shorten too fast and accuracy collapses; the paper's default is ``none`` (RLOO).
  GRPO's advantage is already divided by that std: the config refuses ``grpo`` with
  ``group_std`` (``dr_grpo`` with ``group_std`` is GRPO).
- ``batch`` whitens advantages over the whole batch (subtract the batch mean, divide by the
  batch std) as the Arora & Zanette reference code (OpenRLHF) does. That is a single global
  scale, so alpha still sets the strength of the length push.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._registry import Registry

_REGISTRY: Registry = Registry("normalization")


@_REGISTRY.register("none")
def _none(advantages: Tensor, rewards: Tensor | None, eps: float, weights: Tensor | None) -> Tensor:
    return advantages.clone()


@_REGISTRY.register("batch")
def _batch(
    advantages: Tensor, rewards: Tensor | None, eps: float, weights: Tensor | None
) -> Tensor:
    w = torch.ones_like(advantages) if weights is None else weights.to(advantages.dtype)
    if w.shape != advantages.shape:
        raise ValueError("weights must have the shape of advantages")
    total = w.sum().clamp(min=torch.finfo(advantages.dtype).tiny)
    mean = (w * advantages).sum() / total
    var = (w * (advantages - mean) ** 2).sum() / total  # population variance, as whitening
    return (advantages - mean) / (var.sqrt() + eps)


@_REGISTRY.register("group_std")
def _group_std(
    advantages: Tensor, rewards: Tensor | None, eps: float, weights: Tensor | None
) -> Tensor:
    if rewards is None or rewards.shape != advantages.shape:
        raise ValueError("group_std needs rewards of the same [G, n] shape as advantages")
    if advantages.shape[1] < 2:  # std undefined; such groups have advantage 0 anyway
        return advantages.clone()
    std = rewards.to(advantages.dtype).std(dim=1, keepdim=True, correction=1)
    return advantages / (std + eps)


NORMALIZATIONS: tuple[str, ...] = _REGISTRY.names


def normalize_advantages(
    advantages: Tensor,
    mode: str,
    rewards: Tensor | None = None,
    eps: float = 1e-6,
    *,
    weights: Tensor | None = None,
) -> Tensor:
    """Normalise ``[G, n]`` advantages; returns a new ``[G, n]`` tensor.

    Modes (:data:`NORMALIZATIONS`):
        ``none``: unchanged (a copy).
        ``batch``: ``(A - mean(A)) / (std(A) + eps)`` over all G*n entries, population std.
            ``weights`` (``[G, n]``, e.g. response token counts) weight each entry in the
            mean and variance; the reference code whitens over *tokens*, which is
            ``weights = lengths`` when each response's advantage is shared by its tokens.
            Default: every response counts once.
        ``group_std``: ``A / (std_g(r) + eps)`` with ``std_g`` the unbiased (ddof = 1)
            std of group g's ``rewards`` ``[G, n]`` (required), as in GRPO, so that
            ``normalize(dr_grpo(r), "group_std", r) == grpo(r)``. Groups of one sample
            are returned unchanged (their std is undefined; their advantage is 0 anyway).
    """
    fn = _REGISTRY.get(mode)
    if advantages.dim() != 2:
        raise ValueError(f"advantages must be [G, n], got shape {tuple(advantages.shape)}")
    return fn(advantages, rewards, eps, weights)
