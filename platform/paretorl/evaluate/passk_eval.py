"""Held-out evaluation: n samples per prompt, unbiased pass@k for k = 1, 2, 4, ..., n, tokens."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from paretorl.algos import coverage_curve
from paretorl.models.tokenizer import decode_completion, encode_prompt
from paretorl.rollout.types import Rollouts, SamplingParams


def score_rollouts(task, rows: list[dict], rollouts: Rollouts, tokenizer) -> np.ndarray:
    """[B] bool verdicts; a response cut at the token limit (no EOS) is incorrect (docs/algorithms.md)."""
    truncated = rollouts.truncated
    verdicts = np.zeros(len(rollouts.lengths), dtype=bool)
    for i in range(len(verdicts)):
        if not truncated[i]:
            verdicts[i] = bool(task.score(rows[i // rollouts.n], decode_completion(tokenizer, rollouts.response(i))))
    return verdicts


def pass_metrics(correct: np.ndarray, lengths: np.ndarray, n: int) -> dict[str, float]:
    """Metrics of a grouped evaluation: correct and lengths are [G * n]."""
    counts = correct.reshape(-1, n).sum(1).tolist()
    out = {f"eval/pass_at_{k}": v for k, v in coverage_curve(n, counts).items()}
    out["eval/mean_tokens"] = float(lengths.mean())
    out["eval/mean_tokens_correct"] = float(lengths[correct].mean()) if correct.any() else float("nan")
    out["eval/prompts"] = float(len(counts))
    return out


# Responses per generate call. The embedded engine keeps one KV cache for all of a call's
# responses (2 layers x K and V x 128 x 64 new tokens in bf16: ~65 KB each for the tiny decoder), so
# 1024 prompts x 256 samples in one call would hold ~17 GB, per trial evaluating. 65536 is the
# largest call the shipped evaluations made (256 x 256): evaluations up to it sample as before.
MAX_RESPONSES_PER_CALL = 65536


@dataclass(frozen=True)
class Scored:
    """A grouped evaluation's responses, each [G * n]: rows g*n .. g*n+n-1 belong to prompt g."""

    correct: np.ndarray
    lengths: np.ndarray
    truncated: np.ndarray


def chunk_seed(seed: int | None, chunk: int) -> int | None:
    """The sampling seed of a call's `chunk`-th part: the first keeps `seed`, the others get
    independent streams derived from (seed, chunk)."""
    if seed is None or chunk == 0:
        return seed
    return int(np.random.SeedSequence([seed, chunk]).generate_state(1)[0])


def sample_and_score(rollout, version: int, tokenizer, task, rows: list[dict], n: int, max_new_tokens: int, temperature: float, seed: int) -> Scored:
    """n responses per prompt from policy `version`, scored. Sampled in calls of whole prompts,
    at most MAX_RESPONSES_PER_CALL responses each, so memory stays bounded however many prompts."""
    per_call = max(1, MAX_RESPONSES_PER_CALL // n)
    parts = []
    for chunk, start in enumerate(range(0, len(rows), per_call)):
        part = rows[start : start + per_call]
        params = SamplingParams(n=n, max_new_tokens=max_new_tokens, temperature=temperature, seed=chunk_seed(seed, chunk))
        out = rollout.generate([encode_prompt(tokenizer, row["prompt"]) for row in part], params, version)
        parts.append(Scored(score_rollouts(task, part, out, tokenizer), np.asarray(out.lengths), out.truncated))
    return Scored(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("correct", "lengths", "truncated")))


def evaluate_policy(rollout, version: int, tokenizer, task, rows: list[dict], cfg, seed: int) -> dict[str, float]:
    """Sample cfg.n_samples responses per held-out prompt with policy `version` and score them."""
    scored = sample_and_score(rollout, version, tokenizer, task, rows, cfg.n_samples, cfg.max_new_tokens, cfg.temperature, seed)
    metrics = pass_metrics(scored.correct, scored.lengths, cfg.n_samples)
    metrics["eval/truncated_frac"] = float(scored.truncated.mean())
    return metrics
