"""A Llama-family decoder forward over packed weights and a static KV cache (inference only).

Same math as transformers' LlamaForCausalLM (and Mistral, Qwen2, Qwen3): RMSNorm, RoPE with the
cos/sin table computed by the model's own rotary module (so every rope type and scaling in the
config is honoured), GQA, SiLU-gated MLP. Only the layout differs, to cut the number of tensor
ops per decode step (on a small model each op costs more in dispatch than in arithmetic):
- q/k/v and gate/up are each one matmul; RMSNorm weights are folded into the matmul after them
  and the attention scale 1/sqrt(d) into the query projection (or Qwen3's q_norm weight);
- RoPE is applied to q and k together: rotate_half(x) * sin == roll(x, d/2) * (sign * sin);
- residual adds are fused into the output matmuls (addmm);
- decode attention (RoPE, cache append, softmax attention) is one C call per layer when the
  kernel in `kernels` builds, as are RMSNorm and the gated activation (torch ops otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from paretorl.rollout import kernels

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


@dataclass(frozen=True)
class DecoderShape:
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    tied: bool
    sliding_window: int | None  # None: every layer attends to the whole sequence

    @classmethod
    def from_config(cls, config) -> DecoderShape:
        if config.model_type not in SUPPORTED_MODEL_TYPES:
            raise NotImplementedError(
                f"EmbeddedEngine supports model types {SUPPORTED_MODEL_TYPES}, got {config.model_type!r}"
            )
        if getattr(config, "hidden_act", "silu") != "silu":
            raise NotImplementedError(f"only hidden_act='silu' is supported, got {config.hidden_act!r}")
        heads = config.num_attention_heads
        window = getattr(config, "sliding_window", None)
        layer_types = getattr(config, "layer_types", None)
        if layer_types is not None and "sliding_attention" not in layer_types:
            window = None
        if config.model_type == "qwen2" and not getattr(config, "use_sliding_window", False):
            window = None
        return cls(
            vocab=config.vocab_size,
            hidden=config.hidden_size,
            intermediate=config.intermediate_size,
            layers=config.num_hidden_layers,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            eps=config.rms_norm_eps,
            tied=bool(getattr(config, "tie_word_embeddings", False)),
            sliding_window=window,
        )


@dataclass
class LayerWeights:
    wqkv: torch.Tensor  # [(H + 2 Hkv) d, D]: q (scaled), k, v; input RMSNorm weight folded in
    bqkv: torch.Tensor | None
    qk_norm: torch.Tensor | None  # [H + Hkv, d], Qwen3's q_norm (scaled) and k_norm rows
    wo_t: torch.Tensor  # [H d, D]
    bo: torch.Tensor | None
    wgu: torch.Tensor  # [2 I, D], gate then up; post-attention RMSNorm weight folded in
    bgu: torch.Tensor | None
    wd_t: torch.Tensor  # [I, D]
    bd: torch.Tensor | None


@dataclass
class PackedWeights:
    embed: torch.Tensor  # [V, D]
    layers: list[LayerWeights]
    lm_head: torch.Tensor  # [V, D], final RMSNorm weight folded in


def pack_weights(shape: DecoderShape, state_dict: dict[str, torch.Tensor], dtype: torch.dtype) -> PackedWeights:
    """HF parameter names -> packed weights in `dtype` (folding done in float32, then cast).

    Every weight must be present (lm_head may be left out when embeddings are tied); names
    that are not part of the model are refused so that a mislabelled checkpoint fails loudly.
    """
    used: set[str] = set()

    def get(name: str, optional: bool = False) -> torch.Tensor | None:
        if name not in state_dict:
            if optional:
                return None
            raise KeyError(f"state_dict is missing {name!r}")
        used.add(name)
        return state_dict[name].detach().to(device="cpu", dtype=torch.float32, copy=True)

    def cat_bias(rows: list[int], biases: list[torch.Tensor | None]) -> torch.Tensor | None:
        if all(b is None for b in biases):
            return None
        return torch.cat([b if b is not None else torch.zeros(r) for r, b in zip(rows, biases)])

    def cast(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(dtype).contiguous()

    s = shape
    scale = s.head_dim**-0.5
    embed = get("model.embed_tokens.weight")
    layers = []
    for i in range(s.layers):
        p = f"model.layers.{i}."
        wq, wk, wv = (get(p + f"self_attn.{n}_proj.weight") for n in "qkv")
        bq, bk, bv = (get(p + f"self_attn.{n}_proj.bias", True) for n in "qkv")
        q_norm, k_norm = get(p + "self_attn.q_norm.weight", True), get(p + "self_attn.k_norm.weight", True)
        if q_norm is None:  # scale q itself; with a q_norm the norm would undo it, so scale that
            wq, bq = wq * scale, None if bq is None else bq * scale
            qk_norm = None
        else:
            qk_norm = torch.cat([(q_norm * scale).expand(s.heads, -1), k_norm.expand(s.kv_heads, -1)])
        wqkv = torch.cat([wq, wk, wv]) * get(p + "input_layernorm.weight")
        wgu = torch.cat([get(p + f"mlp.{n}_proj.weight") for n in ("gate", "up")])
        wgu = wgu * get(p + "post_attention_layernorm.weight")
        layers.append(
            LayerWeights(
                wqkv=cast(wqkv),
                bqkv=cast(cat_bias([w.shape[0] for w in (wq, wk, wv)], [bq, bk, bv])),
                qk_norm=cast(qk_norm),
                wo_t=cast(get(p + "self_attn.o_proj.weight")).t(),
                bo=cast(get(p + "self_attn.o_proj.bias", True)),
                wgu=cast(wgu),
                bgu=cast(cat_bias([s.intermediate] * 2, [get(p + f"mlp.{n}_proj.bias", True) for n in ("gate", "up")])),
                wd_t=cast(get(p + "mlp.down_proj.weight")).t(),
                bd=cast(get(p + "mlp.down_proj.bias", True)),
            )
        )
    lm_head = get("lm_head.weight", optional=s.tied)
    lm_head = (embed if lm_head is None else lm_head) * get("model.norm.weight")
    unknown = sorted(set(state_dict) - used - {"lm_head.weight"})
    if unknown:
        raise ValueError(f"state_dict has names this model does not use: {unknown[:8]}")
    return PackedWeights(embed=cast(embed), layers=layers, lm_head=cast(lm_head))


@dataclass
class KVCache:
    """Per-call decode state: the keys and values of every row, plus the RoPE tables for 0..T-1.

    All rows share one time index (prompts are left-padded to prompt_len); row b's keys start at
    column start[b], and its RoPE position at column t is t - start[b]. Active rows are a prefix.
    - torch path: k, v [layers, B, Hkv, T, d] hold every column of every row.
    - C kernel: a prompt's columns are stored once, shared by its n samples: prompt_k
      [layers, G, Hkv, P/16, d, 16] (16-column tiles, transposed within the tile: see
      `kernels`) and prompt_v [layers, G, Hkv, P, d], P rounded up to whole tiles; k, v hold each
      row's generated columns (column t at t - prompt_len), k tiled the same way; group [B] is
      each row's prompt.
    """

    k: torch.Tensor
    v: torch.Tensor
    cos: torch.Tensor  # [T, d] float32, as HF's rotary module computes it
    sin: torch.Tensor
    cos_x: torch.Tensor  # [T, d] in the model dtype, for the torch attention path
    sin_x: torch.Tensor  # ... with the rotate_half sign folded in (see `_rope`)
    prompt_len: int
    prompt_k: torch.Tensor | None = None
    prompt_v: torch.Tensor | None = None
    group: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        parts = (self.k, self.v, self.prompt_k, self.prompt_v)
        return sum(x.numel() * x.element_size() for x in parts if x is not None)

    def compact(self, keep: torch.Tensor, columns: int) -> None:
        """Move rows `keep` (ascending) to the front; only the first `columns` are in use."""
        if self.group is not None:  # C kernel: move the generated columns and the prompt index
            own = columns - self.prompt_len
            tiles = -(-own // kernels.TILE)
            for layer in range(self.k.shape[0]):
                self.k[layer, : len(keep), :, :tiles] = self.k[layer, keep, :, :tiles]
                self.v[layer, : len(keep), :, :own] = self.v[layer, keep, :, :own]
            self.group[: len(keep)] = self.group[keep]
            return
        for layer in range(self.k.shape[0]):
            self.k[layer, : len(keep), :, :columns] = self.k[layer, keep, :, :columns]
            self.v[layer, : len(keep), :, :columns] = self.v[layer, keep, :, :columns]


class Decoder:
    """Packed weights plus prefill and decode-step forwards.

    Decode attention, RMSNorm and the MLP activation run in the C kernels of `kernels` when they
    build, else in torch.
    """

    def __init__(self, shape: DecoderShape, rotary, dtype: torch.dtype):
        self.shape = shape
        self.rotary = rotary  # the HF model's rotary module, or policy_files.DefaultRotary (same table)
        self.dtype = dtype
        self.weights: PackedWeights | None = None
        self.kernel = kernels.load()

    def load(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.weights = pack_weights(self.shape, state_dict, self.dtype)

    def new_cache(self, groups: int, n: int, prompt_len: int, length: int) -> KVCache:
        """Cache for `groups` prompts x n samples, prompts left-padded to prompt_len, `length`
        columns in all."""
        s, batch, tile = self.shape, groups * n, kernels.TILE
        cos, sin = self.rotary(torch.zeros(1, dtype=torch.float32), torch.arange(length)[None])
        cos, sin = cos[0].float(), sin[0].float()
        half = s.head_dim // 2
        sign = torch.cat([-torch.ones(half), torch.ones(half)])
        tables = dict(cos=cos, sin=sin, cos_x=cos.to(self.dtype), sin_x=(sin * sign).to(self.dtype))
        if self.kernel is None:  # the torch path reads every column (masked): unwritten ones must be finite
            k = torch.zeros((s.layers, batch, s.kv_heads, length, s.head_dim), dtype=self.dtype)
            return KVCache(k=k, v=torch.zeros_like(k), prompt_len=prompt_len, **tables)

        def tiled(rows: int, columns: int) -> tuple[torch.Tensor, torch.Tensor]:
            tiles = max(1, -(-columns // tile))
            k = torch.empty((s.layers, rows, s.kv_heads, tiles, s.head_dim, tile), dtype=self.dtype)
            return k, torch.empty((s.layers, rows, s.kv_heads, tiles * tile, s.head_dim), dtype=self.dtype)

        prompt_k, prompt_v = tiled(groups, prompt_len)
        k, v = tiled(batch, length - prompt_len)
        return KVCache(k=k, v=v, prompt_len=prompt_len, prompt_k=prompt_k, prompt_v=prompt_v,
                       group=torch.arange(groups).repeat_interleave(n), **tables)

    def _qkv(self, lw: LayerWeights, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, D] -> (qk [N, (H + Hkv) d] before RoPE, q scaled; v [N, Hkv d]), row views."""
        s = self.shape
        nqk = (s.heads + s.kv_heads) * s.head_dim
        qkv = F.linear(self._norm(x), lw.wqkv, lw.bqkv)
        qk, v = qkv[:, :nqk], qkv[:, nqk:]
        if lw.qk_norm is not None:
            qk = (F.rms_norm(qk.unflatten(-1, (-1, s.head_dim)), (s.head_dim,), None, s.eps) * lw.qk_norm).flatten(1)
        return qk, v

    def _rope(self, qk: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
        """qk [N, (H + Hkv) d] -> rotated [N, H + Hkv, d]; cos/sin_signed [N, 1, d].

        HF: x * cos + rotate_half(x) * sin, where rotate_half(x) = cat(-x2, x1)
        = roll(x, d/2) * sign, sign = (-1,..,-1, 1,..,1); the sign lives in sin_signed.
        """
        qk = qk.unflatten(-1, (-1, self.shape.head_dim))
        return torch.addcmul(qk * cos, qk.roll(self.shape.head_dim // 2, dims=-1), sin_signed)

    def _attn_out_mlp(self, lw: LayerWeights, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Residual adds of the attention output attn [N, H d] and of the MLP; x [N, D]."""
        s = self.shape
        x = torch.addmm(x if lw.bo is None else x + lw.bo, attn, lw.wo_t)
        gu = F.linear(self._norm(x), lw.wgu, lw.bgu)
        if self.kernel is not None:
            act = self.kernel.silu_mul(gu)
        else:
            act = F.silu(gu[:, : s.intermediate]) * gu[:, s.intermediate :]
        return torch.addmm(x if lw.bd is None else x + lw.bd, act, lw.wd_t)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        """RMSNorm without weight (each norm's weight is folded into the matmul after it)."""
        if self.kernel is not None and x.stride(-1) == 1:
            return self.kernel.rms_norm(x, self.shape.eps)
        return F.rms_norm(x, (self.shape.hidden,), None, self.shape.eps)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._norm(x), self.weights.lm_head).float()

    def prefill(self, ids: torch.Tensor, start: torch.Tensor, cache: KVCache, n: int) -> torch.Tensor:
        """Run left-padded prompts ids [G, P] (start [G] = leading pad tokens) through the model.

        Writes each prompt's keys/values into columns 0..P-1 of its n cache rows
        g*n .. g*n+n-1, and returns the logits of each prompt's last token, [G, V] float32.
        """
        s, w = self.shape, self.weights
        G, P = ids.shape
        idx = torch.arange(P)
        positions = (idx[None] - start[:, None]).clamp(min=0).flatten()
        cos, sin = cache.cos_x[positions][:, None], cache.sin_x[positions][:, None]  # [G P, 1, d]
        # Causal and not padding; a padding query attends to itself so no row is all -inf.
        valid_key = idx[None] >= start[:, None]  # [G, P]
        mask = ((idx[:, None] >= idx[None]) & valid_key[:, None] | torch.eye(P, dtype=torch.bool))[:, None]
        x = w.embed[ids.flatten()]  # [G P, D]
        for i, lw in enumerate(w.layers):
            qk, v = self._qkv(lw, x)
            qk = self._rope(qk, cos, sin).unflatten(0, (G, P)).transpose(1, 2)  # [G, H + Hkv, P, d]
            q, k = qk[:, : s.heads], qk[:, s.heads :]
            v = v.unflatten(-1, (-1, s.head_dim)).unflatten(0, (G, P)).transpose(1, 2)
            if cache.group is not None:  # once per prompt; whole tiles (the padding is never read)
                tiles = cache.prompt_k.shape[3]
                k_tiles = F.pad(k, (0, 0, 0, tiles * kernels.TILE - P)).unflatten(2, (tiles, kernels.TILE))
                cache.prompt_k[i, :G].copy_(k_tiles.transpose(-1, -2))
                cache.prompt_v[i, :G, :, :P].copy_(v)
            else:
                cache.k[i, : G * n, :, :P].unflatten(0, (G, n)).copy_(k[:, None])
                cache.v[i, : G * n, :, :P].unflatten(0, (G, n)).copy_(v[:, None])
            attn = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, scale=1.0, enable_gqa=s.heads != s.kv_heads
            )  # [G, H, P, d]
            x = self._attn_out_mlp(lw, x, attn.transpose(1, 2).reshape(G * P, -1))
        return self._logits(x.unflatten(0, (G, P))[:, -1])

    def decode(self, tokens: torch.Tensor, t: int, start: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One step for the first B = len(tokens) cache rows: tokens [B] go to column t.

        Returns [B, V] float32 logits for the next token.
        """
        s, w = self.shape, self.weights
        B = tokens.shape[0]
        x = w.embed[tokens]
        if self.kernel is None:
            positions = t - start
            cos, sin = cache.cos_x[positions][:, None], cache.sin_x[positions][:, None]  # [B, 1, d]
            columns = torch.arange(cache.k.shape[3])[None]
            masked = (columns < start[:, None]) | (columns > t)
            key_bias = torch.zeros(masked.shape, dtype=self.dtype).masked_fill_(masked, float("-inf"))
        attn = torch.empty((B, s.heads * s.head_dim), dtype=self.dtype)
        for i, lw in enumerate(w.layers):
            qk, v = self._qkv(lw, x)
            k_cache, v_cache = cache.k[i, :B], cache.v[i, :B]
            if self.kernel is not None:
                q, k = qk[:, : s.heads * s.head_dim], qk[:, s.heads * s.head_dim :]
                self.kernel.attention(q, k, v, cache.cos, cache.sin, start, cache.group[:B], cache.prompt_k[i],
                                      cache.prompt_v[i], k_cache, v_cache, attn, s.heads, cache.prompt_len, t)
            else:
                attn = self._torch_attention(self._rope(qk, cos, sin), v, k_cache, v_cache, key_bias, t)
            x = self._attn_out_mlp(lw, x, attn)
        return self._logits(x)

    def _torch_attention(self, qk, v, k_cache, v_cache, key_bias, t: int) -> torch.Tensor:
        """Reference decode attention: qk [B, H + Hkv, d] rotated, v [B, Hkv d] -> [B, H d].

        Runs over the whole cache length with key_bias [B, T] -inf on padding and unwritten
        columns: batched matmuls over contiguous [T, d] blocks are several times faster on CPU
        than over [t, d] slices of them.
        """
        s = self.shape
        B, T = qk.shape[0], k_cache.shape[2]
        k_cache[:, :, t] = qk[:, s.heads :]
        v_cache[:, :, t] = v.unflatten(-1, (-1, s.head_dim))
        q = qk[:, : s.heads].reshape(B * s.kv_heads, -1, s.head_dim)  # [B Hkv, g, d]
        scores = torch.bmm(q, k_cache.view(B * s.kv_heads, T, s.head_dim).transpose(1, 2))
        scores = scores.view(B, s.kv_heads, -1, T).add_(key_bias[:, None, None])
        probs = torch.softmax(scores, dim=-1).view(B * s.kv_heads, -1, T)
        return torch.bmm(probs, v_cache.view(B * s.kv_heads, T, s.head_dim)).view(B, -1)
