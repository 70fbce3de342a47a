"""Typed, validated configuration of one trial.

One source of truth: every knob a trial has is a field here, documented at the field and
validated once (unknown keys refused, cross-field checks at load time). The sweep's search
space (`paretorl.search.space`) names fields of this class by dotted path, e.g. `algo.alpha`.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from paretorl.algos import AGGREGATIONS, KL_ESTIMATORS, KL_PLACEMENTS, KL_REFUSED, NORMALIZATIONS, OBJECTIVES

ENGINES = ("embedded", "vllm")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TaskConfig(_Strict):
    name: str = Field("arith", description="built-in task name, or 'file.py:Class' / 'module:Class'")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the task class")
    n_train: int = Field(2000, gt=0, description="training prompts generated")
    n_eval: int = Field(64, gt=0, description="held-out prompts generated for selection (the eval split: Optuna, the eval front)")
    n_test: int = Field(256, gt=0, description="held-out prompts for the final report only (the test split: never seen by anything that selects)")
    seed: int = Field(0, description="seed of the task's prompt generation (all three splits)")


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # = models.lora.LLAMA_LINEARS


class LoraSettings(_Strict):
    """LoRA adapters on the policy (PEFT): only they train, sync and are checkpointed. rank 0 is a
    full fine-tune. A space may sweep rank and alpha: they shape the trial, not the base policy."""

    rank: int = Field(0, ge=0, description="adapter rank r; 0 = full fine-tune (no adapters)")
    alpha: float = Field(32.0, gt=0, description="lora_alpha: the update is scaled by alpha / rank")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the adapters' input (0 keeps the learner's log-probs equal to the sampler's)")
    targets: list[str] | None = Field(
        None, description=f"module names of the linear layers to adapt; default every linear layer of the decoder ({', '.join(LORA_TARGETS)})"
    )

    @field_validator("targets")
    @classmethod
    def _named(cls, v):
        if v is not None and (not v or any(not t or not isinstance(t, str) for t in v)):
            raise ValueError("model.lora.targets must be a non-empty list of module names")
        return v


class ModelConfig(_Strict):
    """The policy: the tiny Llama-family decoder the embedded default trains from scratch, or a
    pretrained model (`pretrained`), whose own size, tokenizer and chat template then apply."""

    pretrained: str | None = Field(
        None,
        description="a pretrained base policy instead of the tiny model: a packaged model's name "
        "(smollm2-135m-instruct), a .gguf file or an HF directory; the size fields below are then ignored",
    )
    vocab_size: int = Field(320, ge=260, description="BPE vocabulary (byte-level, so >= 256 + specials)")
    hidden_size: int = Field(128, gt=0, description="width of the tiny model")
    num_layers: int = Field(2, gt=0, description="decoder layers of the tiny model")
    num_heads: int = Field(4, gt=0, description="attention heads of the tiny model (must divide hidden_size)")
    intermediate_size: int = Field(384, gt=0, description="MLP width of the tiny model")
    max_len: int = Field(192, gt=8, description="prompt + response tokens (tiny model)")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA adapters (rank 0: full fine-tune)")

    @model_validator(mode="after")
    def _lora_targets_exist(self):
        """The tiny model and the packaged SmolLM2 are Llama decoders: their linear layers are known
        here, before any compute. Another pretrained model's are checked when its policy loads."""
        known = self.pretrained is None or str(self.pretrained).startswith("smollm2")
        unknown = sorted(set(self.lora.targets or ()) - set(LORA_TARGETS))
        if self.lora.rank and known and unknown:
            raise ValueError(f"model.lora.targets: {unknown} are not linear layers of this model; valid: {', '.join(LORA_TARGETS)}")
        return self

    def base_dump(self) -> dict:
        """The fields that shape the base policy (its SFT cache and splits): all but `lora`."""
        return self.model_dump(exclude={"lora"})

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"model.hidden_size ({self.hidden_size}) must be divisible by model.num_heads ({self.num_heads})")
        return self


class SFTConfig(_Strict):
    """Warm start: supervised training on the task's demonstrations (cached by content)."""

    steps: int = Field(600, ge=0, description="SFT optimizer steps (0: no warm start)")
    batch_size: int = Field(64, gt=0, description="demonstrations per SFT step")
    lr: float = Field(3e-3, gt=0, description="Adam learning rate of SFT")
    n_demos: int = Field(6000, gt=0, description="demonstrations sampled from the training split")
    seed: int = Field(0, description="seed of the demonstrations and of SFT's initialisation and batches")
    on_pretrained: bool = Field(False, description="with model.pretrained, fine-tune it on demonstrations before RL (default: RL starts from it)")


