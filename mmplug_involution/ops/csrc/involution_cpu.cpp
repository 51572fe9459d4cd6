// Involution CPU kernels: forward, grad-input and grad-kernel, NCHW and NHWC.
//
// out[n, c, i, j] = sum_{u,v} kernel[n, g*K*K + u*K + v, i, j] *
//                   input[n, c, i*s - p + u*d, j*s - p + v*d],  g = c / (C/G),
// reads outside the input being zero.
//
// Both layouts first copy the input zero-padded by p, so that no tap needs a
// bounds check; each tap is then a fixed offset (precomputed per call).
//
// NCHW (contiguous): vectors run along the output row (W). The padded copy
// is also split into its s column phases, so that a tap reads one contiguous
// row segment: padded column q = j*s + v*d is in phase (v*d) % s, at
// j + (v*d) / s. Forward: a task per (n, g, i) keeps one output vector for
// each of 8 channels of the group in registers across all K*K taps (each
// kernel vector is loaded once for the 8). Backward: a task per (n, g) walks
// the output rows in order; the kernel gradient of 8 taps at a time is summed
// over the group's channels in registers, and the input gradient is
// scattered into a padded phase-split buffer (in order within the task, so
// deterministic), which is then un-split into grad_input.
//
// NHWC (channels_last): the channels of a group are contiguous, so vectors
// run along them and each kernel value is a broadcast; a task per (n, i)
// keeps the outputs of a block of pixels in registers across the taps. The
// backward pass runs the NCHW kernels on NCHW copies (its kernel gradient is
// a sum over channels, which NCHW vectorises without horizontal sums).
//
// No unfold tensor, no atomics: every result is computed in one fixed order,
// whatever the thread count. float and double natively; half and bfloat16 are
// computed in float (float32 accumulation).
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

