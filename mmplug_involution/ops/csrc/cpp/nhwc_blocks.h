// Register-blocked building blocks of the NHWC (channels_last) passes.
//
// In NHWC the channels of a group are contiguous, so vectors run along them
// and each kernel value is a broadcast:
//   acc[pixel b][vector a] += kernel_value(b, u, v) * src(b, u, v)[a*V ...]
// The forward, the input gradient (a gather of the same shape) and the
// generated forward all sweep an output (or input) row the same way:
//   for_channel_pieces: piece of a group's channels, at most 2 vectors wide
//     (4 pixels x 2 vectors or 8 pixels x 1 vector of accumulators)
//     sweep_row: interior pixels in blocks of PB -> broadcast_block, whose
//                taps need no checks; border pixels one at a time ->
//                checked_pixel, which skips the taps that read padding
//                (the forward), or broadcast_block over the taps that
//                land inside (the input gradient)
//       broadcast_block: tap row -> tap column -> pixel b -> vector a,
//                        the PB x NV accumulators in registers throughout
#pragma once

#include "involution_cpu.h"

namespace mmplug_involution_cpu {

// PB pixels, NV vectors of a group's channels each: PB * NV independent
// accumulators across `rows` x `cols` taps. `tap(b, a, e, scalar)` returns
// the channel vector that the a-th tap row's e-th tap of pixel b reads
// (always inside its tensor: the callers' interior pixels, or taps they
// listed) and sets the kernel value that scales it; which (u, v) that is,
// is the caller's (a range of rows, every column, or every s-th of each).
// out[b * out_step + channel] gets the sums; FULL: the NV vectors are all
// `width` covers (no masks). Every argument is a value and the taps capture
// values, so that nothing in the loop can alias the accumulators and they
// stay in registers.
template <typename T, int64_t PB, int64_t NV, bool FULL, typename Tap>
inline void broadcast_block(const Tap tap, T* out, int64_t out_step,
                            int64_t width, int64_t rows, int64_t cols) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  int64_t lens[NV];
  vector_lengths<T, NV, FULL>(lens, width);
  const auto get = [&](const T* ptr, int64_t a) {
    return FULL ? Vec::loadu(ptr) : load(ptr, lens[a]);
  };
  Vec acc[PB][NV];
  KEEP_IN_REGISTERS
  for (int64_t b = 0; b < PB; ++b)
    KEEP_IN_REGISTERS
    for (int64_t a = 0; a < NV; ++a) acc[b][a] = Vec(0);
  for (int64_t a = 0; a < rows; ++a) {
    for (int64_t e = 0; e < cols; ++e) {
      KEEP_IN_REGISTERS
      for (int64_t b = 0; b < PB; ++b) {
        T scalar;
        const T* src = tap(b, a, e, scalar);
        const Vec kv(scalar);
        KEEP_IN_REGISTERS
        for (int64_t a = 0; a < NV; ++a) {
          acc[b][a] = fmadd(kv, get(src + a * V, a), acc[b][a]);
        }
      }
    }
  }
  store_block<T, PB, NV, FULL>(acc, out, out_step, lens);
}

// The same sums where the stride and dilation are 1 and K is a
// compile-time constant: the PB pixels of a block read PB + K - 1 input
// columns per tap row, side by side. Each column's vectors are loaded once
// and multiplied into every pixel whose window covers them (register
// blocking along the row), instead of once per pixel and tap.
// `column(a, x)` returns what column x (x = b + t for pixel b, tap t of its
// window row) of tap row a holds; `weight(b, a, t)` the kernel value that
// scales it for pixel b. Both loops over columns and pixels unroll fully,
// so the tap bounds are resolved at compile time.
template <typename T, int64_t PB, int64_t NV, bool FULL, int64_t K,
          typename Column, typename Weight>
inline void sliding_block(const Column column, const Weight weight, T* out,
                          int64_t out_step, int64_t width, int64_t rows) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  int64_t lens[NV];
  vector_lengths<T, NV, FULL>(lens, width);
  Vec acc[PB][NV];
  KEEP_IN_REGISTERS
  for (int64_t b = 0; b < PB; ++b)
    KEEP_IN_REGISTERS
    for (int64_t a = 0; a < NV; ++a) acc[b][a] = Vec(0);
  for (int64_t row = 0; row < rows; ++row) {
    KEEP_IN_REGISTERS
    for (int64_t x = 0; x < PB + K - 1; ++x) {
      const T* src = column(row, x);
      Vec in[NV];
      KEEP_IN_REGISTERS
      for (int64_t a = 0; a < NV; ++a) {
        in[a] = FULL ? Vec::loadu(src + a * V) : load(src + a * V, lens[a]);
      }
      KEEP_IN_REGISTERS
      for (int64_t b = 0; b < PB; ++b) {
        if (x - b < 0 || x - b >= K) continue;
        const Vec kv(weight(b, row, x - b));
        KEEP_IN_REGISTERS
        for (int64_t a = 0; a < NV; ++a) {
          acc[b][a] = fmadd(kv, in[a], acc[b][a]);
        }
      }
    }
  }
  store_block<T, PB, NV, FULL>(acc, out, out_step, lens);
}

// Calls `body(std::integral_constant<int64_t, K>())` where K is a window
// size compiled for the sliding blocks (3 or 7) and the stride and dilation
// are 1, else `general()`.
template <typename Body, typename General>
inline void with_sliding_window(const Geometry& g, const Body& body,
                                const General& general) {
  if (g.s != 1 || g.d != 1) {
    general();
  } else if (g.k == 7) {
    body(std::integral_constant<int64_t, 7>());
  } else if (g.k == 3) {
    body(std::integral_constant<int64_t, 3>());
  } else {
    general();
  }
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
          acc = fmadd(Vec(scalar), load(src + c0, len), acc);
        }
      }
    }
    store(acc, out + c0, len);
  }
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

}  // namespace mmplug_involution_cpu
