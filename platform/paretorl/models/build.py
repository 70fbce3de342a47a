"""Build, save and load policies (HF format, safetensors)."""

from __future__ import annotations

from pathlib import Path


def build_model(cfg, tokenizer, seed: int = 0):
    """A fresh Llama-family decoder sized by `cfg` (paretorl.config.ModelConfig)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_len,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def save_policy(model, tokenizer, out_dir: str | Path) -> Path:
    """HF directory (config.json, model.safetensors, tokenizer files): loadable by vLLM too."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def save_base_policy(model, tokenizer, out_dir: Path, meta: dict) -> Path:
    """Save a base policy into the cache atomically, with `meta` as paretorl_base.json.

    Written to a temporary sibling, then renamed; if another process finished the same base
    first, theirs is kept. Readers never see a half-written directory.
    """
    import json
    import shutil
    import time

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{time.time_ns()}")
    save_policy(model, tokenizer, tmp)
    (tmp / "paretorl_base.json").write_text(json.dumps(meta, indent=2))
    if out_dir.exists():
        shutil.rmtree(tmp)
    else:
        tmp.replace(out_dir)
    return out_dir


def load_policy(model_dir: str | Path, dtype=None):
    """(model, tokenizer) from an HF directory, local or on object storage (s3://...: copied to
    this node first); never unpickles (safetensors only).

    A LoRA checkpoint (a PEFT adapter folder) loads as its base policy with the adapter merged in:
    the policy it samples like. The learner, which trains the adapters, loads them unmerged.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from paretorl import storage
    from paretorl.models.lora import is_adapter_dir

    model_dir = storage.local_copy(model_dir)
    if is_adapter_dir(model_dir):
        return _merged_adapter(model_dir, dtype)
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(f"{model_dir} is not a model directory (no config.json)")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype or torch.float32, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if model.config.vocab_size < len(tokenizer):
        raise ValueError(
            f"model and tokenizer in {model_dir} do not match: the tokenizer has {len(tokenizer)} tokens "
            f"but the model's vocabulary has {model.config.vocab_size}"
        )
    return model, tokenizer


def _merged_adapter(adapter_dir: Path, dtype=None):
    """(model, tokenizer): the adapter's base policy with the adapter merged (PEFT's merge_and_unload)."""
    from paretorl.models.lora import load_adapters, read_config

    base = read_config(adapter_dir).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{adapter_dir} is a LoRA adapter without base_model_name_or_path in adapter_config.json: its base policy is unknown")
    model, tokenizer = load_policy(base, dtype)
    return load_adapters(model, adapter_dir, trainable=False).merge_and_unload(), tokenizer


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """A LoRA checkpoint as a full HF model folder (for vLLM, transformers or another tool)."""
    model, tokenizer = load_policy(adapter_dir)
    return save_policy(model, tokenizer, out_dir)
