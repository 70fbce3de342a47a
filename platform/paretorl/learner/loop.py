"""The Ray Train loop of one trial: rollouts -> rewards -> advantages -> update, repeated.

Runs inside each Ray Train worker (`TorchTrainer(train_loop_per_worker=train_loop)`). It
reads top to bottom like one RL step; the Serve deployment, the weight registry and the
DeepSpeed engine sit behind the small interfaces it calls. The update itself is
`learner/update.py`.

With several learner workers, `train.prompts_per_step` is the global batch: each rank draws
and samples its share, and the update's loss is the global batch's (see update.py). Only rank 0
evaluates, publishes weights and writes the policy into checkpoints.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from paretorl.config import TrialConfig
from paretorl.evaluate.passk_eval import evaluate_policy, score_rollouts
from paretorl.learner import checkpoint as ckpt
from paretorl.learner.policy import make_engine, make_reference, published_weights, resolve_autocast, weights_nbytes
from paretorl.learner.update import NonFiniteLossError, rl_step
from paretorl.models.tokenizer import encode_prompt
from paretorl.rollout.types import SamplingParams

__all__ = ["PRIORITY_KEY", "NonFiniteLossError", "train_loop"]

PRIORITY_KEY = "checkpoint_priority"  # Ray Train keeps the top-K checkpoints by this (see sweep/trial.py)


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
            raise ValueError(f"the training split has fewer than {batch_size} prompts per learner worker (train.prompts_per_step / resources.learner_workers)")
        epoch += 1


def _publish(registry, version: int, model, rank: int) -> int:
    """Rank 0 publishes the new weights (a LoRA policy: its adapter only); every rank waits until
    they are published. Returns the bytes published (0 off rank 0)."""
    from paretorl.rollout.registry import publish

    weights = published_weights(model, rank)  # a collective under ZeRO-3; a copy on rank 0 only
    if rank == 0:
        publish(registry, version, weights)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return weights_nbytes(weights) if weights is not None else 0


def _sum_over_ranks(value: float) -> float:
    if not (torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1):
        return float(value)
    x = torch.tensor(float(value), device="cuda" if torch.distributed.get_backend() == "nccl" else "cpu")
    torch.distributed.all_reduce(x)
    return x.item()


def _policy(cfg: TrialConfig, model_dir: str, checkpoint, world: int, rank: int):
    """(engine, model, tokenizer, loop state, bf16 autocast?): restored from `checkpoint`, or the base policy."""
    state = {"step": 0, "version": 0, "next_batch": 0, "last_eval": None}
    mini_batch = cfg.train.prompts_per_step // world * cfg.train.samples_per_prompt // cfg.train.updates_per_step
    with checkpoint.as_directory() if checkpoint is not None else nullcontext(model_dir) as source:
        model, tokenizer = _load_policy(cfg, model_dir, source)
        autocast = resolve_autocast(cfg.train.autocast, model, cfg.train)  # measured before DeepSpeed wraps the model
        engine = make_engine(model, cfg.train, mini_batch, world)
        if checkpoint is not None:  # retried or resumed: weights, optimizer, RNG and loop state
            state = ckpt.restore(Path(source), engine, rank)
    return engine, model, tokenizer, state, autocast


def _load_policy(cfg: TrialConfig, base_dir: str, source: str):
    """(model, tokenizer) to train: the policy in `source`, or for a LoRA trial the base with
    adapters (fresh ones, or a checkpoint's), only the adapters trainable."""
    from paretorl.models.build import load_policy
    from paretorl.models.lora import add_adapters, is_adapter_dir, load_adapters

    if not cfg.model.lora.rank:
        return load_policy(source)
    model, tokenizer = load_policy(base_dir)
    if is_adapter_dir(source):  # retried or resumed
        return load_adapters(model, source, trainable=True), tokenizer
    return add_adapters(model, cfg.model.lora, base=base_dir), tokenizer


def train_loop(loop_config: dict) -> None:
    import ray.train

    from paretorl.rollout.registry import NAMESPACE
    from paretorl.rollout.serve import RolloutClient, connect_when_running
    from paretorl.tasks import load_task, read_rows

    cfg = TrialConfig.model_validate(loop_config["trial"])
    paths = loop_config["paths"]
    torch.set_num_threads(cfg.train.torch_threads)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.train.seed + rank)

    task = load_task(cfg.task.name, **cfg.task.kwargs)
    eval_rows = read_rows(paths["eval"])[: cfg.eval.n_prompts]
    g, n = cfg.train.prompts_per_step // world, cfg.train.samples_per_prompt  # this rank's share of the global batch

    # Where a trial's time goes before its first step, reported with that step (`setup/*`, seconds).
    setup = {}
    if "fit_started_at" in loop_config:  # Ray Train's controller and this worker group coming up
        setup["setup/worker_start_s"] = time.time() - loop_config["fit_started_at"]
    mark = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        setup[f"setup/{name}_s"] = now - mark
        mark = now

    checkpoint = ray.train.get_checkpoint()
    engine, model, tokenizer, state, autocast = _policy(cfg, paths["base_model"], checkpoint, world, rank)
    start_step, version, start_batch = state["step"], state["version"], state["next_batch"]
    last_eval = state["last_eval"] if checkpoint is not None else dict(loop_config.get("base_eval") or {})
    if checkpoint is not None:
        print(f"[paretorl] resumed from the checkpoint of step {start_step} (policy version {version})", flush=True)
        if state.get("metrics"):
            # The driver may have died after this checkpoint was persisted but before it logged the
            # report: say it again. The tracker drops it if that step is already logged.
            ray.train.report({**state["metrics"], "checkpoint_path": checkpoint.path})
    phase("policy")  # weights, DeepSpeed engine, the autocast measurement (and a checkpoint's restore)
    ref_model = make_reference(paths["base_model"], engine, cfg.train, world) if cfg.algo.kl_coef > 0 else None
    phase("reference")

    registry = ray.get_actor(paths["registry"], namespace=NAMESPACE)
    replicas = cfg.rollout.autoscaling.get("max_replicas", 1) if cfg.rollout.autoscaling else cfg.rollout.replicas
    # run_trial deploys the rollout app while this worker group starts: wait for it only now.
    # (Waiting in a thread during the policy load was measured slower: 97 s to the first report
    # against 42 s, the polling and the handle's router set-up competing for the same 2 cores.)
    rollout = RolloutClient(connect_when_running(paths["rollout_app"]), replicas, tokenizer.pad_token_id)
    phase("rollout_wait")  # what the rollout app's deployment kept this worker waiting after its own set-up
    published = ray.get(registry.current.remote())
    if checkpoint is not None or published > version:  # a retry: its weights become the newest version
        version = max(version, published) + 1  # (a crash right after a report can lose that report's checkpoint)
        _publish(registry, version, model, rank)

    if not last_eval and rank == 0:  # a base the driver did not evaluate (a swept model/sft/task setting): Tune needs the objectives in every report
        last_eval = {**evaluate_policy(rollout, version, tokenizer, task, eval_rows, cfg.eval, seed=cfg.train.seed), "eval/step": 0}
    phase("rollout_client")  # the weight registry, a retry's publish, a base evaluation
    stream = prompt_stream(ray.train.get_dataset_shard("train"), g, cfg.train.seed, start_batch)
    for step in range(start_step + 1, cfg.train.steps + 1):
        if step == cfg.faults.crash_at_step and checkpoint is None and rank == 0:
            os.kill(os.getpid(), signal.SIGKILL)  # fault injection: a learner process dies mid-trial
        t0 = time.perf_counter()
        batch_index, rows = next(stream)
        if setup and "setup/first_batch_s" not in setup:
            phase("first_batch")  # Ray Data's split coordinator starting, the first block read
        prompts = [encode_prompt(tokenizer, row["prompt"]) for row in rows]
        params = SamplingParams(n=n, max_new_tokens=cfg.train.max_new_tokens, temperature=cfg.train.temperature, seed=cfg.train.seed * 1_000_003 + step * world + rank)
        rollouts = rollout.generate(prompts, params, version)
        t_rollout = time.perf_counter() - t0
        correct = score_rollouts(task, rows, rollouts, tokenizer)
        t1 = time.perf_counter()
        try:
            metrics = rl_step(engine, ref_model, prompts, rollouts, correct, cfg, tokenizer.pad_token_id, step, autocast=autocast)
        except NonFiniteLossError as e:  # not retried (the same state would diverge again): run_trial raises it
            if rank == 0:
                ray.get(registry.fail.remote(f"NonFiniteLossError: {e}"))
            return
        t_update = time.perf_counter() - t1

        version += 1
        sync_bytes = _publish(registry, version, model, rank)

        metrics.update({
            "step": step,
            "policy_version": version,
            "rollout/seconds": t_rollout,
            "rollout/tokens_per_s": float(rollouts.lengths.sum()) / max(rollouts.stats.get("gen_s", t_rollout), 1e-9),
            "rollout/sync_seconds": rollouts.stats.get("sync_s", 0.0),
            "rollout/sync_bytes": _sum_over_ranks(sync_bytes),  # what this step published (rank 0): an adapter, or the full weights
            "train/update_seconds": t_update,
            "train/step_seconds": time.perf_counter() - t0,
            "train/autocast_bf16": float(autocast),
            "train/batch_prompts": _sum_over_ranks(len(rows)),  # the global batch: prompts_per_step
            "train/restored_from_step": start_step if checkpoint is not None else -1,
        })
        if step == start_step + 1:
            metrics.update(setup)
        evaluated = step % cfg.eval.every == 0 or step == cfg.train.steps
        if evaluated and rank == 0:  # ranks hold the same policy: one evaluation, reported by rank 0
            last_eval = evaluate_policy(rollout, version, tokenizer, task, eval_rows, cfg.eval, seed=cfg.train.seed + step)
            last_eval["eval/step"] = step
        if evaluated:
            metrics["eval/evaluating_ranks"] = _sum_over_ranks(float(rank == 0))  # 1: ranks hold one policy, one evaluates
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
