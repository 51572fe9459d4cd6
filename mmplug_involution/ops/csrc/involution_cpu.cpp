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
// run along them and each kernel value is a broadcast; a task per output row
// keeps the outputs of a block of pixels in registers across the taps. The
// input gradient is a gather of the same shape; the kernel gradient (a sum
// over channels) goes through one group's NCHW scratch at a time. The
// generated forward computes each row chunk's kernel (the 1x1 span conv)
// into a per-thread buffer and aggregates from there, so the kernel tensor
// never goes through memory.
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
#include <type_traits>
#include <vector>

// Fully unrolls a loop over a register block, so that its accumulators
// stay in vector registers (left rolled, GCC keeps them on the stack).
#define KEEP_IN_REGISTERS _Pragma("GCC unroll 16")

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

// Each tap's offset in the NCHW scratch and in an NHWC image.
void set_taps(Geometry& g) {
  g.tap_nchw.clear();
  g.tap_nhwc.clear();
  for (int64_t u = 0; u < g.k; ++u) {
    for (int64_t v = 0; v < g.k; ++v) {
      const int64_t vd = v * g.d;
      g.tap_nchw.push_back((vd % g.s) * g.phase_stride + u * g.d * g.wq +
                           vd / g.s);
      g.tap_nhwc.push_back((u * g.d * g.w + vd) * g.c);
    }
  }
}

// The geometry of `rows` output rows alone, for a scratch that holds only
// the padded input rows they read.
Geometry band_geometry(const Geometry& g, int64_t rows) {
  Geometry band = g;
  band.ho = rows;
  band.hp = (rows - 1) * g.s + (g.k - 1) * g.d + 1;
  band.plane = band.hp * band.wq;
  band.phase_stride = band.cg * band.plane;
  set_taps(band);
  return band;
}

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

// Forward: 8 channels of a group share each kernel vector; their 8 output
// vectors stay in registers across all K*K taps.
constexpr int64_t kChannelBlock = 8;

