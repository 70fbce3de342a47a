"""LoRA policies: PEFT adapters in the learner, merged by the embedded engine, saved as PEFT folders."""

from __future__ import annotations

import copy

import pytest
import torch

from paretorl.config import LoraSettings, TrialConfig
from paretorl.learner.policy import AdaptersOff, build_batch, published_weights, token_logprobs, weights_nbytes
from paretorl.models.build import load_policy, merge_adapter, save_policy
from paretorl.models.lora import (
    ADAPTER_CONFIG,
    Adapter,
    adapted_shapes,
    adapter_of,
    add_adapters,
    is_adapter_dir,
    load_adapters,
    merged_state_dict,
    zero_adapter,
)
from paretorl.rollout.engine import EmbeddedEngine
from paretorl.rollout.types import SamplingParams
from tests.rollout.conftest import one_thread  # noqa: F401  (autouse: the engine on one thread, as replicas run it)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A small random Llama policy with the project's tokenizer, saved as the sweep saves bases."""
    from paretorl.config import ModelConfig
    from paretorl.models.build import build_model
    from paretorl.models.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(["12 + 34 = 46", "7 * 8 = 56"], vocab_size=280)
    model = build_model(ModelConfig(vocab_size=280, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2), tokenizer, seed=1)
    return str(save_policy(model, tokenizer, tmp_path_factory.mktemp("base")))


