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
        "optimizer": {"type": "Adam", "params": {"lr": train_cfg.lr, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, **torch_adam(on_gpu)}},
        "zero_optimization": {"stage": train_cfg.zero_stage},
        "gradient_clipping": train_cfg.grad_clip,
        "bf16": {"enabled": train_cfg.bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def torch_adam(on_gpu: bool) -> dict:
    """DeepSpeed optimizer params that pick torch's Adam(W), never DeepSpeed's own kernels.

    DeepSpeed's FusedAdam is JIT-built on first use and needs an nvcc matching torch's CUDA; torch's
    fused AdamW ships compiled (DeepSpeed passes extra params on to torch.optim.AdamW). On CPU the
    plain torch AdamW, as before. weight_decay is 0, so AdamW and Adam are the same update.
    """
    return {"torch_adam": True, "fused": True} if on_gpu else {"torch_adam": True}


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
    # from_pretrained returns eval mode, and transformers checkpoints a layer only in training
    # mode. The policies have no dropout (attention_dropout 0), so the mode changes no number.
    engine.train()
    return engine


def make_reference(model_dir: str, engine, train_cfg, world_size: int):
    """The frozen reference policy (the base), in the policy's dtype and, under ZeRO-3, sharded too.

    Same dtype: a bf16 policy against an fp32 reference would show a KL at step 0 that is only
    rounding. Same sharding: ZeRO-3 exists for models that do not fit one device, twice over.
    A LoRA policy's reference is its own module with the adapters switched off: no second copy.
    """
    from paretorl.models.build import load_policy
    from paretorl.models.lora import is_lora_model

    if is_lora_model(engine.module):
        return AdaptersOff(engine.module)

    dtype = next(engine.module.parameters()).dtype
    ref, _ = load_policy(model_dir, dtype=dtype)
    ref.requires_grad_(False).eval()
    if train_cfg.zero_stage < 3:
        return ref.to(engine.device)
    import deepspeed

    micro = engine.train_micro_batch_size_per_gpu()
    config = {"train_micro_batch_size_per_gpu": micro, "train_batch_size": micro * world_size,
              "zero_optimization": {"stage": 3}, "bf16": {"enabled": dtype == torch.bfloat16}}
    ref_engine, *_ = deepspeed.initialize(model=ref, config=config)
    ref_engine.eval()
    return ref_engine


def resolve_autocast(setting: str, model, train_cfg) -> bool:
    """Whether the learner runs its forward and backward under CPU bf16 autocast.

    "off" / "bf16" as said; "auto": bf16 only where it measures faster here, on this model (a
    CPU with AMX runs bf16 matmuls ~5x faster; one without may run them slower, and a tiny
    model may be dominated by ops autocast does not speed up). Never on a GPU learner or with
    bf16 weights, where DeepSpeed's own mixed precision applies. Call it before DeepSpeed wraps
    `model`: the measurement runs backward passes and then clears the gradients.
    """
    if setting == "off" or train_cfg.bf16 or torch.cuda.is_available() or next(model.parameters()).dtype != torch.float32:
        return False
    if setting == "bf16":
        return True
    faster = torch.tensor(float(_bf16_speedup(model) >= AUTOCAST_MIN_SPEEDUP))
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.broadcast(faster, src=0)  # every rank computes alike: rank 0's measurement decides
    return bool(faster.item())


AUTOCAST_MIN_SPEEDUP = 1.15  # below this, measurement noise could flip the choice from run to run


def _bf16_speedup(model, rows: int = 8, width: int = 64, repeats: int = 3) -> float:
    """fp32 time / bf16-autocast time of one forward + backward of `model` on a synthetic batch."""
    import time

    ids = torch.randint(0, model.config.vocab_size, (rows, width), generator=torch.Generator().manual_seed(0))

    def once(bf16: bool) -> float:
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=ids).logits
        logits.float().logsumexp(-1).mean().backward()
        return time.perf_counter() - started

    once(False), once(True)  # warm-up: first calls pick kernels
    times = {False: [], True: []}
    for _ in range(repeats):
        for bf16 in (False, True):
            times[bf16].append(once(bf16))
    model.zero_grad(set_to_none=True)
    return sorted(times[False])[repeats // 2] / sorted(times[True])[repeats // 2]


class AdaptersOff:
    """The base policy inside a LoRA policy: the same module, its adapters switched off for each
    decoder call (PEFT's `disable_adapter`). What `response_logprobs` needs of a model."""

    def __init__(self, peft_model):
        self._model = peft_model
        self.device = next(peft_model.parameters()).device

    def get_output_embeddings(self):
        return self._model.get_output_embeddings()

    def get_decoder(self):
        decoder = self._model.get_decoder()

        def run(**inputs):
            with self._model.disable_adapter():
                return decoder(**inputs)

        return run


def published_weights(model, rank: int = 0):
    """What the rollout replicas need of the learner's policy, on rank 0 (None elsewhere): a LoRA
    policy's `Adapter` (its adapter tensors only), else the full weights (`gathered_state_dict`)."""
    from paretorl.models.lora import adapter_of, is_lora_model

    if is_lora_model(model):
        return adapter_of(model) if rank == 0 else None
    return gathered_state_dict(model, rank)


def weights_nbytes(weights) -> int:
    """Bytes of published weights (`rollout/sync_bytes`); tensors that share memory count once."""
    tensors = weights.tensors if hasattr(weights, "tensors") else weights
    seen = {(t.data_ptr(), t.numel(), t.dtype): t.numel() * t.element_size() for t in tensors.values()}
    return sum(seen.values())


def gathered_state_dict(model, rank: int = 0) -> dict[str, torch.Tensor] | None:
    """The full weights as detached CPU copies on rank 0; None on every other rank.

    Under ZeRO-3 each rank holds only a shard of every parameter (the module's own tensors
    are empty placeholders), so the shards are gathered first: a collective, every rank must
    call it. Under ZeRO-0/1/2 every rank holds whole weights and only rank 0 copies them.
    """
    params = [p for p in model.parameters() if hasattr(p, "ds_id")]  # ZeRO-3 partitioned parameters
    if params:
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            return _cpu_copy(model.state_dict()) if rank == 0 else None
    return _cpu_copy(model.state_dict()) if rank == 0 else None


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
    """Log-probs [B, T] of the response tokens under `model` (logits / temperature, as sampled),
    and their entropy or None; 0 past each response's length (see `learner/logprobs.py`)."""
    from paretorl.learner.logprobs import response_logprobs

    return response_logprobs(model, batch, temperature, with_entropy=with_entropy)


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
