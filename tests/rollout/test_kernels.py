"""The C kernels of `rollout.kernels` against plain torch, op by op.

The engine-level tests (test_engine.py) already compare whole generations with HF; these pin
each kernel down on its own, on the shapes where its code paths differ: head sizes with and
without a specialised loop (and not a multiple of 16, the AVX-512 path's requirement), GQA,
rows whose live columns start and end mid-tile, bf16 and fp32.
"""

import pytest
import torch
import torch.nn.functional as F

from paretorl.rollout import kernels

K = kernels.load()
pytestmark = pytest.mark.skipif(K is None, reason="no C compiler: the kernels cannot be built here")
TILE = kernels.TILE


def rope(x, cos, sin):
    """HF's RoPE: x * cos + rotate_half(x) * sin on the last dim."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def tiled(keys):
    """[B, Hkv, T, d] -> the kernel's key layout [B, Hkv, T/16, d, 16]."""
    B, H, T, d = keys.shape
    return keys.unflatten(2, (T // TILE, TILE)).transpose(-1, -2).contiguous()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("d, heads, kv_heads", [(32, 4, 4), (64, 4, 2), (48, 2, 2), (40, 2, 1)])
def test_attention_matches_torch(dtype, d, heads, kv_heads):
    g = torch.Generator().manual_seed(d + heads)
    B, T, t = 5, 64, 37
    start = torch.tensor([0, 3, 15, 16, 30])  # live columns start mid-tile and on a tile edge
    cos_sin = torch.randn(2, T, d, generator=g)
    qkv = torch.randn(B, (heads + 2 * kv_heads) * d, generator=g).to(dtype)
    q, k, v = qkv.split([heads * d, kv_heads * d, kv_heads * d], dim=1)
    keys = torch.randn(B, kv_heads, T, d, generator=g).to(dtype)
    values = torch.randn(B, kv_heads, T, d, generator=g).to(dtype)
    k_cache, v_cache = tiled(keys), values.clone()
    out = torch.empty(B, heads * d, dtype=dtype)
    K.attention(q, k, v, cos_sin[0], cos_sin[1], start, k_cache, v_cache, out, heads, t)

    pos = t - start
    cos, sin = cos_sin[0][pos][:, None], cos_sin[1][pos][:, None]  # [B, 1, d]
    k_new = rope(k.float().unflatten(1, (kv_heads, d)), cos, sin)
    q_rot = rope(q.float().unflatten(1, (heads, d)), cos, sin)
    keys, values = keys.float(), values.float()
    keys[:, :, t], values[:, :, t] = k_new.to(dtype).float(), v.float().unflatten(1, (kv_heads, d))
    want = torch.empty(B, heads, d)
    for b in range(B):
        kk = keys[b, :, start[b] : t + 1].repeat_interleave(heads // kv_heads, 0)  # [H, n, d]
        vv = values[b, :, start[b] : t + 1].repeat_interleave(heads // kv_heads, 0)
        probs = torch.softmax(torch.einsum("hd,hnd->hn", q_rot[b], kk), -1)
        want[b] = torch.einsum("hn,hnd->hd", probs, vv)
    tol = dict(atol=2e-2, rtol=2e-2) if dtype == torch.bfloat16 else dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.float(), want.flatten(1), **tol)
    # the new key (rotated) and value were appended at column t, and nothing else was touched
    got_keys = k_cache.transpose(-1, -2).flatten(2, 3).float()
    torch.testing.assert_close(got_keys[:, :, t], keys[:, :, t], **tol)
    other = torch.arange(T) != t
    torch.testing.assert_close(got_keys[:, :, other], keys[:, :, other], atol=0, rtol=0)
    torch.testing.assert_close(v_cache.float(), values, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_rms_norm_and_silu_mul_match_torch(dtype):
    g = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(7, 2 * 96, generator=g)).to(dtype)
    rows = x[:, :96]  # a strided view, as the engine passes
    tol = dict(atol=1e-2, rtol=1e-2) if dtype == torch.bfloat16 else dict(atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(K.rms_norm(rows, 1e-5).float(), F.rms_norm(rows.float(), (96,), None, 1e-5), **tol)
    torch.testing.assert_close(K.silu_mul(x).float(), (F.silu(x[:, :96].float()) * x[:, 96:].float()), **tol)


def test_sample_is_the_inverse_cdf_of_the_softmax():
    g = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(500, 50, generator=g)
    u = torch.rand(500, generator=g)
    for temperature in (1.0, 0.6):
        tokens, logprobs = K.sample(logits, temperature, u)
        logp = torch.log_softmax(logits.double() / temperature, -1)
        cdf = logp.exp().cumsum(-1)
        want = torch.searchsorted(cdf, u.double()[:, None] * cdf[:, -1:], right=True).squeeze(1)
        near_edge = (cdf - u.double()[:, None]).abs().min(-1).values < 1e-5  # float32 may round across
        assert (tokens == want)[~near_edge].all()
        torch.testing.assert_close(logprobs.double(), logp.gather(1, tokens[:, None])[:, 0], atol=1e-5, rtol=0)


def test_sample_never_draws_zero_probability():
    logits = torch.tensor([[0.0, -200.0, 1.0, -200.0]]).repeat(4, 1)  # exp underflows to 0 in float32
    u = torch.tensor([0.0, 0.5, 0.999999, 1 - 2**-24])
    tokens, _ = K.sample(logits, 1.0, u)
    assert set(tokens.tolist()) <= {0, 2} and tokens[0] == 0 and tokens[-1] == 2
