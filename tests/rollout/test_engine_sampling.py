"""Sampling: hand-checked truncation, and chi-square tests that draws follow the softmax.

Chi-square tests use fixed seeds and enough draws that a 2% shift of probability mass is
rejected (each test also checks that the wrong distribution *is* rejected, so it has power).
"""

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from transformers import LlamaConfig, LlamaForCausalLM

from paretorl.rollout import kernels
from paretorl.rollout.engine import EmbeddedEngine
from paretorl.rollout.sampling import inverse_cdf_sample, sample_tokens, sampling_logprobs
from paretorl.rollout.types import SamplingParams

NEG_INF = float("-inf")


def test_truncation_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    torch.testing.assert_close(sampling_logprobs(logits, 1.0), logits)
    # top-k 2 keeps 0.5 and 0.2, renormalised
    want = torch.log(torch.tensor([[0.5 / 0.7, 0.2 / 0.7, 0, 0, 0]]))
    torch.testing.assert_close(sampling_logprobs(logits, 1.0, top_k=2), want)
    # top-p 0.7: 0.5 alone is short of 0.7, 0.5 + 0.2 reaches it: keep two
    torch.testing.assert_close(sampling_logprobs(logits, 1.0, top_p=0.7), want)
    # top-p 0.71 needs the third token too
    want3 = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0, 0]]) / 0.85)
    torch.testing.assert_close(sampling_logprobs(logits, 1.0, top_p=0.71), want3)
    # top-p below the largest probability still keeps the argmax
    torch.testing.assert_close(sampling_logprobs(logits, 1.0, top_p=0.1), torch.tensor([[0.0] + [NEG_INF] * 4]))
    # top-k 3 first, then top-p 0.8 on the renormalised three (0.588, 0.235, 0.176): keep two
    torch.testing.assert_close(sampling_logprobs(logits, 1.0, top_k=3, top_p=0.8), want)
    # temperature 0.5 squares the probabilities before renormalising
    sq = torch.tensor([[0.25, 0.04, 0.0225, 0.01, 0.0025]])
    torch.testing.assert_close(sampling_logprobs(logits, 0.5), torch.log(sq / sq.sum()))


def test_greedy_is_argmax_with_raw_logprobs():
    logits = torch.tensor([[0.1, 2.0, -1.0, 2.0], [3.0, 0.0, 0.0, 0.0]])
    tokens, logp = sample_tokens(logits, 0.0, 0, 1.0, None)
    assert tokens.tolist() == [1, 0]  # first maximum on ties, like HF
    torch.testing.assert_close(logp, torch.log_softmax(logits, -1)[[0, 1], [1, 0]])


def test_inverse_cdf_never_draws_zero_probability():
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([[0.0, 0.3, 0.0, 0.7, 0.0]]).repeat(50_000, 1)
    probs[::2, 3] = 1e-45  # denormal mass in a row that sums to 0.3 + tiny
    draws = inverse_cdf_sample(probs, g)
    assert set(draws.tolist()) <= {1, 3}
    counts = np.bincount(draws.numpy()[1::2], minlength=5)
    assert chisquare(counts[[1, 3]], 25_000 * np.array([0.3, 0.7])).pvalue > 1e-3


def chi2_pvalue(counts, probs):
    """Chi-square goodness of fit on the support of probs (zero-probability cells must be 0)."""
    probs = np.asarray(probs, dtype=np.float64)
    assert counts[probs == 0].sum() == 0, "drew a token of probability 0"
    keep = probs > 0
    expected = probs[keep] / probs[keep].sum() * counts[keep].sum()
    return chisquare(counts[keep], expected).pvalue


@pytest.mark.parametrize("backend", ["torch", "c-kernel"])
@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 0, 1.0), (0.6, 0, 1.0), (1.3, 4, 1.0), (1.0, 0, 0.8)])
def test_sample_tokens_follow_softmax(temperature, top_k, top_p, backend):
    """The c-kernel backend is the fused pass for plain sampling (top-k / top-p stay in torch)."""
    fused = kernels.load() if backend == "c-kernel" else None
    if backend == "c-kernel" and fused is None:
        pytest.skip("no C compiler: the kernels cannot be built here")
    logits = torch.tensor([1.0, 0.2, -0.5, 0.7, -2.0, 0.0])
    n = 40_000
    g = torch.Generator().manual_seed(1)
    tokens, logp = sample_tokens(logits.repeat(n, 1), temperature, top_k, top_p, g, fused)
    want = sampling_logprobs(logits[None], temperature, top_k, top_p)[0].exp().numpy()
    counts = np.bincount(tokens.numpy(), minlength=6)
    assert chi2_pvalue(counts, want) > 1e-3
    torch.testing.assert_close(logp, torch.from_numpy(np.log(want, where=want > 0, out=np.full(6, -np.inf)))[tokens]
                               .float())
    # power: the untruncated, temperature-1 softmax is rejected whenever it differs
    plain = torch.softmax(logits.double(), 0).numpy()
    if np.abs(plain - want).max() > 0.02:
        assert chisquare(counts, plain / plain.sum() * n).pvalue < 1e-6


def tiny_vocab_model(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                      initializer_range=0.5)
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 0, 1.0), (0.7, 3, 1.0), (1.0, 0, 0.85)])
def test_engine_draws_follow_model_softmax(dtype, temperature, top_k, top_p):
    """First token (after prefill) and second token (after one decode step, conditioned on
    the first) of 20k samples follow the HF model's processed softmax."""
    model = tiny_vocab_model()
    prompt = [3, 1, 4, 1, 5]
    n = 20_000
    eng = EmbeddedEngine(model, eos_token_id=7, pad_token_id=0, dtype=dtype, threads=1)
    r = eng.generate([prompt], SamplingParams(n=n, max_new_tokens=2, temperature=temperature, top_k=top_k,
                                              top_p=top_p, seed=2, ignore_eos=True))

    def expected(context):
        with torch.no_grad():
            logits = model(torch.tensor([context])).logits[0, -1].float()
        return sampling_logprobs(logits[None], temperature, top_k, top_p)[0].exp().numpy()

    def engine_probs(rows, step):
        """The engine's own distribution, read off the log-probs it reported: bf16 sampling
        follows the bf16 model's softmax, which is ~1e-2 away from the fp32 model's."""
        probs = np.zeros(8)
        tokens = r.tokens[rows, step]
        probs[tokens] = np.exp(r.logprobs[rows, step].astype(np.float64))
        return probs

    first = r.tokens[:, 0]
    counts = np.bincount(first, minlength=8)
    want = expected(prompt)
    if dtype == "float32":
        assert chi2_pvalue(counts, want) > 1e-3
    else:
        own = engine_probs(np.arange(n), 0)
        assert np.abs(own - want).max() < 0.1
        assert chi2_pvalue(counts, own) > 1e-3
    assert chisquare(counts, np.full(8, counts.sum() / 8)).pvalue < 1e-6  # power: not uniform
    # second token, conditioned on the most frequent first token
    top = int(np.argmax(counts))
    rows = np.flatnonzero(first == top)
    counts2 = np.bincount(r.tokens[rows, 1], minlength=8)
    want2 = expected(prompt + [top]) if dtype == "float32" else engine_probs(rows, 1)
    assert chi2_pvalue(counts2, want2) > 1e-3
