// The NHWC (channels_last) backward's pieces, per band of output rows and
// per input row, shared by the backward (nhwc_backward.cpp) and the fused
// backward of the generated involution (generated_backward.cpp).
//
// grad_kernel[n, i, j, g*K*K + t] = sum_{c in g} gy[n, i, j, c] *
//                                   x[n, i*s - p + u*d, j*s - p + v*d, c]
//   a sum over channels, which NHWC vectors run along: per (n, g, band of
//   output rows) the band's padded input rows and output gradient are
//   gathered into the NCHW scratch (at most about 1 MiB), the NCHW
//   kernel-gradient loop (nchw_scratch.h) computes the band there, and the
//   result is written out transposed.
// grad_input[n, h, w, c] = sum_{u,v} kernel[n, i, j, g*K*K + u*K + v] *
//                                     gy[n, i, j, c],
//   (i, j) = ((h + p - u*d) / s, (w + p - v*d) / s) where both divide
//   exactly and land inside the output rows asked for: a gather, the mirror
//   of the forward. Per input row: channel piece -> group -> column phase
//   -> input column w (interior: register blocks of pixels s columns apart,
//   which read consecutive output columns; edges one at a time) -> the taps
//   u, v that land on the output, no others -> pixel -> channel vector.
#pragma once

#include <numeric>

#include "involution_cpu.h"
#include "nchw_scratch.h"
#include "nhwc_blocks.h"

