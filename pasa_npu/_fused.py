"""A fused CPU backend for the two heaviest vector-unit passes of :func:`pasa_npu.kernel._tiled_attention`.

The emulated kernel rounds its score tile with a chain of separate torch passes (round the fp32
accumulator to fp16, widen, row mean, row max, subtract, exp, row sum, widen P for the second product)
and updates O with four more (round P·V, γ·PV, ·2^−t, α·O + ·). This module does each chain in one pass
per row, in a small C++ library compiled once with the system C++ compiler (``$CXX`` or ``g++``) and
cached under ``$PASA_NPU_CACHE`` (default ``~/.cache/pasa_npu``), loaded with :mod:`ctypes`.

It is an *emulation of the same roundings*, and bit-identical to the torch passes it replaces, by
construction and by test:

* every fp16 operation is computed in fp32 and rounded once to fp16 (round to nearest, ties to even:
  the hardware conversion torch's vectorised copies use), with the same operand order as the torch op,
  and with floating-point contraction (FMA) switched off;
* the exponential is a table of torch's own fp16 ``exp`` of each of the 65,536 fp16 bit patterns,
  built at load time by calling ``torch.exp``: the fp16 result of eager's exp for any fp16 input;
* the fp32 row mean and the fp16 row sum reproduce the summation order of torch's CPU reduction
  (``cascade_sum`` in ATen's SumKernel.cpp: vector lanes of the CPU capability's width, four
  interleaved partial vectors, the tail first, then the lanes in order); the lane width comes from
  ``torch.backends.cpu.get_cpu_capability()`` and the pairing of fp16 lanes is detected by a probe;
* a self-check at load time compares the fused chain with the torch passes on random tiles of
  several shapes; any difference disables the backend.

Where a tile holds one KV block (the reference shape's tiles), the whole tile runs in one C call,
``pasa_tile``: for each (batch, KV head) group S = Q·K̃ᵀ, the score chain, P·V and the step, with the
two fp32 products made by the Fortran BLAS ``sgemm_`` that torch's own CPU matmul ends in (MKL's,
exported by ``libtorch_cpu.so``, called with the arguments torch passes for these layouts) and the
state saved and restored in C when a tile is handed back. A probe per shape, thread count and fp32
matmul precision compares those products with the kernel's torch.matmul calls on seeded operands
(``Backend.gemm_matches``; at load time at the reference shape); where it differs or ``sgemm_`` is
missing (or ``PASA_FUSED_DIRECT=0``) the Python tile loop runs the same C passes between torch
products. :func:`fused_backend` names the path.

The backend is used only where it applies (fp16 vector unit and matrix-unit output, fp32 accumulator,
``reduce="acc"``, CPU tensors, no census, tiles without a mask); everywhere else, and wherever it
cannot be built (no compiler, a build error, ``PASA_FUSED=0``), the kernel runs its eager torch
passes. :func:`fused_backend` says which one runs and why.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = ["fused_backend", "disabled", "python_loop"]

_SOURCE = r"""
// Fused vector-unit passes of pasa_npu's tiled attention (see pasa_npu/_fused.py). x86-64 with AVX2
// and F16C; every fp16 result is a round-to-nearest-even conversion of an fp32 result (vcvtps2ph),
// no FMA contraction (-ffp-contract=off), sums in the order of torch's CPU cascade_sum.
#include <immintrin.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#define RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

static inline float h2f(uint16_t b) { return _cvtsh_ss(b); }
static inline uint16_t f2h(float x) { return _cvtss_sh(x, RNE); }
static inline float r16(float x) { return h2f(f2h(x)); }  // fp32 -> fp16 -> fp32
static inline __m256 r16v(__m256 x) { return _mm256_cvtph_ps(_mm256_cvtps_ph(x, RNE)); }
#ifdef __AVX512F__
static inline __m512 r16z(__m512 x) { return _mm512_cvtph_ps(_mm512_cvtps_ph(x, RNE)); }
#endif

// the table entries of eight fp32 values (fp16 values: their bit patterns index the table), by scalar loads
static inline __m256 lut8(const float* lut, __m256 x) {
  const __m128i h = _mm256_cvtps_ph(x, RNE);
  const uint64_t lo = (uint64_t)_mm_cvtsi128_si64(h), hi = (uint64_t)_mm_extract_epi64(h, 1);
  const __m128 a = _mm_setr_ps(lut[lo & 0xFFFF], lut[(lo >> 16) & 0xFFFF], lut[(lo >> 32) & 0xFFFF], lut[lo >> 48]);
  const __m128 b = _mm_setr_ps(lut[hi & 0xFFFF], lut[(hi >> 16) & 0xFFFF], lut[(hi >> 32) & 0xFFFF], lut[hi >> 48]);
  return _mm256_set_m128(b, a);
}

static inline int64_t ceil_log2(int64_t x) {
  if (x <= 2) return 1;
  return 64 - __builtin_clzll((uint64_t)(x - 1));
}

// a vector of L float lanes (L = 1: a scalar)
template <int L> struct V {
  __m256 v[L / 8];
  static inline V zero() { V r; for (int i = 0; i < L / 8; ++i) r.v[i] = _mm256_setzero_ps(); return r; }
  inline void add(const V& o) { for (int i = 0; i < L / 8; ++i) v[i] = _mm256_add_ps(v[i], o.v[i]); }
  inline void lanes(float* out) const { for (int i = 0; i < L / 8; ++i) _mm256_storeu_ps(out + 8 * i, v[i]); }
};
template <> struct V<1> {
  float v;
  static inline V zero() { V r; r.v = 0.0f; return r; }
  inline void add(const V& o) { v = v + o.v; }
  inline void lanes(float* out) const { out[0] = v; }
};

// ATen's multi_row_sum (nrows = 4): items(i, k) = load(i * 4 + k), i < size, in a cascade of 4 levels.
template <int L, class Load>
static inline void multi_row_sum(const Load& load, int64_t size, V<L> out[4]) {
  const int64_t level_power = std::max<int64_t>(4, ceil_log2(size) / 4);
  const int64_t level_step = (int64_t)1 << level_power;
  const int64_t level_mask = level_step - 1;
  V<L> acc[4][4];
  for (int j = 0; j < 4; ++j) for (int k = 0; k < 4; ++k) acc[j][k] = V<L>::zero();
  int64_t i = 0;
  for (; i + level_step <= size;) {
    for (int64_t j = 0; j < level_step; ++j, ++i)
      for (int k = 0; k < 4; ++k) acc[0][k].add(load(i * 4 + k));
    for (int j = 1; j < 4; ++j) {
      for (int k = 0; k < 4; ++k) { acc[j][k].add(acc[j - 1][k]); acc[j - 1][k] = V<L>::zero(); }
      if ((i & (level_mask << (j * level_power))) != 0) break;
    }
  }
  for (; i < size; ++i)
    for (int k = 0; k < 4; ++k) acc[0][k].add(load(i * 4 + k));
  for (int j = 1; j < 4; ++j)
    for (int k = 0; k < 4; ++k) acc[0][k].add(acc[j][k]);
  for (int k = 0; k < 4; ++k) out[k] = acc[0][k];
}

