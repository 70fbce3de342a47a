"""Advantage estimators ("objectives") over groups of samples: GRPO, MaxRL, RLOO, Dr.GRPO.

Layout: ``rewards`` is ``[G, n]``, G prompts with n sampled responses each; every function
returns advantages of the same shape, one per response, used for every token of it.
Formulas: docs/algorithms.md section 2 (MaxRL, Tajwar, Zanette et al., 2026, and the baselines it
compares against).

Guards shared by every objective (applied in :func:`compute_advantages`):

- a group whose rewards are all equal (all wrong, all correct) carries no signal: A = 0,
  exactly, not ``~1e-17 / eps`` from the rounding of its mean;
- a group of one sample has no baseline: A = 0 (the MaxRL reference code gives a lone
  success ~1e6 there, a bug; GRPO's unbiased std and RLOO's n/(n-1) are undefined).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._registry import Registry

_REGISTRY: Registry = Registry("objective")
register_objective = _REGISTRY.register


def _group_mean(rewards: Tensor) -> Tensor:
    """``[G, n] -> [G, 1]`` mean reward of each group."""
    return rewards.mean(dim=1, keepdim=True)


@register_objective("grpo")
def grpo(rewards: Tensor, eps: float) -> Tensor:
    """GRPO: ``A_i = (r_i - mean(r)) / (std(r) + eps)``, unbiased std (ddof = 1).

    Args: rewards ``[G, n]`` float, n >= 2. Returns ``[G, n]``.
    """
    std = rewards.std(dim=1, keepdim=True, correction=1)
    return (rewards - _group_mean(rewards)) / (std + eps)


@register_objective("maxrl")
def maxrl(rewards: Tensor, eps: float) -> Tensor:
    """MaxRL: ``A_i = (r_i - mean(r)) / (mean(r) + eps)``.

    With binary rewards and K successes out of n, a success gets ``(n - K) / K`` and a
    failure ``-1``: the per-group estimate ``(1/n) sum_i A_i grad log pi(y_i)`` is
    ``(1/K) sum_{correct} grad log pi`` minus the group-mean baseline, whose expectation is
    ``((1 - (1-p)^(n-1)) / p) grad p = sum_{k=1..n-1} (1/k) grad pass@k`` -- maximum
    likelihood's ``grad log p`` truncated at order n - 1 (the baseline costs one order).

    Shaped (non-binary) rewards, e.g. the length penalty with alpha > 0: dividing by the
    group's mean reward estimates ``grad E[r] / E[r] = grad log E[r]``, the natural
    extension of ``grad log p``. That needs ``E[r] > 0``, hence rewards must be >= 0
    (ValueError otherwise); a group with mean 0 is all zeros and gets A = 0.

    Args: rewards ``[G, n]`` float, n >= 2, all >= 0. Returns ``[G, n]``.
    """
    if bool((rewards < 0).any()):
        raise ValueError("maxrl needs non-negative rewards: it estimates grad log E[r]")
    mean = _group_mean(rewards)
    return (rewards - mean) / (mean + eps)


@register_objective("rloo")
def rloo(rewards: Tensor, eps: float) -> Tensor:
    """RLOO: ``A_i = r_i - mean_{j != i} r_j = n/(n-1) * (r_i - mean(r))``.

    Unbiased for ``grad E[r]`` (``grad p`` for binary rewards); sums to 0 per group.
    ``eps`` is unused (kept for the shared signature). Args: rewards ``[G, n]``, n >= 2.
    """
    n = rewards.shape[1]
    return n / (n - 1) * (rewards - _group_mean(rewards))


@register_objective("dr_grpo")
def dr_grpo(rewards: Tensor, eps: float) -> Tensor:
    """Dr.GRPO: ``A_i = r_i - mean(r)``, GRPO without the std division.

    Expectation ``(n-1)/n * grad E[r]``; sums to 0 per group. ``eps`` is unused.
    Args: rewards ``[G, n]``. Returns ``[G, n]``.
    """
    return rewards - _group_mean(rewards)


OBJECTIVES: tuple[str, ...] = _REGISTRY.names


def _as_groups(rewards: Tensor) -> Tensor:
    """Check a ``[G, n]`` reward tensor and return it as floats (a new tensor if cast)."""
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [G, n], got shape {tuple(rewards.shape)}")
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())
    return rewards


def compute_advantages(rewards: Tensor, objective: str, eps: float = 1e-6) -> Tensor:
    """Per-response advantages for groups of samples.

    Args:
        rewards: ``[G, n]``, G prompts x n samples (bool/int rewards are cast to float).
        objective: one of :data:`OBJECTIVES` (``grpo``, ``maxrl``, ``rloo``, ``dr_grpo``).
        eps: denominator guard of GRPO (``std + eps``) and MaxRL (``mean + eps``).

    Returns:
        ``[G, n]`` advantages; 0 for constant groups and for groups of one sample.
    """
    fn = _REGISTRY.get(objective)
    r = _as_groups(rewards)
    if r.shape[1] < 2:  # no baseline without a second sample
        return torch.zeros_like(r)
    advantages = fn(r, eps)
    constant = (r == r[:, :1]).all(dim=1, keepdim=True)
    return advantages.masked_fill(constant, 0.0)
