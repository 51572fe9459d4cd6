// The NCHW scratch of one group: filling it, emptying it, and the kernel
// gradient computed from it.
//
// The scratch holds the group's cg channels zero-padded by p and split into
// the s column phases: padded column q = m*s + b goes to phase b, position
// m, i.e. xs[b][c][hp][wq] (the taps' offsets in it: geometry.cpp).
//   pad_group:   channel c -> input row -> phase b -> position m (a plain
//                row copy when s = 1 and the row is contiguous; from an
//                NHWC group, one transpose per input row and phase)
//   unpad_group: its inverse, for the input gradient, in the same order
//   grad_kernel_group:
//     gk[t][i][j] = sum_c gy[c][i][j] * xs[phase(t)][c][i*s + u*d][j + (v*d)/s]
//     output row i -> vector of columns j0 -> block of 8 taps -> channel c
//     (the 8 tap sums stay in registers; a fixed order: deterministic)
// Used by both NCHW passes, and band by band by the NHWC kernel gradient.
// Header templates, so that each pass inlines them as it sees fit.
#pragma once

#include "involution_cpu.h"

namespace mmplug_involution_cpu {

// One group's input (cg x H x W, element (c, row, col) at
// c * c_step + row * row_step + col * col_step: NCHW planes or an NHWC
// group) into the scratch layout, zero-padded: padded column q = m*s + b
// goes to phase b, position m. The scratch holds the g.hp padded rows from
// `first_row` on (all of them by default; a band of them for the banded
// kernel gradient).
template <typename T>
void pad_group(const T* x, T* xs, const Geometry& g, int64_t c_step,
               int64_t row_step, int64_t col_step, int64_t first_row = 0) {
  std::fill_n(xs, g.s * g.phase_stride, T(0));
  const int64_t row_begin = std::max<int64_t>(0, first_row - g.p);
  const int64_t row_end = std::min(g.h, first_row + g.hp - g.p);
  if (c_step == 1) {  // an NHWC group: a transpose per row and phase
    for (int64_t row = row_begin; row < row_end; ++row) {
      T* dst = xs + (row + g.p - first_row) * g.wq;
      for (int64_t b = 0; b < g.s; ++b, dst += g.phase_stride) {
        // padded columns m*s + b: input columns from col0 on, s apart
        const int64_t m0 = std::max<int64_t>(0, (g.p - b + g.s - 1) / g.s);
        const int64_t col0 = m0 * g.s + b - g.p;
        if (col0 >= g.w) continue;
        transpose_block<T>(x + row * row_step + col0 * col_step,
                           g.s * col_step, dst + m0, g.plane,
                           (g.w - col0 + g.s - 1) / g.s, g.cg);
      }
    }
    return;
  }
  for (int64_t c = 0; c < g.cg; ++c) {
    for (int64_t row = row_begin; row < row_end; ++row) {
      const T* src = x + c * c_step + row * row_step;
      T* dst = xs + c * g.plane + (row + g.p - first_row) * g.wq;
      if (g.s == 1 && col_step == 1) {
        std::copy_n(src, g.w, dst + g.p);
        continue;
      }
      for (int64_t b = 0; b < g.s; ++b, dst += g.phase_stride) {
        for (int64_t m = 0, col = b - g.p; m < g.wq; ++m, col += g.s) {
          if (col >= 0 && col < g.w) dst[m] = src[col * col_step];
        }
      }
    }
  }
}

template <typename T>
void pad_group(const T* x, T* xs, const Geometry& g) {
  pad_group(x, xs, g, g.h * g.w, g.w, 1);
}

// The inverse for gradients: x[c][row][col] = xs at its padded position.
template <typename T>
void unpad_group(const T* xs, T* x, const Geometry& g) {
  for (int64_t c = 0; c < g.cg; ++c) {
    for (int64_t row = 0; row < g.h; ++row) {
      const T* src = xs + c * g.plane + (row + g.p) * g.wq;
      T* dst = x + (c * g.h + row) * g.w;
      if (g.s == 1) {
        std::copy_n(src + g.p, g.w, dst);
        continue;
      }
      for (int64_t b = 0; b < g.s; ++b, src += g.phase_stride) {
        for (int64_t m = 0, col = b - g.p; m < g.wq; ++m, col += g.s) {
          if (col >= 0 && col < g.w) dst[col] = src[m];
        }
      }
    }
  }
}

// Kernel gradient of kTapBlock taps at once, each summed over the group's
// channels in its own register (a fixed order: deterministic).
constexpr int64_t kTapBlock = 8;

template <typename T, int64_t TB>
inline void grad_kernel_taps(const T* gy, const T* x_at, T* gk, int64_t t0,
                             int64_t len, int64_t hw_out, const Geometry& g) {
  using Vec = Vectorized<T>;
  Vec acc[TB];
  const int64_t* tap = g.tap_nchw.data() + t0;
  KEEP_IN_REGISTERS
  for (int64_t b = 0; b < TB; ++b) acc[b] = Vec(0);
  for (int64_t c = 0; c < g.cg; ++c) {
    const Vec gy_c = load(gy + c * hw_out, len);
    const T* x_c = x_at + c * g.plane;
    KEEP_IN_REGISTERS
    for (int64_t b = 0; b < TB; ++b) {
      acc[b] = fmadd(gy_c, load(x_c + tap[b], len), acc[b]);
    }
  }
  KEEP_IN_REGISTERS
  for (int64_t b = 0; b < TB; ++b) store(acc[b], gk + (t0 + b) * hw_out, len);
}

// One group's kernel gradient gk[t][Ho][Wo] from its padded input xs and its
// output gradient gy[c][Ho][Wo].
template <typename T>
void grad_kernel_group(const T* gy, const T* xs, T* gk, const Geometry& g) {
  constexpr int64_t V = Vectorized<T>::size();
  const int64_t hw_out = g.ho * g.wo;
  for (int64_t i = 0; i < g.ho; ++i) {
    for (int64_t j0 = 0; j0 < g.wo; j0 += V) {
      const int64_t len = std::min(V, g.wo - j0);
      const int64_t out_at = i * g.wo + j0;
      const T* x_at = xs + i * g.s * g.wq + j0;
      int64_t t0 = 0;
      for (; t0 + kTapBlock <= g.kk; t0 += kTapBlock) {
        grad_kernel_taps<T, kTapBlock>(gy + out_at, x_at, gk + out_at, t0,
                                       len, hw_out, g);
      }
      for (; t0 < g.kk; ++t0) {
        grad_kernel_taps<T, 1>(gy + out_at, x_at, gk + out_at, t0, len,
                               hw_out, g);
      }
    }
  }
}

}  // namespace mmplug_involution_cpu