template <typename T, int64_t CB>
inline void forward_nchw_block(const T* x_block, const T* k_row, T* out,
                               int64_t len, int64_t hw_out,
                               const Geometry& g) {
  using Vec = Vectorized<T>;
  Vec acc[CB];
  KEEP_IN_REGISTERS
  for (int64_t q = 0; q < CB; ++q) acc[q] = Vec(0);
  const int64_t* tap = g.tap_nchw.data();
  for (int64_t t = 0; t < g.kk; ++t) {
    const Vec kv = load(k_row + t * hw_out, len);
    const T* x_tap = x_block + tap[t];
    KEEP_IN_REGISTERS
    for (int64_t q = 0; q < CB; ++q) {
      acc[q] = at::vec::fmadd(kv, load(x_tap + q * g.plane, len), acc[q]);
    }
  }
  KEEP_IN_REGISTERS
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
  KEEP_IN_REGISTERS
  for (int64_t b = 0; b < TB; ++b) acc[b] = Vec(0);
  for (int64_t c = 0; c < g.cg; ++c) {
    const Vec gy_c = load(gy + c * hw_out, len);
    const T* x_c = x_at + c * g.plane;
    KEEP_IN_REGISTERS
    for (int64_t b = 0; b < TB; ++b) {
      acc[b] = at::vec::fmadd(gy_c, load(x_c + tap[b], len), acc[b]);
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

// PB pixels of a row, NV vectors of a group's channels each: PB * NV
// independent accumulators across the taps (u, v), u in [u_lo, u_hi),
// v in [0, k). `tap(b, u, v, scalar)` returns the channel vector that tap
// (u, v) of pixel b reads (always inside its tensor: the callers' interior
// pixels) and sets the kernel value that scales it. out[b * c + channel]
// gets the sums; FULL: the NV vectors are all `width` covers (no masks).
// Every argument is a value and the taps capture values, so that nothing in
// the loop can alias the accumulators and they stay in registers.
template <typename T, int64_t PB, int64_t NV, bool FULL, typename Tap>
inline void broadcast_block(const Tap tap, T* out, int64_t width, int64_t c,
                            int64_t k, int64_t u_lo, int64_t u_hi) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  int64_t lens[NV];
  KEEP_IN_REGISTERS
  for (int64_t a = 0; a < NV; ++a) {
    lens[a] = FULL ? V : std::min(V, width - a * V);
  }
  const auto get = [&](const T* ptr, int64_t a) {
    return FULL ? Vec::loadu(ptr) : load(ptr, lens[a]);
  };
  Vec acc[PB][NV];
  KEEP_IN_REGISTERS
  for (int64_t b = 0; b < PB; ++b)
    KEEP_IN_REGISTERS
    for (int64_t a = 0; a < NV; ++a) acc[b][a] = Vec(0);
  for (int64_t u = u_lo; u < u_hi; ++u) {
    for (int64_t v = 0; v < k; ++v) {
      KEEP_IN_REGISTERS
      for (int64_t b = 0; b < PB; ++b) {
        T scalar;
        const T* src = tap(b, u, v, scalar);
        const Vec kv(scalar);
        KEEP_IN_REGISTERS
        for (int64_t a = 0; a < NV; ++a) {
          acc[b][a] = at::vec::fmadd(kv, get(src + a * V, a), acc[b][a]);
        }
      }
    }
  }
  KEEP_IN_REGISTERS
  for (int64_t b = 0; b < PB; ++b) {
    KEEP_IN_REGISTERS
    for (int64_t a = 0; a < NV; ++a) {
      T* dst = out + b * c + a * V;
      if (FULL) {
        acc[b][a].store(dst);
      } else {
        store(acc[b][a], dst, lens[a]);
      }
    }
  }
}

// Forward of PB interior pixels: `at` is the offset of pixel 0's tap (0, 0)
// in x (maybe negative: only inside taps are read), pixels s*C apart.
template <typename T, int64_t PB, int64_t NV, bool FULL>
inline void forward_nhwc_pixels(const T* x, int64_t at, const T* k_pixel,
                                T* out, int64_t width, int64_t u_lo,
                                int64_t u_hi, const Geometry& g) {
  const int64_t gkk = g.groups * g.kk, x_step = g.s * g.c, k = g.k;
  const int64_t* offset = g.tap_nhwc.data();
  const T* x_at = x + at;
  const auto tap = [=](int64_t b, int64_t u, int64_t v, T& scalar) {
    const int64_t t = u * k + v;
    scalar = k_pixel[b * gkk + t];
    return x_at + (b * x_step + offset[t]);
  };
  broadcast_block<T, PB, NV, FULL>(tap, out, width, g.c, k, u_lo, u_hi);
}

// One pixel with every tap checked: `tap(u, v, scalar)` returns the channel
// vector tap (u, v) reads and sets its kernel value, or returns nullptr
// where the tap reads padding.
template <typename T, typename Tap>
void checked_pixel(const Tap& tap, T* out, int64_t width, const Geometry& g) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  for (int64_t c0 = 0; c0 < width; c0 += V) {
    const int64_t len = std::min(V, width - c0);
    Vec acc(0);
    for (int64_t u = 0; u < g.k; ++u) {
      for (int64_t v = 0; v < g.k; ++v) {
        T scalar;
        const T* src = tap(u, v, scalar);
        if (src != nullptr) {
          acc = at::vec::fmadd(Vec(scalar), load(src + c0, len), acc);
        }
      }
    }
    store(acc, out + c0, len);
  }
}

// Forward of a border pixel (i, j).
template <typename T>
void forward_nhwc_border(const T* x_image, const T* k_pixel, T* out,
                         int64_t i, int64_t j, int64_t width,
                         const Geometry& g) {
  const auto tap = [&](int64_t u, int64_t v, T& scalar) -> const T* {
    const int64_t row = i * g.s - g.p + u * g.d;
    const int64_t col = j * g.s - g.p + v * g.d;
    if (row < 0 || row >= g.h || col < 0 || col >= g.w) return nullptr;
    scalar = k_pixel[u * g.k + v];
    return x_image + (row * g.w + col) * g.c;
  };
  checked_pixel<T>(tap, out, width, g);
}

// Sweeps the `count` pixels of a row: those in [lo, hi) in blocks of PB
// through `interior(p, block)` (block: std::integral_constant, PB or 1
// pixels), the others one at a time through `border(p)`.
template <int64_t PB, typename Interior, typename Border>
void sweep_row(int64_t count, int64_t lo, int64_t hi,
               const Interior& interior, const Border& border) {
  for (int64_t p = 0; p < count;) {
    if (p < lo || p >= hi) {
      border(p);
      ++p;
    } else if (p + PB <= hi) {
      interior(p, std::integral_constant<int64_t, PB>());
      p += PB;
    } else {
      interior(p, std::integral_constant<int64_t, 1>());
      ++p;
    }
  }
}

// Calls `row(c0, width, pixels, vectors, full)` for each piece of a group's
// channels (at most two vectors wide), with the register blocking for it
// as std::integral_constants: 4 pixels x 2 vectors, or 8 pixels x 1, and
// whether the piece fills its vectors.
template <typename T, typename Row>
void for_channel_pieces(const Row& row, const Geometry& g) {
  constexpr int64_t V = Vectorized<T>::size();
  using Four = std::integral_constant<int64_t, 4>;
  using Eight = std::integral_constant<int64_t, 8>;
  using One = std::integral_constant<int64_t, 1>;
  using Two = std::integral_constant<int64_t, 2>;
  for (int64_t c0 = 0; c0 < g.cg; c0 += 2 * V) {
    const int64_t width = std::min(2 * V, g.cg - c0);
    if (width == 2 * V) {
      row(c0, width, Four(), Two(), std::true_type());
    } else if (width > V) {
      row(c0, width, Four(), Two(), std::false_type());
    } else if (width == V) {
      row(c0, width, Eight(), One(), std::true_type());
    } else {
      row(c0, width, Eight(), One(), std::false_type());
    }
  }
}

// The output pixels of a row whose taps' columns are all inside the input:
// j in [lo, hi).
struct InteriorColumns {
  int64_t lo, hi;
};

InteriorColumns interior_columns(const Geometry& g) {
  const int64_t lo = std::min(g.wo, (g.p + g.s - 1) / g.s);
  const int64_t last = g.w - 1 + g.p - (g.k - 1) * g.d;  // j*s <= last
  return {lo, std::max(lo, std::min(g.wo, last < 0 ? 0 : last / g.s + 1))};
}

// Forward of output row `row` (= n * Ho + i) from its kernel row
// k_row[Wo][G*K*K].
template <typename T>
void forward_nhwc_row(const T* x, const T* k_row, T* out, int64_t row,
                      InteriorColumns cols, const Geometry& g) {
  const int64_t gkk = g.groups * g.kk;
  const int64_t n = row / g.ho, i = row % g.ho;
  const T* x_image = x + n * g.h * g.w * g.c;
  T* out_row = out + row * g.wo * g.c;
  // the taps' rows inside the input: u in [u_lo, u_hi)
  const int64_t row0 = i * g.s - g.p;
  const int64_t u_lo = std::max<int64_t>(0, (-row0 + g.d - 1) / g.d);
  const int64_t u_hi =
      std::min<int64_t>(g.k, row0 >= g.h ? 0 : (g.h - 1 - row0) / g.d + 1);
  const auto pieces = [&](int64_t c0, int64_t width, auto pixels,
                          auto vectors, auto full) {
    constexpr int64_t NV = decltype(vectors)::value;
    constexpr bool FULL = decltype(full)::value;
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const int64_t ch = grp * g.cg + c0;
      const T* k_group = k_row + grp * g.kk;
      const auto interior = [&](int64_t j, auto block) {
        forward_nhwc_pixels<T, decltype(block)::value, NV, FULL>(
            x_image, (row0 * g.w + j * g.s - g.p) * g.c + ch,
            k_group + j * gkk, out_row + j * g.c + ch, width, u_lo, u_hi, g);
      };
      const auto border = [&](int64_t j) {
        forward_nhwc_border(x_image + ch, k_group + j * gkk,
                            out_row + j * g.c + ch, i, j, width, g);
      };
      sweep_row<decltype(pixels)::value>(g.wo, cols.lo, cols.hi, interior,
                                         border);
    }
  };
  for_channel_pieces<T>(pieces, g);
}