class VLLMConfig(_Strict):
    """Settings of the vLLM engine (rollout.engine = vllm); ignored by the embedded engine."""

    gpu_memory_utilization: float = Field(0.5, gt=0.0, le=1.0, description="fraction of GPU memory vLLM may take (GPU only)")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per replica")
    kv_cache_space_gib: float = Field(1.0, gt=0.0, description="KV cache of vllm-cpu, in GiB (VLLM_CPU_KVCACHE_SPACE)")
    enforce_eager: bool = Field(True, description="skip CUDA-graph / torch.compile capture: faster start, slower decode")


class RolloutConfig(_Strict):
    engine: str = Field("embedded", description=f"one of {ENGINES}")
    replicas: int = Field(1, ge=1, description="Serve replicas per trial (fixed count)")
    autoscaling: dict[str, Any] | None = Field(
        None, description="Serve autoscaling_config (min_replicas, max_replicas, target_ongoing_requests); overrides replicas"
    )
    dtype: Literal["bfloat16", "float32"] = Field("bfloat16", description="weights and activations of the rollout engine (the learner keeps its own)")
    threads: int = Field(1, ge=1, description="torch threads in each replica")
    num_cpus: float = Field(0.4, ge=0, description="Ray CPUs reserved per replica (logical: two trials share 2 cores)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs (or resources.accelerator units) reserved per replica")
    vllm: VLLMConfig = Field(default_factory=VLLMConfig, description="settings of the vLLM engine")

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, v):
        if v not in ENGINES:
            raise ValueError(f"unknown rollout engine {v!r}; valid: {', '.join(ENGINES)}")
        return v

    @model_validator(mode="after")
    def _whole_gpu_per_rank(self):
        """vLLM puts each tensor-parallel rank on a GPU of its own."""
        if self.engine == "vllm" and self.vllm.tensor_parallel_size > 1 and self.num_gpus not in (0, 1):
            raise ValueError(f"rollout.vllm.tensor_parallel_size > 1 needs rollout.num_gpus 1 (a whole GPU per rank), got {self.num_gpus}")
        return self

    @field_validator("autoscaling")
    @classmethod
    def _serve_autoscaling(cls, v):
        """Checked as Serve reads it, and unknown keys refused (Serve would silently ignore them)."""
        if v is None:
            return v
        from ray.serve.config import AutoscalingConfig

        unknown = sorted(set(v) - set(AutoscalingConfig.model_fields))
        if unknown:
            raise ValueError(f"unknown rollout.autoscaling keys {unknown}; valid: {', '.join(sorted(AutoscalingConfig.model_fields))}")
        AutoscalingConfig(**v)
        return v


class AlgoConfig(_Strict):
    """The RL math of a trial; formulas and which KL each estimator x placement follows: docs/algorithms.md."""

    objective: str = Field("grpo", description=f"advantage estimator, one of {OBJECTIVES}")
    alpha: float = Field(0.0, ge=0.0, lt=1.0, description="length-penalty coefficient (Arora & Zanette)")
    normalization: str = Field("none", description=f"extra advantage normalisation, one of {NORMALIZATIONS}")
    kl_coef: float = Field(0.0, ge=0.0, description="KL-to-reference coefficient beta (0: no reference model, as MaxRL)")
    kl_estimator: str = Field(
        "k1", description=f"one of {KL_ESTIMATORS}; default k1 (Arora & Zanette's, in the reward), k3 when kl_placement is loss (GRPO's)"
    )
    kl_placement: str = Field("reward", description=f"one of {KL_PLACEMENTS}: a detached per-token reward, or a differentiated loss term")
    aggregation: str = Field("token_mean", description=f"loss aggregation, one of {AGGREGATIONS}")
    clip_eps: float = Field(0.2, gt=0.0, description="PPO ratio clip epsilon of the policy loss")

    @model_validator(mode="before")
    @classmethod
    def _estimator_follows_placement(cls, data):
        """Each placement's default estimator is its paper's: k1 in the reward, k3 in the loss."""
        if isinstance(data, dict) and "kl_estimator" not in data and data.get("kl_placement") == "loss":
            data = {**data, "kl_estimator": "k3"}
        return data

    @model_validator(mode="after")
    def _known_names(self):
        for field, valid in (
            ("objective", OBJECTIVES),
            ("normalization", NORMALIZATIONS),
            ("kl_estimator", KL_ESTIMATORS),
            ("kl_placement", KL_PLACEMENTS),
            ("aggregation", AGGREGATIONS),
        ):
            value = getattr(self, field)
            if value not in valid:
                raise ValueError(f"unknown algo.{field} {value!r}; valid: {', '.join(valid)}")
        return self

    @model_validator(mode="after")
    def _regularises(self):
        reason = KL_REFUSED.get((self.kl_estimator, self.kl_placement))
        if self.kl_coef > 0 and reason:
            raise ValueError(f"algo.kl_estimator {self.kl_estimator} with algo.kl_placement {self.kl_placement} is refused: {reason}")
        return self

    @model_validator(mode="after")
    def _std_once(self):
        if self.objective == "grpo" and self.normalization == "group_std":
            raise ValueError(
                "algo.objective grpo already divides the advantage by the group's reward std; algo.normalization group_std "
                "would divide by it a second time. Use objective dr_grpo with normalization group_std (that is GRPO), "
                "or grpo with normalization none"
            )
        return self


