// Backward, NCHW (contiguous) tensors: kernel gradient and input gradient.
//
// grad_kernel[n, g*K*K + t, i, j] = sum_{c in g} gy[n, c, i, j] *
//                                   xs[phase(t)][c][i*s + u*d][j + (v*d)/s]
// grad_xs[phase(t)][c][i*s + u*d][j + (v*d)/s] +=
//                                   kernel[n, g*K*K + t, i, j] * gy[n, c, i, j]
// with xs the group's padded, phase-split scratch (nchw_scratch.h); grad_xs is
// a scratch of the same layout, un-split into grad_input at the end.
//
// Loop order (outer to inner):
//   task (n, g), in parallel: pad the group into the per-thread scratch
//     kernel gradient (grad_kernel_group):
//       output row i -> vector of columns j0 -> block of 8 taps ->
//       channel c of the group (the 8 tap sums stay in registers)
//     input gradient, a scatter in a fixed order (deterministic):
//       output row i -> vector of columns j0 -> tap t -> channel c
//       (channels innermost: consecutive read-modify-writes touch
//       different planes)
//     un-split grad_xs into grad_input
// grad_kernel_group (nchw_scratch.h) is also the NHWC backward's kernel
// gradient, run on a band of output rows at a time (nhwc_backward.cpp).
#include "involution_cpu.h"
#include "nchw_scratch.h"

namespace mmplug_involution_cpu {

template <typename T>
void backward_nchw(const T* grad_out, const T* x, const T* kernel,
                   T* grad_in, T* grad_kernel, const Geometry& g) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  const int64_t hw_out = g.ho * g.wo;
  const int64_t* tap = g.tap_nchw.data();
  parallel_for(0, g.n * g.groups, 1, [&](int64_t begin, int64_t end) {
    static thread_local std::vector<T> buffer;
    T* xs = scratch(buffer, 2 * g.s * g.phase_stride);
    T* gxs = xs + g.s * g.phase_stride;  // the input gradient, padded
    for (int64_t ng = begin; ng < end; ++ng) {
      const int64_t c_begin = ng * g.cg;  // = n * C + group * cg
      pad_group(x + c_begin * g.h * g.w, xs, g);
      const T* gy_group = grad_out + c_begin * hw_out;
      grad_kernel_group(gy_group, xs, grad_kernel + ng * g.kk * hw_out, g);
      // input gradient: scatter, channels innermost (consecutive
      // read-modify-writes touch different planes); in order within the
      // task, so deterministic
      std::fill_n(gxs, g.s * g.phase_stride, T(0));
      for (int64_t i = 0; i < g.ho; ++i) {
        for (int64_t j0 = 0; j0 < g.wo; j0 += V) {
          const int64_t len = std::min(V, g.wo - j0);
          const int64_t out_at = i * g.wo + j0;
          const T* gy = gy_group + out_at;
          const T* k_at = kernel + ng * g.kk * hw_out + out_at;
          T* gx_at = gxs + i * g.s * g.wq + j0;
          for (int64_t t = 0; t < g.kk; ++t) {
            const Vec kv = load(k_at + t * hw_out, len);
            T* gx_t = gx_at + tap[t];
            for (int64_t c = 0; c < g.cg; ++c) {
              T* at = gx_t + c * g.plane;
              store(fmadd(kv, load(gy + c * hw_out, len),
                                   load(at, len)),
                    at, len);
            }
          }
        }
      }
      unpad_group(gxs, grad_in + c_begin * g.h * g.w, g);
    }
  });
}

// --------------------------------------------- instantiations --

#define MMPLUG_INSTANTIATE(T)                                                 \
  template void backward_nchw<T>(const T*, const T*, const T*, T*, T*,        \
      const Geometry&);
MMPLUG_INSTANTIATE(float)
MMPLUG_INSTANTIATE(double)
#undef MMPLUG_INSTANTIATE

}  // namespace mmplug_involution_cpu