template <typename T>
void forward_nhwc(const T* x, const T* kernel, T* out, const Geometry& g) {
  const InteriorColumns cols = interior_columns(g);
  const int64_t row_size = g.wo * g.groups * g.kk;
  at::parallel_for(0, g.n * g.ho, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      forward_nhwc_row(x, kernel + row * row_size, out, row, cols, g);
    }
  });
}

// Kernel generation: ks[q][o] = bias[o] + sum_r reduced[q][r] * wt[r][o]
// for `count` pixels q (the 1x1 span conv, pixel-major), wt the (R, G*K*K)
// transposed weight. A register block of PB pixels x NV vectors of outputs
// from o0 on; `width` outputs when they fill fewer than NV vectors.
template <typename T, int64_t PB, int64_t NV, bool FULL>
inline void span_block(const T* reduced, const T* wt, const T* bias, T* ks,
                       int64_t o0, int64_t width, int64_t r_count,
                       int64_t gkk) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  int64_t lens[NV];
  KEEP_IN_REGISTERS
  for (int64_t a = 0; a < NV; ++a) {
    lens[a] = FULL ? V : std::max<int64_t>(0, std::min(V, width - a * V));
  }
  const auto get = [&](const T* ptr, int64_t a) {
    return FULL ? Vec::loadu(ptr) : load(ptr, lens[a]);
  };
  Vec acc[PB][NV];
  KEEP_IN_REGISTERS
  for (int64_t a = 0; a < NV; ++a) {
    const Vec b = get(bias + o0 + a * V, a);
    KEEP_IN_REGISTERS
    for (int64_t p = 0; p < PB; ++p) acc[p][a] = b;
  }
  for (int64_t r = 0; r < r_count; ++r) {
    Vec w[NV];
    KEEP_IN_REGISTERS
    for (int64_t a = 0; a < NV; ++a) w[a] = get(wt + r * gkk + o0 + a * V, a);
    KEEP_IN_REGISTERS
    for (int64_t p = 0; p < PB; ++p) {
      const Vec red(reduced[p * r_count + r]);
      KEEP_IN_REGISTERS
      for (int64_t a = 0; a < NV; ++a) {
        acc[p][a] = at::vec::fmadd(red, w[a], acc[p][a]);
      }
    }
  }
  KEEP_IN_REGISTERS
  for (int64_t p = 0; p < PB; ++p) {
    KEEP_IN_REGISTERS
    for (int64_t a = 0; a < NV; ++a) {
      T* dst = ks + p * gkk + o0 + a * V;
      if (FULL) {
        acc[p][a].store(dst);
      } else if (lens[a] > 0) {
        store(acc[p][a], dst, lens[a]);
      }
    }
  }
}

