"""ParetoRL's algorithm core: pure torch functions, one place for each piece of math.

Groups are ``[G, n]`` (G prompts x n samples); token tensors are ``[B, T]`` with
``B = G * n`` responses in row-major group order. A learner step reads:

    rewards = length_penalized_reward(correct, lengths, truncated, alpha)     # [G, n]
    adv = compute_advantages(rewards, objective)                              # [G, n]
    adv = normalize_advantages(adv, normalization, rewards)                   # [G, n]
    tok = token_advantages(adv.flatten(), mask, kl_coef=..., kl_placement=...)  # [B, T]
    norm = loss_normalizer(aggregation, mini_batch_mask, max_new_tokens)      # summed over ranks
    loss, metrics = policy_loss(logprobs, old_logprobs, tok, mask, aggregation=...,
                                normalizer=norm)                              # per micro-batch
    metrics = merge_micro_metrics(micro_batch_metrics)                        # per mini-batch
    kl = kl_metric(old_logprobs, ref_logprobs, mask)                          # train/kl

and evaluation: ``coverage_curve(n, correct_counts)`` then ``samples_to_match``.
The formulas, and which KL each estimator and placement follows: docs/algorithms.md.
Imports torch only: no Ray, vLLM or DeepSpeed (a test checks this).
"""

from .kl import (
    KL_ESTIMATORS,
    KL_PLACEMENTS,
    KL_REFUSED,
    kl_loss_tokens,
    kl_metric,
    kl_penalty,
    token_advantages,
)
from .loss import (
    AGGREGATIONS,
    SUMMED_METRICS,
    aggregate,
    loss_normalizer,
    merge_micro_metrics,
    policy_loss,
)
from .normalization import NORMALIZATIONS, normalize_advantages
from .objectives import OBJECTIVES, compute_advantages, register_objective
from .passk import coverage_curve, pass_at_k, power_of_two_ks, samples_to_match
from .rewards import length_penalized_reward

__all__ = [
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "KL_PLACEMENTS",
    "KL_REFUSED",
    "NORMALIZATIONS",
    "OBJECTIVES",
    "SUMMED_METRICS",
    "aggregate",
    "compute_advantages",
    "coverage_curve",
    "kl_loss_tokens",
    "kl_metric",
    "kl_penalty",
    "length_penalized_reward",
    "loss_normalizer",
    "merge_micro_metrics",
    "normalize_advantages",
    "pass_at_k",
    "policy_loss",
    "power_of_two_ks",
    "register_objective",
    "samples_to_match",
    "token_advantages",
]
