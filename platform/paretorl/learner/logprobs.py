"""Token log-probs of sampled responses, without ever holding [B, T, V] logits.

The learner needs, per response token, log pi(y_t) = z[y_t] / tau - logsumexp(z / tau) with
z = h_t W^T (h_t the decoder's last hidden state, W the LM head). Materialising z for every
position costs B x L x V floats, several times over (logits, the float copy, log-softmax,
entropy with autograd): at V = 49k that is gigabytes per micro-batch. Here:

- the decoder runs once; its hidden states are gathered at the N response positions only
  (prompt positions and padding never meet the LM head);
- `_ChunkedLogprob` walks the vocabulary in chunks of C columns: an online logsumexp in fp32
  (running max and rescaled sum), the target logit picked from the chunk that holds it, and the
  entropy (no autograd) from the same pass. Its backward recomputes each chunk's logits and
  accumulates dL/dh and dL/dW chunk by chunk. Peak extra memory: a few N x C fp32 tensors
  (the test's bound: 16 x N x C values, allocator slack included) plus the head's V x H
  gradient, never N x V (`tests/learner/test_logprobs.py` measures it: ~25 MiB against
  ~300 MiB for full logits at N = 512, V = 49k, C = 1024).

Works with any HF causal LM exposing `get_decoder()` and `get_output_embeddings()`, inside a
DeepSpeed engine or not.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor

VOCAB_CHUNK = 8192  # columns of the LM head per pass: 8192 x N fp32 logits at a time


class _ChunkedLogprob(torch.autograd.Function):
    """log pi(target) of each row of h under softmax(h W^T / tau), the vocabulary in chunks."""

    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, targets: Tensor, inv_temp: float, chunk: int, want_entropy: bool):
        n, vocab = h.shape[0], weight.shape[0]
        run_max = torch.full((n,), float("-inf"), dtype=torch.float32, device=h.device)
        run_sum = torch.zeros(n, dtype=torch.float32, device=h.device)
        run_zsum = torch.zeros(n, dtype=torch.float32, device=h.device) if want_entropy else None
        target_logit = torch.zeros(n, dtype=torch.float32, device=h.device)
        rows = torch.arange(n, device=h.device)
        with torch.no_grad():
            for lo in range(0, vocab, chunk):
                z = (h @ weight[lo : lo + chunk].T).float().mul_(inv_temp)  # [N, c]
                hit = (targets >= lo) & (targets < lo + z.shape[1])
                target_logit[hit] = z[rows[hit], targets[hit] - lo]
                new_max = torch.maximum(run_max, z.max(dim=1).values)
                scale = torch.exp(run_max - new_max)
                e = torch.sub(z, new_max[:, None]).exp_()  # the chunk's z and e: the only N x C tensors alive
                run_sum = run_sum * scale + e.sum(dim=1)
                if want_entropy:
                    run_zsum = run_zsum * scale + e.mul_(z).sum(dim=1)
                run_max = new_max
        lse = run_max + torch.log(run_sum)
        ctx.save_for_backward(h, weight, targets, lse)
        ctx.inv_temp, ctx.chunk = inv_temp, chunk
        entropy = (lse - run_zsum / run_sum) if want_entropy else torch.zeros(0, device=h.device)
        ctx.mark_non_differentiable(entropy)
        return target_logit - lse, entropy

    @staticmethod
    def backward(ctx, grad_logp: Tensor, _grad_entropy: Tensor):
        h, weight, targets, lse = ctx.saved_tensors
        # d logp / d z_j = inv_temp * (1[j = target] - softmax_j)
        g_row = (grad_logp.float() * ctx.inv_temp)[:, None]
        grad_h = torch.zeros(h.shape, dtype=torch.float32, device=h.device) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if ctx.needs_input_grad[1] else None
        rows = torch.arange(h.shape[0], device=h.device)
        for lo in range(0, weight.shape[0], ctx.chunk):
            w = weight[lo : lo + ctx.chunk]
            z = (h @ w.T).float().mul_(ctx.inv_temp)
            g = z.sub_(lse[:, None]).exp_().mul_(-g_row)  # [N, c], in place: one N x C tensor per chunk
            hit = (targets >= lo) & (targets < lo + z.shape[1])
            g[rows[hit], targets[hit] - lo] += g_row[hit, 0]
            g = g.to(h.dtype)
            if grad_h is not None:
                grad_h += (g @ w).float()
            if grad_w is not None:
                grad_w[lo : lo + ctx.chunk] = (g.T @ h).float()
        return (
            grad_h.to(h.dtype) if grad_h is not None else None,
            grad_w.to(weight.dtype) if grad_w is not None else None,
            None, None, None, None,
        )


def chunked_logprobs(h: Tensor, weight: Tensor, targets: Tensor, temperature: float = 1.0, chunk: int = VOCAB_CHUNK, with_entropy: bool = False):
    """(log pi(targets) [N] with gradient to h and weight, entropy [N] or None without).

    h: [N, H] hidden states; weight: [V, H] LM head; targets: [N] token ids.
    """
    logp, entropy = _ChunkedLogprob.apply(h, weight, targets, 1.0 / temperature, chunk, with_entropy)
    return logp, (entropy if with_entropy else None)


def _causal_lm(model):
    """The HF model inside a DeepSpeed engine (or the model itself)."""
    return getattr(model, "module", model)


def _device_of(model) -> torch.device:
    """A DeepSpeed engine knows its device; a plain module is where its weights are."""
    device = getattr(model, "device", None)
    return torch.device(device) if device is not None else next(model.parameters()).device


def response_logprobs(model, batch, temperature: float = 1.0, *, with_entropy: bool = False, autocast: bool = False, chunk: int = VOCAB_CHUNK):
    """Log-probs [B, T] of the response tokens of `batch` (a learner SequenceBatch) under `model`.

    Returns (logprobs, entropy or None), on the batch's device, 0 past each response's end.
    `autocast`: run the decoder and the LM head in bf16 (CPU autocast; fp32 weights and
    gradients, fp32 logsumexp). Computed on the model's device (a GPU learner) and returned on
    the batch's (the loss math is over small [B, T] tensors); gradients flow back through the copy.
    """
    home = batch.mask.device
    batch = batch.to(_device_of(model))
    lm = _causal_lm(model)
    head = lm.get_output_embeddings()
    ctx = torch.autocast(device_type=batch.mask.device.type, dtype=torch.bfloat16) if autocast else nullcontext()
    with ctx:
        hidden = lm.get_decoder()(input_ids=batch.input_ids, attention_mask=batch.attention).last_hidden_state
    rows, cols = batch.mask.nonzero(as_tuple=True)
    h = hidden[rows, batch.resp_index[rows, cols]]  # [N, H]: only positions that predict a response token
    logp, ent = _head_logprobs(head, h, batch.resp_ids[rows, cols], temperature, chunk, with_entropy, autocast)
    out = torch.zeros(batch.mask.shape, dtype=torch.float32, device=logp.device).index_put((rows, cols), logp)
    entropy = None
    if with_entropy:
        entropy = torch.zeros(batch.mask.shape, dtype=torch.float32, device=ent.device).index_put_((rows, cols), ent).to(home)
    return out.to(home), entropy


def _head_logprobs(head, h: Tensor, targets: Tensor, temperature: float, chunk: int, with_entropy: bool, autocast: bool):
    """`chunked_logprobs` through the LM head module `head` (no bias), in bf16 if `autocast`."""
    if getattr(head, "bias", None) is not None:
        raise NotImplementedError("an LM head with a bias is not supported by the chunked log-prob")

    def through(hidden: Tensor):
        weight = head.weight
        hidden, weight = (hidden.to(torch.bfloat16), weight.to(torch.bfloat16)) if autocast else (hidden.to(weight.dtype), weight)
        return chunked_logprobs(hidden, weight, targets, temperature, chunk, with_entropy)

    if not hasattr(head.weight, "ds_id"):
        return through(h)
    # ZeRO-3 keeps only a shard in head.weight; it is whole inside the module's own call (forward
    # and backward, through DeepSpeed's hooks), so run the chunked pass as the module's forward.
    head.forward = through
    try:
        return head(h)
    finally:
        del head.forward
