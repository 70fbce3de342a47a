"""A saved policy read from its files (no transformers) gives the engine transformers gives it."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from paretorl.config import ModelConfig
from paretorl.models.build import build_model, load_policy, save_policy
from paretorl.models.tokenizer import build_tokenizer
from paretorl.rollout.engine import EmbeddedEngine
from paretorl.rollout.policy_files import DefaultRotary, read_policy_files
from paretorl.rollout.types import SamplingParams

PROMPTS = [[1, 40, 41, 42, 3], [1, 50, 3], [1, 60, 61, 62, 63, 64, 65, 3]]
SAMPLED = SamplingParams(n=4, max_new_tokens=24, temperature=1.0, seed=7)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The default tiny policy, saved as the sweep saves its base (save_policy)."""
    tokenizer = build_tokenizer(["12+34=46", "7*8=56", "hello world"] * 40, vocab_size=300)
    model = build_model(ModelConfig(vocab_size=300), tokenizer, seed=1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)  # logits far from ties
    return save_policy(model, tokenizer, tmp_path_factory.mktemp("policy") / "base")


def through_transformers(model_dir) -> EmbeddedEngine:
    model, tok = load_policy(model_dir)
    return EmbeddedEngine(model, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, dtype="float32", threads=1)


def assert_same_rollouts(a: EmbeddedEngine, b: EmbeddedEngine):
    x, y = a.generate(PROMPTS, SAMPLED), b.generate(PROMPTS, SAMPLED)
    np.testing.assert_array_equal(x.tokens, y.tokens)
    np.testing.assert_array_equal(x.logprobs, y.logprobs)


@pytest.mark.parametrize("theta, head_dim", [(10000.0, 32), (100000.0, 64), (500000.0, 16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_table_equals_transformers(theta, head_dim, dtype):
    config = LlamaConfig(hidden_size=head_dim * 4, num_attention_heads=4, rope_parameters={"rope_type": "default", "rope_theta": theta})
    positions, x = torch.arange(300)[None], torch.zeros(1, dtype=dtype)
    ours, theirs = DefaultRotary(theta, head_dim)(x, positions), LlamaRotaryEmbedding(config)(x, positions)
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_engine_from_files_equals_engine_from_transformers(saved):
    files = read_policy_files(saved)
    assert files is not None
    tok = AutoTokenizer.from_pretrained(saved)
    assert (files.eos_token_id, files.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)
    assert_same_rollouts(EmbeddedEngine.from_dir(saved, dtype="float32", threads=1), through_transformers(saved))


def test_a_replica_engine_does_not_import_transformers(saved):
    code = ("import sys; from paretorl.rollout.engine import EmbeddedEngine; "
            f"EmbeddedEngine.from_dir({str(saved)!r}); print(sorted(m for m in sys.modules if m.startswith('transformers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_sharded_weights_are_read_from_every_shard(saved, tmp_path):
    model, tok = load_policy(saved)
    sharded = save_policy(model, tok, tmp_path / "sharded")
    model.save_pretrained(sharded, max_shard_size="100KB")
    (sharded / "model.safetensors").unlink(missing_ok=True)
    assert (sharded / "model.safetensors.index.json").exists()
    assert read_policy_files(sharded) is not None
    assert_same_rollouts(EmbeddedEngine.from_dir(sharded, dtype="float32", threads=1), through_transformers(saved))


def edit_config(src, dst, change):
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    change(config)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_the_older_rope_fields_are_read(saved, tmp_path):
    def older(config):
        config["rope_theta"] = config.pop("rope_parameters")["rope_theta"]
        config["rope_scaling"] = None

    older_dir = edit_config(saved, tmp_path / "older", older)
    assert read_policy_files(older_dir).rotary.inv_freq.equal(read_policy_files(saved).rotary.inv_freq)


FALLBACKS = {
    "scaled RoPE": lambda c: c.update(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
    "RoPE scaling in the older fields": lambda c: c.update(rope_scaling={"rope_type": "linear", "factor": 2.0}),
    "another family": lambda c: c.update(model_type="mistral"),
    "a field left to transformers' default": lambda c: c.pop("rms_norm_eps"),
}


@pytest.mark.parametrize("change", FALLBACKS.values(), ids=FALLBACKS.keys())
def test_what_files_do_not_say_plainly_goes_through_transformers(saved, tmp_path, change):
    edited = edit_config(saved, tmp_path / "edited", change)
    assert read_policy_files(edited) is None
    assert_same_rollouts(EmbeddedEngine.from_dir(edited, dtype="float32", threads=1), through_transformers(edited))


def test_tokenizer_files_that_do_not_name_both_tokens_go_through_transformers(saved, tmp_path):
    edited = shutil.copytree(saved, tmp_path / "no-pad")
    settings = json.loads((edited / "tokenizer_config.json").read_text())
    del settings["pad_token"]
    (edited / "tokenizer_config.json").write_text(json.dumps(settings))
    assert read_policy_files(edited) is None


def test_a_tokenizer_larger_than_the_model_is_refused_as_before(saved, tmp_path):
    edited = shutil.copytree(saved, tmp_path / "larger")
    vocab = json.loads((edited / "tokenizer.json").read_text())
    size = json.loads((edited / "config.json").read_text())["vocab_size"]
    vocab["added_tokens"].append({**vocab["added_tokens"][-1], "id": size, "content": "<extra>"})
    (edited / "tokenizer.json").write_text(json.dumps(vocab))
    assert read_policy_files(edited) is None
    with pytest.raises(ValueError, match="do not match"):
        EmbeddedEngine.from_dir(edited)


def test_a_folder_without_a_model_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        EmbeddedEngine.from_dir(tmp_path)
