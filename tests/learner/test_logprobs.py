"""Chunked log-probs: exact against full log-softmax, and memory bounded by N x chunk, not N x V."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from paretorl.learner.logprobs import chunked_logprobs, response_logprobs
from paretorl.learner.policy import build_batch


def full_logprobs(h, weight, targets, temperature):
    logp = torch.log_softmax((h @ weight.T) / temperature, -1)
    return logp.gather(1, targets[:, None]).squeeze(1), -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("chunk", [7, 50, 4096])
def test_chunked_values_entropy_and_gradients_match_full_log_softmax(chunk):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(11, 16, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(50, 16, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (11,), generator=g)
    coef = torch.randn(11, generator=g, dtype=torch.float64)
    ref, ref_ent = full_logprobs(h, w, targets, 0.7)
    (ref * coef).sum().backward()
    ref_grads = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    ours, ent = chunked_logprobs(h, w, targets, 0.7, chunk=chunk, with_entropy=True)
    (ours * coef.float()).sum().backward()
    assert torch.allclose(ours.double(), ref.detach(), atol=1e-6)
    assert torch.allclose(ent.double(), ref_ent.detach(), atol=1e-5)  # entropy is accumulated in fp32
    assert not ent.requires_grad  # entropy is logged, never differentiated
    assert torch.allclose(h.grad, ref_grads[0], atol=1e-5) and torch.allclose(w.grad, ref_grads[1], atol=1e-5)


def test_response_logprobs_match_the_models_own_logits():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                         num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True))
    batch = build_batch([[5, 6, 7], [8, 9], [10, 11, 12, 13]], [[20, 21, 22, 23], [24, 25], [26]], 0)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention).logits
    logp = torch.log_softmax(torch.gather(logits, 1, batch.resp_index.unsqueeze(-1).expand(-1, -1, 50)) / 0.7, -1)
    expected = logp.gather(2, batch.resp_ids.unsqueeze(-1)).squeeze(-1) * batch.mask
    ours, entropy = response_logprobs(model, batch, 0.7, with_entropy=True, chunk=16)
    assert torch.allclose(ours, expected, atol=1e-5)
    assert (ours[~batch.mask] == 0).all() and (entropy[~batch.mask] == 0).all()
    bf16, _ = response_logprobs(model, batch, 0.7, autocast=True)
    assert (bf16 - expected).abs().max() < 0.05  # bf16 autocast: same values to bf16's precision


PEAK_SCRIPT = """
import sys, torch
from paretorl.learner.logprobs import chunked_logprobs
n_tokens, hidden, vocab, chunk = 512, 64, 49_152, 1024
g = torch.Generator().manual_seed(0)
h = torch.randn(n_tokens, hidden, generator=g, requires_grad=True)
w = torch.randn(vocab, hidden, generator=g, requires_grad=True)
targets = torch.randint(0, vocab, (n_tokens,), generator=g)
w.grad = torch.zeros_like(w)  # the head's gradient is part of training whatever the method: not counted
small = torch.randn(4, hidden, requires_grad=True)  # warm-up: autograd's and the allocator's one-time set-up
chunked_logprobs(small, w[:100].detach().requires_grad_(), targets[:4] % 100, 1.0, chunk=chunk)[0].sum().backward()

def kib(field):
    return int(next(line for line in open("/proc/self/status") if line.startswith(field)).split()[1])

before = kib("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # reset the resident set's high-water mark
if sys.argv[1] == "chunked":
    logp, _ = chunked_logprobs(h, w, targets, 1.0, chunk=chunk, with_entropy=True)
else:
    logp = torch.log_softmax(h @ w.T, -1).gather(1, targets[:, None]).squeeze(1)
logp.sum().backward()
print("PEAK_GROWTH_BYTES", (kib("VmHWM:") - before) * 1024)
"""


def peak_growth(method: str) -> int:
    """Growth of the resident set's high-water mark over one log-prob pass, forward and backward, in a fresh process."""
    import subprocess
    import sys

    from tests.conftest import ROOT, env_with_venv

    proc = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, method], cwd=ROOT, env=env_with_venv(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.split("PEAK_GROWTH_BYTES")[1])


def test_peak_memory_is_bounded_by_tokens_times_chunk_not_by_the_vocabulary():
    """N = 512 response tokens (B x T = 8 x 64), V = 49,152 (SmolLM2's vocabulary), chunk C = 1024.

    Bound stated here (and in learner/logprobs.py): the log-prob pass, forward and backward,
    holds at most 16 x N x C fp32 values at once beyond its inputs (two N x C tensors per chunk, and
    the allocator's slack), plus one V x H fp32 gradient
    of the head (which any method produces). Full logits hold N x V fp32 several times over:
    the same measurement shows it (~300 MiB here, against a bound of ~44 MiB).
    """
    n_tokens, hidden, vocab, chunk = 512, 64, 49_152, 1024
    bound = 16 * n_tokens * chunk * 4 + vocab * hidden * 4
    ours, naive = peak_growth("chunked"), peak_growth("full")
    assert ours <= bound, f"peak growth {ours / 2**20:.1f} MiB over the bound {bound / 2**20:.1f} MiB"
    assert naive > 2 * n_tokens * vocab * 4 > bound  # the measurement sees what the chunking avoids
