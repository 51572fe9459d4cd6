// The forward of one NHWC (channels_last) output row, from its kernel row.
//
// out[n, i, j, c] = sum_{u,v} k_row[j][g*K*K + u*K + v] *
//                   x[n, i*s - p + u*d, j*s - p + v*d, c]
// The taps whose input row is outside the input are skipped for the whole
// row (u in [u_lo, u_hi)); interior columns (all taps' columns inside) take
// the register blocks of nhwc_blocks.h, border columns check each tap.
//   piece of a group's channels -> group g -> output column j (blocks of 4
//   or 8 interior pixels, border pixels one at a time) -> tap u -> tap v ->
//   pixel -> channel vector
// Shared by the forward (nhwc_forward.cpp) and the generated forward
// (generated_forward.cpp), which differ only in where the kernel row comes
// from.
#pragma once

#include "involution_cpu.h"
#include "nhwc_blocks.h"

namespace mmplug_involution_cpu {

// The output pixels of a row whose taps' columns are all inside the input:
// j in [lo, hi).
struct InteriorColumns {
  int64_t lo, hi;
};

// Forward of PB interior pixels: `at` is the offset of pixel 0's tap (0, 0)
// in x (maybe negative: only inside taps are read), pixels s*C apart.
template <typename T, int64_t PB, int64_t NV, bool FULL>
inline void forward_nhwc_pixels(const T* x, int64_t at, const T* k_pixel,
                                T* out, int64_t width, int64_t u_lo,
                                int64_t u_hi, const Geometry& g) {
  const int64_t gkk = g.groups * g.kk, x_step = g.s * g.c, k = g.k;
  const int64_t* offset = g.tap_nhwc.data();
  const T* x_at = x + at;
  const auto tap = [=](int64_t b, int64_t a, int64_t v, T& scalar) {
    const int64_t t = (u_lo + a) * k + v;
    scalar = k_pixel[b * gkk + t];
    return x_at + (b * x_step + offset[t]);
  };
  broadcast_block<T, PB, NV, FULL>(tap, out, g.c, width, u_hi - u_lo, k);
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

inline InteriorColumns interior_columns(const Geometry& g) {
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
        constexpr int64_t PB = decltype(block)::value;
        const int64_t at = (row0 * g.w + j * g.s - g.p) * g.c + ch;
        const T* k_pixel = k_group + j * gkk;
        T* out_pixel = out_row + j * g.c + ch;
        with_sliding_window(
            g,
            [&](auto window) {
              constexpr int64_t K = decltype(window)::value;
              // tap row a is u_lo + a; column x of it is input column
              // j - p + x
              const T* x_at = x_image + at + u_lo * g.w * g.c;
              const int64_t row_step = g.w * g.c, c = g.c;
              const auto column = [=](int64_t a, int64_t x) {
                return x_at + a * row_step + x * c;
              };
              const T* k_at = k_pixel + u_lo * K;
              const auto weight = [=](int64_t b, int64_t a, int64_t t) {
                return k_at[b * gkk + a * K + t];
              };
              sliding_block<T, PB, NV, FULL, K>(column, weight, out_pixel,
                                                c, width, u_hi - u_lo);
            },
            [&] {
              forward_nhwc_pixels<T, PB, NV, FULL>(x_image, at, k_pixel,
                                                   out_pixel, width, u_lo,
                                                   u_hi, g);
            });
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

}  // namespace mmplug_involution_cpu
