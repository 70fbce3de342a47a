"""A fused decode-attention kernel in C, built on first use with the system C compiler.

Why: at batch 256 a decode step's attention is ~B*H tiny GEMVs over each row's keys. torch's
batched matmul runs them several times slower than memory allows (and needs the whole cache
length, masked), so attention was over half of a step. This kernel does, per (row, kv head):
RoPE on the new k, append k/v to the cache, and for each query head of the group RoPE on q,
scores over the row's valid columns only, softmax, weighted sum of values; arithmetic in float32,
storage bf16 or f32. It is memory-bound (the whole live cache is read every step), hence the
software prefetches. Rows run in parallel on torch's OpenMP threads (the .so links libgomp.so.1,
which resolves to the copy torch has already loaded).

Built once per source/compiler/CPU into $PARETORL_KERNEL_CACHE (default
~/.cache/paretorl/kernels). No compiler, a failed build, or PARETORL_ROLLOUT_KERNEL=0: `load()`
returns None and the engine uses its pure-torch attention, which computes the same thing.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

_SOURCE = r"""
#include <float.h>
#include <math.h>
#include <stdint.h>

static inline float bf16_to_f32(uint16_t x) {
    union { uint32_t u; float f; } v; v.u = ((uint32_t)x) << 16; return v.f;
}
static inline uint16_t f32_to_bf16(float f) {  /* round to nearest even, as torch does */
    union { uint32_t u; float f; } v; v.f = f;
    v.u += 0x7fffu + ((v.u >> 16) & 1u);
    return (uint16_t)(v.u >> 16);
}

/* Software prefetch of n bytes from p: the K rows a few iterations ahead, and the V rows
   the second pass will read, so both streams are in flight while the dot products run. */
#define PREFETCH(p, n)                                                                         \
    for (int64_t o_ = 0; o_ < (int64_t)(n); o_ += 64) __builtin_prefetch((const char*)(p) + o_)

/* Prefetch knobs (compile-time): PF_NEXT pulls the next (row, head) block into L2, PF_INLOOP is
   how many K rows ahead the score loop prefetches. Both on measured ~1.5x faster here. */
#ifndef PF_NEXT
#define PF_NEXT 1
#endif
#ifndef PF_INLOOP
#define PF_INLOOP 16
#endif
#define PREFETCH_L2(p, n)                                                                      \
    for (int64_t o_ = 0; o_ < (int64_t)(n); o_ += 64) __builtin_prefetch((const char*)(p) + o_, 0, 2)

