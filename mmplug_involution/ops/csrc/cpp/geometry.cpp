// Geometry of a call: sizes, and each tap's offset.
//
// Every pass reads the input through fixed per-tap offsets, so that no tap
// needs a bounds check where the input is padded:
//   tap t = u*K + v, NCHW scratch:  (v*d % s) * phase_stride + u*d * wq
//                                   + v*d / s
//   tap t = u*K + v, NHWC image:    (u*d * W + v*d) * C
// The NCHW scratch (nchw_scratch.h) of one group is its cg channels
// zero-padded by p and split into the s column phases: padded column
// q = m*s + b goes to phase b, position m, i.e. xs[b][c][hp][wq]. Tap (u, v)
// of output (i, j) then reads xs[(v*d) % s][c][i*s + u*d][j + (v*d) / s], so
// along the output row j a tap is one contiguous segment. A band geometry
// describes a scratch that holds only the padded rows a band of output rows
// reads (the NHWC kernel gradient's).
#include "involution_cpu.h"

namespace mmplug_involution_cpu {

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

// The geometry of a call: input (n, c, h, w), a kernel (given or generated)
// of (n, kernel_channels, ho, wo), window k, stride s, padding p, dilation
// d. Returns why they do not fit together, or nullptr.
const char* make_geometry(Geometry& g, int64_t n, int64_t c, int64_t h,
                          int64_t w, int64_t kernel_channels, int64_t ho,
                          int64_t wo, int64_t k, int64_t s, int64_t p,
                          int64_t d) {
  if (k < 1 || s < 1 || p < 0 || d < 1) {
    return "involution: invalid kernel_size/stride/padding/dilation";
  }
  g.n = n;
  g.c = c;
  g.h = h;
  g.w = w;
  g.k = k;
  g.s = s;
  g.p = p;
  g.d = d;
  g.kk = k * k;
  g.groups = kernel_channels / g.kk;
  g.ho = ho;
  g.wo = wo;
  if (g.groups < 1 || kernel_channels != g.groups * g.kk ||
      c % g.groups != 0) {
    return "involution: kernel channels do not match the input";
  }
  if (ho != (h + 2 * p - d * (k - 1) - 1) / s + 1 ||
      wo != (w + 2 * p - d * (k - 1) - 1) / s + 1 || ho < 1 || wo < 1) {
    return "involution: kernel spatial size does not match the output";
  }
  g.cg = c / g.groups;
  g.hp = h + 2 * p;
  g.wq = (w + 2 * p + s - 1) / s;
  g.plane = g.hp * g.wq;
  g.phase_stride = g.cg * g.plane;
  set_taps(g);
  return nullptr;
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
}  // namespace mmplug_involution_cpu
