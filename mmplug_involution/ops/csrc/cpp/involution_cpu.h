// Involution CPU kernels: what every file of this folder shares.
//
// out[n, c, i, j] = sum_{u,v} kernel[n, g*K*K + u*K + v, i, j] *
//                   input[n, c, i*s - p + u*d, j*s - p + v*d],  g = c / (C/G),
// reads outside the input being zero. Backward:
//   grad_input[n, c, i*s - p + u*d, j*s - p + v*d] +=
//       kernel[n, g*K*K + u*K + v, i, j] * grad_out[n, c, i, j]
//   grad_kernel[n, g*K*K + u*K + v, i, j] =
//       sum_{c in group g} input[n, c, i*s - p + u*d, j*s - p + v*d] *
//                          grad_out[n, c, i, j]
//
// The files, one per layout and pass:
//   geometry.cpp           the geometry of a call: each tap's offset in the
//                          NCHW scratch and in an NHWC image
//   nchw_scratch.h         a group zero-padded and split into its column
//                          phases (the "NCHW scratch"), back again, and the
//                          kernel gradient computed from it
//   nchw_forward.cpp       forward, NCHW (contiguous) tensors, the kernel
//                          given or generated a row at a time
//   nchw_backward.cpp      kernel gradient and input gradient, NCHW
//   nhwc_blocks.h          the register-blocked NHWC building blocks (a
//                          block of pixels x channel vectors across the taps)
//   nhwc_forward.h         the forward of one NHWC output row
//   nhwc_forward.cpp       forward, channels_last (NHWC) tensors
//   nhwc_backward.h        their per-band and per-row pieces
//   nhwc_backward.cpp      kernel gradient and input gradient, NHWC
//   matmul.h               register-blocked products of the 1x1 span conv
//   generated_forward.cpp  NHWC forward with the kernel computed on the fly
//                          by a 1x1 conv (never written to memory)
//   generated_backward.cpp its fused backward: the kernel and its gradient
//                          only ever as tiles of a band of rows
//   vectorized.h           the vector type the passes compute with
// They depend on no framework: the front-ends in frontends/ check the
// arguments, choose layout and type, and run the passes on their threads:
//   frontends/torch_ops.cpp      the torch.ops.mmplug_involution_cpu ops
//   frontends/openvino_ops.cpp   the OpenVINO extension's two ops
// Each opens with its maths and loop order. What several passes share is
// in headers, as templates each pass inlines as before the split.
//
// No unfold tensor, no atomics: every result is computed in one fixed order,
// whatever the thread count. float and double natively; half and bfloat16 are
// computed in float (float32 accumulation). The pass templates are
// instantiated for float and double in their own files.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

#include "vectorized.h"

// Fully unrolls a loop over a register block, so that its accumulators
// stay in vector registers (left rolled, GCC keeps them on the stack).
#define KEEP_IN_REGISTERS _Pragma("GCC unroll 16")
// The register blocks' helpers must inline for their arrays to stay in
// registers.
#define ALWAYS_INLINE inline __attribute__((always_inline))

namespace mmplug_involution_cpu {

// Runs body(lo, hi) over consecutive sub-ranges of [begin, end) (each at
// least `grain` long where there are enough) on the calling framework's
// threads, returning when all have run. Defined by each front-end (the
// torch ops: at::parallel_for; the OpenVINO extension: TBB).
void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& body);

struct Geometry {
  int64_t n, c, h, w;  // input
  int64_t groups, cg;  // groups, channels per group
  int64_t k, s, p, d;  // kernel size, stride, padding, dilation
  int64_t ho, wo;      // output
  int64_t kk;          // k * k
  // NCHW scratch of one group: padded, column-phase-split planes
  // xs[b][c][hp][wq], b the phase, c the group's channel
  int64_t hp, wq, plane, phase_stride;
  std::vector<int64_t> tap_nchw;  // tap t: offset from (plane, i*s*wq + j)
  std::vector<int64_t> tap_nhwc;  // tap t: offset from pixel (i*s-p, j*s-p)
};

// ------------------------------------------------------ vector helpers --

template <typename T>
inline Vectorized<T> load(const T* ptr, int64_t len) {
  return len == Vectorized<T>::size() ? Vectorized<T>::loadu(ptr)
                                      : Vectorized<T>::loadu(ptr, len);
}

template <typename T>
inline void store(const Vectorized<T>& value, T* ptr, int64_t len) {
  if (len == Vectorized<T>::size()) {
    value.store(ptr);
  } else {
    value.store(ptr, len);
  }
}