namespace mmplug_involution_cpu {

// Output rows of one kernel-gradient band: its NCHW scratch (padded input
// rows, output gradient and kernel gradient of one group) in about 1 MiB.
template <typename T>
int64_t grad_kernel_band_rows(const Geometry& g) {
  const int64_t per_row = g.s * g.s * g.cg * g.wq + (g.cg + g.kk) * g.wo;
  const int64_t budget = (1024 * 1024) / static_cast<int64_t>(sizeof(T));
  return std::max<int64_t>(1, std::min(g.ho, budget / per_row));
}

// Values of scratch a band of `gb` (band_geometry) needs.
inline int64_t grad_kernel_band_scratch(const Geometry& gb) {
  return gb.s * gb.phase_stride + (gb.cg + gb.kk) * gb.ho * gb.wo;
}

// Kernel gradient of group `grp` of output rows [i0, i0 + gb.ho) of image
// n, `gb` the band geometry of those rows: gk[q * q_step + t * t_step] for
// their pixels q (from 0) and taps t < K*K (computed in place when that is
// the scratch's own [t][q] layout). `xs`: grad_kernel_band_scratch(gb).
template <typename T>
void grad_kernel_nhwc_band(const T* grad_out, const T* x, T* gk,
                           int64_t q_step, int64_t t_step, int64_t n,
                           int64_t grp, int64_t i0, const Geometry& gb, T* xs,
                           const Geometry& g) {
  const int64_t ch = grp * g.cg, hw_band = gb.ho * g.wo;
  T* gy = xs + g.s * gb.phase_stride;
  const bool in_place = q_step == 1 && t_step == hw_band;
  T* gk_nchw = in_place ? gk : gy + g.cg * hw_band;
  pad_group(x + n * g.h * g.w * g.c + ch, xs, gb, 1, g.w * g.c, g.c,
            i0 * g.s);
  const T* gy_band = grad_out + (n * g.ho + i0) * g.wo * g.c + ch;
  transpose_block<T>(gy_band, g.c, gy, hw_band, hw_band, g.cg);
  grad_kernel_group(gy, xs, gk_nchw, gb);
  if (in_place) return;
  if (t_step == 1) {
    transpose_block<T>(gk_nchw, hw_band, gk, q_step, g.kk, hw_band);
    return;
  }
  for (int64_t t = 0; t < g.kk; ++t) {
    for (int64_t q = 0; q < hw_band; ++q) {
      gk[q * q_step + t * t_step] = gk_nchw[t * hw_band + q];
    }
  }
}

// The taps t in [0, K) whose position pos - t*d is s times an index in
// [lo, hi): t = first + m * step for m < count (the taps of one row or
// column of the window that reach a row or column of the output).
struct TapRun {
  int64_t first, count, step;
  bool operator==(const TapRun& o) const {
    return first == o.first && count == o.count && step == o.step;
  }
};

inline TapRun taps_reaching(int64_t pos, int64_t lo, int64_t hi,
                            const Geometry& g) {
  const int64_t step = g.s / std::gcd(g.s, g.d);
  int64_t first = -1, last = -1;
  for (int64_t t = 0; t < g.k; ++t) {
    const int64_t at = pos - t * g.d;
    if (at >= 0 && at % g.s == 0 && at / g.s >= lo && at / g.s < hi) {
      if (first < 0) first = t;
      last = t;
    }
  }
  return first < 0 ? TapRun{0, 0, step}
                   : TapRun{first, (last - first) / step + 1, step};
}

// Each input column's taps, and per column phase (w = phase + m*s) the
// interior: the m in [lo, hi) whose taps are all the phase's taps (none
// clipped by the output's edges), which register blocks of pixels s
// columns apart share.
struct ColumnTaps {
  std::vector<TapRun> runs;  // per input column w
  std::vector<int64_t> lo, hi;  // per phase
};

inline ColumnTaps column_taps(const Geometry& g) {
  ColumnTaps cols;
  const int64_t phases = std::min(g.s, g.w);
  for (int64_t w = 0; w < g.w; ++w) {
    cols.runs.push_back(taps_reaching(w + g.p, 0, g.wo, g));
  }
  for (int64_t phase = 0; phase < phases; ++phase) {
    // the same phase far from every edge: all its taps
    const int64_t far = phase + g.p + g.s * g.k * g.d;
    const TapRun all = taps_reaching(far, 0, far + 1, g);
    int64_t lo = 0, hi = 0;
    for (int64_t m = 0, w = phase; w < g.w; ++m, w += g.s) {
      if (cols.runs[w] == all) {
        if (hi == lo) lo = m;
        hi = m + 1;
      }
    }
    cols.lo.push_back(lo);
    cols.hi.push_back(hi);
  }
  return cols;
}

// The output rows [lo, hi) an input-gradient row gathers from, and where
// their kernel is: output row i's at k_rows + (i - k_row0) * Wo * G*K*K.
template <typename T>
struct KernelRows {
  const T* k_rows;
  int64_t k_row0, lo, hi;
};

// Input gradient of input row h of image n (all columns and channels) from
// the output rows kr.lo..kr.hi: gx_row[w][c]. Per column phase, interior
// columns in register blocks of pixels s columns apart (which read
// consecutive output columns), the others one at a time; each visits only
// the taps that land on the output (no checks inside).
template <typename T>
void grad_input_nhwc_row(const T* grad_out, const KernelRows<T>& kr,
                         const ColumnTaps& cols, T* gx_row, int64_t n,
                         int64_t h, const Geometry& g) {
  const int64_t gkk = g.groups * g.kk, wo = g.wo, c = g.c, k = g.k;
  const T* gy_image = grad_out + n * g.ho * g.wo * g.c;
  const TapRun us = taps_reaching(h + g.p, kr.lo, kr.hi, g);
  // output row of the first tap row, and between tap rows
  const int64_t i_first = (h + g.p - us.first * g.d) / g.s;
  const int64_t row_step = us.step * g.d / g.s * wo, u_step = us.step * k;
  const auto pieces = [&](int64_t c0, int64_t width, auto pixels,
                          auto vectors, auto full) {
    constexpr int64_t NV = decltype(vectors)::value;
    constexpr bool FULL = decltype(full)::value;
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const int64_t ch = grp * g.cg + c0;
      // pixels w, w + s, ... (PB of them, with the taps of w) read output
      // pixels q0 + b - a * row_step - e * col_step
      const auto block_at = [&](int64_t w, auto block) {
        const TapRun& vs = cols.runs[w];
        const int64_t j_first = (w + g.p - vs.first * g.d) / g.s;
        const int64_t col_step = vs.step * g.d / g.s, v_step = vs.step;
        const int64_t q0 = i_first * wo + j_first;
        const T* gy0 = gy_image + q0 * c + ch;
        const T* k0 = kr.k_rows + (q0 - kr.k_row0 * wo) * gkk +
                      grp * g.kk + us.first * k + vs.first;
        constexpr int64_t PB = decltype(block)::value;
        T* out = gx_row + w * c + ch;
        const auto general = [&] {
          const auto tap = [=](int64_t b, int64_t a, int64_t e, T& scalar) {
            const int64_t q = b - a * row_step - e * col_step;
            scalar = k0[q * gkk + a * u_step + e * v_step];
            return gy0 + q * c;
          };
          broadcast_block<T, PB, NV, FULL>(tap, out, g.s * c, width,
                                           us.count, vs.count);
        };
        with_sliding_window(
            g,
            [&](auto window) {
              constexpr int64_t K = decltype(window)::value;
              if (vs.count != K) return general();
              // column x = b + t of tap row a: output pixel
              // q0 - (K-1) + x - a*Wo, its tap v = K-1-t
              const T* gy_at = gy0 - (K - 1) * c;
              const T* k_at = k0 - (K - 1) * gkk + (K - 1);
              const auto column = [=](int64_t a, int64_t x) {
                return gy_at + (x - a * wo) * c;
              };
              const auto weight = [=](int64_t b, int64_t a, int64_t t) {
                return k_at[(b + t - a * wo) * gkk + a * K - t];
              };
              sliding_block<T, PB, NV, FULL, K>(column, weight, out, c, width,
                                                us.count);
            },
            general);
      };
      for (int64_t phase = 0; phase < static_cast<int64_t>(cols.lo.size());
           ++phase) {
        sweep_row<decltype(pixels)::value>(
            (g.w - phase + g.s - 1) / g.s, cols.lo[phase], cols.hi[phase],
            [&](int64_t m, auto block) { block_at(phase + m * g.s, block); },
            [&](int64_t m) {
              block_at(phase + m * g.s, std::integral_constant<int64_t, 1>());
            });
      }
    }
  };
  for_channel_pieces<T>(pieces, g);
}

}  // namespace mmplug_involution_cpu
