"""Next-token sampling: temperature, top-k, top-p, greedy. Torch, or a fused C pass (`kernels`).

The log-probs returned are those of the distribution the token was actually drawn from:
softmax(logits / temperature), truncated by top-k then top-p and renormalised (the order HF
and vLLM use). With top_k=0 and top_p=1 this is plain log_softmax(logits / temperature), which
is what a learner recomputes. Greedy (temperature 0) reports log_softmax(logits), as vLLM does.
"""

from __future__ import annotations

import torch


def sampling_logprobs(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Log-probs of the sampling distribution.

    logits: [B, V] float32. Returns [B, V] float32, -inf on tokens that top-k/top-p removed.
    """
    if temperature == 0:
        return torch.log_softmax(logits, dim=-1)
    scaled = logits / temperature if temperature != 1.0 else logits
    vocab = scaled.shape[-1]
    if 0 < top_k < vocab:
        kth = torch.topk(scaled, top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))  # ties at the k-th value are all kept
    if top_p < 1.0:
        sorted_logits, order = torch.sort(scaled, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Keep the smallest prefix whose mass reaches top_p: a token goes if the mass before it
        # already does. The most likely token always stays.
        drop_sorted = (torch.cumsum(probs, dim=-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
        scaled = scaled.masked_fill(drop, float("-inf"))
    return torch.log_softmax(scaled, dim=-1)


def sample_tokens(
    logits: torch.Tensor,
    temperature: float,
    top_k: int,
    top_p: float,
    generator: torch.Generator | None,
    kernels=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row.

    logits: [B, V] float32. Returns (tokens [B] int64, logprobs [B] float32), the log-probs
    under `sampling_logprobs` (see the module docstring). kernels: `rollout.kernels.Kernels`;
    plain sampling (no top-k / top-p) then runs as one fused C pass per row, with the same
    one-uniform-per-row inverse CDF as `inverse_cdf_sample`.
    """
    vocab = logits.shape[-1]
    if kernels is not None and temperature > 0 and not 0 < top_k < vocab and top_p >= 1.0:
        u = torch.rand(logits.shape[0], generator=generator, dtype=torch.float32)
        return kernels.sample(logits.contiguous(), temperature, u)
    logp = sampling_logprobs(logits, temperature, top_k, top_p)
    if temperature == 0:
        tokens = torch.argmax(logits, dim=-1)  # first maximum, like HF greedy search
    else:
        tokens = inverse_cdf_sample(logp.exp(), generator)
    return tokens, logp.gather(1, tokens[:, None]).squeeze(1)


def inverse_cdf_sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row of probs [B, V] (non-negative, rows need not sum to 1). Returns [B] int64.

    One uniform per row instead of torch.multinomial's V exponentials (~20x cheaper on CPU).
    Zero-probability tokens are never drawn: their CDF interval is empty, and u = r * total
    with r < 1 from torch.rand stays strictly below total in float32 round-to-nearest.
    """
    cdf = torch.cumsum(probs, dim=-1)
    u = torch.rand((probs.shape[0], 1), generator=generator, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=probs.shape[-1] - 1)
