"""C kernels for the embedded engine's decode step, built on first use with the system C compiler.

Why: on a model this small each torch op costs more in dispatch and bf16<->f32 passes than in
arithmetic, and at batch 256 attention is ~B*H tiny GEMVs that torch's batched matmul runs
several times slower than memory allows. So:
- `attention`, per (row, kv head): RoPE on the new k, append k/v to the cache, and for each
  query head of the group RoPE on q, scores over the row's live columns only, softmax, weighted
  sum of values. Keys are cached in 16-column tiles, transposed within the tile, so a score tile
  is d multiply-adds of 16-wide vectors (no horizontal sums) and a step reads each row's keys as
  one contiguous stream; with AVX-512 the bf16 loops are written with intrinsics. A prompt's
  keys and values are stored once for its n samples, which run back to back, so a step reads
  them from memory once per prompt. It is memory-bound: every step reads the whole live cache.
- `rms_norm`, `silu_mul`: the rest of a layer between its matmuls, one pass per row.
- `sample`: plain sampling as one pass per row (max, exp-sum, inverse-CDF draw, log-prob).
Arithmetic is float32, storage bf16 or f32. Rows run in parallel on torch's OpenMP threads (the
.so links libgomp.so.1, which resolves to the copy torch has already loaded).

Built once per source/compiler/CPU into $PARETORL_KERNEL_CACHE (default
~/.cache/paretorl/kernels). No compiler, a failed build, or PARETORL_ROLLOUT_KERNEL=0: `load()`
returns None and the engine uses torch ops, which compute the same thing.
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

TILE = 16  # key-cache tile width, as in the C source

_SOURCE = r"""
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static inline float bf16_to_f32(uint16_t x) {
    union { uint32_t u; float f; } v; v.u = ((uint32_t)x) << 16; return v.f;
}
static inline uint16_t f32_to_bf16(float f) {  /* round to nearest even, as torch does */
    union { uint32_t u; float f; } v; v.f = f;
    v.u += 0x7fffu + ((v.u >> 16) & 1u);
    return (uint16_t)(v.u >> 16);
}
#define ID(x) (x)

/* Key cache layout, per (row, kv head): tiles of 16 columns, each tile [d][16] (keys transposed
   within the tile). A score tile is then d multiply-adds of 16-wide vectors, with no horizontal
   sums, and the keys a step reads are one contiguous stream. Column j lives at
   ((j / 16) * d + i) * 16 + j % 16. Values stay [T][d]: a weighted sum of rows. */
#define TILE 16

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define HAVE_AVX512 1

/* Mask of the tile lanes whose columns lie in [lo, hi] (tile starting at column c). */
static inline __mmask16 lanes(int64_t c, int64_t lo, int64_t hi) {
    const int64_t a = lo > c ? lo - c : 0, b = hi < c + TILE - 1 ? hi - c : TILE - 1;
    return a > b ? (__mmask16)0 : (__mmask16)(((1u << (b - a + 1)) - 1) << a);
}

/* 16 bf16 -> 16 floats (a bf16 is the top half of a float); masked-off lanes are not read. */
static inline __m512 ld16(const uint16_t* p, __mmask16 m) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

/* Scores of the tiles c0 .. c1 of a key block into s[(c - c0) * 16 + lane]: four tiles per pass
   over the head dimension, in four independent accumulators. Lanes whose columns lie outside
   [lo, hi] are neither read nor written. */
static inline __attribute__((always_inline)) void scores_avx512(const float* qr, const uint16_t* kt, int64_t d,
                                                                int64_t c0, int64_t c1, int64_t lo, int64_t hi,
                                                                float* s) {
    for (int64_t c = c0; c <= c1; c += 4) {
        __mmask16 m[4];
        for (int k = 0; k < 4; k++) m[k] = c + k <= c1 ? lanes((c + k) * TILE, lo, hi) : (__mmask16)0;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        const uint16_t* t0 = kt + c * d * TILE;
        for (int64_t i = 0; i < d; i++) {
            const __m512 qi = _mm512_set1_ps(qr[i]);
            a0 = _mm512_fmadd_ps(qi, ld16(t0 + i * TILE, m[0]), a0);
            a1 = _mm512_fmadd_ps(qi, ld16(t0 + (d + i) * TILE, m[1]), a1);
            a2 = _mm512_fmadd_ps(qi, ld16(t0 + (2 * d + i) * TILE, m[2]), a2);
            a3 = _mm512_fmadd_ps(qi, ld16(t0 + (3 * d + i) * TILE, m[3]), a3);
        }
        float* o = s + (c - c0) * TILE;
        _mm512_mask_storeu_ps(o, m[0], a0); _mm512_mask_storeu_ps(o + TILE, m[1], a1);
        _mm512_mask_storeu_ps(o + 2 * TILE, m[2], a2); _mm512_mask_storeu_ps(o + 3 * TILE, m[3], a3);
    }
}