template <typename T>
void span_pixels(const T* reduced, const T* wt, const T* bias, T* ks,
                 int64_t count, int64_t r_count, int64_t gkk) {
  // 4 x 4 accumulators where there are 32 vector registers, 2 x 4 with 16
  constexpr int64_t NV = 4, PB = Vectorized<T>::size() * sizeof(T) >= 64 ? 4 : 2;
  constexpr int64_t OB = NV * Vectorized<T>::size();
  const auto pixels = [&](int64_t o0, int64_t width, auto full) {
    constexpr bool FULL = decltype(full)::value;
    int64_t q = 0;
    for (; q + PB <= count; q += PB) {
      span_block<T, PB, NV, FULL>(reduced + q * r_count, wt, bias,
                                  ks + q * gkk, o0, width, r_count, gkk);
    }
    for (; q < count; ++q) {
      span_block<T, 1, NV, FULL>(reduced + q * r_count, wt, bias,
                                 ks + q * gkk, o0, width, r_count, gkk);
    }
  };
  int64_t o0 = 0;
  for (; o0 + OB <= gkk; o0 += OB) pixels(o0, OB, std::true_type());
  if (o0 < gkk) pixels(o0, gkk - o0, std::false_type());
}

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
  at::parallel_for(0, g.n * g.ho, 1, [&](int64_t begin, int64_t end) {
    static thread_local std::vector<T> buffer;
    T* ks = scratch(buffer, chunk * row_size);
    for (int64_t row0 = begin; row0 < end; row0 += chunk) {
      const int64_t rows = std::min(chunk, end - row0);
      span_pixels(reduced + row0 * g.wo * r_count, wt, bias, ks,
                  rows * g.wo, r_count, gkk);
      for (int64_t r = 0; r < rows; ++r) {
        forward_nhwc_row(x, ks + r * row_size, out, row0 + r, cols, g);
      }
    }
  });
}

