"""Data that crosses the rollout boundary (learner <-> Serve replica <-> engine).

Plain numpy so it pickles cheaply through Ray and Serve; no torch required to read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. `n` responses per prompt share that prompt's prefill."""

    n: int = 1
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 disables top-k
    seed: int | None = None
    ignore_eos: bool = False  # benchmarks: always generate max_new_tokens

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"SamplingParams.n must be >= 1, got {self.n}")
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"SamplingParams.top_k must be >= 0, got {self.top_k}")


FINISH_STOP = "stop"  # the sequence emitted EOS (included in its tokens and length)
FINISH_LENGTH = "length"  # cut at max_new_tokens without EOS


@dataclass
class Rollouts:
    """Responses for G prompts x n samples, grouped: rows g*n .. g*n+n-1 belong to prompt g.

    tokens:    [B, T] int64, generated token ids, right-padded with `pad_id` past `lengths`
    logprobs:  [B, T] float32, log-prob of each sampled token under the sampling policy
               (after temperature; 0 past `lengths`)
    lengths:   [B] int64, generated tokens per response, EOS included
    finish_reasons: list of B strings, FINISH_STOP or FINISH_LENGTH
    version:   policy version the responses were sampled with (-1 if unversioned)

    The sampling policy of `logprobs` is the distribution each token was drawn from:
    softmax(logits / temperature), cut by top-k then top-p and renormalised (with top_k=0 and
    top_p=1, plain log_softmax(logits / temperature)). Greedy (temperature 0) reports
    log_softmax(logits). The embedded engine's `tokens` has max(lengths) columns.
    """

    tokens: np.ndarray
    logprobs: np.ndarray
    lengths: np.ndarray
    finish_reasons: list[str]
    n: int
    version: int = -1
    stats: dict = field(default_factory=dict)  # engine timings etc., e.g. {"gen_s": 0.4}

    @property
    def num_prompts(self) -> int:
        return len(self.lengths) // self.n

    @property
    def truncated(self) -> np.ndarray:
        """[B] bool, True where the response hit max_new_tokens without EOS."""
        return np.array([r == FINISH_LENGTH for r in self.finish_reasons], dtype=bool)

    def response(self, i: int) -> list[int]:
        return self.tokens[i, : self.lengths[i]].tolist()
