"""EmbeddedEngine against transformers: greedy tokens, log-probs, stops, seeds, weights.

Every equivalence test runs on both decode-attention backends: the C kernel (when it builds
here) and the pure-torch path (PARETORL_ROLLOUT_KERNEL=0).
"""

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from paretorl.rollout import kernels
from paretorl.rollout.engine import EmbeddedEngine
from paretorl.rollout.types import FINISH_LENGTH, FINISH_STOP, SamplingParams

PAD = 0

# The project's model family; initializer_range 0.1 keeps logits far from ties in greedy.
SMALL = dict(vocab_size=300, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True)
GQA = dict(vocab_size=300, hidden_size=128, intermediate_size=384, num_hidden_layers=3,
           num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
WIDE = dict(vocab_size=300, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False)

BACKENDS = ["c-kernel", "torch"]


def llama(seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = LlamaConfig(**{**SMALL, "max_position_embeddings": 128, "initializer_range": 0.1, **overrides})
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    if request.param == "torch":
        monkeypatch.setenv("PARETORL_ROLLOUT_KERNEL", "0")
    elif kernels.load() is None:
        pytest.skip("no C compiler: the decode kernel cannot be built here")
    return request.param


def engine(model, backend, eos=2, dtype="float32"):
    eng = EmbeddedEngine(model, eos_token_id=eos, pad_token_id=PAD, dtype=dtype, threads=1)
    assert eng._decoder.kernel is None if backend == "torch" else eng._decoder.kernel is not None
    return eng


def ragged_prompts(count, vocab, seed=0, lo=1, hi=12):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (int(torch.randint(lo, hi + 1, (1,), generator=g)),), generator=g).tolist()
            for _ in range(count)]


def hf_greedy(model, prompt, max_new, eos):
    """transformers' greedy generate on one unpadded prompt: the reference continuation."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new,
                             eos_token_id=eos, pad_token_id=PAD)
    return out[0, len(prompt):].tolist()


def hf_logprobs(model, prompt, response, temperature=1.0):
    """[len(response), V] log-softmax(logits / T) at each response position, full forward, fp32."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1: len(prompt) - 1 + len(response)].float()
    return torch.log_softmax(logits / temperature, dim=-1)


def truncate_at(response, eos):
    """HF stops a response at its first EOS (kept): the greedy reference for that eos."""
    return response[: response.index(eos) + 1] if eos in response else response


def eos_from(responses, max_new):
    """A token that greedy decoding emits a few steps into some response, never at its start."""
    for resp in responses:
        for tok in resp[3: max_new - 3]:
            if tok != PAD and tok not in resp[:3]:
                return tok
    raise AssertionError("every greedy response is constant")


def check_layout(r, prompts, n, max_new, eos=None):
    """The Rollouts contract of rollout/types.py; with eos, stop <=> the response ends in EOS."""
    B = len(prompts) * n
    assert r.tokens.shape[0] == r.logprobs.shape[0] == B and r.tokens.shape[1] == r.lengths.max()
    assert r.tokens.dtype == np.int64 and r.logprobs.dtype == np.float32 and r.lengths.dtype == np.int64
    assert r.n == n and r.num_prompts == len(prompts) and len(r.finish_reasons) == B
    assert ((r.lengths >= 1) & (r.lengths <= max_new)).all()
    for i in range(B):
        L = r.lengths[i]
        assert (r.tokens[i, L:] == PAD).all() and (r.logprobs[i, L:] == 0).all()
        assert (r.logprobs[i, :L] <= 0).all()
        if eos is not None:
            resp = r.response(i)
            assert eos not in resp[:-1]
            assert (r.finish_reasons[i] == FINISH_STOP) == (resp[-1] == eos)
            assert r.finish_reasons[i] == FINISH_STOP or L == max_new