// The lengths of NV vectors covering `width` values (all V when FULL; 0 for
// a vector past the width), for the register blocks' masked loads/stores.
template <typename T, int64_t NV, bool FULL>
ALWAYS_INLINE void vector_lengths(int64_t* lens, int64_t width) {
  constexpr int64_t V = Vectorized<T>::size();
  KEEP_IN_REGISTERS
  for (int64_t a = 0; a < NV; ++a) {
    lens[a] = FULL ? V : std::max<int64_t>(0, std::min(V, width - a * V));
  }
}

// Stores a register block's PB x NV accumulators, row b at out + b * step.
template <typename T, int64_t PB, int64_t NV, bool FULL>
ALWAYS_INLINE void store_block(const Vectorized<T> (&acc)[PB][NV], T* out,
                               int64_t step, const int64_t* lens) {
  constexpr int64_t V = Vectorized<T>::size();
  KEEP_IN_REGISTERS
  for (int64_t b = 0; b < PB; ++b) {
    KEEP_IN_REGISTERS
    for (int64_t a = 0; a < NV; ++a) {
      T* dst = out + b * step + a * V;
      if (FULL) {
        acc[b][a].store(dst);
      } else if (lens[a] > 0) {
        store(acc[b][a], dst, lens[a]);
      }
    }
  }
}

// A per-thread buffer, kept between calls (no page faults per call).
template <typename T>
T* scratch(std::vector<T>& buffer, int64_t size) {
  if (static_cast<int64_t>(buffer.size()) < size) buffer.resize(size);
  return buffer.data();
}

// ------------------------------------------------- geometry.cpp --

// The geometry of a call: input (n, c, h, w), a kernel (given or generated)
// of (n, kernel_channels, ho, wo), window k, stride s, padding p, dilation
// d. Returns why they do not fit together, or nullptr.
const char* make_geometry(Geometry& g, int64_t n, int64_t c, int64_t h,
                          int64_t w, int64_t kernel_channels, int64_t ho,
                          int64_t wo, int64_t k, int64_t s, int64_t p,
                          int64_t d);

// Each tap's offset in the NCHW scratch and in an NHWC image.
void set_taps(Geometry& g);

// The geometry of `rows` output rows alone, for a scratch that holds only
// the padded input rows they read.
Geometry band_geometry(const Geometry& g, int64_t rows);

// ------------------------------------------------- NCHW passes --

// nchw_forward.cpp
template <typename T>
void forward_nchw(const T* x, const T* kernel, T* out, const Geometry& g);

// nchw_forward.cpp: the NCHW forward with the kernel
// ks[n, o, i, j] = bias[o] + sum_r weight[o][r] * reduced[n, r, i, j]
// (weight (G*K*K, R)) made a row at a time, never written whole
template <typename T>
void generated_forward_nchw(const T* x, const T* reduced, const T* weight,
                            const T* bias, T* out, int64_t r_count,
                            const Geometry& g);

// nchw_backward.cpp
template <typename T>
void backward_nchw(const T* grad_out, const T* x, const T* kernel,
                   T* grad_in, T* grad_kernel, const Geometry& g);

// ------------------------------------------------- NHWC passes --

// nhwc_forward.cpp
template <typename T>
void forward_nhwc(const T* x, const T* kernel, T* out, const Geometry& g);

// nhwc_backward.cpp
template <typename T>
void grad_kernel_nhwc(const T* grad_out, const T* x, T* grad_kernel,
                      const Geometry& g);

// nhwc_backward.cpp
template <typename T>
void grad_input_nhwc(const T* grad_out, const T* kernel, T* grad_in,
                     const Geometry& g);

// generated_forward.cpp: the NHWC forward with the kernel
// ks[pixel][o] = bias[o] + sum_r reduced[pixel][r] * wt[r][o]
template <typename T>
void generated_forward_nhwc(const T* x, const T* reduced, const T* wt,
                            const T* bias, T* out, int64_t r_count,
                            const Geometry& g);

// generated_backward.cpp: the fused backward of the generated NHWC forward,
// weight (G*K*K, R) and wt its transpose; grad_weight (G*K*K, R)
template <typename T>
void generated_backward_nhwc(const T* grad_out, const T* x,
                             const T* reduced, const T* weight, const T* wt,
                             const T* bias, T* grad_in, T* grad_reduced,
                             T* grad_weight, T* grad_bias, int64_t r_count,
                             const Geometry& g);

}  // namespace mmplug_involution_cpu