// ATen's row_sum (ilp_factor 4)
template <int L, class Load>
static inline V<L> row_sum(const Load& load, int64_t n_items) {
  const int64_t size_ilp = n_items / 4;
  V<L> part[4];
  multi_row_sum<L>(load, size_ilp, part);
  for (int64_t i = size_ilp * 4; i < n_items; ++i) part[0].add(load(i));
  for (int k = 1; k < 4; ++k) part[0].add(part[k]);
  return part[0];
}

template <int L> static inline V<L> loadv(const float* p) {
  V<L> r; for (int i = 0; i < L / 8; ++i) r.v[i] = _mm256_loadu_ps(p + 8 * i); return r;
}

template <int L> static inline float finish(const V<L>& acc, float fin) {
  float lanes[L];
  acc.lanes(lanes);
  for (int i = 0; i < L; ++i) fin = fin + lanes[i];
  return 0.0f + fin;  // the output, zero-filled, accumulates the row's sum
}

// torch's x.sum(-1) of n contiguous fp32 values (cascade_sum, inner reduction, L lanes)
template <int L> static inline float sum_f32(const float* x, int64_t n) {
  if (n < L) {
    auto load = [x](int64_t i) { V<1> r; r.v = x[i]; return r; };
    return 0.0f + row_sum<1>(load, n).v;
  }
  const int64_t vs = n / L;
  auto load = [x](int64_t m) { return loadv<L>(x + m * L); };
  V<L> acc = row_sum<L>(load, vs);
  float fin = 0.0f;
  for (int64_t k = vs * L; k < n; ++k) fin = fin + x[k];
  return finish<L>(acc, fin);
}

// torch's x.sum(-1) of n contiguous fp16 values (given widened to fp32 in x), accumulated in fp32:
// a vector of 2L halves is reduced to L float lanes, pairing 1: h[i] + h[L + i]; pairing 0:
// (0 + h[2i]) + h[2i + 1]
template <int L> static inline float sum_f16(const float* x, int64_t n, int pairing) {
  if (n < 2 * L) {
    auto load = [x](int64_t i) { V<1> r; r.v = x[i]; return r; };
    return 0.0f + row_sum<1>(load, n).v;
  }
  const int64_t vs = n / (2 * L);
  V<L> acc;
  if (pairing == 1) {
    auto load = [x](int64_t m) {
      V<L> a = loadv<L>(x + m * 2 * L), b = loadv<L>(x + m * 2 * L + L);
      a.add(b);
      return a;
    };
    acc = row_sum<L>(load, vs);
  } else {
    auto load = [x](int64_t m) {
      float t[L];
      const float* p = x + m * 2 * L;
      for (int i = 0; i < L; ++i) t[i] = (0.0f + p[2 * i]) + p[2 * i + 1];
      return loadv<L>(t);
    };
    acc = row_sum<L>(load, vs);
  }
  float fin = 0.0f;
  for (int64_t k = vs * 2 * L; k < n; ++k) fin = fin + x[k];
  return finish<L>(acc, fin);
}

template <int L>
static int chain(const float* s, int64_t O, int64_t rows, int64_t nb, int64_t n, float tau, int want_mean,
                 int masked, const float* lut, float* mean_out, uint16_t* mj_out, uint16_t* lj_out,
                 float* p_out, int pairing, int64_t tail, int causal, int64_t q0, int64_t qr, int64_t see,
                 int64_t r_off = 0) {  // r_off: the tile row of row 0 (for the causal mask)
  std::vector<float> wbuf(n + 8);
  float* w = wbuf.data();
  const float t16 = r16(tau);
  const __m256 vt = _mm256_set1_ps(t16);
  const int64_t n8 = n / 8 * 8;
  const __m256 vinf = _mm256_set1_ps(INFINITY);
  const __m256 vabs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  for (int64_t o = 0; o < O; ++o)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < nb; ++j) {
        const int64_t seg = (o * rows + r) * nb + j;
        const float* src = s + seg * n;
        float* dst = p_out + ((o * nb + j) * rows + r) * n;
        // c (known before the scores): the padded tail of the last block and the causal mask are -inf
        // on a suffix of the row, from column `valid` on
        int64_t valid = j == nb - 1 ? tail : n;
        if (causal) {
          const int64_t qi = q0 + (r + r_off) % qr, c0 = j * n;  // query index; first key of the block in the tile
          valid = std::min(valid, std::max<int64_t>(0, std::min<int64_t>(n, qi + see - c0 + 1)));
        }
        // a: round the accumulator to fp16 (and scale on the vector unit); a row without a mask takes its
        // maximum (d) in the same pass, in the same order as the pass below
        __m256 vnan = _mm256_setzero_ps(), vmax = _mm256_set1_ps(-INFINITY);
        int64_t i = 0;
        for (; i < n8; i += 8) {
          __m256 x = r16v(_mm256_loadu_ps(src + i));
          if (tau != 0.0f) x = r16v(_mm256_mul_ps(x, vt));
          _mm256_storeu_ps(w + i, x);
          vnan = _mm256_or_ps(vnan, _mm256_cmp_ps(_mm256_and_ps(x, vabs), vinf, _CMP_NLT_UQ));
          vmax = _mm256_max_ps(vmax, x);
        }
        bool nan = _mm256_movemask_ps(vnan) != 0;  // a rounded score is inf or NaN
        for (; i < n; ++i) {
          float x = r16(src[i]);
          if (tau != 0.0f) x = r16(x * t16);
          w[i] = x;
          nan |= !std::isfinite(x);
        }
        if (nan) return 2;  // overflow or NaN: the caller's torch passes take the tile
        // b: block row mean of the rounded tile, before any mask (fp32 sum, then / n)
        if (want_mean) mean_out[seg] = sum_f32<L>(w, n) / (float)n;
        // c: the masks
        if (valid < n) {
          for (int64_t k = valid; k < n; ++k) w[k] = -INFINITY;
          vmax = _mm256_set1_ps(-INFINITY);
          for (i = 0; i < n8; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(w + i));
        }
        // d: the row maximum
        i = n8;
        float m;
        {
          float t[8];
          _mm256_storeu_ps(t, vmax);
          m = t[0];
          for (int k = 1; k < 8; ++k) m = t[k] > m ? t[k] : m;
        }
        for (; i < n; ++i) m = w[i] > m ? w[i] : m;
        mj_out[seg] = f2h(m);
        // d: P = fl(exp(fl(S - m))) from the table of torch's fp16 exp, row sum in fp16
        const float ref = (masked && m == -INFINITY) ? 0.0f : m;
        const __m256 vr = _mm256_set1_ps(ref);
        // the eight table look-ups by scalar loads (the gather instruction measured slower here)
        for (i = 0; i < n8; i += 8) {
          _mm256_storeu_ps(dst + i, lut8(lut, _mm256_sub_ps(_mm256_loadu_ps(w + i), vr)));
        }
        for (; i < n; ++i) dst[i] = lut[f2h(w[i] - ref)];
        lj_out[seg] = f2h(sum_f16<L>(dst, n, pairing));
      }
  return 0;
}

