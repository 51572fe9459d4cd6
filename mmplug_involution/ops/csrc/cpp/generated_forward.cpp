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
//     span conv of the chunk into a per-thread buffer (span_pixels):
//       block of 4 vectors of outputs o0 -> block of PB pixels ->
//       reduced channel r -> pixel -> vector (PB x 4 accumulators)
//     each row of the chunk: forward_nhwc_row from the buffer
#include "involution_cpu.h"
#include "nhwc_forward.h"

namespace mmplug_involution_cpu {

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

// --------------------------------------------- instantiations --

#define MMPLUG_INSTANTIATE(T)                                                 \
  template void generated_forward_nhwc<T>(const T*, const T*, const T*,       \
      const T*, T*, int64_t, const Geometry&);
MMPLUG_INSTANTIATE(float)
MMPLUG_INSTANTIATE(double)
#undef MMPLUG_INSTANTIATE

}  // namespace mmplug_involution_cpu