/* DIM is a literal for the common head sizes (fully unrolled, vectorised loops) or `d_`. */
#define DEFINE_KERNEL(NAME, T, LOAD, STORE, DIM)                                               \
static void NAME(const T* q, const T* k, const T* v, int64_t in_stride, int64_t v_stride,    \
          const float* cos_t, const float* sin_t, const int64_t* start,                        \
          T* k_cache, T* v_cache, T* out,                                                      \
          int64_t B, int64_t H, int64_t Hkv, int64_t d_, int64_t Tmax, int64_t t) {            \
    const int64_t d = DIM, group = H / Hkv, half = DIM / 2;                                    \
    _Pragma("omp parallel for collapse(2) schedule(static)")                                   \
    for (int64_t b = 0; b < B; b++) {                                                          \
        for (int64_t h = 0; h < Hkv; h++) {                                                    \
            float x[d], qr[d], acc[d], s[t + 1];                                               \
            const float* c = cos_t + (t - start[b]) * d;                                       \
            const float* sn = sin_t + (t - start[b]) * d;                                      \
            T* kc = k_cache + (b * Hkv + h) * Tmax * d;                                        \
            T* vc = v_cache + (b * Hkv + h) * Tmax * d;                                        \
            const T* kin = k + b * in_stride + h * d;                                          \
            const T* vin = v + b * v_stride + h * d;                                           \
            if (PF_NEXT) {   /* The next (row, head) block's keys and values, into L2. */      \
                const int64_t nb = h + 1 < Hkv ? b : b + 1;                                    \
                if (nb < B) {                                                                  \
                    const int64_t ns = start[nb], nbytes = (t + 1 - ns) * d * sizeof(T);       \
                    PREFETCH_L2(kc + (Tmax + ns) * d, nbytes);                                 \
                    PREFETCH_L2(vc + (Tmax + ns) * d, nbytes);                                 \
                }                                                                              \
            }                                                                                  \
            for (int64_t i = 0; i < d; i++) x[i] = LOAD(kin[i]);                               \
            for (int64_t i = 0; i < half; i++) {                                               \
                kc[t * d + i] = STORE(x[i] * c[i] - x[i + half] * sn[i]);                      \
                kc[t * d + i + half] = STORE(x[i + half] * c[i + half] + x[i] * sn[i + half]); \
            }                                                                                  \
            for (int64_t i = 0; i < d; i++) vc[t * d + i] = vin[i];                            \
            for (int64_t g = 0; g < group; g++) {                                              \
                const int64_t hq = h * group + g;                                              \
                const T* qin = q + b * in_stride + hq * d;                                     \
                for (int64_t i = 0; i < d; i++) x[i] = LOAD(qin[i]);                           \
                for (int64_t i = 0; i < half; i++) {                                           \
                    qr[i] = x[i] * c[i] - x[i + half] * sn[i];                                 \
                    qr[i + half] = x[i + half] * c[i + half] + x[i] * sn[i + half];            \
                }                                                                              \
                /* Four columns at a time: independent dot products keep the FMA units  */ \
                /* busy instead of waiting on one horizontal reduction after another.     */ \
                int64_t j = start[b];                                                          \
                for (; j + 3 <= t; j += 4) {                                                   \
                    const T* kj = kc + j * d;                                                  \
                    if (PF_INLOOP) {                                                           \
                        PREFETCH(kj + PF_INLOOP * d, 4 * d * sizeof(T));                       \
                        PREFETCH(vc + j * d, 4 * d * sizeof(T));                               \
                    }                                                                          \
                    float d0 = 0.f, d1 = 0.f, d2 = 0.f, d3 = 0.f;                              \
                    for (int64_t i = 0; i < d; i++) {                                          \
                        d0 += qr[i] * LOAD(kj[i]);                                             \
                        d1 += qr[i] * LOAD(kj[d + i]);                                         \
                        d2 += qr[i] * LOAD(kj[2 * d + i]);                                     \
                        d3 += qr[i] * LOAD(kj[3 * d + i]);                                     \
                    }                                                                          \
                    s[j] = d0; s[j + 1] = d1; s[j + 2] = d2; s[j + 3] = d3;                    \
                }                                                                              \
                for (; j <= t; j++) {                                                          \
                    const T* kj = kc + j * d;                                                  \
                    float dot = 0.f;                                                           \
                    for (int64_t i = 0; i < d; i++) dot += qr[i] * LOAD(kj[i]);                \
                    s[j] = dot;                                                                \
                }                                                                              \
                float m = -FLT_MAX;                                                            \
                for (j = start[b]; j <= t; j++) m = s[j] > m ? s[j] : m;                       \
                float sum = 0.f;                                                               \
                for (j = start[b]; j <= t; j++) { s[j] = expf(s[j] - m); sum += s[j]; }        \
                float acc2[d];                                                                 \
                for (int64_t i = 0; i < d; i++) acc[i] = acc2[i] = 0.f;                        \
                for (j = start[b]; j + 1 <= t; j += 2) {                                       \
                    const T* vj = vc + j * d;                                                  \
                    const float p0 = s[j], p1 = s[j + 1];                                      \
                    for (int64_t i = 0; i < d; i++) {                                          \
                        acc[i] += p0 * LOAD(vj[i]);                                            \
                        acc2[i] += p1 * LOAD(vj[d + i]);                                       \
                    }                                                                          \
                }                                                                              \
                if (j <= t)                                                                    \
                    for (int64_t i = 0; i < d; i++) acc[i] += s[j] * LOAD(vc[j * d + i]);     \
                for (int64_t i = 0; i < d; i++) acc[i] += acc2[i];                             \
                T* o = out + b * H * d + hq * d;                                               \
                const float inv = 1.f / sum;                                                   \
                for (int64_t i = 0; i < d; i++) o[i] = STORE(acc[i] * inv);                    \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
}

#define ID(x) (x)
#define DEFINE_DISPATCH(NAME, T, LOAD, STORE)                                                  \
DEFINE_KERNEL(NAME##_32, T, LOAD, STORE, 32)                                                   \
DEFINE_KERNEL(NAME##_64, T, LOAD, STORE, 64)                                                   \
DEFINE_KERNEL(NAME##_128, T, LOAD, STORE, 128)                                                 \
DEFINE_KERNEL(NAME##_any, T, LOAD, STORE, d_)                                                  \
void NAME(const T* q, const T* k, const T* v, int64_t in_stride, int64_t v_stride,           \
          const float* cos_t, const float* sin_t, const int64_t* start,                        \
          T* k_cache, T* v_cache, T* out,                                                      \
          int64_t B, int64_t H, int64_t Hkv, int64_t d, int64_t Tmax, int64_t t) {             \
    void (*f)(const T*, const T*, const T*, int64_t, int64_t, const float*, const float*,               \
              const int64_t*, T*, T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t,         \
              int64_t) = d == 32 ? NAME##_32 : d == 64 ? NAME##_64 : d == 128 ? NAME##_128     \
                                                                   : NAME##_any;               \
    f(q, k, v, in_stride, v_stride, cos_t, sin_t, start, k_cache, v_cache, out, B, H, Hkv, d, Tmax, t);  \
}
DEFINE_DISPATCH(decode_attention_f32, float, ID, ID)
DEFINE_DISPATCH(decode_attention_bf16, uint16_t, bf16_to_f32, f32_to_bf16)
"""

# -ffast-math lets gcc vectorise the reductions and call glibc's vector expf (libmvec); the
# kernel never sees inf or NaN from finite inputs. It is a *compile* flag only: linking with it
# would add crtfastmath.o, whose constructor turns on flush-to-zero for the whole process.
_COMPILE = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-fPIC", "-c"]
_LINK = ["-shared", "-fopenmp"]


def _cache_dir() -> Path:
    root = os.environ.get("PARETORL_KERNEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "paretorl", "kernels"
    )
    return Path(root)


def _cpu_flags() -> str:
    """-march=native code is only valid on the CPU it was built for: key the build on it."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""


def _build() -> Path | None:
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    key = hashlib.sha256("\0".join([_SOURCE, cc, *_COMPILE, *_LINK, _cpu_flags()]).encode()).hexdigest()[:16]
    path = _cache_dir() / f"decode_attention_{key}.so"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        src, obj, lib = Path(tmp) / "kernel.c", Path(tmp) / "kernel.o", Path(tmp) / "kernel.so"
        src.write_text(_SOURCE)
        for cmd in ([cc, *_COMPILE, str(src), "-o", str(obj)], [cc, *_LINK, str(obj), "-o", str(lib), "-lm"]):
            if subprocess.run(cmd, capture_output=True).returncode != 0:
                return None
        os.replace(lib, path)  # atomic: concurrent builders each install a complete file
    return path


class DecodeAttention:
    """ctypes wrapper; see `__call__`."""

    def __init__(self, lib: ctypes.CDLL):
        self._fns = {torch.float32: lib.decode_attention_f32, torch.bfloat16: lib.decode_attention_bf16}
        for fn in self._fns.values():
            fn.restype = None
            fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 2 + [ctypes.c_void_p] * 6 + [ctypes.c_int64] * 6

    def __call__(self, q, k, v, cos_t, sin_t, start, k_cache, v_cache, out, heads: int, t: int) -> None:
        """Append RoPE'd k and v at cache column t and write attention outputs to out.

        q [B, H d], k and v [B, Hkv d]: row views (e.g. slices of the fused qkv output; q and k
        share a row stride), not yet rotated, q already scaled by 1/sqrt(d).
        cos_t, sin_t: [T, d] float32, HF's tables (sin not sign-flipped). start [B] int64: the
        first valid cache column of each row (its left padding); row b's position is t - start[b].
        k_cache, v_cache: [B, Hkv, T, d] contiguous. out: [B, H d] contiguous.
        """
        B, kv_heads, T, d = k_cache.shape
        assert q.stride(0) == k.stride(0) and q.stride(1) == k.stride(1) == v.stride(1) == 1
        assert k_cache.is_contiguous() and v_cache.is_contiguous() and out.is_contiguous()
        assert cos_t.dtype == sin_t.dtype == torch.float32 and start.dtype == torch.int64
        self._fns[k_cache.dtype](
            q.data_ptr(), k.data_ptr(), v.data_ptr(), q.stride(0), v.stride(0),
            cos_t.data_ptr(), sin_t.data_ptr(), start.data_ptr(),
            k_cache.data_ptr(), v_cache.data_ptr(), out.data_ptr(),
            B, heads, kv_heads, d, T, t,
        )


_LOADED: DecodeAttention | None | bool = False


def load() -> DecodeAttention | None:
    """The compiled kernel, or None where it cannot be built or is switched off."""
    global _LOADED
    if os.environ.get("PARETORL_ROLLOUT_KERNEL", "1") == "0":
        return None
    if _LOADED is False:
        try:
            path = _build()
            _LOADED = DecodeAttention(ctypes.CDLL(str(path))) if path is not None else None
        except OSError:
            _LOADED = None
    return _LOADED
