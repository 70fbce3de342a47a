"""The learner's model-side pieces: DeepSpeed engine, sequence batches, token log-probs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def deepspeed_config(train_cfg, mini_batch: int, world_size: int) -> dict:
    """ZeRO config for one optimizer step per mini-batch of `mini_batch` sequences per worker."""
    micro = min(train_cfg.micro_batch_size, mini_batch)
    gas = -(-mini_batch // micro)
    on_gpu = torch.cuda.is_available()
    return {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": gas,
        "train_batch_size": micro * gas * world_size,
        "optimizer": {"type": "Adam", "params": {"lr": train_cfg.lr, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "torch_adam": not on_gpu}},
        "zero_optimization": {"stage": train_cfg.zero_stage},
        "gradient_clipping": train_cfg.grad_clip,
        "bf16": {"enabled": train_cfg.bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def extensions_dir() -> str:
    """Where DeepSpeed's JIT-built ops live: per environment, so two venvs never rebuild each other's."""
    import sys
    from pathlib import Path

    return str(Path(sys.prefix) / "torch_extensions")


def clear_stale_build_locks(root: str, older_than_s: float = 900.0) -> list[str]:
    """Remove JIT-build lock files left by a killed build (torch waits on them forever).

    A build takes about a minute here; a lock older than `older_than_s` has no live owner.
    """
    import time
    from pathlib import Path

    stale = [p for p in Path(root).glob("*/lock") if time.time() - p.stat().st_mtime > older_than_s]
    for p in stale:
        p.unlink(missing_ok=True)
    return [str(p) for p in stale]


def make_engine(model, train_cfg, mini_batch: int, world_size: int):
    import deepspeed

    if train_cfg.activation_checkpointing:  # before DeepSpeed wraps the module; non-reentrant: works with ZeRO-3's hooks
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=deepspeed_config(train_cfg, mini_batch, world_size)
    )
    return engine


def gathered_state_dict(model) -> dict[str, torch.Tensor]:
    """The full weights, detached copies on CPU, on every rank.

    Under ZeRO-3 each rank holds only a shard of every parameter (the module's own tensors
    are empty placeholders), so the shards are gathered first: a collective, every rank
    must call it. Under ZeRO-0/1/2 it is a plain CPU copy of `state_dict()`.
    """
    params = [p for p in model.parameters() if hasattr(p, "ds_id")]  # ZeRO-3 partitioned parameters
    if params:
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            return _cpu_copy(model.state_dict())
    return _cpu_copy(model.state_dict())


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached CPU copies; tensors that share memory (tied embeddings) stay shared in the copy."""
    copies: dict[tuple, torch.Tensor] = {}
    out = {}
    for name, t in state.items():
        key = (t.device, t.data_ptr(), tuple(t.shape), t.stride(), t.dtype)
        if key not in copies:
            copies[key] = t.detach().to("cpu", copy=True)
        out[name] = copies[key]
    return out


@dataclass
class SequenceBatch:
    """Prompt + response token sequences, right-padded, with the response laid out as [B, T].

    input_ids:  [B, L] prompt then response tokens, padded
    attention:  [B, L] 1 on real tokens
    resp_index: [B, T] position in input_ids of the logits that predict response token j
                (prompt_len - 1 + j), clamped into range
    resp_ids:   [B, T] response tokens
    mask:       [B, T] bool, j < response length
    """

    input_ids: torch.Tensor
    attention: torch.Tensor
    resp_index: torch.Tensor
    resp_ids: torch.Tensor
    mask: torch.Tensor

    def select(self, rows: slice) -> "SequenceBatch":
        return SequenceBatch(*(t[rows] for t in (self.input_ids, self.attention, self.resp_index, self.resp_ids, self.mask)))

    def to(self, device) -> "SequenceBatch":
        return SequenceBatch(*(t.to(device) for t in (self.input_ids, self.attention, self.resp_index, self.resp_ids, self.mask)))


def build_batch(prompts: list[list[int]], responses: list[list[int]], pad_id: int) -> SequenceBatch:
    """`prompts[i]` is paired with `responses[i]` (callers repeat each prompt n times)."""
    width = max(len(p) + len(r) for p, r in zip(prompts, responses))
    t_max = max(len(r) for r in responses)
    b = len(responses)
    input_ids = np.full((b, width), pad_id, dtype=np.int64)
    attention = np.zeros((b, width), dtype=np.int64)
    resp_ids = np.full((b, t_max), pad_id, dtype=np.int64)
    resp_index = np.zeros((b, t_max), dtype=np.int64)
    mask = np.zeros((b, t_max), dtype=bool)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        seq = p + r
        input_ids[i, : len(seq)] = seq
        attention[i, : len(seq)] = 1
        resp_ids[i, : len(r)] = r
        resp_index[i] = np.minimum(len(p) - 1 + np.arange(t_max), width - 1)
        mask[i, : len(r)] = True
    return SequenceBatch(*(torch.from_numpy(a) for a in (input_ids, attention, resp_index, resp_ids, mask)))


def token_logprobs(model, batch: SequenceBatch, temperature: float = 1.0, with_entropy: bool = False):
    """Log-probs [B, T] of the response tokens under `model` (logits / temperature, as sampled).

    Returns (logprobs, entropy or None); entries past each response's length are 0.
    Computed on the model's device (a GPU learner), returned on the batch's (CPU): the loss
    math downstream is over [B, T] tensors and stays on CPU; gradients flow back through the copy.
    """
    home = batch.mask.device
    batch = batch.to(_device_of(model))
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention).logits
    idx = batch.resp_index.unsqueeze(-1).expand(-1, -1, logits.shape[-1])
    resp_logits = torch.gather(logits, 1, idx).float() / temperature  # [B, T, V]
    logp_all = torch.log_softmax(resp_logits, dim=-1)
    logprobs = torch.gather(logp_all, 2, batch.resp_ids.unsqueeze(-1)).squeeze(-1) * batch.mask
    entropy = None
    if with_entropy:
        entropy = (-(logp_all.exp() * logp_all).sum(-1) * batch.mask).to(home)
    return logprobs.to(home), entropy


def _device_of(model) -> torch.device:
    """A DeepSpeed engine knows its device; a plain module is where its weights are."""
    device = getattr(model, "device", None)
    return torch.device(device) if device is not None else next(model.parameters()).device


@torch.no_grad()
def batched_logprobs(model, batch: SequenceBatch, micro: int, temperature: float) -> torch.Tensor:
    parts = [token_logprobs(model, batch.select(slice(i, i + micro)), temperature)[0] for i in range(0, len(batch.mask), micro)]
    return torch.cat(parts)


def logprob_abs_diff(learner_logprobs: torch.Tensor, rollout_logprobs: np.ndarray, mask: torch.Tensor) -> float:
    """Mean |learner - rollout| log-prob over response tokens (`rollout/logprob_abs_diff`).

    Same tokens, same temperature: near 0 when the rollout engine held the learner's weights
    (bf16 vs fp32 rounding aside); large when it sampled with other (stale) weights.
    """
    rollout_lp = torch.tensor(rollout_logprobs[:, : mask.shape[1]]) * mask  # a copy: Ray hands back read-only arrays
    return ((learner_logprobs - rollout_lp).abs().sum() / mask.sum()).item()
