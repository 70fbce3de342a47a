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
@pytest.mark.parametrize("step", [0, 17])
def test_attention_matches_torch(dtype, d, heads, kv_heads, step):
    """Rows 0-1 share prompt 0, row 2 has prompt 1, rows 3-4 share prompt 2; their live columns
    start at 0, on a tile edge and mid-tile; step 0 is the first generated column."""
    g = torch.Generator().manual_seed(d + heads + step)
    group, P, own = torch.tensor([0, 0, 1, 2, 2]), 35, 32
    start = torch.tensor([0, 16, 30])[group]
    B, G, t = len(group), 3, 35 + step
    cos_sin = torch.randn(2, P + own, d, generator=g)
    qkv = torch.randn(B, (heads + 2 * kv_heads) * d, generator=g).to(dtype)
    q, k, v = qkv.split([heads * d, kv_heads * d, kv_heads * d], dim=1)
    prompt_keys = torch.randn(G, kv_heads, 48, d, generator=g).to(dtype)  # P rounded up to tiles
    prompt_values = torch.randn(G, kv_heads, 48, d, generator=g).to(dtype)
    own_keys = torch.randn(B, kv_heads, own, d, generator=g).to(dtype)
    own_values = torch.randn(B, kv_heads, own, d, generator=g).to(dtype)
    k_cache, v_cache = tiled(own_keys), own_values.clone()
    out = torch.empty(B, heads * d, dtype=dtype)
    K.attention(q, k, v, cos_sin[0], cos_sin[1], start, group, tiled(prompt_keys), prompt_values, k_cache, v_cache,
                out, heads, P, t)

    pos = t - start
    cos, sin = cos_sin[0][pos][:, None], cos_sin[1][pos][:, None]  # [B, 1, d]
    k_new = rope(k.float().unflatten(1, (kv_heads, d)), cos, sin)
    q_rot = rope(q.float().unflatten(1, (heads, d)), cos, sin)
    own_keys, own_values = own_keys.float(), own_values.float()
    own_keys[:, :, step], own_values[:, :, step] = k_new.to(dtype).float(), v.float().unflatten(1, (kv_heads, d))
    want = torch.empty(B, heads, d)
    for b in range(B):
        keys = torch.cat([prompt_keys[group[b], :, start[b] : P].float(), own_keys[b, :, : step + 1]], 1)
        values = torch.cat([prompt_values[group[b], :, start[b] : P].float(), own_values[b, :, : step + 1]], 1)
        keys, values = (x.repeat_interleave(heads // kv_heads, 0) for x in (keys, values))  # [H, n, d]
        probs = torch.softmax(torch.einsum("hd,hnd->hn", q_rot[b], keys), -1)
        want[b] = torch.einsum("hn,hnd->hd", probs, values)
    tol = dict(atol=2e-2, rtol=2e-2) if dtype == torch.bfloat16 else dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.float(), want.flatten(1), **tol)
    # the new key (rotated) and value went to the row's own column `step`; nothing else changed
    got_keys = k_cache.transpose(-1, -2).flatten(2, 3).float()
    torch.testing.assert_close(got_keys[:, :, step], own_keys[:, :, step], **tol)
    other = torch.arange(own) != step
    torch.testing.assert_close(got_keys[:, :, other], own_keys[:, :, other], atol=0, rtol=0)
    torch.testing.assert_close(v_cache.float(), own_values, atol=0, rtol=0)


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
