// Forward, channels_last (NHWC) tensors.
//
// out[n, i, j, c] = sum_{u,v} kernel[n, i, j, g*K*K + u*K + v] *
//                   x[n, i*s - p + u*d, j*s - p + v*d, c]
// (tensors indexed in memory order), reads outside the input zero: the taps
// whose input row is outside are skipped for the whole row (u in
// [u_lo, u_hi)); border columns check each tap.
//
// Loop order (outer to inner):
//   output row (n, i), in parallel
//     piece of a group's channels (nhwc_blocks.h: for_channel_pieces)
//       group g
//         output column j: interior columns in blocks of 4 or 8 pixels,
//                          border columns one at a time (sweep_row)
//           tap u -> tap v -> pixel -> channel vector (broadcast_block;
//           the outputs of the block stay in registers across the taps)
#include "involution_cpu.h"
#include "nhwc_forward.h"

namespace mmplug_involution_cpu {

template <typename T>
void forward_nhwc(const T* x, const T* kernel, T* out, const Geometry& g) {
  const InteriorColumns cols = interior_columns(g);
  const int64_t row_size = g.wo * g.groups * g.kk;
  parallel_for(0, g.n * g.ho, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      forward_nhwc_row(x, kernel + row * row_size, out, row, cols, g);
    }
  });
}

// --------------------------------------------- instantiations --

#define MMPLUG_INSTANTIATE(T)                                                 \
  template void forward_nhwc<T>(const T*, const T*, T*, const Geometry&);
MMPLUG_INSTANTIATE(float)
MMPLUG_INSTANTIATE(double)
#undef MMPLUG_INSTANTIATE

}  // namespace mmplug_involution_cpu