def _trained_adapter(model, seed: int = 0, scale: float = 0.05):
    """Give every lora_B non-zero values, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def _batch(tokenizer_vocab: int, rows: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, tokenizer_vocab, (5 + i,), generator=g).tolist() for i in range(rows)]
    responses = [torch.randint(3, tokenizer_vocab, (7,), generator=g).tolist() for _ in range(rows)]
    return build_batch(prompts, responses, pad_id=0)


def test_settings_refuse_bad_values_naming_the_key():
    with pytest.raises(ValueError, match="rank"):
        LoraSettings(rank=-1)
    with pytest.raises(ValueError, match="model.lora.targets"):
        TrialConfig.model_validate({"model": {"lora": {"rank": 8, "targets": ["q_proj", "c_attn"]}}})
    with pytest.raises(ValueError, match="zero_stage 3"):
        TrialConfig.model_validate({"model": {"lora": {"rank": 8}}, "train": {"zero_stage": 3}})
    assert TrialConfig().model.lora.rank == 0  # the default is today's full fine-tune


def test_a_target_the_model_lacks_is_refused_when_the_policy_loads(base_dir):
    model, _ = load_policy(base_dir)
    with pytest.raises(ValueError, match="model.lora.targets"):
        add_adapters(model, LoraSettings(rank=4, targets=["c_attn"]))


def test_only_adapters_train(base_dir):
    model, _ = load_policy(base_dir)
    peft_model = add_adapters(model, LoraSettings(rank=4), base=base_dir)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # every linear layer of every decoder layer: 7 modules x 2 layers x (A, B)
    assert len(trainable) == 7 * 2 * 2


def test_fresh_adapter_and_disabled_adapters_give_the_base_logprobs(base_dir):
    base, tokenizer = load_policy(base_dir)
    batch = _batch(len(tokenizer))
    expected, _ = token_logprobs(base, batch)
    model, _ = load_policy(base_dir)
    peft_model = add_adapters(model, LoraSettings(rank=4), base=base_dir)
    fresh, _ = token_logprobs(peft_model, batch)  # B = 0: the adapter adds nothing
    assert torch.equal(fresh, expected)
    _trained_adapter(peft_model)
    trained, _ = token_logprobs(peft_model, batch)
    assert (trained - expected).abs().max() > 1e-3  # the adapter now moves the policy ...
    reference, _ = token_logprobs(AdaptersOff(peft_model), batch)
    assert torch.equal(reference, expected)  # ... and the KL reference is still exactly the base
    after, _ = token_logprobs(peft_model, batch)
    assert torch.equal(after, trained)  # the adapters are back on after the reference's call


def test_published_adapter_is_small_and_merges_as_peft_does(base_dir):
    model, tokenizer = load_policy(base_dir)
    peft_model = _trained_adapter(add_adapters(model, LoraSettings(rank=4, alpha=8), base=base_dir))
    adapter = published_weights(peft_model)
    assert isinstance(adapter, Adapter) and adapter.base == base_dir and adapter.scale == 2.0
    full, _ = load_policy(base_dir)
    assert weights_nbytes(adapter) * 5 < weights_nbytes(published_weights(full))
    ours = merged_state_dict(full.state_dict(), adapter)
    theirs = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    for name, w in theirs.items():
        torch.testing.assert_close(ours[name], w, rtol=1e-6, atol=1e-6, msg=name)


def test_embedded_engine_with_adapter_samples_like_the_peft_model(base_dir):
    """Adapter version v in the engine: the same tokens as the merged PEFT model's engine, and
    log-probs equal to the PEFT model's own (fp32)."""
    model, tokenizer = load_policy(base_dir)
    peft_model = _trained_adapter(add_adapters(model, LoraSettings(rank=4), base=base_dir))
    engine = EmbeddedEngine.from_dir(base_dir, dtype="float32", keep_base=True)
    params = SamplingParams(n=4, max_new_tokens=12, temperature=1.0, seed=3)
    prompts = [tokenizer.encode("12 + 34 ="), tokenizer.encode("7 * 8 =")]
    base_out = engine.generate(prompts, params)
    engine.load_weights(published_weights(peft_model))
    ours = engine.generate(prompts, params)
    merged = copy.deepcopy(peft_model).merge_and_unload()
    reference = EmbeddedEngine(merged, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, dtype="float32").generate(prompts, params)
    assert (ours.tokens == reference.tokens).all()
    torch.testing.assert_close(torch.tensor(ours.logprobs), torch.tensor(reference.logprobs), rtol=0, atol=1e-5)
    assert not (ours.tokens.shape == base_out.tokens.shape and (ours.tokens == base_out.tokens).all())
    responses = [ours.response(i) for i in range(len(ours.lengths))]
    batch = build_batch([prompts[i // 4] for i in range(len(responses))], responses, tokenizer.pad_token_id)
    peft_lp, _ = token_logprobs(peft_model, batch)
    torch.testing.assert_close(peft_lp, torch.tensor(ours.logprobs[:, : peft_lp.shape[1]]) * batch.mask, rtol=0, atol=1e-4)
    # a zero adapter takes the engine back to the base, whatever it held before
    engine.load_weights(zero_adapter(published_weights(peft_model).config, adapted_shapes(engine._base, ["q_proj", "v_proj"])))
    again = engine.generate(prompts, params)
    assert (again.tokens == base_out.tokens).all()


def test_adapter_checkpoint_loads_with_peft_and_merges_to_a_full_model(base_dir, tmp_path):
    model, tokenizer = load_policy(base_dir)
    peft_model = _trained_adapter(add_adapters(model, LoraSettings(rank=4), base=base_dir))
    ckpt = adapter_of(peft_model).save(tmp_path / "ckpt")
    tokenizer.save_pretrained(ckpt)
    assert is_adapter_dir(ckpt) and not (ckpt / "model.safetensors").exists()
    assert (ckpt / ADAPTER_CONFIG).exists() and (ckpt / "adapter_model.safetensors").exists()
    batch = _batch(len(tokenizer), seed=5)
    expected, _ = token_logprobs(peft_model, batch)
    # PEFT's own loader on the base it points at
    from peft import PeftModel

    fresh_base, _ = load_policy(Adapter.load(ckpt).base)
    loaded, _ = token_logprobs(PeftModel.from_pretrained(fresh_base, str(ckpt)), batch)
    torch.testing.assert_close(loaded, expected, rtol=0, atol=1e-6)
    # load_policy on a LoRA checkpoint: the merged policy; merge_adapter: a full HF folder
    merged, _ = load_policy(ckpt)
    torch.testing.assert_close(token_logprobs(merged, batch)[0], expected, rtol=0, atol=1e-5)
    out = merge_adapter(ckpt, tmp_path / "merged")
    assert (out / "model.safetensors").exists() and not is_adapter_dir(out)
    torch.testing.assert_close(token_logprobs(load_policy(out)[0], batch)[0], expected, rtol=0, atol=1e-5)
    # the learner resumes a checkpoint with trainable adapters
    resumed = load_adapters(load_policy(base_dir)[0], ckpt, trainable=True)
    assert any(p.requires_grad for n, p in resumed.named_parameters() if "lora_" in n)


def test_merge_adapter_job(base_dir, tmp_path, capsys):
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("merge_adapter", ROOT / "jobs" / "merge_adapter.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    model, tokenizer = load_policy(base_dir)
    ckpt = adapter_of(_trained_adapter(add_adapters(model, LoraSettings(rank=4), base=base_dir))).save(tmp_path / "ckpt")
    tokenizer.save_pretrained(ckpt)
    assert job.main([str(ckpt), str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "model.safetensors").exists() and (tmp_path / "merged" / "tokenizer.json").exists()
    assert job.main([str(base_dir), str(tmp_path / "again")]) == 2  # a full model is not an adapter
    assert "not a LoRA checkpoint" in capsys.readouterr().err
    assert job.main([str(tmp_path / "nope"), str(tmp_path / "again")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