extern "C" {

int pasa_fused_version() { return 3; }

// tail: valid columns of the tile's last block; causal: key c0 + k of a block is seen by query
// q0 + (row % qr) iff c0 + k <= query + see (see = S2 - S1; c0 relative to the tile, q0 shifted to match)
int pasa_chain(const float* s, int64_t O, int64_t rows, int64_t nb, int64_t n, float tau, int want_mean,
               int masked, const float* lut, float* mean_out, uint16_t* mj_out, uint16_t* lj_out,
               float* p_out, int lanes, int pairing, int64_t tail, int causal, int64_t q0, int64_t qr,
               int64_t see) {
  if (lanes == 16)
    return chain<16>(s, O, rows, nb, n, tau, want_mean, masked, lut, mean_out, mj_out, lj_out, p_out, pairing,
                     tail, causal, q0, qr, see);
  if (lanes == 8)
    return chain<8>(s, O, rows, nb, n, tau, want_mean, masked, lut, mean_out, mj_out, lj_out, p_out, pairing,
                    tail, causal, q0, qr, see);
  return 1;
}

}  // extern "C"

// One KV block jj folded into the running state of every row (the "lazy" bookkeeping of
// pasa_npu.kernel._Online._switch and update, same roundings, same operand order):
// mode 0: no shift (flash attention); 1/2: pseudo-average offsets, e = fl(mean - A) ("centered") or
// fl(fl(mean) - A) ("rounded"); 3: key-mean offsets dj given. mj, lj, mean, offs: [R, nb] (column jj);
// pv: [O, nb, rows, dv] fp32 with R = O * rows; m, l, a, phi, down: [R] fp16 (down may be null);
// o_in, o_out: [R, dv] fp16 (the old and the new O). Nothing is written unless every result is free
// of NaN and every l and O finite (then -1 is returned: torch itself propagates NaN payloads
// differently in its vector and scalar loops, so that case is left to the caller's torch passes).
// Returns 1 if some row's l reached renorm_at (the caller renormalises), else 0.
// One row of the new O: fl(fl(O·α) + t), t = fl(fl(γ·fl(PV))·d) (d = 2^-t of the pow2 accumulators), in
// fp16. A factor that is exactly 1 is left out (A, G, D false): x·1 = x exactly, and in every row α or
// γ is 1 (whichever belongs to the maximum), d before any renormalisation. Returns whether a result is
// ±inf or NaN: iff |sum| >= 65520 (the midpoint of 65504 and 2^16 rounds to even: 2^16, inf) or NaN.
template <bool A, bool G, bool D>
static inline bool o_row(const float* src, const uint16_t* oi, uint16_t* oo, int64_t dv, float alpha, float gamma,
                         float d) {
  int64_t i = 0;
  bool bad = false;
#ifdef __AVX512F__
  {
    const __m512 va = _mm512_set1_ps(alpha), vg = _mm512_set1_ps(gamma), vd = _mm512_set1_ps(d);
    const __m512 lim = _mm512_set1_ps(65520.0f);
    __mmask16 k = 0;
    for (; i + 16 <= dv; i += 16) {
      __m512 t = r16z(_mm512_loadu_ps(src + i));
      if (G) t = r16z(_mm512_mul_ps(vg, t));
      if (D) t = r16z(_mm512_mul_ps(t, vd));
      __m512 xo = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(oi + i)));
      if (A) xo = r16z(_mm512_mul_ps(xo, va));
      const __m512 sum = _mm512_add_ps(xo, t);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(oo + i), _mm512_cvtps_ph(sum, RNE));
      k |= _mm512_cmp_ps_mask(_mm512_abs_ps(sum), lim, _CMP_NLT_UQ);
    }
    bad = k != 0;
  }
#endif
  const __m256 va = _mm256_set1_ps(alpha), vg = _mm256_set1_ps(gamma), vd = _mm256_set1_ps(d);
  const __m256 lim = _mm256_set1_ps(65520.0f);
  const __m256 vabs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 vbad = _mm256_setzero_ps();
  for (; i + 8 <= dv; i += 8) {
    __m256 t = r16v(_mm256_loadu_ps(src + i));
    if (G) t = r16v(_mm256_mul_ps(vg, t));
    if (D) t = r16v(_mm256_mul_ps(t, vd));
    __m256 xo = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(oi + i)));
    if (A) xo = r16v(_mm256_mul_ps(xo, va));
    const __m256 sum = _mm256_add_ps(xo, t);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(oo + i), _mm256_cvtps_ph(sum, RNE));
    vbad = _mm256_or_ps(vbad, _mm256_cmp_ps(_mm256_and_ps(sum, vabs), lim, _CMP_NLT_UQ));
  }
  bad |= _mm256_movemask_ps(vbad) != 0;
  for (; i < dv; ++i) {
    float t = r16(src[i]);
    if (G) t = r16(gamma * t);
    if (D) t = r16(t * d);
    float xo = h2f(oi[i]);
    if (A) xo = r16(xo * alpha);
    const float v = r16(xo + t);
    oo[i] = f2h(v);
    bad |= !std::isfinite(v);
  }
  return bad;
}