namespace {

using at::Tensor;
using at::vec::Vectorized;

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

// A per-thread buffer, kept between calls (no page faults per call).
template <typename T>
T* scratch(std::vector<T>& buffer, int64_t size) {
  if (static_cast<int64_t>(buffer.size()) < size) buffer.resize(size);
  return buffer.data();
}

// ------------------------------------------------------------------ NCHW --

// One group's input planes (cg x H x W) into the scratch layout, zero-padded:
// padded column q = m*s + b goes to phase b, position m.
template <typename T>
void pad_group(const T* x, T* xs, const Geometry& g) {
  std::fill_n(xs, g.s * g.phase_stride, T(0));
  for (int64_t c = 0; c < g.cg; ++c) {
    for (int64_t row = 0; row < g.h; ++row) {
      const T* src = x + (c * g.h + row) * g.w;
      T* dst = xs + c * g.plane + (row + g.p) * g.wq;
      if (g.s == 1) {
        std::copy_n(src, g.w, dst + g.p);
        continue;
      }
      for (int64_t b = 0; b < g.s; ++b, dst += g.phase_stride) {
        for (int64_t m = 0, col = b - g.p; m < g.wq; ++m, col += g.s) {
          if (col >= 0 && col < g.w) dst[m] = src[col];
        }
      }
    }
  }
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

// Forward: 8 channels of a group share each kernel vector; their 8 output
// vectors stay in registers across all K*K taps.
constexpr int64_t kChannelBlock = 8;

template <typename T, int64_t CB>
inline void forward_nchw_block(const T* x_block, const T* k_row, T* out,
                               int64_t len, int64_t hw_out,
                               const Geometry& g) {
  using Vec = Vectorized<T>;
  Vec acc[CB];
  for (int64_t q = 0; q < CB; ++q) acc[q] = Vec(0);
  const int64_t* tap = g.tap_nchw.data();
  for (int64_t t = 0; t < g.kk; ++t) {
    const Vec kv = load(k_row + t * hw_out, len);
    const T* x_tap = x_block + tap[t];
    for (int64_t q = 0; q < CB; ++q) {
      acc[q] = at::vec::fmadd(kv, load(x_tap + q * g.plane, len), acc[q]);
    }
  }
  for (int64_t q = 0; q < CB; ++q) store(acc[q], out + q * hw_out, len);
}

template <typename T>
void forward_nchw(const T* x, const T* kernel, T* out, const Geometry& g) {
  constexpr int64_t V = Vectorized<T>::size();
  const int64_t hw_out = g.ho * g.wo;
  at::parallel_for(0, g.n * g.groups, 1, [&](int64_t begin, int64_t end) {
    static thread_local std::vector<T> buffer;
    T* xs = scratch(buffer, g.s * g.phase_stride);
    for (int64_t ng = begin; ng < end; ++ng) {
      const int64_t c_begin = ng * g.cg;  // = n * C + group * cg
      pad_group(x + c_begin * g.h * g.w, xs, g);
      const T* k_group = kernel + ng * g.kk * hw_out;
      for (int64_t i = 0; i < g.ho; ++i) {
        for (int64_t c0 = 0; c0 < g.cg; c0 += kChannelBlock) {
          const int64_t left = g.cg - c0;
          for (int64_t j0 = 0; j0 < g.wo; j0 += V) {
            const int64_t len = std::min(V, g.wo - j0);
            const T* x_block = xs + c0 * g.plane + i * g.s * g.wq + j0;
            const T* k_row = k_group + i * g.wo + j0;
            T* out_block = out + (c_begin + c0) * hw_out + i * g.wo + j0;
            if (left >= kChannelBlock) {
              forward_nchw_block<T, kChannelBlock>(x_block, k_row, out_block,
                                                   len, hw_out, g);
            } else {
              for (int64_t q = 0; q < left; ++q) {
                forward_nchw_block<T, 1>(x_block + q * g.plane, k_row,
                                         out_block + q * hw_out, len, hw_out,
                                         g);
              }
            }
          }
        }
      }
    }
  });
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
  for (int64_t b = 0; b < TB; ++b) acc[b] = Vec(0);
  for (int64_t c = 0; c < g.cg; ++c) {
    const Vec gy_c = load(gy + c * hw_out, len);
    const T* x_c = x_at + c * g.plane;
    for (int64_t b = 0; b < TB; ++b) {
      acc[b] = at::vec::fmadd(gy_c, load(x_c + tap[b], len), acc[b]);
    }
  }
  for (int64_t b = 0; b < TB; ++b) store(acc[b], gk + (t0 + b) * hw_out, len);
}

template <typename T>
void backward_nchw(const T* grad_out, const T* x, const T* kernel,
                   T* grad_in, T* grad_kernel, const Geometry& g) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  const int64_t hw_out = g.ho * g.wo;
  const int64_t* tap = g.tap_nchw.data();
  at::parallel_for(0, g.n * g.groups, 1, [&](int64_t begin, int64_t end) {
    static thread_local std::vector<T> buffer;
    T* xs = scratch(buffer, 2 * g.s * g.phase_stride);
    T* gxs = xs + g.s * g.phase_stride;  // the input gradient, padded
    for (int64_t ng = begin; ng < end; ++ng) {
      const int64_t c_begin = ng * g.cg;  // = n * C + group * cg
      pad_group(x + c_begin * g.h * g.w, xs, g);
      std::fill_n(gxs, g.s * g.phase_stride, T(0));
      const T* gy_group = grad_out + c_begin * hw_out;
      for (int64_t i = 0; i < g.ho; ++i) {
        for (int64_t j0 = 0; j0 < g.wo; j0 += V) {
          const int64_t len = std::min(V, g.wo - j0);
          const int64_t out_at = i * g.wo + j0;
          const int64_t x_at = i * g.s * g.wq + j0;
          const T* gy = gy_group + out_at;
          T* gk = grad_kernel + ng * g.kk * hw_out + out_at;
          int64_t t0 = 0;
          for (; t0 + kTapBlock <= g.kk; t0 += kTapBlock) {
            grad_kernel_taps<T, kTapBlock>(gy, xs + x_at, gk, t0, len, hw_out,
                                           g);
          }
          for (; t0 < g.kk; ++t0) {
            grad_kernel_taps<T, 1>(gy, xs + x_at, gk, t0, len, hw_out, g);
          }
          // input gradient: scatter, channels innermost (consecutive
          // read-modify-writes touch different planes); in order within
          // the task, so deterministic
          const T* k_at = kernel + ng * g.kk * hw_out + out_at;
          for (int64_t t = 0; t < g.kk; ++t) {
            const Vec kv = load(k_at + t * hw_out, len);
            T* gx_t = gxs + x_at + tap[t];
            for (int64_t c = 0; c < g.cg; ++c) {
              T* at = gx_t + c * g.plane;
              store(at::vec::fmadd(kv, load(gy + c * hw_out, len),
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

// ------------------------------------------------------------------ NHWC --

// PB pixels of one output row, NV vectors of a group's channels each: PB * NV
// independent accumulators across the taps u in [u_lo, u_hi), all v. Every
// tap read lies inside the input (the caller's interior pixels); `at` is the
// offset of pixel 0's tap (0, 0), maybe negative, `x_step` between pixels.
template <typename T, int64_t PB, int64_t NV>
inline void forward_nhwc_pixels(const T* x, int64_t at, const T* k_pixel,
                                T* out, int64_t width, int64_t u_lo,
                                int64_t u_hi, const Geometry& g) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  const int64_t gkk = g.groups * g.kk, x_step = g.s * g.c;
  const int64_t* tap = g.tap_nhwc.data();
  int64_t lens[NV];
  for (int64_t a = 0; a < NV; ++a) lens[a] = std::min(V, width - a * V);
  Vec acc[PB][NV];
  for (int64_t b = 0; b < PB; ++b)
    for (int64_t a = 0; a < NV; ++a) acc[b][a] = Vec(0);
  for (int64_t t = u_lo * g.k; t < u_hi * g.k; ++t) {
    for (int64_t b = 0; b < PB; ++b) {
      const Vec kv(k_pixel[b * gkk + t]);
      const T* src = x + (at + b * x_step + tap[t]);
      for (int64_t a = 0; a < NV; ++a) {
        acc[b][a] = at::vec::fmadd(kv, load(src + a * V, lens[a]), acc[b][a]);
      }
    }
  }
  for (int64_t b = 0; b < PB; ++b)
    for (int64_t a = 0; a < NV; ++a)
      store(acc[b][a], out + b * g.c + a * V, lens[a]);
}

// A border pixel: every tap checked.
template <typename T>
void forward_nhwc_border(const T* x_image, const T* k_pixel, T* out,
                         int64_t i, int64_t j, int64_t width,
                         const Geometry& g) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  for (int64_t c0 = 0; c0 < width; c0 += V) {
    const int64_t len = std::min(V, width - c0);
    Vec acc(0);
    for (int64_t u = 0; u < g.k; ++u) {
      const int64_t row = i * g.s - g.p + u * g.d;
      if (row < 0 || row >= g.h) continue;
      for (int64_t v = 0; v < g.k; ++v) {
        const int64_t col = j * g.s - g.p + v * g.d;
        if (col < 0 || col >= g.w) continue;
        acc = at::vec::fmadd(Vec(k_pixel[u * g.k + v]),
                             load(x_image + (row * g.w + col) * g.c + c0, len),
                             acc);
      }
    }
    store(acc, out + c0, len);
  }
}

template <typename T, int64_t PB, int64_t NV>
void forward_nhwc_row(const T* x_image, const T* k_row, T* out_row,
                      int64_t i, int64_t offset, int64_t width,
                      const Geometry& g) {
  const int64_t gkk = g.groups * g.kk;
  // rows the taps read inside the input, and the pixels all of whose
  // columns are inside: j in [j_lo, j_hi)
  const int64_t row0 = i * g.s - g.p;
  const int64_t u_lo = std::max<int64_t>(0, (-row0 + g.d - 1) / g.d);
  const int64_t u_hi = std::min<int64_t>(
      g.k, row0 >= g.h ? 0 : (g.h - 1 - row0) / g.d + 1);
  const int64_t j_lo = std::min(g.wo, (g.p + g.s - 1) / g.s);
  const int64_t last = g.w - 1 + g.p - (g.k - 1) * g.d;  // j*s <= last
  const int64_t j_hi = std::max(j_lo, std::min(g.wo, last < 0 ? 0
                                                     : last / g.s + 1));
  for (int64_t grp = 0; grp < g.groups; ++grp) {
    const int64_t ch = grp * g.cg + offset;
    const T* k_group = k_row + grp * g.kk;
    for (int64_t j = 0; j < g.wo;) {
      if (j < j_lo || j >= j_hi) {
        forward_nhwc_border(x_image + ch, k_group + j * gkk,
                            out_row + j * g.c + ch, i, j, width, g);
        ++j;
        continue;
      }
      const int64_t at = (row0 * g.w + j * g.s - g.p) * g.c + ch;
      if (j + PB <= j_hi) {
        forward_nhwc_pixels<T, PB, NV>(x_image, at, k_group + j * gkk,
                                       out_row + j * g.c + ch, width, u_lo,
                                       u_hi, g);
        j += PB;
      } else {
        forward_nhwc_pixels<T, 1, NV>(x_image, at, k_group + j * gkk,
                                      out_row + j * g.c + ch, width, u_lo,
                                      u_hi, g);
        ++j;
      }
    }
  }
}

template <typename T>
void forward_nhwc(const T* x, const T* kernel, T* out, const Geometry& g) {
  constexpr int64_t V = Vectorized<T>::size();
  const int64_t gkk = g.groups * g.kk;
  at::parallel_for(0, g.n * g.ho, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / g.ho, i = task % g.ho;
      const T* x_image = x + n * g.h * g.w * g.c;
      const T* k_row = kernel + task * g.wo * gkk;
      T* out_row = out + task * g.wo * g.c;
      // a group's channels in pieces of at most two vectors
      for (int64_t c0 = 0; c0 < g.cg; c0 += 2 * V) {
        const int64_t width = std::min(2 * V, g.cg - c0);
        if (width > V) {
          forward_nhwc_row<T, 4, 2>(x_image, k_row, out_row, i, c0, width, g);
        } else {
          forward_nhwc_row<T, 8, 1>(x_image, k_row, out_row, i, c0, width, g);
        }
      }
    }
  });
}

// -------------------------------------------------------------- dispatch --

Geometry geometry(const Tensor& input, const Tensor& kernel, int64_t k,
                  int64_t s, int64_t p, int64_t d) {
  TORCH_CHECK(input.dim() == 4 && kernel.dim() == 4,
              "involution: input and kernel must be 4-D");
  TORCH_CHECK(k >= 1 && s >= 1 && p >= 0 && d >= 1,
              "involution: invalid kernel_size/stride/padding/dilation");
  Geometry g;
  g.n = input.size(0);
  g.c = input.size(1);
  g.h = input.size(2);
  g.w = input.size(3);
  g.k = k;
  g.s = s;
  g.p = p;
  g.d = d;
  g.kk = k * k;
  g.groups = kernel.size(1) / g.kk;
  g.ho = kernel.size(2);
  g.wo = kernel.size(3);
  TORCH_CHECK(g.groups >= 1 && kernel.size(1) == g.groups * g.kk &&
                  g.c % g.groups == 0 && kernel.size(0) == g.n,
              "involution: kernel shape does not match the input");
  TORCH_CHECK(g.ho == (g.h + 2 * p - d * (k - 1) - 1) / s + 1 &&
                  g.wo == (g.w + 2 * p - d * (k - 1) - 1) / s + 1 &&
                  g.ho >= 1 && g.wo >= 1,
              "involution: kernel spatial size does not match the output");
  g.cg = g.c / g.groups;
  g.hp = g.h + 2 * p;
  g.wq = (g.w + 2 * p + s - 1) / s;
  g.plane = g.hp * g.wq;
  g.phase_stride = g.cg * g.plane;
  for (int64_t u = 0; u < k; ++u) {
    for (int64_t v = 0; v < k; ++v) {
      const int64_t vd = v * d;
      g.tap_nchw.push_back((vd % s) * g.phase_stride + u * d * g.wq + vd / s);
      g.tap_nhwc.push_back((u * d * g.w + vd) * g.c);
    }
  }
  return g;
}

// NHWC when the input is channels_last and not (also) plain contiguous.
bool use_channels_last(const Tensor& input) {
  return !input.is_contiguous() &&
         input.is_contiguous(at::MemoryFormat::ChannelsLast);
}

at::ScalarType compute_type(at::ScalarType type) {
  return type == at::kDouble ? at::kDouble : at::kFloat;
}

// `poison` (for tests) fills the results with NaN before the kernels write
// them, so that an element a kernel misses cannot pass unnoticed.
Tensor involution_forward(const Tensor& input, const Tensor& kernel,
                          int64_t kernel_size, int64_t stride,
                          int64_t padding, int64_t dilation, bool poison) {
  const Geometry g =
      geometry(input, kernel, kernel_size, stride, padding, dilation);
  const bool nhwc = use_channels_last(input);
  const auto format =
      nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const auto type = compute_type(input.scalar_type());
  const Tensor x = input.to(type).contiguous(format);
  const Tensor k = kernel.to(type).contiguous(format);
  Tensor out = at::empty({g.n, g.c, g.ho, g.wo}, x.options(), format);
  if (poison) out.fill_(std::numeric_limits<double>::quiet_NaN());
  AT_DISPATCH_FLOATING_TYPES(type, "involution_forward_cpu", [&] {
    const auto forward = nhwc ? forward_nhwc<scalar_t>
                              : forward_nchw<scalar_t>;
    forward(x.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(),
            out.data_ptr<scalar_t>(), g);
  });
  return out.to(input.scalar_type());
}

std::tuple<Tensor, Tensor> involution_backward(
    const Tensor& grad_output, const Tensor& input, const Tensor& kernel,
    int64_t kernel_size, int64_t stride, int64_t padding, int64_t dilation,
    bool poison) {
  const Geometry g =
      geometry(input, kernel, kernel_size, stride, padding, dilation);
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef({g.n, g.c, g.ho, g.wo}),
              "involution: grad_output shape does not match the output");
  const auto format = use_channels_last(input)
                          ? at::MemoryFormat::ChannelsLast
                          : at::MemoryFormat::Contiguous;
  const auto type = compute_type(input.scalar_type());
  // NCHW kernels for both layouts (see the top of the file)
  const auto nchw = at::MemoryFormat::Contiguous;
  const Tensor x = input.to(type).contiguous(nchw);
  const Tensor k = kernel.to(type).contiguous(nchw);
  const Tensor gy = grad_output.to(type).contiguous(nchw);
  Tensor grad_in = at::empty_like(x, nchw);
  Tensor grad_k = at::empty_like(k, nchw);
  if (poison) {
    grad_in.fill_(std::numeric_limits<double>::quiet_NaN());
    grad_k.fill_(std::numeric_limits<double>::quiet_NaN());
  }
  AT_DISPATCH_FLOATING_TYPES(type, "involution_backward_cpu", [&] {
    backward_nchw<scalar_t>(gy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                            k.data_ptr<scalar_t>(),
                            grad_in.data_ptr<scalar_t>(),
                            grad_k.data_ptr<scalar_t>(), g);
  });
  return {grad_in.to(input.scalar_type()).contiguous(format),
          grad_k.to(kernel.scalar_type()).contiguous(format)};
}

}  // namespace

TORCH_LIBRARY(mmplug_involution_cpu, m) {
  m.def(
      "forward(Tensor input, Tensor kernel, int kernel_size, int stride, "
      "int padding, int dilation, bool poison=False) -> Tensor");
  m.def(
      "backward(Tensor grad_output, Tensor input, Tensor kernel, "
      "int kernel_size, int stride, int padding, int dilation, "
      "bool poison=False) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mmplug_involution_cpu, CPU, m) {
  m.impl("forward", &involution_forward);
  m.impl("backward", &involution_backward);
}