class TrainConfig(_Strict):
    steps: int = Field(12, gt=0, description="RL iterations (rollout -> update)")
    prompts_per_step: int = Field(16, gt=0, description="prompts per RL step (the global batch, split over learner workers)")
    samples_per_prompt: int = Field(8, ge=2, description="group size n (>= 2: a group needs a baseline)")
    updates_per_step: int = Field(1, ge=1, description="optimizer steps per iteration (mini-batches)")
    micro_batch_size: int = Field(
        32, gt=0, description="sequences per forward/backward; on a CPU small micro-batches keep activations in cache (the default model updates ~15% faster at 16-32 than at 64)"
    )
    max_tokens_per_micro_batch: int | None = Field(
        None, gt=0, description="also bound a micro-batch by its padded tokens (rows x its longest row): long responses then "
        "go in fewer rows, so activation memory stays flat however long the answers get (None: rows only)",
    )
    lr: float = Field(1e-4, gt=0.0, description="Adam learning rate of the RL update")
    max_new_tokens: int = Field(64, gt=0, description="token limit of a training rollout (a response cut there counts as wrong)")
    temperature: float = Field(1.0, gt=0.0, description="sampling temperature of training rollouts")
    zero_stage: int = Field(2, ge=0, le=3, description="DeepSpeed ZeRO stage (0-3)")
    bf16: bool = Field(False, description="bf16 weights with DeepSpeed's mixed precision (GPU learners)")
    autocast: Literal["auto", "bf16", "off"] = Field(
        "auto", description="CPU learners with fp32 weights: bf16 autocast for forward and backward (fp32 master weights and "
        "optimizer state); auto = only where it measures faster on this CPU and model, at trial start",
    )
    activation_checkpointing: bool = Field(False, description="recompute activations in the backward pass: less memory, ~30% more compute (large models, ZeRO-3)")
    grad_clip: float = Field(1.0, gt=0.0, description="gradient-norm clip of the RL update")
    torch_threads: int = Field(1, ge=1, description="torch threads in each learner worker")
    checkpoint_every: int = Field(1, ge=1, description="checkpoint every C steps (and at every evaluation): a retried trial re-runs at most C-1 steps")
    seed: int = Field(0, description="seed of the learner, the prompt stream and the evaluations' sampling")

    @model_validator(mode="after")
    def _divisible(self):
        batch = self.prompts_per_step * self.samples_per_prompt
        if batch % self.updates_per_step:
            raise ValueError(
                f"train.prompts_per_step * train.samples_per_prompt ({batch}) must be divisible by train.updates_per_step ({self.updates_per_step})"
            )
        return self


class EvalConfig(_Strict):
    every: int = Field(4, gt=0, description="evaluate every E RL steps (and after the last)")
    n_prompts: int = Field(64, gt=0, description="held-out prompts evaluated")
    n_samples: int = Field(8, gt=0, description="samples per prompt; pass@k for k = 1, 2, 4, ..., n")
    temperature: float = Field(1.0, gt=0.0, description="sampling temperature of evaluations")
    max_new_tokens: int = Field(64, gt=0, description="token limit of an evaluation response (a response cut there counts as wrong)")
    test_samples: int = Field(16, gt=0, description="samples per test prompt when the sweep's end re-evaluates the front on the test split (>= the objective's k)")