static int step(int64_t O, int64_t rows, int64_t nb, int64_t jj, int64_t dv, int mode, int first, int masked,
                const uint16_t* mj, const uint16_t* lj, const float* mean, const uint16_t* offs, uint16_t c16,
                uint16_t recenter16, const float* lut, uint16_t* m, uint16_t* l, uint16_t* a, uint16_t* phi,
                const uint16_t* down, const uint16_t* o_in, uint16_t* o_out, const float* pv, float renorm_at,
                float* work) {
  const float c = h2f(c16), rc = h2f(recenter16);
  const int64_t R = O * rows;
  float* al = work;          // alpha
  float* ga = work + R;      // gamma
  float* nm = work + 2 * R;  // new m, l, a, phi
  float* nl = work + 3 * R;
  float* na = work + 4 * R;
  float* np = work + 5 * R;
  int big = 0;
  bool bad = false;
  int64_t row = 0;
  // eight rows at a time: the scalar loop below, operation for operation, in vector lanes (a branch
  // becomes a blend of both results)
  {
    const __m256 vc = _mm256_set1_ps(c), vrc = _mm256_set1_ps(rc), zero = _mm256_setzero_ps();
    const __m256 ninf = _mm256_set1_ps(-INFINITY), inf = _mm256_set1_ps(INFINITY);
    const __m256 sign = _mm256_set1_ps(-0.0f), vren = _mm256_set1_ps(renorm_at);
    const __m256 vabs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256 vbad = zero, vbig = zero;
    auto h8 = [](const uint16_t* p, int64_t stride) {  // eight fp16 values, stride apart, widened
      alignas(16) uint16_t t[8];
      for (int k = 0; k < 8; ++k) t[k] = p[k * stride];
      return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(t)));
    };
    auto nonfinite = [&](__m256 v) { return _mm256_cmp_ps(_mm256_and_ps(v, vabs), inf, _CMP_NLT_UQ); };
    for (; row + 8 <= R; row += 8) {
      const int64_t at = row * nb + jj;
      const __m256 mjv = h8(mj + at, nb), mv = h8(m + row, 1);
      __m256 x = r16v(_mm256_sub_ps(mjv, mv));
      __m256 dj = zero, av = zero, ph = zero;
      if (mode == 1 || mode == 2) {
        alignas(32) float mt[8];
        for (int k = 0; k < 8; ++k) mt[k] = mean[at + k * nb];
        const __m256 me = _mm256_load_ps(mt);
        av = first ? r16v(me) : h8(a + row, 1);
        const __m256 e = mode == 1 ? r16v(_mm256_sub_ps(me, av)) : r16v(_mm256_sub_ps(r16v(me), av));
        dj = r16v(_mm256_mul_ps(e, vc));
        ph = first ? zero : h8(phi + row, 1);
        if (!first) {
          const __m256 far = _mm256_cmp_ps(_mm256_and_ps(dj, vabs), vrc, _CMP_GT_OQ);
          if (_mm256_movemask_ps(far) != 0) {  // re-centre A on this block's mean
            const __m256 an = r16v(_mm256_add_ps(av, e));
            const __m256 delta = r16v(_mm256_sub_ps(an, av));
            const __m256 dj2 = r16v(_mm256_mul_ps(r16v(_mm256_sub_ps(e, delta)), vc));
            const __m256 ph2 = r16v(_mm256_sub_ps(ph, r16v(_mm256_mul_ps(delta, vc))));
            dj = _mm256_blendv_ps(dj, dj2, far);
            ph = _mm256_blendv_ps(ph, ph2, far);
            av = _mm256_blendv_ps(av, an, far);
          }
        }
        x = r16v(_mm256_add_ps(x, r16v(_mm256_sub_ps(dj, ph))));
      } else if (mode == 3) {
        dj = h8(offs + at, nb);
        ph = first ? zero : h8(phi + row, 1);
        x = r16v(_mm256_add_ps(x, r16v(_mm256_sub_ps(dj, ph))));
      }
      if (masked) x = _mm256_blendv_ps(x, ninf, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
      const __m256 take = _mm256_cmp_ps(x, zero, _CMP_GT_OQ);
      const __m256 nx = _mm256_xor_ps(x, sign);
      const __m256 alpha = lut8(lut, _mm256_blendv_ps(nx, zero, _mm256_cmp_ps(nx, zero, _CMP_GT_OQ)));
      const __m256 gamma = lut8(lut, _mm256_blendv_ps(x, zero, take));
      __m256 lin = r16v(_mm256_mul_ps(gamma, h8(lj + at, nb)));
      if (down) lin = r16v(_mm256_mul_ps(lin, h8(down + row, 1)));
      const __m256 lv = r16v(_mm256_add_ps(r16v(_mm256_mul_ps(alpha, h8(l + row, 1))), lin));
      if (mode != 0) ph = _mm256_blendv_ps(ph, dj, take);
      __m256 b = _mm256_or_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q), _mm256_cmp_ps(dj, dj, _CMP_UNORD_Q));
      b = _mm256_or_ps(b, _mm256_or_ps(_mm256_cmp_ps(av, av, _CMP_UNORD_Q), _mm256_cmp_ps(ph, ph, _CMP_UNORD_Q)));
      b = _mm256_or_ps(b, _mm256_or_ps(nonfinite(alpha), _mm256_or_ps(nonfinite(gamma), nonfinite(lv))));
      vbad = _mm256_or_ps(vbad, b);
      _mm256_storeu_ps(al + row, alpha);
      _mm256_storeu_ps(ga + row, gamma);
      _mm256_storeu_ps(nm + row, _mm256_blendv_ps(mv, mjv, take));
      _mm256_storeu_ps(nl + row, lv);
      _mm256_storeu_ps(na + row, av);
      _mm256_storeu_ps(np + row, ph);
      vbig = _mm256_or_ps(vbig, _mm256_cmp_ps(lv, vren, _CMP_GE_OQ));
    }
    bad |= _mm256_movemask_ps(vbad) != 0;
    big |= _mm256_movemask_ps(vbig) != 0;
  }
  for (; row < R; ++row) {
    const int64_t at = row * nb + jj;
    const float mjv = h2f(mj[at]);
    float x = r16(mjv - h2f(m[row]));
    float dj = 0.0f, av = 0.0f, ph = 0.0f;
    if (mode == 1 || mode == 2) {
      av = first ? r16(mean[at]) : h2f(a[row]);
      const float e = mode == 1 ? r16(mean[at] - av) : r16(r16(mean[at]) - av);
      dj = r16(e * c);
      ph = first ? 0.0f : h2f(phi[row]);
      if (!first && std::fabs(dj) > rc) {  // re-centre A on this block's mean
        const float an = r16(av + e);
        const float delta = r16(an - av);
        dj = r16(r16(e - delta) * c);
        ph = r16(ph - r16(delta * c));
        av = an;
      }
      x = r16(x + r16(dj - ph));
    } else if (mode == 3) {
      dj = h2f(offs[at]);
      ph = first ? 0.0f : h2f(phi[row]);
      x = r16(x + r16(dj - ph));
    }
    if (masked && x != x) x = -INFINITY;  // both -inf: nothing seen yet, nothing new
    const bool take = x > 0.0f;
    const float nx = -x;
    const float alpha = lut[f2h(nx > 0.0f ? 0.0f : nx)];  // clamp(max=0)
    const float gamma = lut[f2h(x > 0.0f ? 0.0f : x)];
    float lin = r16(gamma * h2f(lj[at]));
    if (down) lin = r16(lin * h2f(down[row]));
    const float lv = r16(r16(alpha * h2f(l[row])) + lin);
    if (take && mode != 0) ph = dj;
    bad |= (x != x) || (dj != dj) || (av != av) || (ph != ph) || !std::isfinite(alpha) || !std::isfinite(gamma) ||
           !std::isfinite(lv);
    al[row] = alpha;
    ga[row] = gamma;
    nm[row] = take ? mjv : h2f(m[row]);
    nl[row] = lv;
    na[row] = av;
    np[row] = ph;
    big |= lv >= renorm_at;
  }
  if (bad) return -1;
  for (int64_t b = 0; b < O; ++b)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t row = b * rows + r;
      const float* src = pv + ((b * nb + jj) * rows + r) * dv;
      const uint16_t* oi = o_in + row * dv;
      uint16_t* oo = o_out + row * dv;
      const float alpha = al[row], gamma = ga[row], d = down ? h2f(down[row]) : 1.0f;
      switch ((alpha != 1.0f) * 4 + (gamma != 1.0f) * 2 + (d != 1.0f)) {
        case 0: bad |= o_row<false, false, false>(src, oi, oo, dv, alpha, gamma, d); break;
        case 1: bad |= o_row<false, false, true>(src, oi, oo, dv, alpha, gamma, d); break;
        case 2: bad |= o_row<false, true, false>(src, oi, oo, dv, alpha, gamma, d); break;
        case 3: bad |= o_row<false, true, true>(src, oi, oo, dv, alpha, gamma, d); break;
        case 4: bad |= o_row<true, false, false>(src, oi, oo, dv, alpha, gamma, d); break;
        case 5: bad |= o_row<true, false, true>(src, oi, oo, dv, alpha, gamma, d); break;
        case 6: bad |= o_row<true, true, false>(src, oi, oo, dv, alpha, gamma, d); break;
        default: bad |= o_row<true, true, true>(src, oi, oo, dv, alpha, gamma, d); break;
      }
    }
  if (bad) return -1;
  for (int64_t row = 0; row < R; ++row) {
    m[row] = f2h(nm[row]);
    l[row] = f2h(nl[row]);
    if (mode != 0) phi[row] = f2h(np[row]);
    if (mode == 1 || mode == 2) a[row] = f2h(na[row]);
  }
  return big;
}