// grad_kernel (NHWC): per (n, group, band of output rows), the band's input
// rows and output gradient are gathered into NCHW scratch (at most about
// 1 MiB, in cache), the NCHW kernel computes the band's gradient there, and
// it is written out transposed (49 contiguous values per pixel): no NCHW copy
// of any whole tensor.
template <typename T>
void grad_kernel_nhwc(const T* grad_out, const T* x, T* grad_kernel,
                      const Geometry& g) {
  const int64_t gkk = g.groups * g.kk;
  const int64_t per_row = g.s * g.s * g.cg * g.wq + (g.cg + g.kk) * g.wo;
  const int64_t budget = (1024 * 1024) / static_cast<int64_t>(sizeof(T));
  const int64_t rows = std::max<int64_t>(1, std::min(g.ho, budget / per_row));
  const int64_t bands = (g.ho + rows - 1) / rows;
  const Geometry full_band = band_geometry(g, rows);
  at::parallel_for(0, g.n * g.groups * bands, 1, [&](int64_t begin,
                                                     int64_t end) {
    static thread_local std::vector<T> buffer;
    const int64_t band_out = rows * g.wo;
    T* xs = scratch(buffer,
                    g.s * full_band.phase_stride + (g.cg + g.kk) * band_out);
    T* gy = xs + g.s * full_band.phase_stride;
    T* gk = gy + g.cg * band_out;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t band = task % bands, ng = task / bands;
      const int64_t n = ng / g.groups, grp = ng % g.groups, ch = grp * g.cg;
      const int64_t i0 = band * rows, count = std::min(rows, g.ho - i0);
      const Geometry last_band =
          count == rows ? Geometry() : band_geometry(g, count);
      const Geometry& gb = count == rows ? full_band : last_band;
      const int64_t hw_band = count * g.wo;
      pad_group(x + n * g.h * g.w * g.c + ch, xs, gb, 1, g.w * g.c, g.c,
                i0 * g.s);
      const T* gy_band = grad_out + (n * g.ho + i0) * g.wo * g.c + ch;
      for (int64_t q = 0; q < hw_band; ++q) {
        for (int64_t c = 0; c < g.cg; ++c) {
          gy[c * hw_band + q] = gy_band[q * g.c + c];
        }
      }
      grad_kernel_group(gy, xs, gk, gb);
      T* out = grad_kernel + (n * g.ho + i0) * g.wo * gkk + grp * g.kk;
      for (int64_t q = 0; q < hw_band; ++q) {
        for (int64_t t = 0; t < g.kk; ++t) {
          out[q * gkk + t] = gk[t * hw_band + q];
        }
      }
    }
  });
}

