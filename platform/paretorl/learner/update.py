"""One RL policy update on a batch of rollouts, doing only work that can change the gradient.

    rewards -> advantages -> for each mini-batch: forward + backward on the rows that matter,
    micro-batches sorted by length and trimmed to their own longest row -> one optimizer step

Three kinds of work are never done (each leaves the update exactly as it was):

- **Rows that cannot change the gradient.** Without a KL term, a response whose advantage is 0
  (its group was all wrong or all equal) has loss exactly 0 on every token, hence gradient 0.
  It skips the forward and backward passes; the loss normaliser still counts it, so the
  gradient of every other row keeps its scale (`tests/learner/test_update.py` checks the
  gradient with and without skipping for every objective and aggregation).
- **The separate "old log-prob" forward.** With one optimizer step per batch
  (`train.updates_per_step == 1`) the policy that sampled is the policy being differentiated:
  pi_old is the training forward's own output, detached, and the ratio is exactly 1.
- **Padding.** Rows are sorted by length before they are cut into micro-batches, and each
  micro-batch is only as wide as its longest row.

Across learner ranks, the loss normaliser (tokens or sequences of the mini-batch) is summed
over ranks, and each rank's loss is scaled by the world size, because DeepSpeed averages the
ranks' gradients: the result is the global batch's loss, not a mean of per-rank means.
"""

from __future__ import annotations

import numpy as np
import torch

from paretorl import algos
from paretorl.config import TrialConfig
from paretorl.learner.logprobs import response_logprobs
from paretorl.learner.policy import build_batch


class NonFiniteLossError(FloatingPointError):
    """The policy loss became NaN or inf: the trial stops instead of training on garbage."""


def rl_step(engine, ref_model, prompts, rollouts, correct, cfg: TrialConfig, pad_id: int, step: int = 0, *, autocast: bool = False) -> dict:
    """One policy update on a batch of rollouts; returns metrics (the engine's model is updated in place).

    `prompts[g]` is prompt g's token ids; `rollouts` holds n samples per prompt; `correct` [G * n].
    """
    a, t = cfg.algo, cfg.train
    g, n = len(prompts), t.samples_per_prompt
    lengths = torch.tensor(rollouts.lengths).view(g, n)  # copies: Ray hands back read-only arrays
    truncated = torch.tensor(rollouts.truncated).view(g, n)
    correct_t = torch.tensor(correct).view(g, n) & ~truncated
    rewards = algos.length_penalized_reward(correct_t, lengths, truncated, a.alpha)
    adv = algos.normalize_advantages(algos.compute_advantages(rewards, a.objective), a.normalization, rewards)

    rows = _Rows(prompts, rollouts, adv.flatten(), pad_id)
    # A row changes the gradient if its advantage is non-zero, or if a KL term touches it.
    needed = torch.ones(rows.count, dtype=torch.bool) if a.kl_coef > 0 else rows.adv != 0
    acc = _Metrics()
    old = None if t.updates_per_step == 1 else _old_logprobs(engine, rows, needed, t, autocast, acc)
    mini = rows.count // t.updates_per_step
    perm = torch.randperm(rows.count, generator=torch.Generator().manual_seed(t.seed * 100_003 + int(rollouts.version)))
    for start in range(0, rows.count, mini):
        block = perm[start : start + mini].tolist()
        normalizer = _global_normalizer(a.aggregation, rows, block, t.max_new_tokens)
        todo = [r for r in block if needed[r]]
        # Nothing to learn from in this mini-batch: one row still runs (its loss scaled to 0) so that
        # the optimizer steps exactly as it would have (Adam's moments move the weights anyway).
        micro = _micro_batches(todo or [min(block, key=rows.width)], rows.width, t.micro_batch_size, t.max_tokens_per_micro_batch)
        for i, (idx, real) in enumerate(micro):
            engine.set_gradient_accumulation_boundary(i == len(micro) - 1)
            _update_micro(engine, ref_model, rows, idx, old, normalizer, cfg, step, rollouts.version, autocast, acc, counts=real and bool(todo))
            engine.step()
    engine.set_gradient_accumulation_boundary(None)

    lengths_f = lengths.float()
    out = {
        "train/reward_mean": rewards.mean().item(),
        "train/correct_frac": correct_t.float().mean().item(),
        "train/mean_tokens": lengths_f.mean().item(),
        "train/mean_tokens_correct": lengths_f[correct_t].mean().item() if correct_t.any() else float("nan"),
        "train/truncated_frac": truncated.float().mean().item(),
        "train/adv_abs_mean": adv.abs().mean().item(),
        "train/zero_adv_groups_frac": (adv.abs().sum(1) == 0).float().mean().item(),
        "train/all_correct_groups_frac": correct_t.all(1).float().mean().item(),
        "train/rows_computed_frac": acc.rows / rows.count,
    }
    out.update(acc.summary(t.updates_per_step))
    return out


