// Backward, channels_last (NHWC) tensors: kernel gradient and input
// gradient (the maths and loop orders: nhwc_backward.h).
//   grad_kernel: (n, group, band of output rows), in parallel
//   grad_input:  input rows (n, h), in parallel, each gathering from every
//                output row
#include "involution_cpu.h"
#include "nhwc_backward.h"

namespace mmplug_involution_cpu {

// grad_kernel (NHWC): per (n, group, band of output rows), the band's input
// rows and output gradient are gathered into NCHW scratch (at most about
// 1 MiB, in cache), the NCHW kernel computes the band's gradient there, and
// it is written out transposed (49 contiguous values per pixel): no NCHW copy
// of any whole tensor.
template <typename T>
void grad_kernel_nhwc(const T* grad_out, const T* x, T* grad_kernel,
                      const Geometry& g) {
  const int64_t gkk = g.groups * g.kk;
  const int64_t rows = grad_kernel_band_rows<T>(g);
  const int64_t bands = (g.ho + rows - 1) / rows;
  const Geometry full_band = band_geometry(g, rows);
  const Geometry last_band = band_geometry(g, g.ho - (bands - 1) * rows);
  parallel_for(0, g.n * g.groups * bands, 1, [&](int64_t begin,
                                                     int64_t end) {
    static thread_local std::vector<T> buffer;
    T* xs = scratch(buffer, grad_kernel_band_scratch(full_band));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t band = task % bands, ng = task / bands;
      const int64_t n = ng / g.groups, grp = ng % g.groups, i0 = band * rows;
      grad_kernel_nhwc_band(
          grad_out, x, grad_kernel + (n * g.ho + i0) * g.wo * gkk + grp * g.kk,
          gkk, 1, n, grp, i0, band + 1 == bands ? last_band : full_band, xs,
          g);
    }
  });
}

template <typename T>
void grad_input_nhwc(const T* grad_out, const T* kernel, T* grad_in,
                     const Geometry& g) {
  const ColumnTaps cols = column_taps(g);
  parallel_for(0, g.n * g.h, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / g.h;
      const KernelRows<T> rows{kernel + n * g.ho * g.wo * g.groups * g.kk, 0,
                               0, g.ho};
      grad_input_nhwc_row(grad_out, rows, cols, grad_in + task * g.w * g.c, n,
                          task % g.h, g);
    }
  });
}

// --------------------------------------------- instantiations --

#define MMPLUG_INSTANTIATE(T)                                                 \
  template void grad_kernel_nhwc<T>(const T*, const T*, T*,                   \
      const Geometry&);                                                       \
  template void grad_input_nhwc<T>(const T*, const T*, T*,                    \
      const Geometry&);
MMPLUG_INSTANTIATE(float)
MMPLUG_INSTANTIATE(double)
#undef MMPLUG_INSTANTIATE

}  // namespace mmplug_involution_cpu
