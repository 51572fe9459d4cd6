// Fused backward of the generated involution, channels_last (NHWC) tensors.
//
// With the kernel kernel[q][o] = bias[o] + sum_r reduced[q][r] * wt[r][o]
// (q an output pixel, o < G*K*K; generated_forward.cpp):
//   grad_kernel[q][o]   from grad_output and the input (nhwc_backward.h)
//   grad_reduced[q][r] = sum_o grad_kernel[q][o] * weight[o][r]
//   grad_weight[o][r]  = sum_q grad_kernel[q][o] * reduced[q][r]
//   grad_bias[o]       = sum_q grad_kernel[q][o]
//   grad_input          the gather of nhwc_backward.h, from the kernel
// Neither the kernel nor its gradient is ever a whole tensor. Per band of
// output rows of one image (both tiles in about 2 MiB, in cache): the
// band's kernel gradient (group by group), contracted at once into
// grad_reduced and into its chunk's partial sums of grad_weight and
// grad_bias; the band's kernel (the span conv) into a second tile; then the
// input rows the band reaches, gathered from that tile.
//
// Input rows near a band's edges are reached by two bands. Bands are at
// least ceil((K-1)d/s) + 1 rows, so that bands b and b+2 never reach the
// same row: the even bands run first, in parallel, and write their rows;
// then the odd bands, which add to the rows an even neighbour wrote and
// write the others. The partial sums belong to fixed chunks of consecutive
// bands, each chunk run by one thread in band order, and are added chunk by
// chunk in order: band sizes and chunks depend on the shapes alone, so the
// results are bitwise the same for any thread count.
#include "involution_cpu.h"
#include "matmul.h"
#include "nhwc_backward.h"

