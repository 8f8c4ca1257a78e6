"""A bf16 attention kernel for CPUs with avx512_bf16 (the ViT's attention on the CPU default path).

PyTorch's CPU attention (`_scaled_dot_product_flash_attention_for_cpu`) runs no faster in bf16 than in
fp32 on CPUs without AMX: 50-58 ms per ViT-L/16 layer at 480x640 (1201 tokens, 16 heads, 2 threads),
30% of the bf16 frame. This kernel computes the same thing with the CPU's bf16 dot products
(vdpbf16ps): scores QK^T accumulated in fp32, softmax in fp32, probabilities rounded to bf16 for the
product with V (as the flash kernel does), fp32 accumulation: 24 ms per layer, same error against an
fp32 reference as the flash kernel (docs/performance.md).

It is C++ compiled on first use with the toolchain torch.compile also needs (g++, ninja; about 35 s,
cached in ~/.cache/torch_extensions afterwards), checked against `F.scaled_dot_product_attention` once,
and used only where it runs: a CPU with avx512_bf16, bf16 inputs, head dims that are multiples of 64,
no mask. Everything else, or a failed build (logged), takes timm's own attention.
"""
from __future__ import annotations

import functools
import logging
from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .devices import cpu_flags

log = logging.getLogger(__name__)

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <cmath>
#include <vector>

static inline __m512 exp512(__m512 x) {
  // exp(x) for x <= 0: 2^n * p(r), r = x - n ln2, |r| <= ln2/2; degree-6 polynomial (~2e-7 rel).
  const __m512 log2e = _mm512_set1_ps(1.44269504088896341f), ln2 = _mm512_set1_ps(0.693147180559945f);
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, ln2, x);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

constexpr int R = 4;  // rows per register block (x 64 columns: 16 accumulators)

// acc[i][c] = sum over j < n of the bf16-pair dot products a[i][j] . b[j * ldb + 16 c .. 16 c + 15]:
// R rows x 64 columns, fp32 accumulation (vdpbf16ps), the inner loop of both products.
static inline void pair_dots(__m512 acc[R][4], const uint32_t* const a[R], const uint32_t* b, int64_t ldb,
                             int64_t n) {
  for (int i = 0; i < R; ++i) for (int c = 0; c < 4; ++c) acc[i][c] = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; ++j) {
    __m512i bv[4];
    for (int c = 0; c < 4; ++c) bv[c] = _mm512_loadu_si512(b + j * ldb + c * 16);
    for (int i = 0; i < R; ++i) {
      __m512i av = _mm512_set1_epi32(a[i][j]);
      for (int c = 0; c < 4; ++c) acc[i][c] = _mm512_dpbf16_ps(acc[i][c], (__m512bh)av, (__m512bh)bv[c]);
    }
  }
}