class ResourcesConfig(_Strict):
    learner_workers: int = Field(1, ge=1, description="Ray Train workers of the learner (data parallel)")
    learner_cpus: float = Field(0.4, ge=0, description="Ray CPUs per learner worker")
    learner_gpus: float = Field(0.0, ge=0, description="GPUs (or resources.accelerator units) per learner worker")
    report_poll_s: float = Field(
        0.1, gt=0, le=10, description="how often Ray Train's controller collects the learner's reports (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S): "
        "each ray.train.report waits until it is collected, so Ray's default of 2 s made every RL step of a small trial last 2 s",
    )
    max_failures: int = Field(2, ge=-1, description="Ray Train retries of a trial whose worker died, from its latest checkpoint (-1: no limit)")
    accelerator: str = Field(
        "GPU",
        description="the Ray resource that learner_gpus and rollout.num_gpus ask for: GPU, or a custom resource the "
        "cluster's nodes declare (e.g. fake_gpu on cluster/fake-multinode.yaml), with which the trial runs on CPU",
    )

    @field_validator("accelerator")
    @classmethod
    def _resource_name(cls, v):
        if not v or v in ("CPU", "memory", "object_store_memory") or v.startswith("node:"):
            raise ValueError(f"resources.accelerator must be GPU or a custom Ray resource name, got {v!r}")
        return v


class FaultConfig(_Strict):
    """Fault injection, for testing the platform's own recovery; 0 = off. Never set in real sweeps."""

    crash_at_step: int = Field(0, ge=0, description="the learner process kills itself (SIGKILL) at the start of this step, on its first attempt only")
    nan_loss_at_step: int = Field(0, ge=0, description="the policy loss is made NaN at this step")


class TrialConfig(_Strict):
    task: TaskConfig = Field(default_factory=TaskConfig, description="the task: prompts, verifier, split sizes")
    model: ModelConfig = Field(default_factory=ModelConfig, description="the policy's architecture, or a pretrained model")
    sft: SFTConfig = Field(default_factory=SFTConfig, description="the supervised warm start")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="the rollout engine and its Serve replicas")
    algo: AlgoConfig = Field(default_factory=AlgoConfig, description="the RL math: advantage estimator, normalisation, aggregation, KL")
    train: TrainConfig = Field(default_factory=TrainConfig, description="the RL loop: steps, batch, optimizer, learner precision")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="held-out evaluation: how often, how many prompts and samples")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig, description="Ray resources of the learner and how Ray Train runs it")
    faults: FaultConfig = Field(default_factory=FaultConfig, description="fault injection (tests only)")

    @model_validator(mode="after")
    def _global_batch(self):
        if self.train.prompts_per_step % self.resources.learner_workers:
            raise ValueError(
                f"train.prompts_per_step ({self.train.prompts_per_step}) is the global batch: it must be divisible by "
                f"resources.learner_workers ({self.resources.learner_workers})"
            )
        return self

    @model_validator(mode="after")
    def _lora_zero(self):
        if self.model.lora.rank and self.train.zero_stage == 3:
            raise ValueError(
                "model.lora with train.zero_stage 3 is refused: ZeRO-3 shards the weights of a model too large for one "
                "device, and a LoRA trial's trainable state is only its adapters; use train.zero_stage 0-2 (the frozen base "
                "is held whole per learner rank, gradients and Adam state exist for the adapters only)"
            )
        return self

    @model_validator(mode="after")
    def _fits_context(self):
        if self.model.pretrained is None and max(self.train.max_new_tokens, self.eval.max_new_tokens) >= self.model.max_len:
            raise ValueError(f"max_new_tokens must be below model.max_len ({self.model.max_len})")
        return self


def set_path(tree: dict, dotted: str, value: Any) -> None:
    """Set `tree["a"]["b"] = value` for `dotted = "a.b"`, creating dicts on the way."""
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; used for MLflow params."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def deep_merge(base: dict, override: dict) -> dict:
    """A new dict: `override` merged into `base` recursively. Nothing in it is shared with the
    inputs, so setting a key in the result (`set_path`) never changes them: a shallow copy once
    let space validation write its corners' values into the space's fixed `trial` section."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
