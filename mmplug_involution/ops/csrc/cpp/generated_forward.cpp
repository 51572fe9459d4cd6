// Forward of channels_last tensors with the kernel generated on the fly.
//
// kernel[n, i, j, o] = bias[o] + sum_r reduced[n, i, j, r] * wt[r][o]
//   (the involution layer's last 1x1 conv, o in [0, G*K*K), wt the
//   transposed (R, G*K*K) weight), then the NHWC forward (nhwc_forward.cpp)
//   reads it; the kernel tensor is never written to memory.
//
// Loop order (outer to inner):
//   output rows (n, i), in parallel, in chunks of about 128 pixels (at most
//   1 MiB of kernel, at least one row)
//     span conv of the chunk into a per-thread buffer (matmul.h)
//     each row of the chunk: forward_nhwc_row from the buffer
#include "involution_cpu.h"
#include "matmul.h"
#include "nhwc_forward.h"

namespace mmplug_involution_cpu {

// Forward with the kernel generated on the fly (NHWC): for a chunk of output
// rows the span conv writes their kernel into a per-thread buffer (in cache),
// which the aggregation then reads; the kernel tensor is never written.
template <typename T>
void generated_forward_nhwc(const T* x, const T* reduced, const T* wt,
                            const T* bias, T* out, int64_t r_count,
                            const Geometry& g) {
  const InteriorColumns cols = interior_columns(g);
  const int64_t gkk = g.groups * g.kk, row_size = g.wo * gkk;
  // rows per chunk: about 128 pixels (the span conv's weight is read once
  // per chunk), at most 1 MiB of kernel (in L2), at least one row
  const int64_t budget = (1024 * 1024) / static_cast<int64_t>(sizeof(T));
  const int64_t chunk = std::max<int64_t>(
      1, std::min((128 + g.wo - 1) / g.wo, budget / row_size));
  parallel_for(0, g.n * g.ho, 1, [&](int64_t begin, int64_t end) {
    static thread_local std::vector<T> buffer;
    T* ks = scratch(buffer, chunk * row_size);
    for (int64_t row0 = begin; row0 < end; row0 += chunk) {
      const int64_t rows = std::min(chunk, end - row0);
      matmul(reduced + row0 * g.wo * r_count, r_count, int64_t{1}, wt, gkk,
             bias, int64_t{0}, ks, gkk, rows * g.wo, gkk, r_count);
      for (int64_t r = 0; r < rows; ++r) {
        forward_nhwc_row(x, ks + r * row_size, out, row0 + r, cols, g);
      }
    }
  });
}

// --------------------------------------------- instantiations --

#define MMPLUG_INSTANTIATE(T)                                                 \
  template void generated_forward_nhwc<T>(const T*, const T*, const T*,       \
      const T*, T*, int64_t, const Geometry&);
MMPLUG_INSTANTIATE(float)
MMPLUG_INSTANTIATE(double)
#undef MMPLUG_INSTANTIATE

}  // namespace mmplug_involution_cpu