namespace mmplug_involution_cpu {

namespace {

// Partial sums are kept per chunk of bands: at most kMaxChunks chunks, and
// fewer where their sums would take more than kPartialBytes (a deep layer's
// weight gradient is 0.8 MB), but not fewer than kMinChunks.
constexpr int64_t kMaxChunks = 64, kMinChunks = 4;
constexpr int64_t kPartialBytes = 8 << 20;

struct BandPlan {
  int64_t rows;       // output rows of a band (the last may have fewer)
  int64_t per_image;  // bands per image
  int64_t reach;      // input rows a band writes below the first input row
                      // of its last output row
};

BandPlan band_plan(const Geometry& g, int64_t value_size) {
  const int64_t gkk = g.groups * g.kk;
  // two tiles of rows x Wo x G*K*K values in 2 MiB, at least 16 bands in
  // all where the rows allow (work for the threads), never fewer rows than
  // a window spans; larger bands give the partial sums deeper products
  const int64_t span = ((g.k - 1) * g.d + g.s - 1) / g.s + 1;
  const int64_t budget = (1024 * 1024) / (value_size * g.wo * gkk);
  const int64_t rows = std::min(
      g.ho, std::max(span, std::min(budget, (g.n * g.ho + 15) / 16)));
  return {rows, (g.ho + rows - 1) / rows,
          std::max((g.k - 1) * g.d, g.s - 1)};
}

}  // namespace

template <typename T>
void generated_backward_nhwc(const T* grad_out, const T* x,
                             const T* reduced, const T* weight, const T* wt,
                             const T* bias, T* grad_in, T* grad_reduced,
                             T* grad_weight, T* grad_bias, int64_t r_count,
                             const Geometry& g) {
  using Vec = Vectorized<T>;
  const int64_t gkk = g.groups * g.kk;
  const BandPlan plan = band_plan(g, sizeof(T));
  const int64_t bands = g.n * plan.per_image;
  const int64_t partial_size = gkk * r_count + gkk;
  // chunks: the unit of work of a thread; their partial sums in at most
  // kPartialBytes where that leaves kMinChunks
  const int64_t chunks = std::min(
      {bands, kMaxChunks,
       std::max(kMinChunks, kPartialBytes /
                                (partial_size * static_cast<int64_t>(sizeof(T))))});
  std::vector<T> partials(chunks * partial_size, T(0));
  const int64_t sub_rows = grad_kernel_band_rows<T>(g);
  const int64_t tile = plan.rows * g.wo * gkk;
  const ColumnTaps cols = column_taps(g);

  // the input rows band b of an image writes: [lo, hi)
  const auto band_rows = [&](int64_t b, int64_t& lo, int64_t& hi) {
    const int64_t i0 = b * plan.rows;
    const int64_t i1 = std::min(g.ho, i0 + plan.rows);
    lo = std::max<int64_t>(0, i0 * g.s - g.p);
    hi = b + 1 == plan.per_image
             ? g.h
             : std::min(g.h, (i1 - 1) * g.s - g.p + plan.reach + 1);
  };

  const auto run_band = [&](int64_t n, int64_t b, bool odd, T* partial,
                            T* ks, T* gk, std::vector<T>& xs_buffer,
                            std::vector<T>& row_buffer) {
    const int64_t i0 = b * plan.rows;
    const int64_t count = std::min(plan.rows, g.ho - i0);
    const int64_t pixels = count * g.wo, q0 = (n * g.ho + i0) * g.wo;
    // the band's kernel gradient gk[o][q], group by group, sub-band by
    // sub-band
    for (int64_t s0 = 0; s0 < count; s0 += sub_rows) {
      const Geometry gb = band_geometry(g, std::min(sub_rows, count - s0));
      T* xs = scratch(xs_buffer, grad_kernel_band_scratch(gb));
      for (int64_t grp = 0; grp < g.groups; ++grp) {
        grad_kernel_nhwc_band(grad_out, x, gk + grp * g.kk * pixels + s0 * g.wo,
                              1, pixels, n, grp, i0 + s0, gb, xs, g);
      }
    }
    // contracted at once: grad_reduced, and this chunk's partial sums
    const T* red = reduced + q0 * r_count;
    matmul<T>(gk, 1, pixels, weight, r_count, nullptr, 0,
              grad_reduced + q0 * r_count, r_count, pixels, r_count, gkk);
    matmul<T>(gk, pixels, 1, red, r_count, partial, r_count, partial, r_count,
              gkk, r_count, pixels);
    T* partial_bias = partial + gkk * r_count;
    for (int64_t o = 0; o < gkk; ++o) {
      partial_bias[o] += reduce_sum<T>(gk + o * pixels, pixels);
    }
    // the band's kernel, then the input rows it reaches
    matmul<T>(red, r_count, 1, wt, gkk, bias, 0, ks, gkk, pixels, gkk,
              r_count);
    const KernelRows<T> rows{ks, i0, i0, i0 + count};
    int64_t lo, hi, prev_hi = 0, next_lo = g.h;
    band_rows(b, lo, hi);
    if (odd) {  // rows an even neighbour wrote: [lo, prev_hi), [next_lo, hi)
      int64_t unused;
      band_rows(b - 1, unused, prev_hi);
      if (b + 1 < plan.per_image) band_rows(b + 1, next_lo, unused);
    }
    T* row_sum = scratch(row_buffer, g.w * g.c);
    for (int64_t h = lo; h < hi; ++h) {
      T* gx_row = grad_in + (n * g.h + h) * g.w * g.c;
      if (!odd || (h >= prev_hi && h < next_lo)) {
        grad_input_nhwc_row(grad_out, rows, cols, gx_row, n, h, g);
        continue;
      }
      grad_input_nhwc_row(grad_out, rows, cols, row_sum, n, h, g);
      add_into<T>(gx_row, row_sum, g.w * g.c);
    }
  };

  for (const bool odd : {false, true}) {
    parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      static thread_local std::vector<T> tiles, xs_buffer, row_buffer;
      T* ks = scratch(tiles, 2 * tile);
      for (int64_t chunk = begin; chunk < end; ++chunk) {
        const int64_t first = chunk * bands / chunks;
        const int64_t last = (chunk + 1) * bands / chunks;
        for (int64_t band = first; band < last; ++band) {
          const int64_t b = band % plan.per_image;
          if ((b % 2 == 1) != odd) continue;
          run_band(band / plan.per_image, b, odd,
                   partials.data() + chunk * partial_size, ks, ks + tile,
                   xs_buffer, row_buffer);
        }
      }
    });
  }
  // the chunks' partial sums, added in chunk order
  parallel_for(0, partial_size, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      T sum = partials[e];
      for (int64_t chunk = 1; chunk < chunks; ++chunk) {
        sum += partials[chunk * partial_size + e];
      }
      if (e < gkk * r_count) {
        grad_weight[e] = sum;
      } else {
        grad_bias[e - gkk * r_count] = sum;
      }
    }
  });
}

// --------------------------------------------- instantiations --

#define MMPLUG_INSTANTIATE(T)                                                 \
  template void generated_backward_nhwc<T>(const T*, const T*, const T*,      \
      const T*, const T*, const T*, T*, T*, T*, T*, int64_t,                  \
      const Geometry&);
MMPLUG_INSTANTIATE(float)
MMPLUG_INSTANTIATE(double)
#undef MMPLUG_INSTANTIATE

}  // namespace mmplug_involution_cpu
