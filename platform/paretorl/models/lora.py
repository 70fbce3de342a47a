"""LoRA policies: a frozen base plus low-rank adapters (PEFT's format, PEFT's math).

A LoRA trial trains only the adapters. What it publishes to the rollout replicas and writes into
its checkpoints is an `Adapter`: PEFT's adapter tensors (`lora_A` [r, in], `lora_B` [out, r] per
targeted linear layer) and PEFT's `adapter_config.json`, whose `base_model_name_or_path` points at
the base policy. A checkpoint folder is exactly what `PeftModel.from_pretrained(base, folder)`
loads, plus the tokenizer's files.

The merge `W + scale * B @ A` (scale = lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA) is
what PEFT's `merge_and_unload` computes; the rollout replicas merge with `merged_state_dict` so
they never import PEFT or transformers. This module imports torch and safetensors only; PEFT is
imported inside the functions that build a trainable model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

# The linear layers of a Llama-family decoder layer (the tiny model and SmolLM2): LoRA's default
# targets ("every linear layer of the decoder": attention and MLP; "LoRA Without Regret" found
# MLP-inclusive LoRA matches full fine-tuning in RL). The LM head and embeddings stay frozen.
LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

_PREFIX = "base_model.model."  # PEFT's saved names: base_model.model.<module path>.lora_{A,B}.weight


@dataclass
class Adapter:
    """A LoRA policy's trainable part: PEFT's saved tensors and its adapter config (a dict)."""

    tensors: dict[str, torch.Tensor]
    config: dict

    @property
    def rank(self) -> int:
        return int(self.config["r"])

    @property
    def scale(self) -> float:
        alpha = float(self.config["lora_alpha"])
        return alpha / math.sqrt(self.rank) if self.config.get("use_rslora") else alpha / self.rank

    @property
    def base(self) -> str | None:
        """Where the base policy lives (a folder or an object-store URI)."""
        return self.config.get("base_model_name_or_path")

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def deltas(self) -> dict[str, torch.Tensor]:
        """{base weight name: scale * B @ A} in fp32, one per adapted linear layer."""
        out = {}
        for name, a in self.tensors.items():
            if not name.endswith(".lora_A.weight"):
                continue
            module = name[len(_PREFIX) :] if name.startswith(_PREFIX) else name
            module = module[: -len(".lora_A.weight")]
            b = self.tensors[name.replace(".lora_A.", ".lora_B.")]
            out[f"{module}.weight"] = (b.float() @ a.float()).mul_(self.scale)
        return out

    def save(self, out_dir: str | Path) -> Path:
        """PEFT's adapter folder: adapter_config.json and adapter_model.safetensors."""
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.tensors.items()}, str(out_dir / ADAPTER_WEIGHTS))
        (out_dir / ADAPTER_CONFIG).write_text(json.dumps(self.config, indent=2, sort_keys=True))
        return out_dir

    @classmethod
    def load(cls, adapter_dir: str | Path) -> Adapter:
        from safetensors.torch import load_file

        return cls(load_file(str(Path(adapter_dir) / ADAPTER_WEIGHTS)), read_config(adapter_dir))


def read_config(adapter_dir: str | Path) -> dict:
    """A LoRA checkpoint's adapter_config.json (its base is `base_model_name_or_path`), without its tensors."""
    return json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text())


def is_adapter_dir(path: str | Path) -> bool:
    """A LoRA checkpoint (PEFT adapter folder) rather than a full model folder."""
    return (Path(path) / ADAPTER_CONFIG).exists()


def merged_state_dict(base: dict[str, torch.Tensor], adapter: Adapter) -> dict[str, torch.Tensor]:
    """The base's weights with the adapter merged in (PEFT's merge_and_unload), in fp32 where merged."""
    deltas = adapter.deltas()
    missing = sorted(set(deltas) - set(base))
    if missing:
        raise ValueError(f"the adapter targets weights the base policy does not have: {missing[:3]}")
    return {name: (w.float() + deltas[name]) if name in deltas else w for name, w in base.items()}


def zero_adapter(config: dict, shapes: dict[str, tuple[int, int]]) -> Adapter:
    """The base policy as an adapter: B = 0 (so its output is the base's), A = 0 too (deterministic).

    `shapes`: {module path: (in_features, out_features)} of every adapted linear layer.
    """
    tensors = {}
    r = int(config["r"])
    for module, (fan_in, fan_out) in shapes.items():
        tensors[f"{_PREFIX}{module}.lora_A.weight"] = torch.zeros(r, fan_in)
        tensors[f"{_PREFIX}{module}.lora_B.weight"] = torch.zeros(fan_out, r)
    return Adapter(tensors, dict(config))


def adapted_shapes(base: dict[str, torch.Tensor], targets: list[str]) -> dict[str, tuple[int, int]]:
    """{module path: (in, out)} of the base's 2-D `*.weight`s whose module name is in `targets`."""
    out = {}
    for name, w in base.items():
        if not name.endswith(".weight") or w.dim() != 2:
            continue
        module = name[: -len(".weight")]
        if module.rsplit(".", 1)[-1] in targets:
            out[module] = (w.shape[1], w.shape[0])
    return out


# --- the learner side: PEFT --------------------------------------------------------------------


def peft_config(settings, base: str | None = None):
    """PEFT's LoraConfig for `settings` (paretorl.config.LoraSettings); `base` is recorded as the
    adapter's base_model_name_or_path."""
    from peft import LoraConfig

    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.targets or LLAMA_LINEARS),
        bias="none",
        base_model_name_or_path=base,
    )


def add_adapters(model, settings, base: str | None = None):
    """`model` (an HF causal LM) as a PEFT LoRA model: only the adapters are trainable.

    Raises ValueError naming `model.lora.targets` if a target is not a linear layer of `model`.
    """
    from peft import get_peft_model

    check_targets(model, settings.targets or LLAMA_LINEARS)
    return get_peft_model(model, peft_config(settings, base))


def load_adapters(model, adapter_dir: str | Path, trainable: bool):
    """`model` with the adapters saved in `adapter_dir` (a LoRA checkpoint)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)


def check_targets(model, targets) -> None:
    linear = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    linear.discard("lm_head")
    unknown = sorted(set(targets) - linear)
    if unknown:
        raise ValueError(f"model.lora.targets: {unknown} are not linear layers of this model; it has: {', '.join(sorted(linear))}")


def adapter_of(peft_model, base: str | None = None) -> Adapter:
    """The adapter of a PEFT model (detached CPU copies), its config's base set to `base` if given."""
    from peft.utils import get_peft_model_state_dict

    tensors = {k: v.detach().to("cpu", copy=True) for k, v in get_peft_model_state_dict(peft_model).items()}
    config = peft_model.peft_config["default"].to_dict()
    config["target_modules"] = sorted(config["target_modules"])  # a set in PEFT's config
    if base is not None:
        config["base_model_name_or_path"] = str(base)
    return Adapter(tensors, json.loads(json.dumps(config, default=str)))


def is_lora_model(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")