// q, k, v: (B, H, T, D) bf16, any strides with the last dim contiguous, D % 64 == 0, D <= 256.
// Returns (B, T, H, D) bf16 (the layout the projection after attention reads).
torch::Tensor attention(torch::Tensor q, torch::Tensor k, torch::Tensor v, double scale) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  TORCH_CHECK(q.scalar_type() == at::kBFloat16 && k.scalar_type() == at::kBFloat16 && v.scalar_type() == at::kBFloat16);
  TORCH_CHECK(k.sizes() == q.sizes() && v.sizes() == q.sizes(), "q, k and v must have one (B, H, T, D) shape");
  TORCH_CHECK(D % 64 == 0 && D <= 256 && q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1);
  auto out = torch::empty({B, T, H, D}, q.options());
  const int64_t T64 = (T + 63) / 64 * 64, T2 = (T + 1) / 2;
  const int64_t DP = D / 2;
  // K packed as (B*H, D/2, T64) bf16 pairs along D, V as (B*H, ceil(T/2), D) pairs along T: the operand
  // layouts of vdpbf16ps (keys padded to a multiple of 64 with zeros, masked to -inf before the softmax)
  auto kp = torch::zeros({B * H, DP, T64}, torch::kInt32);
  auto vp = torch::zeros({B * H, T2, D}, torch::kInt32);
  const uint16_t* qd = reinterpret_cast<const uint16_t*>(q.data_ptr<at::BFloat16>());
  const uint16_t* kd = reinterpret_cast<const uint16_t*>(k.data_ptr<at::BFloat16>());
  const uint16_t* vd = reinterpret_cast<const uint16_t*>(v.data_ptr<at::BFloat16>());
  uint16_t* od = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  uint32_t* kpd = reinterpret_cast<uint32_t*>(kp.data_ptr<int32_t>());
  uint32_t* vpd = reinterpret_cast<uint32_t*>(vp.data_ptr<int32_t>());
  at::parallel_for(0, B * H, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t bh = lo; bh < hi; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const uint16_t* kb = kd + b * k.stride(0) + h * k.stride(1);
      const uint16_t* vb = vd + b * v.stride(0) + h * v.stride(1);
      uint32_t* kpb = kpd + bh * DP * T64;
      uint32_t* vpb = vpd + bh * T2 * D;
      for (int64_t t = 0; t < T; ++t) {
        const uint32_t* row = reinterpret_cast<const uint32_t*>(kb + t * k.stride(2));
        for (int64_t j = 0; j < DP; ++j) kpb[j * T64 + t] = row[j];
        const uint16_t* vr = vb + t * v.stride(2);
        for (int64_t d = 0; d < D; ++d) {
          uint32_t& cell = vpb[(t / 2) * D + d];
          cell |= (t & 1) ? (uint32_t(vr[d]) << 16) : uint32_t(vr[d]);
        }
      }
    }
  });
  const int64_t QB = 32;  // query rows per task
  const int64_t nqb = (T + QB - 1) / QB;
  const float sc = static_cast<float>(scale);
  at::parallel_for(0, B * H * nqb, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> s(QB * T64);
    std::vector<uint16_t> p(QB * (T2 * 2));
    std::vector<float> rsum(QB);
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t bh = task / nqb, qb0 = (task % nqb) * QB;
      const int64_t b = bh / H, h = bh % H;
      const int64_t rows = std::min(QB, T - qb0);
      const uint32_t* kpb = kpd + bh * DP * T64;
      const uint32_t* vpb = vpd + bh * T2 * D;
      const uint16_t* qb = qd + b * q.stride(0) + h * q.stride(1);
      // S = Q K^T * scale: R rows x 64 keys per register block
      for (int64_t r0 = 0; r0 < rows; r0 += R) {
        const uint32_t* qr[R];
        for (int i = 0; i < R; ++i)  // rows past the end repeat the last one (not stored)
          qr[i] = reinterpret_cast<const uint32_t*>(qb + std::min(qb0 + r0 + i, T - 1) * q.stride(2));
        for (int64_t t0 = 0; t0 < T64; t0 += 64) {
          __m512 acc[R][4];
          pair_dots(acc, qr, kpb + t0, T64, DP);
          for (int i = 0; i < R && r0 + i < rows; ++i)
            for (int c = 0; c < 4; ++c)
              _mm512_storeu_ps(&s[(r0 + i) * T64 + t0 + c * 16], _mm512_mul_ps(acc[i][c], _mm512_set1_ps(sc)));
        }
      }
      // softmax numerators per row (fp32), rounded to bf16 for P V; row sums kept in fp32
      const int64_t TP = T2 * 2;
      for (int64_t r = 0; r < rows; ++r) {
        float* sr = &s[r * T64];
        for (int64_t t = T; t < T64; ++t) sr[t] = -INFINITY;
        __m512 mx = _mm512_set1_ps(-INFINITY);
        for (int64_t t = 0; t < T64; t += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(sr + t));
        const float m = _mm512_reduce_max_ps(mx);
        __m512 mv = _mm512_set1_ps(m), sum = _mm512_setzero_ps();
        uint16_t* pr = &p[r * TP];
        for (int64_t t = 0; t < T64; t += 16) {
          __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(sr + t), mv));
          sum = _mm512_add_ps(sum, e);
          _mm512_storeu_ps(sr + t, e);
        }
        rsum[r] = _mm512_reduce_add_ps(sum);
        for (int64_t t = 0; t < TP; t += 16) {
          __m512 e = t < T64 ? _mm512_loadu_ps(sr + t) : _mm512_setzero_ps();
          __m256bh pb = _mm512_cvtneps_pbh(e);
          if (t + 16 <= TP) {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(pr + t), (__m256i)pb);
          } else {
            alignas(64) uint16_t tmp[16];
            _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), (__m256i)pb);
            for (int64_t u = t; u < TP; ++u) pr[u] = tmp[u - t];
          }
        }
      }
      // O = P V / rowsum: R rows x 64 dims per register block
      for (int64_t r0 = 0; r0 < rows; r0 += R) {
        for (int64_t d0 = 0; d0 < D; d0 += 64) {
          const uint32_t* pp[R];
          for (int i = 0; i < R; ++i) pp[i] = reinterpret_cast<const uint32_t*>(&p[std::min(r0 + i, rows - 1) * TP]);
          __m512 acc[R][4];
          pair_dots(acc, pp, vpb + d0, D, T2);
          for (int i = 0; i < R && r0 + i < rows; ++i) {
            const int64_t t = qb0 + r0 + i;
            __m512 inv = _mm512_set1_ps(1.0f / rsum[r0 + i]);
            uint16_t* orow = od + ((b * T + t) * H + h) * D + d0;
            for (int c = 0; c < 4; ++c)
              _mm256_storeu_si256(reinterpret_cast<__m256i*>(orow + c * 16),
                                  (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(acc[i][c], inv)));
          }
        }
      }
    }
  });
  return out;
}
"""


def cpu_has_avx512_bf16() -> bool:
    return "avx512_bf16" in cpu_flags()


@functools.lru_cache(maxsize=1)
def kernel():
    """The compiled extension, or None (no avx512_bf16, no compiler, or results that differ from
    PyTorch's attention; the reason is logged once)."""
    if not cpu_has_avx512_bf16():
        return None
    try:
        from torch.utils.cpp_extension import load_inline
        log.info("loading the bf16 attention kernel (compiled on the first use on this machine: about 35 s)")
        ext = load_inline("lseg_bf16_attention", cpp_sources=_SOURCE, functions=["attention"],
                          extra_cflags=["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16", "-mfma",
                                        "-fopenmp"], extra_ldflags=["-fopenmp"])
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(2, 3, 77, 64, generator=g).bfloat16() for _ in range(3))
        with torch.inference_mode():
            got = ext.attention(q, k, v, 0.125).permute(0, 2, 1, 3).float()
            ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=0.125)
        err = (got - ref).abs().max().item()
        if not err < 3e-2:
            log.warning("bf16 attention kernel differs from PyTorch's by %.3g: not used", err)
            return None
        return ext
    except Exception as e:  # no compiler / ninja, build error
        log.warning("bf16 attention kernel unavailable (%s: %s): PyTorch's attention is used", type(e).__name__, e)
        return None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale) v for (B, H, T, D) bf16 tensors on the CPU -> (B, H, T, D) bf16 (a
    permuted view of a (B, T, H, D) tensor, so `transpose(1, 2).reshape(B, T, H * D)` is free)."""
    return kernel().attention(q, k, v, float(scale)).permute(0, 2, 1, 3)


def _eligible(attn: nn.Module) -> bool:
    """A timm `Attention` this forward reproduces exactly: no q/k norms, no output norm or gate."""
    plain = all(isinstance(getattr(attn, name, nn.Identity()), nn.Identity) for name in ("q_norm", "k_norm", "norm"))
    return (plain and getattr(attn, "gate", None) is None and hasattr(attn, "qkv") and hasattr(attn, "proj")
            and getattr(attn, "head_dim", 1) % 64 == 0 and getattr(attn, "head_dim", 0) <= 256)


class KernelAttentionMixin:
    """Mixed into a timm `Attention` (its class is swapped, so hooks on the module still fire):
    bf16 CPU inference without a mask goes through `attention`, anything else through timm."""

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, is_causal: bool = False):
        if (attn_mask is not None or is_causal or self.training or x.dtype != torch.bfloat16
                or x.device.type != "cpu" or kernel() is None):
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = attention(q, k, v, self.scale).transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        return self.proj_drop(self.proj(out))


@functools.lru_cache(maxsize=None)
def _with_kernel(cls: type) -> type:
    return type(f"Kernel{cls.__name__}", (KernelAttentionMixin, cls), {})


def use_kernel_attention(modules: Iterable[nn.Module]) -> int:
    """Route the eligible timm attention modules under `modules` through the bf16 kernel (in place;
    builds the kernel on first use). Returns how many; 0 when the kernel is unavailable."""
    found = [m for root in modules for m in root.modules()
             if type(m).__name__ == "Attention" and not isinstance(m, KernelAttentionMixin) and _eligible(m)]
    if not found or kernel() is None:
        return 0
    for m in found:
        m.__class__ = _with_kernel(type(m))
    return len(found)


def restore_attention(modules: Iterable[nn.Module]) -> None:
    """Undo `use_kernel_attention`: timm's own attention forward again."""
    for root in modules:
        for m in root.modules():
            if isinstance(m, KernelAttentionMixin):
                m.__class__ = type(m).__mro__[2]