// grad_input (NHWC) as a gather: input pixel (h, w) collects, from every
// tap (u, v) that reads it, kernel * grad_output at output pixel
// ((h + p - u*d) / s, (w + p - v*d) / s). At stride 1 a pixel whose taps all
// land inside the output takes the register-blocked path (as the forward);
// border pixels and strided layers check each tap.
// Input gradient of PB interior pixels (stride 1): tap (u, v) of pixel b
// reads output pixel (h + p - u*d, w + b + p - v*d); `gy_at` and `k_at` are
// the offsets of output pixel (h + p, w + p).
template <typename T, int64_t PB, int64_t NV, bool FULL>
inline void grad_input_nhwc_pixels(const T* gy, int64_t gy_at,
                                   const T* kernel, int64_t k_at, T* out,
                                   int64_t width, int64_t u_lo, int64_t u_hi,
                                   const Geometry& g) {
  const int64_t gkk = g.groups * g.kk, c = g.c, k = g.k, wo = g.wo, d = g.d;
  const T* gy_pixel = gy + gy_at;
  const T* k_pixel = kernel + k_at;
  const auto tap = [=](int64_t b, int64_t u, int64_t v, T& scalar) {
    const int64_t pixel = b - (u * wo + v) * d;
    scalar = k_pixel[pixel * gkk + u * k + v];
    return gy_pixel + pixel * c;
  };
  broadcast_block<T, PB, NV, FULL>(tap, out, width, c, k, u_lo, u_hi);
}

// Input gradient of pixel (h, w), any stride: tap (u, v) contributes where
// (h + p - u*d, w + p - v*d) is s times an output pixel.
template <typename T>
void grad_input_nhwc_checked(const T* gy_image, const T* k_image, T* out,
                             int64_t h, int64_t w, int64_t width,
                             const Geometry& g) {
  const int64_t gkk = g.groups * g.kk;
  const auto tap = [&](int64_t u, int64_t v, T& scalar) -> const T* {
    const int64_t i_s = h + g.p - u * g.d, j_s = w + g.p - v * g.d;
    if (i_s < 0 || j_s < 0 || i_s % g.s != 0 || j_s % g.s != 0 ||
        i_s / g.s >= g.ho || j_s / g.s >= g.wo) {
      return nullptr;
    }
    const int64_t pixel = (i_s / g.s) * g.wo + j_s / g.s;
    scalar = k_image[pixel * gkk + u * g.k + v];
    return gy_image + pixel * g.c;
  };
  checked_pixel<T>(tap, out, width, g);
}

template <typename T>
void grad_input_nhwc(const T* grad_out, const T* kernel, T* grad_in,
                     const Geometry& g) {
  const int64_t gkk = g.groups * g.kk;
  // stride 1: the pixels whose taps' output columns are all inside, w in
  // [w_lo, w_hi); strided layers check every pixel
  const int64_t w_lo = std::max<int64_t>(0, (g.k - 1) * g.d - g.p);
  const int64_t w_hi =
      g.s == 1 ? std::max(w_lo, std::min(g.w, g.wo - g.p)) : w_lo;
  at::parallel_for(0, g.n * g.h, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / g.h, h = task % g.h;
      const T* gy_image = grad_out + n * g.ho * g.wo * g.c;
      const T* k_image = kernel + n * g.ho * g.wo * gkk;
      T* gx_row = grad_in + task * g.w * g.c;
      // the taps whose output row is inside: u in [u_lo, u_hi)
      const int64_t i0 = h + g.p;  // output row of tap u = 0
      const int64_t u_lo =
          i0 >= g.ho ? std::min(g.k, (i0 - g.ho) / g.d + 1) : 0;
      const int64_t u_hi = std::min(g.k, i0 / g.d + 1);
      const auto row = [&](int64_t c0, int64_t width, auto pixels,
                           auto vectors, auto full) {
        constexpr int64_t NV = decltype(vectors)::value;
        constexpr bool FULL = decltype(full)::value;
        for (int64_t grp = 0; grp < g.groups; ++grp) {
          const int64_t ch = grp * g.cg + c0;
          const auto interior = [&](int64_t w, auto block) {
            const int64_t pixel = i0 * g.wo + w + g.p;  // of tap (0, 0)
            grad_input_nhwc_pixels<T, decltype(block)::value, NV, FULL>(
                gy_image, pixel * g.c + ch, k_image,
                pixel * gkk + grp * g.kk, gx_row + w * g.c + ch, width, u_lo,
                u_hi, g);
          };
          const auto border = [&](int64_t w) {
            grad_input_nhwc_checked(gy_image + ch, k_image + grp * g.kk,
                                    gx_row + w * g.c + ch, h, w, width, g);
          };
          sweep_row<decltype(pixels)::value>(g.w, w_lo, w_hi, interior,
                                             border);
        }
      };
      for_channel_pieces<T>(row, g);
    }
  });
}