// the Fortran BLAS sgemm (column-major), as torch's at::native::cpublas::gemm calls it for fp32
typedef void (*sgemm_fn)(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                         const int*, const float*, const int*, const float*, float*, const int*);

// row-major C (M x N, leading dimension N) = A (M x K, row-major, lda) · B, where B is (K x N) row-major
// (ldb) or, with bt, the transpose of a row-major (N x K) matrix: torch.matmul's call for these layouts
// (the column-major product C^T = op(B)^T · A^T, beta = 0)
static void gemm_rm(sgemm_fn f, int bt, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                    const float* B, int64_t ldb, float* C) {
  const char ta = bt ? 'T' : 'N', tb = 'N';
  const int m = (int)N, n = (int)M, k = (int)K, la = (int)ldb, lb = (int)lda, lc = (int)N;
  const float one = 1.0f, zero = 0.0f;
  f(&ta, &tb, &m, &n, &k, &one, B, &la, A, &lb, &zero, C, &lc);
}

extern "C" {

int pasa_step(int64_t O, int64_t rows, int64_t nb, int64_t jj, int64_t dv, int mode, int first, int masked,
              const uint16_t* mj, const uint16_t* lj, const float* mean, const uint16_t* offs, uint16_t c16,
              uint16_t recenter16, const float* lut, uint16_t* m, uint16_t* l, uint16_t* a, uint16_t* phi,
              const uint16_t* down, const uint16_t* o_in, uint16_t* o_out, const float* pv, float renorm_at,
              float* work) {
  return step(O, rows, nb, jj, dv, mode, first, masked, mj, lj, mean, offs, c16, recenter16, lut, m, l, a, phi, down,
              o_in, o_out, pv, renorm_at, work);
}

// the product of gemm_rm alone (for the probe against torch.matmul)
// (the rows in pieces of `chunk`, as pasa_tile makes them)
void pasa_gemm(void* f, int bt, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
               int64_t ldb, float* C, int64_t chunk) {
  for (int64_t r0 = 0; r0 < M; r0 += chunk)
    gemm_rm((sgemm_fn)f, bt, std::min(chunk, M - r0), N, K, A + r0 * lda, lda, B, ldb, C + r0 * N);
}

// One tile of one KV block for every (batch, KV head) group g < G, the loop of pasa_npu.kernel's
// _FusedTiles.tile with nb = 1 in one call: S = Q_g·K_g^T (sgemm), the score chain, P·V_g (sgemm), the
// step; each group's rows in pieces of `chunk` rows (so that a piece's S, P and P·V stay in the core's
// L2 cache; rows are independent in every pass, and a product's rows are the bits of the whole
// product, checked by the probe). dims: G, rows, D, Dv, n, kt_stride, v_stride, tail, causal, q0, qr,
// see, mode, first, masked, want_mean, lanes, pairing, chunk. q: (G, rows, D); kt: the block's first
// key row of group 0 (groups kt_stride apart, rows D apart); v: the block's (n, Dv) of group 0 (groups
// v_stride apart). State m, l, a, phi: (G * rows) fp16, o_in/o_out (G * rows, Dv). bufs: S (chunk *
// n), P (chunk * n), PV (chunk * Dv), mean (chunk) fp32; work: 6 * chunk floats + 4 * G * rows halves;
// mj, lj: chunk halves. If a score is not finite (2) or a step's result is NaN or not finite (-1), m,
// l, a, phi are restored to their values before the call (o_in is never written) and that code is
// returned; else 1 if some l reached renorm_at, 0 if none.
int pasa_tile(void* f, const int64_t* dims, float tau, uint16_t c16, uint16_t recenter16, float renorm_at,
              const float* lut, const float* q, const float* kt, const float* v, uint16_t* m, uint16_t* l,
              uint16_t* a, uint16_t* phi, const uint16_t* down, const uint16_t* o_in, uint16_t* o_out,
              float* s_buf, float* p_buf, float* pv_buf, float* mean, uint16_t* mj, uint16_t* lj, float* work) {
  const int64_t G = dims[0], rows = dims[1], D = dims[2], Dv = dims[3], n = dims[4], kt_stride = dims[5],
                v_stride = dims[6], tail = dims[7], causal = dims[8], q0 = dims[9], qr = dims[10], see = dims[11];
  const int mode = (int)dims[12], first = (int)dims[13], masked = (int)dims[14], want_mean = (int)dims[15];
  const int lanes = (int)dims[16], pairing = (int)dims[17];
  const int64_t chunk = dims[18];
  const int64_t R = G * rows;
  uint16_t* saved = reinterpret_cast<uint16_t*>(work + 6 * chunk);
  uint16_t* st[4] = {m, l, a, phi};
  for (int k = 0; k < 4; ++k)
    if (st[k]) std::memcpy(saved + k * R, st[k], R * sizeof(uint16_t));
  int big = 0, rc = 0;
  for (int64_t g = 0; g < G && rc >= 0 && rc != 2; ++g)
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int64_t rr = std::min(chunk, rows - r0), o = g * rows + r0;
      gemm_rm((sgemm_fn)f, 1, rr, n, D, q + o * D, D, kt + g * kt_stride, D, s_buf);
      rc = lanes == 16 ? chain<16>(s_buf, 1, rr, 1, n, tau, want_mean, masked, lut, mean, mj, lj, p_buf, pairing,
                                   tail, (int)causal, q0, qr, see, r0)
                       : chain<8>(s_buf, 1, rr, 1, n, tau, want_mean, masked, lut, mean, mj, lj, p_buf, pairing,
                                  tail, (int)causal, q0, qr, see, r0);
      if (rc != 0) break;
      gemm_rm((sgemm_fn)f, 0, rr, Dv, n, p_buf, n, v + g * v_stride, Dv, pv_buf);
      rc = step(1, rr, 1, 0, Dv, mode, first, masked, mj, lj, mean, nullptr, c16, recenter16, lut, m + o, l + o,
                a ? a + o : nullptr, phi ? phi + o : nullptr, down ? down + o : nullptr, o_in + o * Dv,
                o_out + o * Dv, pv_buf, renorm_at, work);
      if (rc < 0) break;
      big |= rc == 1;
    }
  if (rc < 0 || rc == 2) {
    for (int k = 0; k < 4; ++k)
      if (st[k]) std::memcpy(st[k], saved + k * R, R * sizeof(uint16_t));
    return rc;
  }
  return big;
}

// row sums of a contiguous (rows, n) tensor, as torch's x.sum(-1) adds them (for the probe)
void pasa_sum_f32_rows(const float* x, int64_t rows, int64_t n, int lanes, float* out) {
  for (int64_t r = 0; r < rows; ++r) out[r] = lanes == 16 ? sum_f32<16>(x + r * n, n) : sum_f32<8>(x + r * n, n);
}

