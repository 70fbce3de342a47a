"""A saved Llama policy read straight from its files, for the embedded engine.

A rollout replica needs the config, the weights and two token ids. Getting them through
transformers (`AutoModelForCausalLM`, `AutoTokenizer`) imports its model and generation code,
~4 CPU-s per replica on a 2-core host, and builds a module only to copy its weights out. The files
say all the engine needs: `config.json`, the safetensors weights and the tokenizer files.

Only what this reads without guessing: a `llama` config that names every field the engine uses
and plain RoPE (`rope_type: default`). Anything else (another family, a scaled RoPE, a missing
field whose default transformers would fill in) makes `read_policy_files` return None, and the
caller goes through transformers as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from paretorl.rollout.decoder import DecoderShape

# What DecoderShape.from_config reads from a llama config, besides fields with a fixed default.
REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "rms_norm_eps", "tie_word_embeddings", "hidden_act")


class DefaultRotary:
    """RoPE's cos/sin table exactly as transformers' Llama rotary module computes it for
    `rope_type: default` (inv_freq = theta^(-2i/d), attention scaling 1): called as that module is,
    (x, position_ids) -> (cos, sin) of shape [batch, positions, head_dim] in x's dtype."""

    def __init__(self, theta: float, head_dim: int):
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))

    def __call__(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


@dataclass
class PolicyFiles:
    config: SimpleNamespace  # config.json's fields as attributes
    rotary: DefaultRotary
    state_dict: dict[str, torch.Tensor]  # HF parameter names, as stored
    eos_token_id: int
    pad_token_id: int


def read_policy_files(model_dir: str | Path) -> PolicyFiles | None:
    """The policy in a local HF directory, or None where reading it needs transformers."""
    model_dir = Path(model_dir)
    config = _read_json(model_dir / "config.json")
    if config is None or config.get("model_type") != "llama" or any(k not in config for k in REQUIRED):
        return None
    theta = _default_rope_theta(config)
    tokenizer = _tokenizer_ids(model_dir)
    weights = _weight_files(model_dir)
    if theta is None or tokenizer is None or weights is None:
        return None
    tokens, size = tokenizer
    if size > config["vocab_size"]:
        return None  # a model and tokenizer that do not match: load_policy says so
    from safetensors.torch import load_file

    state_dict = {}
    for path in weights:
        state_dict.update(load_file(path))
    fields = SimpleNamespace(**config)
    return PolicyFiles(fields, DefaultRotary(theta, DecoderShape.from_config(fields).head_dim), state_dict, *tokens)


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _default_rope_theta(config: dict) -> float | None:
    """RoPE's base when the config asks for plain RoPE, in transformers 5's form (rope_parameters)
    or the older one (rope_theta, no rope_scaling); None otherwise."""
    if config.get("rope_scaling") is not None:
        return None
    rope = config.get("rope_parameters") or {"rope_type": "default", "rope_theta": config.get("rope_theta")}
    if not isinstance(rope, dict) or set(rope) != {"rope_type", "rope_theta"} or rope["rope_type"] != "default":
        return None
    if rope["rope_theta"] is None or config.get("rope_theta", rope["rope_theta"]) != rope["rope_theta"]:
        return None  # no base given, or two that disagree
    return float(rope["rope_theta"])


def _tokenizer_ids(model_dir: Path) -> tuple[tuple[int, int], int] | None:
    """((eos, pad) ids, the tokenizer's size) as the tokenizer defines them: the tokens
    tokenizer_config.json names, looked up in tokenizer.json. None if either is missing or a
    special_tokens_map.json could override them."""
    settings, vocab = _read_json(model_dir / "tokenizer_config.json"), _read_json(model_dir / "tokenizer.json")
    if settings is None or vocab is None or (model_dir / "special_tokens_map.json").exists():
        return None
    model_vocab = (vocab.get("model") or {}).get("vocab")
    ids = dict(model_vocab) if isinstance(model_vocab, dict) else {}  # BPE and WordPiece keep token -> id
    ids.update({t["content"]: t["id"] for t in vocab.get("added_tokens", [])})
    found = []
    for key in ("eos_token", "pad_token"):
        token = settings.get(key)
        token = token.get("content") if isinstance(token, dict) else token
        found.append(ids.get(token) if isinstance(token, str) else None)
    return None if None in found else ((found[0], found[1]), len(set(ids.values())))


def _weight_files(model_dir: Path) -> list[Path] | None:
    """The safetensors files holding the weights: one file, or the shards an index names."""
    if (model_dir / "model.safetensors").is_file():
        return [model_dir / "model.safetensors"]
    index = _read_json(model_dir / "model.safetensors.index.json")
    if index is None:
        return None
    shards = sorted({model_dir / name for name in index["weight_map"].values()})
    return shards if all(p.is_file() for p in shards) else None
