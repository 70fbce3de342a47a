"""TRL's GRPOTrainer as the learner benchmark's third system: its loss and optimizer step on our batch.

Follows TRL 1.16.0 (with transformers 5.19). Public API used: `GRPOConfig`, `GRPOTrainer` with a
`rollout_func` (TRL's hook for bringing one's own generation, marked experimental), a reward function
reading a dataset column, `compute_loss`, `compute_loss_context_manager`, `create_optimizer_and_scheduler`
and the trainer's `accelerator`. TRL internals reached, all of them here:

- `_generate_and_score_completions(inputs)`: called once at set-up, outside the timed update, so that
  TRL itself builds the inputs dict its loss reads (prompt ids left-padded, completions right-padded,
  masks, advantages by its group rule, `num_items_in_batch`). Its `_generate` calls our `rollout_func`,
  which hands back the rollouts already sampled, so nothing is generated.
- `current_gradient_accumulation_steps`: Trainer's training loop sets it; the `dapo` normalizer reads it.

Building the trainer resets torch's thread count (accelerate sets it to the core count when it finds the
benchmark's one-process gloo group); it is put back, so every system runs on the benchmark's threads.
"""

from __future__ import annotations

import math
import os
import tempfile

import torch
from datasets import Dataset  # the `trl` extra: without it, importing this module fails (ImportError)
from trl import GRPOConfig, GRPOTrainer


def _config(cfg, rows: int, output_dir: str):
    """GRPOConfig as close to the trial's update as TRL allows: one step of the whole batch, on CPU."""
    t = cfg.train
    return GRPOConfig(
        output_dir=output_dir,
        use_cpu=True,
        bf16=False,  # TRL turns bf16 on by default; the trial's learner is fp32 here
        fp16=False,
        report_to="none",
        logging_strategy="no",
        save_strategy="no",
        disable_tqdm=True,
        num_generations=t.samples_per_prompt,
        per_device_train_batch_size=rows,  # the whole batch in one forward/backward, one optimizer step
        gradient_accumulation_steps=1,  # with steps_per_generation 1 and num_iterations 1: no separate old-log-prob forward
        max_completion_length=t.max_new_tokens,
        temperature=t.temperature,
        learning_rate=t.lr,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=t.grad_clip,
        optim="adamw_torch",
        gradient_checkpointing=t.activation_checkpointing,  # TRL defaults to True; the trial's setting instead
        epsilon=cfg.algo.clip_eps,
        beta=0.0,  # no reference model, as the default arm (KL 0)
        # loss_type left at TRL's default, "dapo": token-level sum over the batch's completion tokens,
        # normalised by their count (the DAPO aggregation); advantages by TRL's default
        # scale_rewards="group": (r - group mean) / (group std + 1e-4).
    )


def correct_reward(completions, correct, **_) -> list[float]:
    """The verifier's verdicts, already computed, as TRL rewards (one float per completion)."""
    return [float(c) for c in correct]


class TRLUpdate:
    """One GRPOTrainer update (compute_loss, backward, clip, AdamW step) of a fixed batch of rollouts."""

    def __init__(self, cfg, base_dir: str, batch):
        from paretorl.models.build import load_policy

        tokenizer, prompts, rollouts, correct = batch
        n, g = cfg.train.samples_per_prompt, len(prompts)
        if rollouts.n != n or len(rollouts.lengths) != g * n:
            raise ValueError(f"rollouts hold {len(rollouts.lengths)} rows of groups of {rollouts.n}; expected {g} prompts x {n}")
        texts = [tokenizer.decode(p) for p in prompts]  # only for TRL's bookkeeping: the token ids below are what it trains on

        def rollout_func(batch_prompts, trainer):  # rows g*n..g*n+n-1 belong to prompt g, as TRL's sampler groups them
            if len(batch_prompts) != g * n:
                raise ValueError(f"TRL asked for {len(batch_prompts)} rollouts; the batch has {g * n}")
            return {
                "prompt_ids": [list(prompts[i // n]) for i in range(g * n)],
                "completion_ids": [rollouts.response(i) for i in range(g * n)],
                "logprobs": [rollouts.logprobs[i, : rollouts.lengths[i]].tolist() for i in range(g * n)],
            }

        model, _ = load_policy(base_dir)
        threads = torch.get_num_threads()  # accelerate resets it to the core count when it sees a CPU process group
        self._tmp = tempfile.TemporaryDirectory(prefix="trl-bench-")
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func's "experimental" warning
        self.trainer = GRPOTrainer(
            model=model,
            reward_funcs=correct_reward,
            args=_config(cfg, g * n, self._tmp.name),
            train_dataset=Dataset.from_dict({"prompt": texts, "correct": [False] * g}),  # never sampled from
            processing_class=tokenizer,
            rollout_func=rollout_func,
        )
        torch.set_num_threads(threads)
        if self.trainer.args.gradient_checkpointing:  # Trainer.train() would enable it; we never call train()
            self.trainer.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=self.trainer.args.gradient_checkpointing_kwargs)
        self.trainer.create_optimizer_and_scheduler(num_training_steps=1)
        self.trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop; the dapo loss divides by it
        self.trainer.model.train()  # TRL picks "train" mode (and its batch sizes) from model.training
        rows = [{"prompt": texts[i // n], "correct": bool(correct[i])} for i in range(g * n)]
        self.inputs = self.trainer._generate_and_score_completions(rows)
        self._check_inputs(correct, g, n)
        self.loss: float | None = None

    def _check_inputs(self, correct, g: int, n: int) -> None:
        """The numbers TRL built: one row per rollout, zero advantage wherever a group's rewards are all equal."""
        x = self.inputs
        if x["completion_ids"].shape[0] != g * n or "ref_per_token_logps" in x:
            raise RuntimeError(f"TRL built {x['completion_ids'].shape[0]} rows (expected {g * n}) or a reference term")
        adv = x["advantages"].view(g, n)
        same = torch.as_tensor(correct).view(g, n).float().std(dim=1) == 0
        if not torch.all(adv[same] == 0):
            raise RuntimeError("TRL gave non-zero advantages to a group whose rewards are all equal")

    def update(self) -> None:
        trainer, model = self.trainer, self.trainer.model
        with trainer.compute_loss_context_manager():
            loss = trainer.compute_loss(model, self.inputs)
        trainer.accelerator.backward(loss)
        trainer.accelerator.clip_grad_norm_(model.parameters(), trainer.args.max_grad_norm)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        model.zero_grad(set_to_none=True)
        self.loss = loss.item()
        if not math.isfinite(self.loss):
            raise RuntimeError(f"TRL's loss on the batch is {self.loss}")
