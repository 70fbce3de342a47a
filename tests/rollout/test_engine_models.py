"""EmbeddedEngine on the other Llama-family architectures it accepts, and on ones it refuses."""

import pytest
import torch
import transformers

from paretorl.rollout.engine import EmbeddedEngine
from paretorl.rollout.types import SamplingParams

COMMON = dict(vocab_size=200, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.1)

ARCHS = {
    "qwen2 (qkv bias)": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, {}),
    "qwen3 (q/k norm)": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM, {"head_dim": 32}),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM, {"sliding_window": None}),
    "llama (biases, rope scaling)": (
        transformers.LlamaConfig,
        transformers.LlamaForCausalLM,
        {"attention_bias": True, "mlp_bias": True,
         "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0}},
    ),
}


def build(name):
    config_cls, model_cls, extra = ARCHS[name]
    torch.manual_seed(0)
    model = model_cls(config_cls(**COMMON, **extra)).eval()
    with torch.no_grad():  # HF zero-initialises biases and norms: make them matter
        for pname, prm in model.named_parameters():
            if pname.endswith("bias") or "norm" in pname:
                prm.add_(0.2 * torch.randn_like(prm))
    return model


@pytest.mark.parametrize("kernel", ["1", "0"])
@pytest.mark.parametrize("name", list(ARCHS))
def test_greedy_and_logprobs_match_hf(name, kernel, monkeypatch):
    monkeypatch.setenv("PARETORL_ROLLOUT_KERNEL", kernel)
    model = build(name)
    prompts = [[5, 17, 42, 9], [88], [3, 4, 5, 6, 7, 8, 9, 10, 11]]
    eng = EmbeddedEngine(model, eos_token_id=1, pad_token_id=0, dtype="float32", threads=1)
    r = eng.generate(prompts, SamplingParams(max_new_tokens=16, temperature=0.0, ignore_eos=True))
    for g, p in enumerate(prompts):
        ids = torch.tensor([p])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=16,
                                 min_new_tokens=16, pad_token_id=0)
            ref = out[0, len(p):].tolist()
            logp = torch.log_softmax(model(out).logits[0, len(p) - 1: -1].float(), -1)
        assert r.response(g) == ref
        want = logp.gather(1, torch.tensor(ref)[:, None])[:, 0]
        torch.testing.assert_close(torch.from_numpy(r.logprobs[g]), want, atol=1e-4, rtol=0)


def test_refuses_other_architectures():
    torch.manual_seed(0)
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=50, n_embd=32, n_layer=1, n_head=2))
    with pytest.raises(NotImplementedError, match="llama"):
        EmbeddedEngine(gpt2, eos_token_id=1, pad_token_id=0)


def test_refuses_sequences_past_a_sliding_window():
    config = transformers.MistralConfig(**{**COMMON, "sliding_window": 8})
    eng = EmbeddedEngine(transformers.MistralForCausalLM(config), eos_token_id=1, pad_token_id=0)
    eng.generate([[3, 4]], SamplingParams(max_new_tokens=6))  # 2 + 6 - 1 <= 8 is fine
    with pytest.raises(NotImplementedError, match="sliding window"):
        eng.generate([[3, 4]], SamplingParams(max_new_tokens=8))
