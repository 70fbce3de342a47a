"""EmbeddedEngine: a batched sampler for small decoder LMs on CPU, in-process.

One `generate` call: left-pad the G prompts, prefill them once (G rows, not G*n) into a static
KV cache allocated for the call, then decode all G*n rows in lock-step. Each prompt's keys and
values are stored once and shared by its n samples (the C kernel reads them once per prompt per
step; the torch fallback copies them to the n rows). Rows that emit EOS are dropped from the
active batch (compacted into the front of the same cache) so finished responses stop costing
compute. For models this small, per-op overhead rules: HF generate runs ~40 modules
per layer per step; here a decode step is four matmuls per layer (fused QKV and gate/up, folded
norms) and C calls for RoPE + cache append + attention, RMSNorm, SiLU gating and sampling
(`kernels`, with a pure-torch fallback).

Threads: on a shared 2-core machine prefer threads=1: an OpenMP-parallel op waits for its
slowest thread, and a thread whose core is busy elsewhere stalls every op of the step.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from contextlib import contextmanager

import torch

from paretorl.rollout.decoder import Decoder, DecoderShape
from paretorl.rollout.policy_files import PolicyFiles, read_policy_files
from paretorl.rollout.sampling import sample_tokens
from paretorl.rollout.types import FINISH_LENGTH, FINISH_STOP, Rollouts, SamplingParams

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}

# Compact the active batch once at most this fraction of its rows is still generating: a
# compaction costs about one step's cache traffic, a dead row costs its share of every matmul.
COMPACT_BELOW = 0.875


@contextmanager
def _torch_threads(threads: int | None):
    if threads is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _hf_model(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


class EmbeddedEngine:
    """Samples from a Llama-family causal LM (a transformers model, a save_pretrained dir, or its
    `PolicyFiles`).

    dtype: "bfloat16" (default; fast where the CPU has bf16 matmul units) or "float32".
    threads: torch intra-op threads during `generate` (torch's setting is process-global, so it
    is set for the call and restored after); None leaves it alone.
    """

    def __init__(
        self,
        model,
        *,
        eos_token_id: int,
        pad_token_id: int,
        dtype: str = "bfloat16",
        threads: int | None = None,
        keep_base: bool = False,
    ):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if isinstance(model, (str, os.PathLike)):
            model = read_policy_files(model) or _hf_model(model)
        files = model if isinstance(model, PolicyFiles) else None  # else a transformers model
        self.config = model.config
        shape = DecoderShape.from_config(model.config)
        for name, tok in (("eos_token_id", eos_token_id), ("pad_token_id", pad_token_id)):
            if not 0 <= tok < shape.vocab:
                raise ValueError(f"{name}={tok} is outside the vocabulary (size {shape.vocab})")
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.dtype = dtype
        self.threads = threads
        self._lock = threading.Lock()  # a Serve replica may call from several threads
        rotary = files.rotary if files else copy.deepcopy(model.model.rotary_emb)  # RoPE exactly as HF computes it
        self._decoder = Decoder(shape, rotary, DTYPES[dtype])
        base = files.state_dict if files else model.state_dict()
        # A LoRA policy's adapters are merged into the base's own weights (fp32), not into the
        # engine's packed copy: each version is exactly base + its adapter, in any order.
        self._base = base if keep_base else None
        self.load_state_dict(base)

    @classmethod
    def from_dir(cls, model_dir: str | os.PathLike, *, dtype: str = "bfloat16", threads: int | None = None, keep_base: bool = False) -> EmbeddedEngine:
        """The engine on a saved policy (a local HF directory), stopping at its tokenizer's EOS.

        A llama policy with plain RoPE is read from its files (`policy_files`): transformers is not
        imported. Any other goes through transformers' model and tokenizer. `keep_base`: keep the
        policy's weights to merge LoRA adapters into (`load_weights` with an `Adapter`).
        """
        files = read_policy_files(model_dir)
        if files is not None:
            return cls(files, eos_token_id=files.eos_token_id, pad_token_id=files.pad_token_id, dtype=dtype, threads=threads, keep_base=keep_base)
        from paretorl.models.build import load_policy

        model, tokenizer = load_policy(model_dir)
        return cls(model, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, dtype=dtype, threads=threads, keep_base=keep_base)

    @property
    def vocab_size(self) -> int:
        return self._decoder.shape.vocab

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Replace the weights (HF parameter names, any dtype; copied and cast to the engine dtype)."""
        with self._lock, torch.inference_mode():
            self._decoder.load(state_dict)

    def load_weights(self, weights) -> None:
        """A published policy version: full weights (a state dict), or a LoRA `Adapter` on the base.

        An adapter is merged into the base's fp32 weights (W + scale * B @ A, PEFT's merge), then
        packed like full weights: one merge per version, nothing extra per token. (A separate
        low-rank path would cost two thin matmuls per adapted layer at every decode step, and the
        decode step is memory-bound here: merging is the cheaper choice for a sampler.)
        """
        from paretorl.models.lora import Adapter, merged_state_dict

        if not isinstance(weights, Adapter):
            self.load_state_dict(weights)
            return
        if self._base is None:
            raise ValueError("this engine was built without keep_base=True: it cannot apply a LoRA adapter")
        with torch.inference_mode():
            merged = merged_state_dict(self._base, weights)
        self.load_state_dict(merged)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> Rollouts:
        """n samples for each prompt (token ids), as `Rollouts` rows g*n .. g*n+n-1 for prompt g.

        tokens has max(lengths) columns. Same seed and inputs give the same outputs (on the same
        machine and thread count).
        """
        if not prompts:
            raise ValueError("generate needs at least one prompt")
        for i, p in enumerate(prompts):
            if len(p) == 0:
                raise ValueError(f"prompt {i} is empty")
        with self._lock, torch.inference_mode(), _torch_threads(self.threads):
            return self._generate(prompts, params)

    def _generate(self, prompts: list[list[int]], params: SamplingParams) -> Rollouts:
        start = time.perf_counter()
        dec, s = self._decoder, self._decoder.shape
        n, new = params.n, params.max_new_tokens
        G, B = len(prompts), len(prompts) * params.n
        lens = torch.tensor([len(p) for p in prompts])
        P = int(lens.max())
        T = P + new - 1  # the last sampled token is never fed back
        if s.sliding_window is not None and T > s.sliding_window:
            raise NotImplementedError(f"sequence length {T} exceeds the sliding window {s.sliding_window}")
        ids = torch.full((G, P), self.pad_token_id, dtype=torch.long)
        for g, p in enumerate(prompts):
            ids[g, P - len(p) :] = torch.tensor(p, dtype=torch.long)
        if int(ids.max()) >= s.vocab or int(ids.min()) < 0:
            raise ValueError(f"prompt token ids must be in [0, {s.vocab})")
        pad = P - lens

        cache = dec.new_cache(G, n, P, T)
        logits = dec.prefill(ids, pad, cache, n).repeat_interleave(n, dim=0)
        prefill_s = time.perf_counter() - start

        generator = torch.Generator()
        if params.seed is not None:
            generator.manual_seed(params.seed)
        else:
            generator.seed()
        out_tokens = torch.full((B, new), self.pad_token_id, dtype=torch.long)
        out_logprobs = torch.zeros((B, new), dtype=torch.float32)
        lengths = torch.full((B,), new, dtype=torch.long)
        stopped = torch.zeros(B, dtype=torch.bool)
        # Per active batch entry (a prefix of the cache rows): its result row, its first
        # cache column, and whether it is still generating.
        rows = torch.arange(B)
        row_start = pad.repeat_interleave(n)
        alive = torch.ones(B, dtype=torch.bool)
        m = B
        for step in range(new):
            tok, lp = sample_tokens(logits, params.temperature, params.top_k, params.top_p, generator, dec.kernel)
            if m == B:
                out_tokens[:, step], out_logprobs[:, step] = tok, lp
            else:
                out_tokens[rows, step], out_logprobs[rows, step] = tok, lp
            if not params.ignore_eos:
                hit = (tok == self.eos_token_id) & alive
                if hit.any():
                    lengths[rows[hit]] = step + 1
                    stopped[rows[hit]] = True
                    alive &= ~hit
                    live = int(alive.sum())
                    if live == 0:
                        break
                    if live <= COMPACT_BELOW * m and step < new - 1:
                        keep = alive.nonzero().squeeze(1)
                        cache.compact(keep, columns=P + step)
                        tok, rows, row_start = tok[keep], rows[keep], row_start[keep]
                        m, alive = live, alive[keep]
            if step == new - 1:
                break
            logits = dec.decode(tok, P + step, row_start, cache)
        gen_s = time.perf_counter() - start

        width = int(lengths.max())
        past_end = torch.arange(width)[None] >= lengths[:, None]
        tokens = out_tokens[:, :width].masked_fill(past_end, self.pad_token_id)
        logprobs = out_logprobs[:, :width].masked_fill(past_end, 0.0)
        n_tokens = int(lengths.sum())
        return Rollouts(
            tokens=tokens.numpy(),
            logprobs=logprobs.numpy(),
            lengths=lengths.numpy(),
            finish_reasons=[FINISH_STOP if x else FINISH_LENGTH for x in stopped.tolist()],
            n=n,
            stats={
                "gen_s": gen_s,
                "prefill_s": prefill_s,
                "new_tokens": n_tokens,
                "tokens_per_s": n_tokens / gen_s if gen_s > 0 else float("nan"),
                "kv_cache_bytes": cache.nbytes,
                "attention": "c-kernel" if dec.kernel is not None else "torch",
            },
        )