/* acc[0 .. d-1] += sum_j p[j] * v[j * d + i] over n rows of a [*, d] value block; d % 16 == 0,
   d <= 256. Two rows per iteration, each into its own accumulators. */
static inline __attribute__((always_inline)) void values_avx512(const float* p, const uint16_t* v, int64_t n,
                                                                int64_t d, float* acc) {
    __m512 a[16], b[16];
    const int64_t c = d / 16;
    for (int64_t k = 0; k < c; k++) { a[k] = _mm512_loadu_ps(acc + 16 * k); b[k] = _mm512_setzero_ps(); }
    int64_t j = 0;
    for (; j + 1 < n; j += 2) {
        const __m512 p0 = _mm512_set1_ps(p[j]), p1 = _mm512_set1_ps(p[j + 1]);
        const uint16_t* v0 = v + j * d;
        for (int64_t k = 0; k < c; k++) {
            a[k] = _mm512_fmadd_ps(p0, ld16(v0 + 16 * k, 0xFFFF), a[k]);
            b[k] = _mm512_fmadd_ps(p1, ld16(v0 + d + 16 * k, 0xFFFF), b[k]);
        }
    }
    if (j < n) {
        const __m512 p0 = _mm512_set1_ps(p[j]);
        for (int64_t k = 0; k < c; k++) a[k] = _mm512_fmadd_ps(p0, ld16(v + j * d + 16 * k, 0xFFFF), a[k]);
    }
    for (int64_t k = 0; k < c; k++) _mm512_storeu_ps(acc + 16 * k, _mm512_add_ps(a[k], b[k]));
}
#else
#define HAVE_AVX512 0
static inline void scores_avx512(const float* qr, const uint16_t* kt, int64_t d, int64_t c0, int64_t c1,
                                 int64_t lo, int64_t hi, float* s) {}
static inline void values_avx512(const float* p, const uint16_t* v, int64_t n, int64_t d, float* acc) {}
#endif

/* The same two loops, portable (gcc vectorises them), for any storage type. Scores are computed
   for whole tiles: lanes outside the live columns hold junk that is never used. */
#define DEFINE_PORTABLE(SUF, T, LOAD)                                                          \
static inline void scores_##SUF(const float* qr, const T* kt, int64_t d, int64_t c0, int64_t c1, float* s) { \
    for (int64_t c = c0; c <= c1; c++) {                                                       \
        const T* tile = kt + c * d * TILE;                                                     \
        float a[TILE];                                                                         \
        for (int l = 0; l < TILE; l++) a[l] = 0.f;                                             \
        for (int64_t i = 0; i < d; i++)                                                        \
            for (int l = 0; l < TILE; l++) a[l] += qr[i] * LOAD(tile[i * TILE + l]);           \
        for (int l = 0; l < TILE; l++) s[(c - c0) * TILE + l] = a[l];                          \
    }                                                                                          \
}                                                                                              \
static inline void values_##SUF(const float* p, const T* v, int64_t n, int64_t d, float* acc) { \
    for (int64_t j = 0; j < n; j++) {                                                          \
        const float pj = p[j];                                                                 \
        for (int64_t i = 0; i < d; i++) acc[i] += pj * LOAD(v[j * d + i]);                    \
    }                                                                                          \
}
DEFINE_PORTABLE(f32, float, ID)
DEFINE_PORTABLE(bf16, uint16_t, bf16_to_f32)

