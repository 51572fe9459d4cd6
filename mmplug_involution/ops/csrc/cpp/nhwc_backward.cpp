// Backward, channels_last (NHWC) tensors: kernel gradient and input gradient.
//
// grad_kernel[n, i, j, g*K*K + t] = sum_{c in g} gy[n, i, j, c] *
//                                   x[n, i*s - p + u*d, j*s - p + v*d, c]
//   a sum over channels, which NHWC vectors run along: per (n, g, band of
//   output rows), in parallel, the band's padded input rows and output
//   gradient are gathered into the NCHW scratch (at most about 1 MiB), the
//   NCHW kernel-gradient loop (nchw_scratch.h) computes the band there,
//   and the result is written out transposed.
// grad_input[n, h, w, c] = sum_{u,v} kernel[n, i, j, g*K*K + u*K + v] *
//                                     gy[n, i, j, c],
//   (i, j) = ((h + p - u*d) / s, (w + p - v*d) / s) where both divide
//   exactly and land inside the output: a gather, the mirror of the forward.
//   Loop order: input row (n, h), in parallel -> channel piece -> group ->
//   input column w (stride 1: interior pixels in register blocks, the
//   others checked; strided layers check every pixel) -> tap u -> tap v ->
//   pixel -> channel vector.
#include "involution_cpu.h"
#include "nchw_scratch.h"
#include "nhwc_blocks.h"

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
