// Forward, NCHW (contiguous) tensors.
//
// out[n, c, i, j] = sum_t kernel[n, g*K*K + t, i, j] *
//                   xs[phase(t)][c][i*s + u*d][j + (v*d) / s]
// with xs the group's padded, phase-split scratch (nchw_scratch.h), so that
// vectors run along the output row j.
//
// Loop order (outer to inner):
//   task (n, g), in parallel: pad the group into the per-thread scratch
//     output row i
//       block of 8 channels c0 (fewer at the group's end, one at a time)
//         vector of output columns j0 (V wide, the last one masked)
//           tap t: load the kernel vector once, fma it into the 8 channel
//                  accumulators, which stay in registers across all taps
//           store the 8 output vectors
//
// generated_forward_nchw: the same with the kernel made on the fly by the
// involution layer's last 1x1 conv, a row at a time: before output row i
// of task (n, g), the span conv writes the group's K*K x Wo kernel tile
//   ks[t][j] = bias[g*K*K + t] + sum_r weight[g*K*K + t][r] * reduced[n, r, i, j]
// into a per-thread buffer (in L1; matmul.h), which the row's channel
// blocks then read; the kernel tensor is never written to memory.
#include "involution_cpu.h"
#include "matmul.h"
#include "nchw_scratch.h"

namespace mmplug_involution_cpu {

// Forward: 8 channels of a group share each kernel vector; their 8 output
// vectors stay in registers across all K*K taps.
constexpr int64_t kChannelBlock = 8;

// k_row's tap t at k_row + t * k_step, output channel q at out + q * hw_out
template <typename T, int64_t CB>
inline void forward_nchw_block(const T* x_block, const T* k_row, T* out,
                               int64_t len, int64_t hw_out, int64_t k_step,
                               const Geometry& g) {
  using Vec = Vectorized<T>;
  Vec acc[CB];
  KEEP_IN_REGISTERS
  for (int64_t q = 0; q < CB; ++q) acc[q] = Vec(0);
  const int64_t* tap = g.tap_nchw.data();
  for (int64_t t = 0; t < g.kk; ++t) {
    const Vec kv = load(k_row + t * k_step, len);
    const T* x_tap = x_block + tap[t];
    KEEP_IN_REGISTERS
    for (int64_t q = 0; q < CB; ++q) {
      acc[q] = fmadd(kv, load(x_tap + q * g.plane, len), acc[q]);
    }
  }
  KEEP_IN_REGISTERS
  for (int64_t q = 0; q < CB; ++q) store(acc[q], out + q * hw_out, len);
}

// Output row i of task (n, g) (its group padded into xs), the kernel rows
// of its taps at k_row + t * k_step.
template <typename T>
inline void forward_nchw_row(const T* xs, const T* k_row, int64_t k_step,
                             T* out, int64_t c_begin, int64_t i,
                             const Geometry& g) {
  constexpr int64_t V = Vectorized<T>::size();
  const int64_t hw_out = g.ho * g.wo;
  for (int64_t c0 = 0; c0 < g.cg; c0 += kChannelBlock) {
    const int64_t left = g.cg - c0;
    for (int64_t j0 = 0; j0 < g.wo; j0 += V) {
      const int64_t len = std::min(V, g.wo - j0);
      const T* x_block = xs + c0 * g.plane + i * g.s * g.wq + j0;
      T* out_block = out + (c_begin + c0) * hw_out + i * g.wo + j0;
      if (left >= kChannelBlock) {
        forward_nchw_block<T, kChannelBlock>(x_block, k_row + j0, out_block,
                                             len, hw_out, k_step, g);
      } else {
        for (int64_t q = 0; q < left; ++q) {
          forward_nchw_block<T, 1>(x_block + q * g.plane, k_row + j0,
                                   out_block + q * hw_out, len, hw_out,
                                   k_step, g);
        }
      }
    }
  }
}

template <typename T>
void forward_nchw(const T* x, const T* kernel, T* out, const Geometry& g) {
  const int64_t hw_out = g.ho * g.wo;
  parallel_for(0, g.n * g.groups, 1, [&](int64_t begin, int64_t end) {
    static thread_local std::vector<T> buffer;
    T* xs = scratch(buffer, g.s * g.phase_stride);
    for (int64_t ng = begin; ng < end; ++ng) {
      const int64_t c_begin = ng * g.cg;  // = n * C + group * cg
      pad_group(x + c_begin * g.h * g.w, xs, g);
      const T* k_group = kernel + ng * g.kk * hw_out;
      for (int64_t i = 0; i < g.ho; ++i) {
        forward_nchw_row(xs, k_group + i * g.wo, hw_out, out, c_begin, i, g);
      }
    }
  });
}

template <typename T>
void generated_forward_nchw(const T* x, const T* reduced, const T* weight,
                            const T* bias, T* out, int64_t r_count,
                            const Geometry& g) {
  const int64_t hw_out = g.ho * g.wo;
  parallel_for(0, g.n * g.groups, 1, [&](int64_t begin, int64_t end) {
    static thread_local std::vector<T> buffer, tiles;
    T* xs = scratch(buffer, g.s * g.phase_stride);
    T* ks = scratch(tiles, 2 * g.kk * g.wo);
    T* bias_tile = ks + g.kk * g.wo;  // bias_tile[t][j] = the tap's bias
    for (int64_t ng = begin; ng < end; ++ng) {
      const int64_t n = ng / g.groups, group = ng % g.groups;
      const int64_t c_begin = ng * g.cg;  // = n * C + group * cg
      pad_group(x + c_begin * g.h * g.w, xs, g);
      const T* w_group = weight + group * g.kk * r_count;
      for (int64_t t = 0; t < g.kk; ++t) {
        std::fill_n(bias_tile + t * g.wo, g.wo, bias[group * g.kk + t]);
      }
      for (int64_t i = 0; i < g.ho; ++i) {
        matmul<T>(w_group, r_count, 1, reduced + n * r_count * hw_out +
                  i * g.wo, hw_out, bias_tile, g.wo, ks, g.wo, g.kk, g.wo,
                  r_count);
        forward_nchw_row(xs, ks, g.wo, out, c_begin, i, g);
      }
    }
  });
}

// --------------------------------------------- instantiations --

#define MMPLUG_INSTANTIATE(T)                                                 \
  template void forward_nchw<T>(const T*, const T*, T*, const Geometry&);     \
  template void generated_forward_nchw<T>(const T*, const T*, const T*,       \
      const T*, T*, int64_t, const Geometry&);
MMPLUG_INSTANTIATE(float)
MMPLUG_INSTANTIATE(double)
#undef MMPLUG_INSTANTIATE

}  // namespace mmplug_involution_cpu