// the same for fp16 values (bit patterns), rounded to fp16
void pasa_sum_f16_rows(const uint16_t* x, int64_t rows, int64_t n, int lanes, int pairing, uint16_t* out) {
  std::vector<float> w(n);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < n; ++i) w[i] = h2f(x[r * n + i]);
    out[r] = f2h(lanes == 16 ? sum_f16<16>(w.data(), n, pairing) : sum_f16<8>(w.data(), n, pairing));
  }
}

}  // extern "C"
"""

_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC", "-std=c++17"]

_lock = threading.Lock()
_state: dict = {}


def _cache_dir() -> Path:
    root = os.environ.get("PASA_NPU_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pasa_npu"


def _compiler() -> str | None:
    cxx = os.environ.get("CXX") or "g++"
    return shutil.which(cxx)


def _build() -> Path:
    """Compile the library (once; cached by a hash of source, flags, compiler and machine)."""
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (set CXX or install g++)")
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    key = hashlib.sha256(
        "\0".join([_SOURCE, " ".join(_FLAGS), version, platform.machine(), _cpu_id()]).encode()
    ).hexdigest()[:16]
    cache = _cache_dir()
    lib = cache / f"libpasa_fused-{key}.so"
    if lib.exists():
        return lib
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        src = Path(tmp) / "pasa_fused.cpp"
        src.write_text(_SOURCE)
        out = Path(tmp) / lib.name
        proc = subprocess.run(
            [cxx, *_FLAGS, str(src), "-o", str(out)], capture_output=True, text=True, timeout=300
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{cxx} failed: {proc.stderr.strip()[-500:]}")
        os.replace(out, lib)  # atomic: concurrent builders leave one complete file
    return lib


def _cpu_id() -> str:
    """The CPU model and flags (-march=native code runs only where it was built)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor()


_P = ctypes.c_void_p
_I = ctypes.c_int64


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.pasa_fused_version.restype = ctypes.c_int
    lib.pasa_chain.restype = ctypes.c_int
    lib.pasa_chain.argtypes = [_P, _I, _I, _I, _I, ctypes.c_float, ctypes.c_int, ctypes.c_int, _P, _P, _P, _P]
    lib.pasa_chain.argtypes += [_P, ctypes.c_int, ctypes.c_int, _I, ctypes.c_int, _I, _I, _I]
    lib.pasa_step.restype = ctypes.c_int
    lib.pasa_step.argtypes = [_I, _I, _I, _I, _I, ctypes.c_int, ctypes.c_int, ctypes.c_int, _P, _P, _P, _P]
    lib.pasa_step.argtypes += [ctypes.c_uint16, ctypes.c_uint16, _P, _P, _P, _P, _P, _P, _P, _P, _P]
    lib.pasa_step.argtypes += [ctypes.c_float, _P]
    lib.pasa_gemm.restype = None
    lib.pasa_gemm.argtypes = [_P, ctypes.c_int, _I, _I, _I, _P, _I, _P, _I, _P, _I]
    lib.pasa_tile.restype = ctypes.c_int
    lib.pasa_tile.argtypes = [_P, _P, ctypes.c_float, ctypes.c_uint16, ctypes.c_uint16, ctypes.c_float]
    lib.pasa_tile.argtypes += [_P] * 18
    lib.pasa_sum_f32_rows.restype = None
    lib.pasa_sum_f32_rows.argtypes = [_P, _I, _I, ctypes.c_int, _P]
    lib.pasa_sum_f16_rows.restype = None
    lib.pasa_sum_f16_rows.argtypes = [_P, _I, _I, ctypes.c_int, ctypes.c_int, _P]
    return lib


def _exp_table() -> torch.Tensor:
    """torch's fp16 exp of every fp16 bit pattern, widened to fp32 (exactly), indexed by the pattern."""
    pats = torch.arange(1 << 16, dtype=torch.int32)
    x = torch.where(pats >= 1 << 15, pats - (1 << 16), pats).to(torch.int16).view(torch.float16)
    return torch.exp(x).float().contiguous()


_PROBE_LENGTHS = (1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 128, 200, 256, 1024, 4100)


