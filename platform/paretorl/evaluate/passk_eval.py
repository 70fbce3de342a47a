"""Held-out evaluation: n samples per prompt, unbiased pass@k for k = 1, 2, 4, ..., n, tokens."""

from __future__ import annotations

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


def sample_and_score(rollout, version: int, tokenizer, task, rows: list[dict], n: int, max_new_tokens: int, temperature: float, seed: int):
    """n responses per prompt from policy `version`, scored: (Rollouts, [G * n] bool verdicts)."""
    prompts = [encode_prompt(tokenizer, row["prompt"]) for row in rows]
    params = SamplingParams(n=n, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    out = rollout.generate(prompts, params, version)
    return out, score_rollouts(task, rows, out, tokenizer)


def evaluate_policy(rollout, version: int, tokenizer, task, rows: list[dict], cfg, seed: int) -> dict[str, float]:
    """Sample cfg.n_samples responses per held-out prompt with policy `version` and score them."""
    out, correct = sample_and_score(rollout, version, tokenizer, task, rows, cfg.n_samples, cfg.max_new_tokens, cfg.temperature, seed)
    metrics = pass_metrics(correct, out.lengths, cfg.n_samples)
    metrics["eval/truncated_frac"] = float(out.truncated.mean())
    return metrics