class _Rows:
    """The batch's G * n responses as rows: prompt + response ids, advantage, width."""

    def __init__(self, prompts, rollouts, adv: torch.Tensor, pad_id: int):
        n = rollouts.n
        self.count = len(rollouts.lengths)
        self.prompt = [prompts[i // n] for i in range(self.count)]
        self.response = [rollouts.response(i) for i in range(self.count)]
        self.rollout_logprobs = rollouts.logprobs
        self.adv = adv
        self.pad_id = pad_id

    def width(self, r: int) -> int:
        return len(self.prompt[r]) + len(self.response[r])

    def tokens(self, r: int) -> int:
        return len(self.response[r])

    def batch(self, idx: list[int]):
        return build_batch([self.prompt[r] for r in idx], [self.response[r] for r in idx], self.pad_id)

    def rollout_lp(self, idx: list[int], width: int) -> torch.Tensor:
        """The sampler's log-probs of rows `idx`, [len(idx), width] (a copy: Ray hands back read-only arrays)."""
        return torch.from_numpy(np.array(self.rollout_logprobs[idx, :width], dtype=np.float32))


def _micro_batches(rows: list[int], width, size: int, max_tokens: int | None = None) -> list[tuple[list[int], bool]]:
    """`rows` sorted by width, cut into micro-batches of at most `size` rows and, if given, at most
    `max_tokens` padded tokens (rows x the widest; a row wider than that goes alone), as (rows, real) pairs.

    Every rank gets the same count: ranks run their micro-batches in lock-step (ZeRO-3 gathers
    parameters collectively in each forward), so a rank with fewer adds placeholder micro-batches
    of one row (`real` False), whose loss is scaled to 0.
    """
    ordered = sorted(rows, key=width)
    micro = [(cut, True) for cut in _cut(ordered, width, size, max_tokens)]
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        count = int(_all_reduce(float(len(micro)), torch.distributed.ReduceOp.MAX))
        micro += [([ordered[0]], False)] * (count - len(micro))
    return micro


def _cut(ordered: list[int], width, size: int, max_tokens: int | None) -> list[list[int]]:
    """Consecutive runs of `ordered` (ascending width): a run ends at `size` rows or before the row
    that would take its padded tokens past `max_tokens` (that row, the widest so far, sets the width)."""
    runs: list[list[int]] = []
    for r in ordered:
        if not runs or len(runs[-1]) == size or (max_tokens and (len(runs[-1]) + 1) * width(r) > max_tokens):
            runs.append([])
        runs[-1].append(r)
    return runs


def _global_normalizer(aggregation: str, rows: _Rows, block: list[int], max_new_tokens: int) -> float:
    """The mini-batch's loss normaliser over ALL its rows (skipped ones too) and all ranks,
    divided by the world size (DeepSpeed averages the ranks' gradients)."""
    lengths = torch.tensor([rows.tokens(r) for r in block])
    mask = torch.arange(int(lengths.max()) if len(block) else 0)[None, :] < lengths[:, None]
    local = algos.loss_normalizer(aggregation, mask, max_new_tokens)
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    return _all_reduce(local, torch.distributed.ReduceOp.SUM) / world if world > 1 else local


def _all_reduce(value: float, op) -> float:
    x = torch.tensor(value, dtype=torch.float64)
    if torch.distributed.get_backend() == "nccl":  # NCCL reduces CUDA tensors only (GPU learners)
        x = x.cuda()
    torch.distributed.all_reduce(x, op=op)
    return x.item()


@torch.no_grad()
def _old_logprobs(engine, rows: _Rows, needed: torch.Tensor, t, autocast: bool, acc: "_Metrics") -> dict[int, torch.Tensor]:
    """pi_old's log-probs of every needed row, before any update (several updates per batch)."""
    old: dict[int, torch.Tensor] = {}
    todo = [r for r in range(rows.count) if needed[r]]
    for idx, real in _micro_batches(todo, rows.width, t.micro_batch_size, t.max_tokens_per_micro_batch):
        batch = rows.batch(idx)
        lp, _ = response_logprobs(engine, batch, t.temperature, autocast=autocast)
        if not real:
            continue
        acc.add_rollout_diff(lp, rows.rollout_lp(idx, lp.shape[1]), batch.mask)
        for j, r in enumerate(idx):
            old[r] = lp[j, : rows.tokens(r)]
    return old


def _update_micro(engine, ref_model, rows: _Rows, idx: list[int], old, normalizer: float, cfg: TrialConfig, step: int, version: int, autocast: bool, acc: "_Metrics", counts: bool) -> None:
    """Forward and backward of one micro-batch (the optimizer steps at the mini-batch boundary).

    A micro-batch that does not `count` (a placeholder) runs with its loss scaled to 0.
    """
    a, t = cfg.algo, cfg.train
    batch = rows.batch(idx)
    logprobs, entropy = response_logprobs(engine, batch, t.temperature, with_entropy=True, autocast=autocast)
    old_lp = logprobs.detach()  # on-policy: the sampling policy is the one being differentiated
    if old is None and (counts or not acc.diff_tokens):  # a placeholder measures the drift when nothing else did
        acc.add_rollout_diff(old_lp, rows.rollout_lp(idx, old_lp.shape[1]), batch.mask)
    elif old is not None:  # pi_old from before this batch's first update
        old_lp = old_lp.clone()
        for j, r in enumerate(idx):
            if r in old:
                old_lp[j, : old[r].numel()] = old[r]
    ref_lp = None
    if ref_model is not None:
        with torch.no_grad():
            ref_lp, _ = response_logprobs(ref_model, batch, t.temperature, autocast=autocast)
    in_loss = a.kl_coef > 0 and a.kl_placement == "loss"
    tok_adv = algos.token_advantages(
        rows.adv[idx], batch.mask, kl_coef=a.kl_coef, kl_placement=a.kl_placement,
        logprobs=old_lp, ref_logprobs=ref_lp, kl_estimator=a.kl_estimator,
    )
    loss, metrics = algos.policy_loss(
        logprobs, old_lp, tok_adv, batch.mask,
        clip_eps=a.clip_eps, aggregation=a.aggregation,
        ref_logprobs=ref_lp if in_loss else None, kl_coef=a.kl_coef if in_loss else 0.0,
        kl_estimator=a.kl_estimator, entropy=entropy, normalizer=normalizer, max_new_tokens=t.max_new_tokens,
    )
    if ref_lp is not None:  # train/kl in either placement: the KL of the policy that sampled
        metrics["kl"] = algos.kl_metric(old_lp, ref_lp, batch.mask)
    if step and step == cfg.faults.nan_loss_at_step:
        loss = loss * float("nan")
    if not _all_finite(loss):
        raise NonFiniteLossError(
            f"policy loss is {loss.item()} at step {step} (policy version {version}); "
            "the trial stopped before applying the update: its checkpoints hold the last finite policy"
        )
    engine.backward(loss if counts else loss * 0.0, scale_wrt_gas=False)  # the normaliser already averages over the mini-batch
    if counts:
        acc.add(metrics, len(idx))


def _all_finite(loss: torch.Tensor) -> bool:
    """True when every rank's loss is finite: all ranks stop together, none waits on a dead peer."""
    bad = 0.0 if torch.isfinite(loss) else 1.0
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        bad = _all_reduce(bad, torch.distributed.ReduceOp.MAX)
    return bad == 0.0


class _Metrics:
    """The update's metrics over the rows that were computed: shares of the loss
    (`algos.SUMMED_METRICS`) summed per mini-batch, the others token-weighted means."""

    def __init__(self):
        self.rows = 0
        self.parts: list[dict[str, float]] = []
        self.diff_sum, self.diff_tokens = 0.0, 0

    def add(self, metrics: dict, rows: int) -> None:
        self.rows += rows
        self.parts.append(metrics)

    def add_rollout_diff(self, learner_lp: torch.Tensor, rollout_lp: torch.Tensor, mask: torch.Tensor) -> None:
        self.diff_sum += float(((learner_lp - rollout_lp).abs() * mask).sum())
        self.diff_tokens += int(mask.sum())

    def summary(self, updates: int) -> dict[str, float]:
        diff = self.diff_sum / self.diff_tokens if self.diff_tokens else float("nan")
        if not self.parts:  # every row had zero advantage: the loss is exactly 0; the placeholder row measured the drift
            return {"train/pg_loss": 0.0, "rollout/logprob_abs_diff": diff}
        merged = algos.merge_micro_metrics(self.parts)  # all mini-batches at once: summed shares, token means
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        out = {}
        for key, value in merged.items():
            if key in algos.SUMMED_METRICS:  # the (global) batch's loss, mean over mini-batches
                out[f"train/{key}"] = (_all_reduce(value, torch.distributed.ReduceOp.SUM) / world if world > 1 else value) / updates
            elif key != "tokens":
                out[f"train/{key}"] = value
        out["rollout/logprob_abs_diff"] = diff
        return out
