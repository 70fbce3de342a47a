"""The Ray Train loop of one trial: rollouts -> rewards -> advantages -> update, repeated.

Runs inside each Ray Train worker (`TorchTrainer(train_loop_per_worker=train_loop)`). It
reads top to bottom like one RL step; the Serve deployment, the weight registry and the
DeepSpeed engine sit behind the small interfaces it calls.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from paretorl import algos
from paretorl.config import TrialConfig
from paretorl.evaluate.passk_eval import evaluate_policy, score_rollouts
from paretorl.learner import checkpoint as ckpt
from paretorl.learner.policy import batched_logprobs, build_batch, gathered_state_dict, logprob_abs_diff, make_engine, token_logprobs
from paretorl.models.tokenizer import encode_prompt
from paretorl.rollout.types import SamplingParams


PRIORITY_KEY = "checkpoint_priority"  # Ray Train keeps the top-K checkpoints by this (see sweep/trial.py)


class NonFiniteLossError(FloatingPointError):
    """The policy loss became NaN or inf: the trial stops instead of training on garbage."""


def prompt_stream(shard, batch_size: int, seed: int, start_batch: int = 0):
    """Endless batches of rows from the trial's Ray Data shard, reshuffled every epoch.

    Yields (batch_index, rows); skips the first `start_batch` batches (resume).
    """
    index, epoch = 0, 0
    while True:
        got_any = False
        for batch in shard.iter_batches(batch_size=batch_size, batch_format="pyarrow", drop_last=True, local_shuffle_buffer_size=4 * batch_size, local_shuffle_seed=seed + epoch):
            got_any = True
            if index >= start_batch:
                yield index, batch.to_pylist()
            index += 1
        if not got_any:
            raise ValueError(f"the training split has fewer than {batch_size} prompts (train.prompts_per_step)")
        epoch += 1


def rl_step(engine, model, ref_model, prompts, rollouts, correct, cfg: TrialConfig, pad_id: int, step: int = 0) -> dict:
    """One policy update on a batch of rollouts; returns metrics (the model is updated in place)."""
    a, t = cfg.algo, cfg.train
    g, n = len(prompts), t.samples_per_prompt
    lengths = torch.as_tensor(rollouts.lengths).view(g, n)
    truncated = torch.as_tensor(rollouts.truncated).view(g, n)
    correct_t = torch.as_tensor(correct).view(g, n) & ~truncated

    rewards = algos.length_penalized_reward(correct_t, lengths, truncated, a.alpha)
    adv = algos.compute_advantages(rewards, a.objective)
    adv = algos.normalize_advantages(adv, a.normalization, rewards)

    batch = build_batch([p for p in prompts for _ in range(n)], [rollouts.response(i) for i in range(g * n)], pad_id)
    micro = engine.train_micro_batch_size_per_gpu()
    model.eval()
    old_logprobs = batched_logprobs(model, batch, micro, t.temperature)
    ref_logprobs = batched_logprobs(ref_model, batch, micro, t.temperature) if ref_model is not None else None
    model.train()
    rollout_diff = logprob_abs_diff(old_logprobs, rollouts.logprobs, batch.mask)

    in_loss = a.kl_coef > 0 and a.kl_placement == "loss"
    tok_adv = algos.token_advantages(
        adv.flatten(), batch.mask, kl_coef=a.kl_coef, kl_placement=a.kl_placement,
        logprobs=old_logprobs, ref_logprobs=ref_logprobs, kl_estimator=a.kl_estimator,
    )
    rows = g * n
    mini = rows // t.updates_per_step
    perm = torch.randperm(rows, generator=torch.Generator().manual_seed(t.seed * 100_003 + int(rollouts.version)))
    step_metrics: list[dict] = []
    for start in range(0, rows, mini):
        idx = perm[start : start + mini]
        normalizer = _normalizer(a.aggregation, batch.mask[idx])
        for m in range(0, mini, micro):
            sub = idx[m : m + micro]
            mb = _take(batch, sub)
            logprobs, entropy = token_logprobs(engine, mb, t.temperature, with_entropy=True)
            loss, metrics = algos.policy_loss(
                logprobs, old_logprobs[sub], tok_adv[sub], mb.mask,
                clip_eps=a.clip_eps, aggregation=a.aggregation,
                ref_logprobs=ref_logprobs[sub] if in_loss else None, kl_coef=a.kl_coef if in_loss else 0.0,
                kl_estimator=a.kl_estimator, entropy=entropy, normalizer=normalizer,
            )
            if step and step == cfg.faults.nan_loss_at_step:
                loss = loss * float("nan")
            if not _all_finite(loss):
                raise NonFiniteLossError(
                    f"policy loss is {loss.item()} at step {step} (policy version {rollouts.version}); "
                    "the trial stopped before applying the update: its checkpoints hold the last finite policy"
                )
            engine.backward(loss, scale_wrt_gas=False)  # the normalizer already averages over the mini-batch
            engine.step()
            step_metrics.append(metrics)

    lengths_f = lengths.float()
    out = {
        "train/reward_mean": rewards.mean().item(),
        "train/correct_frac": correct_t.float().mean().item(),
        "train/mean_tokens": lengths_f.mean().item(),
        "train/mean_tokens_correct": lengths_f[correct_t].mean().item() if correct_t.any() else float("nan"),
        "train/truncated_frac": truncated.float().mean().item(),
        "train/adv_abs_mean": adv.abs().mean().item(),
        "train/zero_adv_groups_frac": (adv.abs().sum(1) == 0).float().mean().item(),
        "rollout/logprob_abs_diff": rollout_diff,
    }
    for key in step_metrics[0]:
        out[f"train/{key}"] = float(np.mean([m[key] for m in step_metrics]))
    return out


def _all_finite(loss: torch.Tensor) -> bool:
    """True when every rank's loss is finite: all ranks stop together, none waits on a dead peer."""
    bad = torch.tensor(0.0 if torch.isfinite(loss) else 1.0)
    if torch.distributed.is_initialized():
        if torch.distributed.get_backend() == "nccl":  # NCCL reduces CUDA tensors only (GPU learners)
            bad = bad.cuda()
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
    return bad.item() == 0.0


