"""Length-penalised correctness reward (Arora & Zanette, 2025; docs/algorithms.md section 1).

    r_i = c_i * (1 - alpha * sigmoid((L_i - mu_x) / sd_x)),    alpha in [0, 1)

``mu_x`` and ``sd_x`` are the mean and *population* std of the lengths of the correct
responses to the same prompt, so a long answer to a hard prompt is only compared with other
answers to that prompt.
"""

from __future__ import annotations

import torch
from torch import Tensor


def length_penalized_reward(
    correct: Tensor, lengths: Tensor, truncated: Tensor, alpha: float
) -> Tensor:
    """Per-response reward of Arora & Zanette's length penalty.

    Args:
        correct: ``[G, n]`` bool, the verifier's verdict ``c_i``.
        lengths: ``[G, n]`` int, response tokens ``L_i`` (EOS included).
        truncated: ``[G, n]`` bool, cut off at the token limit (no EOS). Such a response is
            incorrect whatever the verifier says, and is left out of ``mu_x`` and ``sd_x``.
        alpha: penalty strength in [0, 1); 0 is the plain correctness reward, and any
            alpha < 1 keeps a correct response (reward > 1 - alpha > 0) above a wrong one (0).

    Returns:
        ``[G, n]`` rewards in the default float dtype. The z-score is 0 (a correct response
        gets ``1 - alpha/2``) when the prompt has fewer than two correct responses or their
        lengths are all equal (``sd_x = 0``). The reference code instead adds 1e-7 to
        ``sd_x``; for integer lengths that gives the same rewards up to ~1e-7 relative.
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    if not (correct.shape == lengths.shape == truncated.shape) or correct.dim() != 2:
        raise ValueError(
            "correct, lengths and truncated must share one [G, n] shape, got "
            f"{tuple(correct.shape)}, {tuple(lengths.shape)}, {tuple(truncated.shape)}"
        )
    # float64 for the statistics: squared token counts of long answers lose digits in float32.
    c = (correct.bool() & ~truncated.bool()).to(torch.float64)
    length = lengths.to(torch.float64)
    k = c.sum(dim=1, keepdim=True)  # [G, 1] correct responses per prompt
    mu = (c * length).sum(dim=1, keepdim=True) / k.clamp(min=1)
    sd = ((c * (length - mu) ** 2).sum(dim=1, keepdim=True) / k.clamp(min=1)).sqrt()
    defined = (k >= 2) & (sd > 0)
    z = torch.where(defined, (length - mu) / torch.where(defined, sd, 1.0), 0.0)
    reward = c * (1.0 - alpha * torch.sigmoid(z))
    return reward.to(torch.get_default_dtype())