def _probe(lib: ctypes.CDLL) -> tuple[int, int]:
    """The lane width and fp16 lane pairing under which the library's row sums equal torch's (fp32
    and fp16) on seeded rows of many lengths with entries spread over fp16's whole exponent range
    (so that the order of the additions shows in the result); raises unless exactly one does."""
    g = torch.Generator().manual_seed(20261130)
    cases = []
    for n in _PROBE_LENGTHS:
        rows = max(64, (1 << 20) // n)
        e = torch.randint(-24, 15, (rows, n), generator=g).float()
        x = (torch.rand(rows, n, generator=g) + 1) * torch.exp2(e) * torch.randn(rows, n, generator=g).sign()
        h = x.to(torch.float16)
        cases.append((x, x.sum(-1), h, h.sum(-1)))
    found = []
    for lanes in (16, 8):
        for pairing in (0, 1):
            ok = True
            for x, want32, h, want16 in cases:
                rows, n = x.shape
                got32 = torch.empty(rows, dtype=torch.float32)
                lib.pasa_sum_f32_rows(x.data_ptr(), rows, n, lanes, got32.data_ptr())
                got16 = torch.empty(rows, dtype=torch.float16)
                lib.pasa_sum_f16_rows(h.data_ptr(), rows, n, lanes, pairing, got16.data_ptr())
                same32 = torch.equal(got32.view(torch.int32), want32.view(torch.int32))
                if not (same32 and torch.equal(got16.view(torch.int16), want16.view(torch.int16))):
                    ok = False
                    break
            if ok:
                found.append((lanes, pairing))
    if len(found) != 1:
        raise RuntimeError(f"torch's row-sum order not identified (lanes, pairing matching: {found})")
    return found[0]


@functools.lru_cache(maxsize=64)
def _bits16_of(value: float) -> int:
    return int(torch.tensor(value, dtype=torch.float16).view(torch.int16).item()) & 0xFFFF


def _bits16(t: torch.Tensor) -> int:
    """The fp16 bit pattern of a 0-dim fp16 tensor (memoised by value: constants of a call)."""
    return _bits16_of(float(t))


def _probed(lib: ctypes.CDLL, path: Path) -> tuple[int, int]:
    """:func:`_probe`, its result kept next to the library for this torch build and CPU capability
    (the probe sums about 20 million numbers: seconds, once per machine and torch instead of once per
    process)."""
    key = f"{torch.__version__} {torch.backends.cpu.get_cpu_capability()} {torch.__file__}"
    memo = path.with_suffix(".probe")
    try:
        stored_key, lanes, pairing = memo.read_text().rsplit(" ", 2)
        if stored_key == key:
            return int(lanes), int(pairing)
    except (OSError, ValueError):
        pass
    lanes, pairing = _probe(lib)
    tmp = memo.with_suffix(f".{os.getpid()}.tmp")
    try:
        tmp.write_text(f"{key} {lanes} {pairing}")
        os.replace(tmp, memo)
    except OSError:
        pass
    return lanes, pairing


def _sgemm() -> tuple[int | None, str]:
    """The address of the Fortran BLAS ``sgemm_`` in torch's CPU library (the routine torch's fp32
    CPU matmul ends in, MKL's in the usual builds), or None and why not."""
    path = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    try:
        fn = ctypes.CDLL(str(path)).sgemm_  # already loaded by torch: the same copy
    except (OSError, AttributeError) as exc:
        return None, f"no sgemm_ in {path.name} ({type(exc).__name__})"
    return ctypes.cast(fn, ctypes.c_void_p).value, f"sgemm_ of {path.name}"


def _wide_operands(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """fp16 values with exponents spread over 2^-8..2^8 (widened): in a sum of their products the
    order of the additions shows in the result."""
    e = torch.randint(-8, 9, shape, generator=g).float()
    return (torch.randn(shape, generator=g) * torch.exp2(e)).half().float()


CHUNK_ROWS = 1024  # rows of a piece of pasa_tile (bounds its buffers; 896 to 64 rows measured alike, docs)


class Backend:
    """The loaded library with the lane width and pairing of torch's sums and the exp table."""

    def __init__(self, lib: ctypes.CDLL, lanes: int, pairing: int, path: Path) -> None:
        self.lib, self.lanes, self.pairing, self.path = lib, lanes, pairing, path
        self.lut = _exp_table()
        self._work: torch.Tensor | None = None
        self.sgemm, self.gemm_reason = _sgemm()
        self._gemm_ok: dict[tuple, bool] = {}
        self.chunk_rows = int(os.environ.get("PASA_FUSED_CHUNK", CHUNK_ROWS))

    def gemm_matches(self, rows: int, n: int, d: int, dv: int, chunk: int) -> bool:
        """Whether the library's two products (``pasa_gemm``: S = Q·Kᵀ, rows × n × d, and P·V, rows × dv
        × n, each made in pieces of ``chunk`` rows as ``pasa_tile`` makes them) give the bits of the
        whole torch.matmul calls of :class:`pasa_npu.kernel._FusedTiles` on seeded operands of these
        shapes (fp16 values with exponents over 2^±8, so that the order of the sums shows), under
        torch's current thread count and fp32 matmul precision; probed once per shape and setting
        (two products of each kind: microseconds to milliseconds)."""
        if self.sgemm is None:
            return False
        key = (rows, n, d, dv, chunk, torch.get_num_threads(), torch.get_float32_matmul_precision())
        ok = self._gemm_ok.get(key)
        if ok is None:
            ok = self._gemm_ok[key] = self._gemm_probe(rows, n, d, dv, chunk)
        return ok

    def _gemm_probe(self, rows: int, n: int, d: int, dv: int, chunk: int) -> bool:
        g = torch.Generator().manual_seed(20261130 + rows * 7919 + n * 104729 + d * 13 + dv)
        q, kt = _wide_operands((1, rows, d), g), _wide_operands((1, 2 * n, d), g)
        p, v = _wide_operands((1, 1, rows, n), g), _wide_operands((1, 2, n, dv), g)
        want_s = torch.matmul(q, kt[:, n:].transpose(-1, -2), out=torch.empty(1, rows, n))
        want_pv = torch.matmul(p, v[:, 1:], out=torch.empty(1, 1, rows, dv))
        got_s, got_pv = torch.empty(rows, n), torch.empty(rows, dv)
        args = (q.data_ptr(), d, kt[0, n:].data_ptr(), d, got_s.data_ptr(), chunk)
        self.lib.pasa_gemm(self.sgemm, 1, rows, n, d, *args)
        args = (p.data_ptr(), n, v[0, 1].data_ptr(), dv, got_pv.data_ptr(), chunk)
        self.lib.pasa_gemm(self.sgemm, 0, rows, dv, n, *args)
        return torch.equal(got_s.view(torch.int32), want_s[0].view(torch.int32)) and torch.equal(
            got_pv.view(torch.int32), want_pv[0, 0].view(torch.int32)
        )

    def chunk(self, rows: int) -> int:
        """The rows of a piece of ``pasa_tile``: ``chunk_rows`` (``$PASA_FUSED_CHUNK`` when loaded,
        default :data:`CHUNK_ROWS`) or fewer."""
        return max(1, min(rows, self.chunk_rows))

    def tile(
        self,
        dims: list[int],
        consts: tuple[float, int, int, float],
        q: torch.Tensor,
        kt_ptr: int,
        v_ptr: int,
        state: tuple[torch.Tensor | None, ...],
        o: tuple[torch.Tensor, torch.Tensor],
        bufs: tuple[torch.Tensor, ...],
    ) -> int:
        """One KV block of a tile for all its (batch, KV head) groups in one call (``pasa_tile`` in the
        source: both products by torch's sgemm, the score chain and the step per group). ``dims``: the
        18 integers ``pasa_tile`` documents; ``consts``: (τ or 0, c and recenter_at as fp16 bits,
        renorm_at); ``state``: (m, ℓ, A, φ, 2^−t) fp16 (contiguous; A, φ, 2^−t may be None), m, ℓ, A, φ
        updated in place; O read from ``o[0]``, written to ``o[1]``; ``bufs``: S, P, P·V, means (fp32),
        m_j, ℓ_j (fp16), work (fp32). Returns 1 if some ℓ reached renorm_at, 0, or 2 (a score not finite)
        or −1 (a result NaN or not finite): then m, ℓ, A, φ are as before the call."""
        tau, c16, rc16, renorm_at = consts

        def ptr(t: torch.Tensor | None) -> int | None:
            return None if t is None else t.data_ptr()

        return self.lib.pasa_tile(
            self.sgemm,
            (ctypes.c_int64 * 19)(*dims),
            tau,
            c16,
            rc16,
            renorm_at,
            self.lut.data_ptr(),
            q.data_ptr(),
            kt_ptr,
            v_ptr,
            *(ptr(t) for t in state),
            o[0].data_ptr(),
            o[1].data_ptr(),
            *(t.data_ptr() for t in bufs),
        )

    def chain(
        self,
        s_acc: torch.Tensor,
        shape: tuple[int, int, int, int, int],
        tau: float | None,
        want_mean: bool,
        masked: bool,
        p_acc: torch.Tensor,
        out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        tail: int | None = None,
        causal: tuple[int, int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
        """Steps a–d of one unmasked tile: from the fp32 accumulator tile ``s_acc`` (B, Hkv, rows,
        nb·n; left unchanged) to the row maxima m_j and row sums ℓ_j (fp16, (B, Hkv, rows, nb, 1)), the
        block row means (fp32, the same shape; if ``want_mean``) and P in ``p_acc`` (fp32, (B, Hkv,
        nb, rows, n)); ``tau``: the softmax scale applied to the rounded scores (``scale="scores"``).
        None if a rounded score is ±inf or NaN (the caller's torch passes then take the tile).
        ``out``: (m_j, ℓ_j, means) tensors to write into (contiguous, of those shapes and dtypes).
        Masks (−inf, after the means): ``tail`` valid columns of the tile's last block (padded keys);
        ``causal`` = (q0, r, see): row ρ is query q0 + ρ mod r, which sees the tile's column c iff
        c <= query + see."""
        B, Hkv, rows, nb, n = shape
        if not (s_acc.is_contiguous() and p_acc.is_contiguous()):
            return None
        stat = (B, Hkv, rows, nb, 1)
        if out is None:
            out = (
                torch.empty(stat, dtype=torch.float16),
                torch.empty(stat, dtype=torch.float16),
                torch.empty(stat, dtype=torch.float32),
            )
        mj, lj, mean_buf = out
        mean = mean_buf if want_mean else None
        rc = self.lib.pasa_chain(
            s_acc.data_ptr(),
            B * Hkv,
            rows,
            nb,
            n,
            0.0 if tau is None else tau,
            int(want_mean),
            int(masked),
            self.lut.data_ptr(),
            None if mean is None else mean.data_ptr(),
            mj.data_ptr(),
            lj.data_ptr(),
            p_acc.data_ptr(),
            self.lanes,
            self.pairing,
            n if tail is None else tail,
            int(causal is not None),
            *(causal if causal is not None else (0, 1, 0)),
        )
        if rc == 2:
            return None
        if rc != 0:
            raise RuntimeError(f"pasa_chain failed ({rc})")
        return mj, lj, mean

    def step(
        self,
        mode: int,
        first: bool,
        masked: bool,
        jj: int,
        tile: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor],
        consts: tuple[torch.Tensor | None, torch.Tensor, float],
        state: tuple[torch.Tensor, ...],
        down: torch.Tensor | None,
        o_in: torch.Tensor,
        o_out: torch.Tensor,
    ) -> int:
        """Block ``jj`` of a tile folded into the running state of every row (``pasa_step`` in the
        source). ``mode``: 0 no shift, 1/2 pseudo-average offsets (``"centered"``/``"rounded"``), 3 key
        offsets. ``tile``: (m_j, ℓ_j, block means or offsets, P·V in the accumulator (B, Hkv, nb,
        rows, dv), or without B); ``consts``: (c, recenter_at, renorm_at); ``state``: (m, ℓ, A, φ) fp16 (B, Hkv,
        rows, 1), updated in place (A, φ unused for mode 0); O is read from ``o_in`` and written to
        ``o_out``. Returns 1 if some ℓ reached renorm_at, 0, or −1 if a result is NaN or ℓ or O is not
        finite: then nothing is written and the caller's torch passes take the block."""
        mj, lj, stat, pv = tile
        c, recenter, renorm_at = consts
        m, lsum, a, phi = state
        *lead, nb, rows, dv = pv.shape
        outer = math.prod(lead)
        ts = (mj, lj, stat, pv, m, lsum, a, phi, down, o_in, o_out)
        if not all(t is None or t.is_contiguous() for t in ts):
            return -1
        R = outer * rows
        if self._work is None or self._work.numel() < 6 * R:
            self._work = torch.empty(6 * R, dtype=torch.float32)

        def ptr(t: torch.Tensor | None) -> int | None:
            return None if t is None else t.data_ptr()

        return self.lib.pasa_step(
            outer,
            rows,
            nb,
            jj,
            dv,
            mode,
            int(first),
            int(masked),
            mj.data_ptr(),
            lj.data_ptr(),
            ptr(stat) if mode in (1, 2) else None,
            ptr(stat) if mode == 3 else None,
            0 if c is None else _bits16(c),
            _bits16(recenter),
            self.lut.data_ptr(),
            m.data_ptr(),
            lsum.data_ptr(),
            ptr(a),
            ptr(phi),
            ptr(down),
            o_in.data_ptr(),
            o_out.data_ptr(),
            pv.data_ptr(),
            renorm_at,
            self._work.data_ptr(),
        )


def _init() -> None:
    if os.environ.get("PASA_FUSED", "1").strip().lower() in ("0", "false", "no", "off"):
        _state.update(backend=None, reason="disabled by PASA_FUSED=0")
        return
    try:
        path = _build()
        lib = _load(path)
        lanes, pairing = _probed(lib, path)
        reason = f"{lanes}-lane sums, {path.name}"
        backend = Backend(lib, lanes, pairing, path)
        _state.update(backend=backend, reason=reason)
    except Exception as exc:  # any failure: the eager passes run, and say why
        _state.update(backend=None, reason=f"{type(exc).__name__}: {exc}", direct=False)
        return
    if os.environ.get("PASA_FUSED_DIRECT", "1").strip().lower() in ("0", "false", "no", "off"):
        _state.update(direct=False, direct_reason="tile loop in Python: PASA_FUSED_DIRECT=0")
    elif backend.sgemm is None:
        _state.update(direct=False, direct_reason=f"tile loop in Python: {backend.gemm_reason}")
    elif not backend.gemm_matches(*_REFERENCE_GEMM, backend.chunk(_REFERENCE_GEMM[0])):
        # the load-time probe at the reference shape; every other shape is probed on first use
        _state.update(
            direct=False,
            direct_reason=f"tile loop in Python: {backend.gemm_reason} differs from torch.matmul",
        )
    else:
        _state.update(direct=True, direct_reason=f"tile loop in C, products by {backend.gemm_reason}")


_REFERENCE_GEMM = (896, 128, 128, 128)  # rows = 7 query heads x 128 queries, block_kv, head_dim, v_dim


def direct() -> bool:
    """Whether tiles of one KV block run in one C call (``pasa_tile``: both products by torch's own
    sgemm, bit-identical to torch.matmul by a probe per shape) rather than the Python tile loop."""
    return get_backend() is not None and bool(_state.get("direct"))


def applies(prec, device: torch.device, census) -> bool:
    """Whether the fused passes model this call's roundings: fp16 operands, matrix-unit output and
    vector unit, an fp32 accumulator, ``reduce="acc"``, a CPU device, no census (it records the
    intermediate tiles the fused passes never form)."""
    f16 = torch.float16
    return (
        device.type == "cpu"
        and census is None
        and prec.vector == f16
        and prec.matmul_out == f16
        and prec.matmul_in == f16
        and prec.matmul_acc == torch.float32
        and prec.reduce == "acc"
    )


def get_backend() -> Backend | None:
    """The loaded fused backend, or None (built and probed on first use)."""
    if "backend" not in _state:
        with _lock:
            if "backend" not in _state:
                _init()
    return _state["backend"]


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the eager torch passes inside the block (for comparisons; not thread-safe)."""
    get_backend()
    saved = dict(_state)
    _state.update(backend=None, reason="disabled for this block")
    try:
        yield
    finally:
        _state.clear()
        _state.update(saved)


@contextlib.contextmanager
def python_loop() -> Iterator[None]:
    """Run the fused passes from the Python tile loop inside the block (torch.matmul, one C call per
    pass; for comparisons; not thread-safe)."""
    get_backend()
    saved = dict(_state)
    _state.update(direct=False, direct_reason="tile loop in Python: switched off for this block")
    try:
        yield
    finally:
        _state.clear()
        _state.update(saved)


def fused_backend() -> str:
    """Which backend runs the tile's vector passes where the fused one applies: ``"fused-cpp (…)"`` or
    ``"eager (reason)"``; for the fused one also whether a tile's KV block runs in one C call with
    torch's sgemm (``"tile loop in C"``) or from the Python loop, and why. Builds the library on first
    call (a few seconds, then cached)."""
    b = get_backend()
    if b is None:
        return f"eager ({_state['reason']})"
    return f"fused-cpp ({_state['reason']}; {_state['direct_reason']})"


if __name__ == "__main__":  # python -m pasa_npu._fused: build, probe and say which backend runs
    print(fused_backend())
    sys.exit(0)
