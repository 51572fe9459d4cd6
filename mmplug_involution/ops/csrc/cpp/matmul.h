// Register-blocked small matrix products of the kernel generator's 1x1 conv.
//
//   c[p][o] = init(p)[o] + sum_r a[p * a_p + r * a_r] * b[r * ldb + o]
//   for p < rows, o < cols; init(p) = init + p * init_p (init_p = 0: one
//   bias row for all; init = c, init_p = ldc: accumulate into c), or zero
//   when init is null.
// Three products of the generated involution take this shape:
//   span conv      ks[q][o]  = bias[o] + sum_r reduced[q][r] * wt[r][o]
//   its input grad gr[q][r]  = sum_o gk[q][o] * weight[o][r]
//   its weight grad gw[o][r] += sum_q gk[q][o] * reduced[q][r]
// Loop order: block of NV vectors of outputs o -> block of PB rows p ->
// r -> row -> vector, PB x NV accumulators in registers; r ascending from
// init, whatever the blocking: the result does not depend on it.
#pragma once

#include "involution_cpu.h"

namespace mmplug_involution_cpu {

template <typename T, int64_t PB, int64_t NV, bool FULL>
inline void matmul_block(const T* a, int64_t a_p, int64_t a_r, const T* b,
                         int64_t ldb, const T* init, int64_t init_p, T* c,
                         int64_t ldc, int64_t width, int64_t depth) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  int64_t lens[NV];
  vector_lengths<T, NV, FULL>(lens, width);
  const auto get = [&](const T* ptr, int64_t v) {
    return FULL ? Vec::loadu(ptr) : load(ptr, lens[v]);
  };
  Vec acc[PB][NV];
  KEEP_IN_REGISTERS
  for (int64_t p = 0; p < PB; ++p) {
    KEEP_IN_REGISTERS
    for (int64_t v = 0; v < NV; ++v) {
      acc[p][v] = init == nullptr ? Vec(0) : get(init + p * init_p + v * V, v);
    }
  }
  for (int64_t r = 0; r < depth; ++r) {
    Vec w[NV];
    KEEP_IN_REGISTERS
    for (int64_t v = 0; v < NV; ++v) w[v] = get(b + r * ldb + v * V, v);
    KEEP_IN_REGISTERS
    for (int64_t p = 0; p < PB; ++p) {
      const Vec scalar(a[p * a_p + r * a_r]);
      KEEP_IN_REGISTERS
      for (int64_t v = 0; v < NV; ++v) {
        acc[p][v] = fmadd(scalar, w[v], acc[p][v]);
      }
    }
  }
  store_block<T, PB, NV, FULL>(acc, c, ldc, lens);
}

// The rows in blocks of PB (the last ones one at a time), for the columns
// [o0, o0 + width) of one block of NV vectors.
template <typename T, int64_t PB, int64_t NV, bool FULL>
void matmul_columns(const T* a, int64_t a_p, int64_t a_r, const T* b,
                    int64_t ldb, const T* init, int64_t init_p, T* c,
                    int64_t ldc, int64_t rows, int64_t o0, int64_t width,
                    int64_t depth) {
  const T* init_o = init == nullptr ? nullptr : init + o0;
  int64_t p = 0;
  for (; p + PB <= rows; p += PB) {
    matmul_block<T, PB, NV, FULL>(
        a + p * a_p, a_p, a_r, b + o0, ldb,
        init_o == nullptr ? nullptr : init_o + p * init_p, init_p,
        c + p * ldc + o0, ldc, width, depth);
  }
  for (; p < rows; ++p) {
    matmul_block<T, 1, NV, FULL>(
        a + p * a_p, a_p, a_r, b + o0, ldb,
        init_o == nullptr ? nullptr : init_o + p * init_p, init_p,
        c + p * ldc + o0, ldc, width, depth);
  }
}

// One panel of depth: c = init + a @ b over `depth` values of r, 4 vectors
// x 4 rows of accumulators (2 rows with 16 vector registers), narrower
// column blocks with more rows.
template <typename T>
void matmul_panel(const T* a, int64_t a_p, int64_t a_r, const T* b,
                  int64_t ldb, const T* init, int64_t init_p, T* c,
                  int64_t ldc, int64_t rows, int64_t cols, int64_t depth) {
  constexpr int64_t V = Vectorized<T>::size();
  constexpr int64_t ROWS = Vectorized<T>::size() * sizeof(T) >= 64 ? 16 : 8;
  int64_t o0 = 0;
  for (; o0 + 4 * V <= cols; o0 += 4 * V) {
    matmul_columns<T, ROWS / 4, 4, true>(a, a_p, a_r, b, ldb, init, init_p,
                                         c, ldc, rows, o0, 4 * V, depth);
  }
  const int64_t width = cols - o0;
  if (width == 0) return;
  if (width <= V) {
    matmul_columns<T, ROWS, 1, false>(a, a_p, a_r, b, ldb, init, init_p, c,
                                      ldc, rows, o0, width, depth);
  } else if (width <= 2 * V) {
    matmul_columns<T, ROWS / 2, 2, false>(a, a_p, a_r, b, ldb, init, init_p,
                                          c, ldc, rows, o0, width, depth);
  } else {
    matmul_columns<T, ROWS / 4, 4, false>(a, a_p, a_r, b, ldb, init, init_p,
                                          c, ldc, rows, o0, width, depth);
  }
}

// c = init + a @ b (see the top of this file), in panels of at most
// kDepthPanel values of r, so that the panel of b a column block reads
// (kDepthPanel x 4 vectors) stays in L1 across the blocks of rows; each
// panel after the first starts from c. The sums keep their order: the
// results do not depend on the panels.
constexpr int64_t kDepthPanel = 128;

template <typename T>
void matmul(const T* a, int64_t a_p, int64_t a_r, const T* b, int64_t ldb,
            const T* init, int64_t init_p, T* c, int64_t ldc, int64_t rows,
            int64_t cols, int64_t depth) {
  for (int64_t r0 = 0; r0 < depth; r0 += kDepthPanel) {
    matmul_panel(a + r0 * a_r, a_p, a_r, b + r0 * ldb, ldb,
                 r0 == 0 ? init : c, r0 == 0 ? init_p : ldc, c, ldc, rows,
                 cols, std::min(kDepthPanel, depth - r0));
  }
}

}  // namespace mmplug_involution_cpu