/* One decode step's attention for every (row, kv head); see `Kernels.attention`. A row's keys
   and values are its prompt's (kp, vp: shared by the prompt's n samples, so a step reads them
   once per prompt while the samples run back to back) then its own generated ones (kg, vg).
   DIM is a literal for the common head sizes (unrolled loops) or `d_`; FAST selects the
   AVX-512 bf16 loops, else the portable ones. */
#define DEFINE_KERNEL(NAME, T, SUF, LOAD, STORE, DIM, FAST)                                    \
static void NAME(const T* q, const T* k, const T* v, int64_t in_stride, int64_t v_stride,    \
                 const float* cos_t, const float* sin_t, const int64_t* start, const int64_t* group, \
                 const T* kp, const T* vp, T* kg, T* vg, T* out,                               \
                 int64_t B, int64_t H, int64_t Hkv, int64_t d_, int64_t Pmax, int64_t Gmax,    \
                 int64_t P, int64_t t) {                                                       \
    const int64_t d = DIM, grp = H / Hkv, half = DIM / 2, u = t - P;                           \
    _Pragma("omp parallel for collapse(2) schedule(static)")                                   \
    for (int64_t b = 0; b < B; b++) {                                                          \
        for (int64_t h = 0; h < Hkv; h++) {                                                    \
            /* prompt columns j0 .. P-1 (tiles c0 .. c1), generated columns 0 .. u (tiles     \
               0 .. g1) in the row's own block */                                              \
            const int64_t j0 = start[b], np = P - j0, ng = u + 1;                              \
            const int64_t c0 = j0 / TILE, c1 = (P - 1) / TILE, g1 = u / TILE;                  \
            float x[d], qr[d], acc[d], sp[(c1 - c0 + 1) * TILE], sg[(g1 + 1) * TILE];          \
            float* s1 = sp + (j0 - c0 * TILE); /* s1[jj]: column j0 + jj */                    \
            const float* c = cos_t + (t - j0) * d;                                             \
            const float* sn = sin_t + (t - j0) * d;                                            \
            const T* kpc = kp + (group[b] * Hkv + h) * Pmax * d;                               \
            const T* vpc = vp + (group[b] * Hkv + h) * Pmax * d + j0 * d;                      \
            T* kgc = kg + (b * Hkv + h) * Gmax * d;                                            \
            T* vgc = vg + (b * Hkv + h) * Gmax * d;                                            \
            const T* kin = k + b * in_stride + h * d;                                          \
            const T* vin = v + b * v_stride + h * d;                                           \
            T* kt = kgc + g1 * d * TILE + u % TILE; /* column u of its tile, stride 16 */      \
            for (int64_t i = 0; i < d; i++) x[i] = LOAD(kin[i]);                               \
            for (int64_t i = 0; i < half; i++) {                                               \
                kt[i * TILE] = STORE(x[i] * c[i] - x[i + half] * sn[i]);                       \
                kt[(i + half) * TILE] = STORE(x[i + half] * c[i + half] + x[i] * sn[i + half]); \
            }                                                                                  \
            for (int64_t i = 0; i < d; i++) vgc[u * d + i] = vin[i];                           \
            for (int64_t g = 0; g < grp; g++) {                                                \
                const int64_t hq = h * grp + g;                                                \
                const T* qin = q + b * in_stride + hq * d;                                     \
                for (int64_t i = 0; i < d; i++) x[i] = LOAD(qin[i]);                           \
                for (int64_t i = 0; i < half; i++) {                                           \
                    qr[i] = x[i] * c[i] - x[i + half] * sn[i];                                 \
                    qr[i + half] = x[i + half] * c[i + half] + x[i] * sn[i + half];            \
                }                                                                              \
                if (FAST) {                                                                    \
                    scores_avx512(qr, (const uint16_t*)kpc, d, c0, c1, j0, P - 1, sp);         \
                    scores_avx512(qr, (const uint16_t*)kgc, d, 0, g1, 0, u, sg);               \
                } else {                                                                       \
                    scores_##SUF(qr, kpc, d, c0, c1, sp);                                      \
                    scores_##SUF(qr, kgc, d, 0, g1, sg);                                       \
                }                                                                              \
                float m = -FLT_MAX;                                                            \
                for (int64_t jj = 0; jj < np; jj++) m = s1[jj] > m ? s1[jj] : m;               \
                for (int64_t jj = 0; jj < ng; jj++) m = sg[jj] > m ? sg[jj] : m;               \
                float sum = 0.f;                                                               \
                for (int64_t jj = 0; jj < np; jj++) { s1[jj] = expf(s1[jj] - m); sum += s1[jj]; } \
                for (int64_t jj = 0; jj < ng; jj++) { sg[jj] = expf(sg[jj] - m); sum += sg[jj]; } \
                for (int64_t i = 0; i < d; i++) acc[i] = 0.f;                                  \
                if (FAST) {                                                                    \
                    values_avx512(s1, (const uint16_t*)vpc, np, d, acc);                       \
                    values_avx512(sg, (const uint16_t*)vgc, ng, d, acc);                       \
                } else {                                                                       \
                    values_##SUF(s1, vpc, np, d, acc);                                         \
                    values_##SUF(sg, vgc, ng, d, acc);                                         \
                }                                                                              \
                T* o = out + b * H * d + hq * d;                                               \
                const float inv = 1.f / sum;                                                   \
                for (int64_t i = 0; i < d; i++) o[i] = STORE(acc[i] * inv);                    \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
}

#define DEFINE_DISPATCH(NAME, T, SUF, LOAD, STORE, FAST)                                       \
DEFINE_KERNEL(NAME##_32, T, SUF, LOAD, STORE, 32, FAST)                                        \
DEFINE_KERNEL(NAME##_64, T, SUF, LOAD, STORE, 64, FAST)                                        \
DEFINE_KERNEL(NAME##_128, T, SUF, LOAD, STORE, 128, FAST)                                      \
DEFINE_KERNEL(NAME##_any, T, SUF, LOAD, STORE, d_, FAST && d_ % 16 == 0 && d_ <= 256)          \
void NAME(const T* q, const T* k, const T* v, int64_t in_stride, int64_t v_stride,           \
          const float* cos_t, const float* sin_t, const int64_t* start, const int64_t* group,  \
          const T* kp, const T* vp, T* kg, T* vg, T* out,                                      \
          int64_t B, int64_t H, int64_t Hkv, int64_t d, int64_t Pmax, int64_t Gmax, int64_t P, int64_t t) { \
    void (*f)(const T*, const T*, const T*, int64_t, int64_t, const float*, const float*,     \
              const int64_t*, const int64_t*, const T*, const T*, T*, T*, T*, int64_t, int64_t, \
              int64_t, int64_t, int64_t, int64_t, int64_t, int64_t) =                          \
        d == 32 ? NAME##_32 : d == 64 ? NAME##_64 : d == 128 ? NAME##_128 : NAME##_any;        \
    f(q, k, v, in_stride, v_stride, cos_t, sin_t, start, group, kp, vp, kg, vg, out, B, H, Hkv, d, \
      Pmax, Gmax, P, t);                                                                       \
}
DEFINE_DISPATCH(decode_attention_f32, float, f32, ID, ID, 0)
DEFINE_DISPATCH(decode_attention_bf16, uint16_t, bf16, bf16_to_f32, f32_to_bf16, HAVE_AVX512)

/* Row-wise kernels for the rest of a decode step: on a small model each torch op costs more in
   dispatch and bf16<->f32 conversion passes than in arithmetic. float32 math, one pass per row. */
#define DEFINE_ROWWISE(SUFFIX, T, LOAD, STORE)                                                 \
/* out[r] = x[r] / sqrt(mean(x[r]^2) + eps) (RMSNorm without weight: it is folded into the     \
   matmul after it); x rows are `stride` apart, out is contiguous [N, D]. */                   \
void rms_norm_##SUFFIX(const T* x, int64_t stride, T* out, int64_t N, int64_t D, float eps) { \
    _Pragma("omp parallel for schedule(static)")                                               \
    for (int64_t r = 0; r < N; r++) {                                                          \
        const T* xr = x + r * stride;                                                          \
        float ss = 0.f;                                                                        \
        for (int64_t i = 0; i < D; i++) { const float v = LOAD(xr[i]); ss += v * v; }         \
        const float inv = 1.f / sqrtf(ss / (float)D + eps);                                    \
        T* o = out + r * D;                                                                    \
        for (int64_t i = 0; i < D; i++) o[i] = STORE(LOAD(xr[i]) * inv);                       \
    }                                                                                          \
}                                                                                              \
/* out[r, i] = silu(gu[r, i]) * gu[r, I + i]: the gated MLP activation, gu [N, 2I] contiguous. */ \
void silu_mul_##SUFFIX(const T* gu, T* out, int64_t N, int64_t I) {                           \
    _Pragma("omp parallel for schedule(static)")                                               \
    for (int64_t r = 0; r < N; r++) {                                                          \
        const T* g = gu + r * 2 * I;                                                           \
        T* o = out + r * I;                                                                    \
        for (int64_t i = 0; i < I; i++) {                                                      \
            const float a = LOAD(g[i]);                                                        \
            o[i] = STORE(a / (1.f + expf(-a)) * LOAD(g[I + i]));                               \
        }                                                                                      \
    }                                                                                          \
}
DEFINE_ROWWISE(f32, float, ID, ID)
DEFINE_ROWWISE(bf16, uint16_t, bf16_to_f32, f32_to_bf16)

/* One draw per row from softmax(logits[r] * inv_temp), by inverse CDF with the uniform u[r] in
   [0, 1): the first token whose running sum of exp(z - max) exceeds u * total (a zero-probability
   token is never chosen: its interval is empty). Writes the token and its log-prob. */
void sample_rows_f32(const float* logits, int64_t N, int64_t V, float inv_temp, const float* u,
                     int64_t* tokens, float* logprobs) {
    _Pragma("omp parallel for schedule(static)")
    for (int64_t r = 0; r < N; r++) {
        const float* l = logits + r * V;
        float* e = malloc(V * sizeof(float));  /* heap: a 150k vocabulary is 600 KB */
        float m = -FLT_MAX;
        for (int64_t i = 0; i < V; i++) m = l[i] * inv_temp > m ? l[i] * inv_temp : m;
        float sum = 0.f;
        for (int64_t i = 0; i < V; i++) { e[i] = expf(l[i] * inv_temp - m); sum += e[i]; }
        const float target = u[r] * sum;
        float run = 0.f;
        int64_t tok = -1, last = 0;
        for (int64_t i = 0; i < V; i++) {
            if (e[i] > 0.f) last = i;
            run += e[i];
            if (run > target && e[i] > 0.f) { tok = i; break; }
        }
        if (tok < 0) tok = last;  /* rounding left the running sum short of u * total */
        tokens[r] = tok;
        logprobs[r] = l[tok] * inv_temp - m - logf(sum);
        free(e);
    }
}
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
    path = _cache_dir() / f"rollout_kernels_{key}.so"
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


class Kernels:
    """ctypes wrappers of the compiled kernels: `attention`, `rms_norm`, `silu_mul`, `sample`."""

    def __init__(self, lib: ctypes.CDLL):
        P, I = ctypes.c_void_p, ctypes.c_int64
        self._attention = {torch.float32: lib.decode_attention_f32, torch.bfloat16: lib.decode_attention_bf16}
        for fn in self._attention.values():
            fn.argtypes = [P] * 3 + [I] * 2 + [P] * 9 + [I] * 8
        self._rms_norm = {torch.float32: lib.rms_norm_f32, torch.bfloat16: lib.rms_norm_bf16}
        for fn in self._rms_norm.values():
            fn.argtypes = [P, I, P, I, I, ctypes.c_float]
        self._silu_mul = {torch.float32: lib.silu_mul_f32, torch.bfloat16: lib.silu_mul_bf16}
        for fn in self._silu_mul.values():
            fn.argtypes = [P, P, I, I]
        self._sample = lib.sample_rows_f32
        self._sample.argtypes = [P, I, I, ctypes.c_float, P, P, P]
        for fn in (*self._attention.values(), *self._rms_norm.values(), *self._silu_mul.values(), self._sample):
            fn.restype = None

    def attention(self, q, k, v, cos_t, sin_t, start, group, prompt_k, prompt_v, k_cache, v_cache, out, heads: int,
                  prompt_len: int, t: int) -> None:
        """Append RoPE'd k and v at column t and write attention outputs to out.

        q [B, H d], k and v [B, Hkv d]: row views (e.g. slices of the fused qkv output; q and k
        share a row stride), not yet rotated, q already scaled by 1/sqrt(d).
        cos_t, sin_t: [T, d] float32, HF's tables (sin not sign-flipped). start [B] int64: the
        first valid column of each row (its left padding); row b's position is t - start[b].
        group [B] int64: each row's prompt. Columns 0 .. prompt_len-1 are the prompt's:
        prompt_k [G, Hkv, P/16, d, 16] (16-column tiles, see the C source), prompt_v [G, Hkv, P, d];
        columns prompt_len .. are the row's own: k_cache [B, Hkv, T'/16, d, 16], v_cache
        [B, Hkv, T', d], column t at t - prompt_len. All contiguous; out [B, H d] contiguous.
        """
        B, kv_heads, tiles, d, tile = k_cache.shape
        p_tiles = prompt_k.shape[2]
        assert tile == TILE and v_cache.shape == (B, kv_heads, tiles * TILE, d) and 0 <= t - prompt_len < tiles * TILE
        assert prompt_v.shape == (prompt_k.shape[0], kv_heads, p_tiles * TILE, d) and prompt_len <= p_tiles * TILE
        assert q.stride(0) == k.stride(0) and q.stride(1) == k.stride(1) == v.stride(1) == 1
        assert all(x.is_contiguous() for x in (prompt_k, prompt_v, k_cache, v_cache, out, start, group))
        assert cos_t.dtype == sin_t.dtype == torch.float32 and start.dtype == group.dtype == torch.int64
        self._attention[k_cache.dtype](
            q.data_ptr(), k.data_ptr(), v.data_ptr(), q.stride(0), v.stride(0),
            cos_t.data_ptr(), sin_t.data_ptr(), start.data_ptr(), group.data_ptr(),
            prompt_k.data_ptr(), prompt_v.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), out.data_ptr(),
            B, heads, kv_heads, d, p_tiles * TILE, tiles * TILE, prompt_len, t,
        )

    def rms_norm(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        """F.rms_norm(x, (D,), None, eps) for x [N, D] with unit-stride rows; a new contiguous tensor."""
        N, D = x.shape
        assert x.stride(1) == 1
        out = torch.empty((N, D), dtype=x.dtype)
        self._rms_norm[x.dtype](x.data_ptr(), x.stride(0), out.data_ptr(), N, D, eps)
        return out

    def silu_mul(self, gu: torch.Tensor) -> torch.Tensor:
        """silu(gu[:, :I]) * gu[:, I:] for gu [N, 2I] contiguous; a new [N, I] tensor."""
        N, I2 = gu.shape
        assert gu.is_contiguous() and I2 % 2 == 0
        out = torch.empty((N, I2 // 2), dtype=gu.dtype)
        self._silu_mul[gu.dtype](gu.data_ptr(), out.data_ptr(), N, I2 // 2)
        return out

    def sample(self, logits: torch.Tensor, temperature: float, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inverse-CDF draws from softmax(logits / temperature), one per row, with uniforms u [N].

        logits [N, V] float32 contiguous. Returns (tokens [N] int64, log-probs [N] float32).
        """
        N, V = logits.shape
        assert logits.dtype == u.dtype == torch.float32 and logits.is_contiguous() and temperature > 0
        tokens, logprobs = torch.empty(N, dtype=torch.int64), torch.empty(N, dtype=torch.float32)
        self._sample(logits.data_ptr(), N, V, 1.0 / temperature, u.contiguous().data_ptr(), tokens.data_ptr(),
                     logprobs.data_ptr())
        return tokens, logprobs


_LOADED: Kernels | None | bool = False


def load() -> Kernels | None:
    """The compiled kernels, or None where they cannot be built or are switched off."""
    global _LOADED
    if os.environ.get("PARETORL_ROLLOUT_KERNEL", "1") == "0":
        return None
    if _LOADED is False:
        try:
            path = _build()
            _LOADED = Kernels(ctypes.CDLL(str(path))) if path is not None else None
        except OSError:
            _LOADED = None
    return _LOADED