@pytest.mark.parametrize("cfg", [SMALL, GQA, WIDE], ids=["2L-128-tied", "3L-128-gqa", "4L-256"])
def test_greedy_matches_hf_generate(cfg, backend):
    model = llama(**cfg)
    prompts = ragged_prompts(6, cfg["vocab_size"], seed=1)
    max_new = 24
    full = [hf_greedy(model, p, max_new, eos=None) for p in prompts]
    eos = eos_from(full, max_new)  # so that some responses stop early
    eng = engine(model, backend, eos=eos)
    r = eng.generate(prompts, SamplingParams(n=2, max_new_tokens=max_new, temperature=0.0))
    check_layout(r, prompts, 2, max_new, eos)
    stops = 0
    for g, p in enumerate(prompts):
        ref = truncate_at(full[g], eos)
        if g == 0:
            assert ref == hf_greedy(model, p, max_new, eos), "HF with that eos stops where expected"
        for row in (2 * g, 2 * g + 1):
            assert r.response(row) == ref, f"prompt {g}"
            stopped = ref[-1] == eos
            assert r.finish_reasons[row] == (FINISH_STOP if stopped else FINISH_LENGTH)
            stops += stopped
    assert 0 < stops < len(r.lengths), "the test should mix stopped and truncated responses"


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_match_hf_forward(temperature, backend):
    """fp32: per-token log-probs equal a full forward pass on the sampled sequences (1e-4)."""
    model = llama(**GQA)
    prompts = ragged_prompts(5, 300, seed=2)
    eng = engine(model, backend, eos=7)
    r = eng.generate(prompts, SamplingParams(n=4, max_new_tokens=40, temperature=temperature, seed=3))
    check_layout(r, prompts, 4, 40, eos=7)
    for i in range(len(r.lengths)):
        resp = r.response(i)
        ref = hf_logprobs(model, prompts[i // 4], resp, temperature)
        got = torch.from_numpy(r.logprobs[i, : len(resp)])
        torch.testing.assert_close(got, ref.gather(1, torch.tensor(resp)[:, None])[:, 0], atol=1e-4, rtol=0)


def test_logprobs_with_eos_stops_and_compaction(backend):
    """Many early stops (a frequent EOS) shrink the active batch mid-call; rows stay aligned."""
    model = llama(vocab_size=12, hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=2)
    prompts = ragged_prompts(6, 12, seed=4)
    eng = engine(model, backend, eos=5)
    r = eng.generate(prompts, SamplingParams(n=8, max_new_tokens=30, temperature=1.0, seed=0))
    check_layout(r, prompts, 8, 30, eos=5)
    assert (r.lengths < 30).sum() > 24 and (r.lengths > 3).sum() > 8
    for i in range(len(r.lengths)):
        resp = r.response(i)
        ref = hf_logprobs(model, prompts[i // 8], resp)
        got = torch.from_numpy(r.logprobs[i, : len(resp)])
        torch.testing.assert_close(got, ref.gather(1, torch.tensor(resp)[:, None])[:, 0], atol=1e-4, rtol=0)


@pytest.mark.parametrize("top_k, top_p", [(5, 1.0), (0, 0.6), (8, 0.8)])
def test_top_k_top_p_tokens_and_logprobs(top_k, top_p, backend):
    """Sampled tokens lie in the truncated set; log-probs are of the renormalised truncation."""
    model = llama(**SMALL)
    prompts = ragged_prompts(3, 300, seed=5)
    eng = engine(model, backend)
    params = SamplingParams(n=4, max_new_tokens=12, temperature=0.8, top_k=top_k, top_p=top_p, seed=1,
                            ignore_eos=True)
    r = eng.generate(prompts, params)
    for i in range(len(r.lengths)):
        resp = r.response(i)
        logp = hf_logprobs(model, prompts[i // 4], resp, temperature=0.8)
        for pos, tok in enumerate(resp):
            # temperature, then top-k, then top-p on the renormalised top-k distribution
            candidates = torch.argsort(logp[pos], descending=True)[: top_k or None]
            probs = torch.softmax(logp[pos][candidates], 0)
            keep = int(((torch.cumsum(probs, 0) - probs) < top_p).sum())
            kept = candidates[:keep]
            assert tok in kept.tolist()
            expected = logp[pos][tok] - torch.logsumexp(logp[pos][kept], 0)
            assert abs(float(r.logprobs[i, pos]) - float(expected)) < 1e-4


def test_greedy_top_k_one_equals_greedy(backend):
    model = llama()
    prompts = ragged_prompts(3, 300, seed=6)
    eng = engine(model, backend)
    greedy = eng.generate(prompts, SamplingParams(max_new_tokens=10, temperature=0.0, ignore_eos=True))
    topk1 = eng.generate(prompts, SamplingParams(max_new_tokens=10, temperature=1.3, top_k=1, seed=0,
                                                 ignore_eos=True))
    np.testing.assert_array_equal(greedy.tokens, topk1.tokens)
    np.testing.assert_array_equal(topk1.logprobs, 0.0 * topk1.logprobs)  # one token left: log 1


def test_max_tokens_and_ignore_eos(backend):
    model = llama(vocab_size=12, hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=2)
    prompts = ragged_prompts(4, 12, seed=7)
    eng = engine(model, backend, eos=5)
    r = eng.generate(prompts, SamplingParams(n=4, max_new_tokens=20, seed=0, ignore_eos=True))
    assert (r.lengths == 20).all() and r.tokens.shape == (16, 20)
    assert set(r.finish_reasons) == {FINISH_LENGTH}
    assert (r.tokens == 5).any(), "EOS is sampled but does not stop the response"
    one = eng.generate(prompts, SamplingParams(n=3, max_new_tokens=1, seed=0))
    assert one.tokens.shape == (12, 1) and (one.lengths == 1).all()
    assert all((f == FINISH_STOP) == (t == 5) for f, t in zip(one.finish_reasons, one.tokens[:, 0]))


def test_eos_on_the_last_step_is_a_stop(backend):
    model = llama()
    for seed in range(20):  # a prompt whose greedy response ends in a token it has not used yet
        prompt = ragged_prompts(1, 300, seed=seed)
        ref = hf_greedy(model, prompt[0], 6, eos=None)
        if ref[-1] not in ref[:-1]:
            break
    r = engine(model, backend, eos=ref[-1]).generate(prompt, SamplingParams(max_new_tokens=6, temperature=0.0))
    assert r.response(0) == ref and r.lengths[0] == 6 and r.finish_reasons == [FINISH_STOP]


def test_seeds(backend):
    model = llama()
    prompts = ragged_prompts(4, 300, seed=9)
    eng = engine(model, backend, dtype="bfloat16")
    params = SamplingParams(n=4, max_new_tokens=16, seed=123)
    a, b = eng.generate(prompts, params), eng.generate(prompts, params)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.logprobs, b.logprobs)
    c = eng.generate(prompts, SamplingParams(n=4, max_new_tokens=16, seed=124))
    assert (a.tokens != c.tokens).any()
    # the n samples of one prompt are different draws, not copies
    assert any((a.tokens[4 * g] != a.tokens[4 * g + 1]).any() for g in range(4))
    # no seed: fresh randomness on every call
    unseeded = SamplingParams(n=4, max_new_tokens=16)
    assert (eng.generate(prompts, unseeded).tokens != eng.generate(prompts, unseeded).tokens).any()


def test_bf16_logprobs_as_close_to_fp32_as_hf_bf16(backend):
    """bf16 engine: log-probs of its own samples are as close to the fp32 model's as HF's
    own bf16 forward is (bf16 rounding is the only difference allowed)."""
    model = llama(**WIDE)
    model_bf16 = llama(**WIDE).to(torch.bfloat16)
    prompts = ragged_prompts(4, 300, seed=10)
    r = engine(model, backend, dtype="bfloat16").generate(
        prompts, SamplingParams(n=2, max_new_tokens=24, seed=0, ignore_eos=True))
    ours, hf16 = [], []
    for i in range(len(r.lengths)):
        resp = r.response(i)
        index = torch.tensor(resp)[:, None]
        ref = hf_logprobs(model, prompts[i // 2], resp).gather(1, index)[:, 0]
        ours.append((torch.from_numpy(r.logprobs[i]) - ref).abs())
        hf16.append((hf_logprobs(model_bf16, prompts[i // 2], resp).gather(1, index)[:, 0] - ref).abs())
    ours, hf16 = torch.cat(ours), torch.cat(hf16)
    assert ours.mean() < 1.5 * hf16.mean() + 0.005, (ours.mean(), hf16.mean())
    assert ours.max() < 10 * hf16.mean() + 0.05, (ours.max(), hf16.mean())


def test_backends_agree():
    """The C kernel and the torch attention give the same greedy tokens and log-probs."""
    if kernels.load() is None:
        pytest.skip("no C compiler")
    model = llama(**GQA)
    prompts = ragged_prompts(6, 300, seed=11, hi=20)
    params = SamplingParams(n=3, max_new_tokens=30, temperature=0.0)
    fast = EmbeddedEngine(model, eos_token_id=2, pad_token_id=PAD, dtype="float32", threads=1)
    ref = EmbeddedEngine(model, eos_token_id=2, pad_token_id=PAD, dtype="float32", threads=1)
    ref._decoder.kernel = None
    a, b = fast.generate(prompts, params), ref.generate(prompts, params)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)


def test_load_state_dict_and_model_dir(tmp_path, backend):
    old, new = llama(seed=0), llama(seed=1)
    prompts = ragged_prompts(3, 300, seed=12)
    params = SamplingParams(max_new_tokens=12, temperature=0.0, ignore_eos=True)
    old.save_pretrained(tmp_path / "m")
    eng = engine(old, backend)
    before = eng.generate(prompts, params)
    # the engine holds copies: changing the module afterwards does not leak into it
    with torch.no_grad():
        for prm in old.parameters():
            prm.mul_(-1)
    np.testing.assert_array_equal(eng.generate(prompts, params).tokens, before.tokens)
    # a save_pretrained directory gives the same engine
    from_dir = engine(str(tmp_path / "m"), backend)
    np.testing.assert_array_equal(from_dir.generate(prompts, params).tokens, before.tokens)
    # new weights: bf16 tensors with HF names, the tied lm_head left out; cast and taken
    state = {k: v.to(torch.bfloat16) for k, v in new.state_dict().items() if k != "lm_head.weight"}
    eng.load_state_dict(state)
    after = eng.generate(prompts, params)
    with torch.no_grad():
        for name, prm in new.named_parameters():
            prm.copy_(state.get(name, prm).float())  # the same bf16-rounded weights, in fp32
    for g, p in enumerate(prompts):
        assert after.response(g) == hf_greedy(new, p, 12, eos=None)
    assert (before.tokens != after.tokens).any()


def test_load_state_dict_refuses_bad_names():
    model = llama()
    eng = EmbeddedEngine(model, eos_token_id=2, pad_token_id=PAD)
    state = model.state_dict()
    with pytest.raises(ValueError, match="does not use"):
        eng.load_state_dict({**state, "model.layers.9.mlp.up_proj.weight": torch.zeros(1)})
    missing = {k: v for k, v in state.items() if "layers.1.mlp.down_proj" not in k}
    with pytest.raises(KeyError, match="down_proj"):
        eng.load_state_dict(missing)


def test_rejects_bad_inputs():
    eng = EmbeddedEngine(llama(), eos_token_id=2, pad_token_id=PAD)
    with pytest.raises(ValueError, match="empty"):
        eng.generate([[3, 4], []], SamplingParams())
    with pytest.raises(ValueError, match="at least one"):
        eng.generate([], SamplingParams())
    with pytest.raises(ValueError, match="token ids"):
        eng.generate([[3, 300]], SamplingParams())
    with pytest.raises(ValueError, match="dtype"):
        EmbeddedEngine(llama(), eos_token_id=2, pad_token_id=PAD, dtype="float16")
    with pytest.raises(ValueError, match="eos_token_id"):
        EmbeddedEngine(llama(), eos_token_id=300, pad_token_id=PAD)


def test_loading_the_kernel_keeps_denormals():
    """The kernel is built with -ffast-math; it must not turn on flush-to-zero process-wide."""
    kernels.load()
    tiny = torch.tensor([1e-39])
    assert (tiny / 2).item() > 0


def test_threads_are_set_for_the_call_and_restored():
    eng = EmbeddedEngine(llama(), eos_token_id=2, pad_token_id=PAD, threads=1)
    before = torch.get_num_threads()
    r = eng.generate([[3, 4, 5]], SamplingParams(max_new_tokens=4))
    assert torch.get_num_threads() == before and r.stats["new_tokens"] == int(r.lengths.sum())
