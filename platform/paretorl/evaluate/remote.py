"""Evaluate a policy directory through a rollout Serve app, where the profile puts rollouts.

The base policy (and any checkpoint) is evaluated by the same engine, replicas and resources as a
trial's rollouts (`rollout.*`, `resources.accelerator`): vLLM on a GPU worker for a GPU profile,
not the head's CPU. The app lives for one evaluation and is deleted after it.
"""

from __future__ import annotations

import uuid

from paretorl.evaluate.passk_eval import evaluate_policy


def evaluate_model_dir(model_dir: str, rows: list[dict], task, eval_cfg, rollout_cfg, seed: int, accelerator: str = "GPU") -> dict[str, float]:
    """Held-out pass@k and token metrics of the policy in `model_dir` (local or s3://) on `rows`.

    eval_cfg: paretorl.config.EvalConfig; rollout_cfg: paretorl.config.RolloutConfig. Needs a
    running Ray with Serve started (`paretorl.sweep.run.start_ray`).
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
        client = RolloutClient(handle, max(1, replicas), tokenizer.pad_token_id)
        return evaluate_policy(client, 0, tokenizer, task, rows, eval_cfg, seed=seed)
    finally:
        serve.delete(name)
        ray.kill(registry)