// -------------------------------------------------------------- dispatch --

// The geometry of a call whose kernel (given or generated) has shape
// (N, kernel_channels, ho, wo).
Geometry geometry(const Tensor& input, int64_t kernel_channels, int64_t ho,
                  int64_t wo, int64_t k, int64_t s, int64_t p, int64_t d) {
  TORCH_CHECK(input.dim() == 4, "involution: input must be 4-D");
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
  g.groups = kernel_channels / g.kk;
  g.ho = ho;
  g.wo = wo;
  TORCH_CHECK(g.groups >= 1 && kernel_channels == g.groups * g.kk &&
                  g.c % g.groups == 0,
              "involution: kernel channels do not match the input");
  TORCH_CHECK(g.ho == (g.h + 2 * p - d * (k - 1) - 1) / s + 1 &&
                  g.wo == (g.w + 2 * p - d * (k - 1) - 1) / s + 1 &&
                  g.ho >= 1 && g.wo >= 1,
              "involution: kernel spatial size does not match the output");
  g.cg = g.c / g.groups;
  g.hp = g.h + 2 * p;
  g.wq = (g.w + 2 * p + s - 1) / s;
  g.plane = g.hp * g.wq;
  g.phase_stride = g.cg * g.plane;
  set_taps(g);
  return g;
}

Geometry geometry(const Tensor& input, const Tensor& kernel, int64_t k,
                  int64_t s, int64_t p, int64_t d) {
  TORCH_CHECK(kernel.dim() == 4 && kernel.size(0) == input.size(0),
              "involution: kernel shape does not match the input");
  return geometry(input, kernel.size(1), kernel.size(2), kernel.size(3), k, s,
                  p, d);
}

// How a call computes: NHWC when the input is channels_last and not (also)
// plain contiguous, NCHW otherwise; in double for double, else in float.
struct Layout {
  bool nhwc;
  at::MemoryFormat format;
  at::ScalarType type;
  // `t` in the compute type and layout (a no-op when it already is)
  Tensor operator()(const Tensor& t) const {
    return t.to(type).contiguous(format);
  }
};

Layout layout_of(const Tensor& input) {
  const bool nhwc = !input.is_contiguous() &&
                    input.is_contiguous(at::MemoryFormat::ChannelsLast);
  return {nhwc,
          nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous,
          input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat};
}

void poison_with_nan(Tensor& t) {
  t.fill_(std::numeric_limits<double>::quiet_NaN());
}

// `poison` (for tests) fills the results with NaN before the kernels write
// them, so that an element a kernel misses cannot pass unnoticed.
Tensor involution_forward(const Tensor& input, const Tensor& kernel,
                          int64_t kernel_size, int64_t stride,
                          int64_t padding, int64_t dilation, bool poison) {
  const Geometry g =
      geometry(input, kernel, kernel_size, stride, padding, dilation);
  const Layout layout = layout_of(input);
  const Tensor x = layout(input), k = layout(kernel);
  Tensor out = at::empty({g.n, g.c, g.ho, g.wo}, x.options(), layout.format);
  if (poison) poison_with_nan(out);
  AT_DISPATCH_FLOATING_TYPES(layout.type, "involution_forward_cpu", [&] {
    const auto forward = layout.nhwc ? forward_nhwc<scalar_t>
                                     : forward_nchw<scalar_t>;
    forward(x.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(),
            out.data_ptr<scalar_t>(), g);
  });
  return out.to(input.scalar_type());
}

