"""Evaluate a policy directory through a rollout Serve app, where the profile puts rollouts.

The base policy (and any checkpoint) is evaluated by the same engine, replicas and resources as a
trial's rollouts (`rollout.*`, `resources.accelerator`): vLLM on a GPU worker for a GPU profile,
not the head's CPU. The app lives for one evaluation and is deleted after it.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager

from paretorl.evaluate.passk_eval import evaluate_policy


@contextmanager
def rollout_app(model_dir: str, rollout_cfg, accelerator: str = "GPU"):
    """(rollout, tokenizer) for the policy in `model_dir` (local or s3://): a rollout Serve app with
    `rollout_cfg` (paretorl.config.RolloutConfig) that samples with version 0, the weights in
    `model_dir`; deleted on exit. Needs a running Ray with Serve started (sweep.run.start_ray).

    `rollout.generate(prompts, params, version=0)` is the learner's rollout interface.
    """
    import ray
    from ray import serve
    from transformers import AutoTokenizer

    from paretorl import storage
    from paretorl.rollout.registry import create_registry
    from paretorl.rollout.serve import RolloutClient, start_rollout_app

    # the tokenizer only (prompts in, completions out): the weights stay with the replicas
    tokenizer = AutoTokenizer.from_pretrained(storage.local_copy(model_dir))
    name = f"paretorl-eval-{uuid.uuid4().hex[:8]}"
    registry = create_registry(f"{name}-weights")  # version 0 is model_dir itself: nothing is ever published
    try:
        handle = start_rollout_app(name, str(model_dir), f"{name}-weights", rollout_cfg, accelerator)
        replicas = rollout_cfg.autoscaling.get("min_replicas", 1) if rollout_cfg.autoscaling else rollout_cfg.replicas
        yield RolloutClient(handle, max(1, replicas), tokenizer.pad_token_id), tokenizer
    finally:
        serve.delete(name)
        ray.kill(registry)


def evaluate_model_dir(model_dir: str, rows: list[dict], task, eval_cfg, rollout_cfg, seed: int, accelerator: str = "GPU") -> dict[str, float]:
    """Held-out pass@k and token metrics (evaluate_policy's) of the policy in `model_dir` on `rows`,
    sampled by a `rollout_app`. eval_cfg: paretorl.config.EvalConfig."""
    with rollout_app(model_dir, rollout_cfg, accelerator) as (rollout, tokenizer):
        return evaluate_policy(rollout, 0, tokenizer, task, rows, eval_cfg, seed=seed)