def _normalizer(aggregation: str, mask: torch.Tensor) -> float:
    return float(mask.sum()) if aggregation == "token_mean" else float(mask.shape[0])


def _take(batch, idx):
    from paretorl.learner.policy import SequenceBatch

    return SequenceBatch(*(t[idx] for t in (batch.input_ids, batch.attention, batch.resp_index, batch.resp_ids, batch.mask)))


def _publish(registry, version: int, model, rank: int) -> None:
    """Rank 0 publishes the new weights; every rank waits until they are published."""
    from paretorl.rollout.registry import publish

    weights = gathered_state_dict(model)  # every rank: under ZeRO-3 the shards are gathered collectively
    if rank == 0:
        publish(registry, version, weights)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def train_loop(loop_config: dict) -> None:
    import ray.train
    from ray import serve

    from paretorl.models.build import load_policy
    from paretorl.rollout.registry import NAMESPACE
    from paretorl.rollout.serve import RolloutClient
    from paretorl.tasks import load_task, read_rows

    cfg = TrialConfig.model_validate(loop_config["trial"])
    paths = loop_config["paths"]
    torch.set_num_threads(cfg.train.torch_threads)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.train.seed + rank)

    task = load_task(cfg.task.name, **cfg.task.kwargs)
    eval_rows = read_rows(paths["eval"])[: cfg.eval.n_prompts]

    start_step, version, start_batch, last_eval = 0, 0, 0, dict(loop_config.get("base_eval") or {})
    model_dir = paths["base_model"]
    g, n = cfg.train.prompts_per_step, cfg.train.samples_per_prompt
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # retried or resumed: weights, optimizer, RNG and loop state of the latest report
        with checkpoint.as_directory() as ckpt_dir:
            model, tokenizer = load_policy(ckpt_dir)
            engine = make_engine(model, cfg.train, g * n // cfg.train.updates_per_step, world)
            state = ckpt.restore(Path(ckpt_dir), engine, rank)
        start_step, version, start_batch, last_eval = state["step"], state["version"], state["next_batch"], state["last_eval"]
        print(f"[paretorl] resumed from the checkpoint of step {start_step} (policy version {version})", flush=True)
        if state.get("metrics"):
            # The driver may have died after this checkpoint was persisted but before it logged the
            # report: say it again. The tracker drops it if that step is already logged.
            ray.train.report({**state["metrics"], "checkpoint_path": checkpoint.path})
    else:
        model, tokenizer = load_policy(model_dir)
        engine = make_engine(model, cfg.train, g * n // cfg.train.updates_per_step, world)
    ref_model = None
    if cfg.algo.kl_coef > 0:
        ref_model, _ = load_policy(model_dir)  # the reference is always the base policy
        ref_model.requires_grad_(False).eval().to(engine.device)

    registry = ray.get_actor(paths["registry"], namespace=NAMESPACE)
    replicas = cfg.rollout.autoscaling.get("max_replicas", 1) if cfg.rollout.autoscaling else cfg.rollout.replicas
    rollout = RolloutClient(serve.get_app_handle(paths["rollout_app"]), replicas, tokenizer.pad_token_id)
    published = ray.get(registry.current.remote())
    if checkpoint is not None or published > version:  # a retry: its weights become the newest version
        version = max(version, published) + 1  # (a crash right after a report can lose that report's checkpoint)
        _publish(registry, version, model, rank)

    stream = prompt_stream(ray.train.get_dataset_shard("train"), g, cfg.train.seed, start_batch)
    for step in range(start_step + 1, cfg.train.steps + 1):
        if step == cfg.faults.crash_at_step and checkpoint is None and rank == 0:
            os.kill(os.getpid(), signal.SIGKILL)  # fault injection: a learner process dies mid-trial
        t0 = time.perf_counter()
        batch_index, rows = next(stream)
        prompts = [encode_prompt(tokenizer, row["prompt"]) for row in rows]
        params = SamplingParams(n=n, max_new_tokens=cfg.train.max_new_tokens, temperature=cfg.train.temperature, seed=cfg.train.seed * 1_000_003 + step * world + rank)
        rollouts = rollout.generate(prompts, params, version)
        t_rollout = time.perf_counter() - t0
        correct = score_rollouts(task, rows, rollouts, tokenizer)
        t1 = time.perf_counter()
        try:
            metrics = rl_step(engine, model, ref_model, prompts, rollouts, correct, cfg, tokenizer.pad_token_id, step)
        except NonFiniteLossError as e:  # not retried (the same state would diverge again): run_trial raises it
            if rank == 0:
                ray.get(registry.fail.remote(f"NonFiniteLossError: {e}"))
            return
        t_update = time.perf_counter() - t1

        version += 1
        _publish(registry, version, model, rank)

        metrics.update({
            "step": step,
            "policy_version": version,
            "rollout/seconds": t_rollout,
            "rollout/tokens_per_s": float(rollouts.lengths.sum()) / max(rollouts.stats.get("gen_s", t_rollout), 1e-9),
            "rollout/sync_seconds": rollouts.stats.get("sync_s", 0.0),
            "train/update_seconds": t_update,
            "train/step_seconds": time.perf_counter() - t0,
            "train/restored_from_step": start_step if checkpoint is not None else -1,
        })
        evaluated = step % cfg.eval.every == 0 or step == cfg.train.steps
        if evaluated:
            last_eval = evaluate_policy(rollout, version, tokenizer, task, eval_rows, cfg.eval, seed=cfg.train.seed + step)
            last_eval["eval/step"] = step
        metrics.update(last_eval)
        metrics["evaluated"] = evaluated
        if evaluated or step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps:
            metrics[PRIORITY_KEY] = step + (1e9 if evaluated else 0.0)  # evaluated checkpoints outlive the others
            with tempfile.TemporaryDirectory() as tmp:
                state = {"step": step, "version": version, "next_batch": batch_index + 1, "last_eval": last_eval, "trial": loop_config["trial"], "metrics": metrics}
                ckpt.save(Path(tmp), engine, model, tokenizer, state, rank)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)