// Forward of channels_last tensors with the kernel generated on the fly
// from `reduced` (N, R, Ho, Wo) by the 1x1 conv `weight` (G*K*K, R, 1, 1)
// and `bias` (G*K*K): the kernel tensor is never written.
Tensor generated_forward(const Tensor& input, const Tensor& reduced,
                         const Tensor& weight,
                         const c10::optional<Tensor>& bias,
                         int64_t kernel_size, int64_t stride,
                         int64_t padding, int64_t dilation, bool poison) {
  const Layout layout = layout_of(input);
  TORCH_CHECK(layout.nhwc,
              "involution: generated_forward takes a channels_last input");
  TORCH_CHECK(reduced.dim() == 4 && reduced.size(0) == input.size(0),
              "involution: reduced must be (N, R, Ho, Wo)");
  const int64_t gkk = weight.size(0), r_count = reduced.size(1);
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == r_count &&
                  weight.size(2) == 1 && weight.size(3) == 1,
              "involution: weight must be (G*K*K, R, 1, 1)");
  TORCH_CHECK(!bias.has_value() || (bias->dim() == 1 && bias->size(0) == gkk),
              "involution: bias must be (G*K*K,)");
  const Geometry g = geometry(input, gkk, reduced.size(2), reduced.size(3),
                              kernel_size, stride, padding, dilation);
  const Tensor x = layout(input), red = layout(reduced);
  const Tensor wt = weight.reshape({gkk, r_count}).to(layout.type).t()
                        .contiguous();
  const Tensor b = bias.has_value() ? bias->to(layout.type).contiguous()
                                    : at::zeros({gkk}, wt.options());
  Tensor out = at::empty({g.n, g.c, g.ho, g.wo}, x.options(), layout.format);
  if (poison) poison_with_nan(out);
  AT_DISPATCH_FLOATING_TYPES(layout.type, "involution_generated_cpu", [&] {
    generated_forward_nhwc<scalar_t>(
        x.data_ptr<scalar_t>(), red.data_ptr<scalar_t>(),
        wt.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(),
        out.data_ptr<scalar_t>(), r_count, g);
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
  const Layout layout = layout_of(input);
  const Tensor x = layout(input), k = layout(kernel), gy = layout(grad_output);
  Tensor grad_in = at::empty_like(x, layout.format);
  Tensor grad_k = at::empty_like(k, layout.format);
  if (poison) {
    poison_with_nan(grad_in);
    poison_with_nan(grad_k);
  }
  AT_DISPATCH_FLOATING_TYPES(layout.type, "involution_backward_cpu", [&] {
    const scalar_t *gy_p = gy.data_ptr<scalar_t>(),
                   *x_p = x.data_ptr<scalar_t>(), *k_p = k.data_ptr<scalar_t>();
    scalar_t *gx_p = grad_in.data_ptr<scalar_t>(),
             *gk_p = grad_k.data_ptr<scalar_t>();
    if (layout.nhwc) {
      grad_kernel_nhwc<scalar_t>(gy_p, x_p, gk_p, g);
      grad_input_nhwc<scalar_t>(gy_p, k_p, gx_p, g);
    } else {
      backward_nchw<scalar_t>(gy_p, x_p, k_p, gx_p, gk_p, g);
    }
  });
  return {grad_in.to(input.scalar_type()), grad_k.to(kernel.scalar_type())};
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
  m.def(
      "generated_forward(Tensor input, Tensor reduced, Tensor weight, "
      "Tensor? bias, int kernel_size, int stride, int padding, int dilation, "
      "bool poison=False) -> Tensor");
}

TORCH_LIBRARY_IMPL(mmplug_involution_cpu, CPU, m) {
  m.impl("forward", &involution_forward);
  m.impl("backward", &involution_backward);
  m.impl("generated_forward", &generated_forward);
}
