// Involution forward and backward CUDA kernels, compiled at run time by NVRTC (via CuPy).
//
// Maths (g = c / (C / G), K x K kernel, stride s, padding p, dilation d; reads outside the
// input count as zero):
//   y[n, c, i, j]       = sum_{u,v} w[n, g, u*K+v, i, j] * x[n, c, i*s - p + u*d, j*s - p + v*d]
//   dx[n, c, h, q]      = sum_{u,v,i,j : i*s - p + u*d = h, j*s - p + v*d = q}
//                                        w[n, g, u*K+v, i, j] * dy[n, c, i, j]
//   dw[n, g, u*K+v, i, j] = sum_{c in group g} dy[n, c, i, j] * x[n, c, i*s - p + u*d, j*s - p + v*d]
//
// Launch geometry: a 1-D grid-stride loop with one thread per element of the tensor being
// written (y, dx or dw), fastest index last. Every output element is a gather computed
// by exactly one thread: no atomics, deterministic results, and every element is written
// (zero where nothing contributes). Accumulation is in float for half/bfloat16/float and
// in double for double.
//
// Compile-time parameters are only the storage type T and the index type I (int when every
// tensor has fewer than 2^30 elements, long long otherwise); shapes are run-time
// arguments, so one compiled module serves every shape. All tensors are contiguous NCHW.

#ifndef MMPLUG_HOST_EMULATION
// 16-bit storage types, defined here so that no CUDA header is needed at run time.
struct half_t { unsigned short bits; };
struct bfloat16_t { unsigned short bits; };

__device__ __forceinline__ float half_bits_to_float(unsigned short h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}
__device__ __forceinline__ unsigned short float_to_half_bits(float f) {
  unsigned short h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
#endif  // MMPLUG_HOST_EMULATION

// The arguments every kernel takes: two inputs, the output it writes, the output's
// element count, then the shapes (see the maths above).
#define INVOLUTION_ARGS(IN0, IN1, OUT)                                                \
  const T* __restrict__ IN0, const T* __restrict__ IN1, T* __restrict__ OUT,          \
      const I total, const I C, const I H, const I W, const I Ho, const I Wo, const I G, \
      const I K, const I stride, const I pad, const I dil

// One thread per element, striding by the whole grid.
#define GRID_STRIDE_LOOP(idx, total)                                                  \
  for (I idx = (I)blockIdx.x * blockDim.x + threadIdx.x; idx < (total);              \
       idx += (I)gridDim.x * blockDim.x)

template <typename T> struct AccType { typedef float type; };
template <> struct AccType<double> { typedef double type; };

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(half_t v) { return half_bits_to_float(v.bits); }
__device__ __forceinline__ float to_acc(bfloat16_t v) {
  return __uint_as_float(((unsigned int)v.bits) << 16);
}

template <typename T> __device__ __forceinline__ T from_acc(typename AccType<T>::type v);
template <> __device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <> __device__ __forceinline__ double from_acc<double>(double v) { return v; }
template <> __device__ __forceinline__ half_t from_acc<half_t>(float v) {
  half_t r;
  r.bits = float_to_half_bits(v);
  return r;
}
template <> __device__ __forceinline__ bfloat16_t from_acc<bfloat16_t>(float v) {
  // Round to nearest even; NaN stays a (quiet) NaN.
  unsigned int u = __float_as_uint(v);
  bfloat16_t r;
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    r.bits = (unsigned short)((u >> 16) | 0x0040u);
  } else {
    u += 0x7fffu + ((u >> 16) & 1u);
    r.bits = (unsigned short)(u >> 16);
  }
  return r;
}

// y: (N, C, Ho, Wo); one thread per y element.
template <typename T, typename I>
__global__ void involution_forward(INVOLUTION_ARGS(x, w, y)) {
  typedef typename AccType<T>::type acc_t;
  const I channels_per_group = C / G;
  const I out_plane = Ho * Wo;
  GRID_STRIDE_LOOP(idx, total) {
    const I j = idx % Wo;
    const I i = (idx / Wo) % Ho;
    const I c = (idx / out_plane) % C;
    const I n = idx / (out_plane * C);
    const I g = c / channels_per_group;
    const T* x_plane = x + (n * C + c) * H * W;
    const T* w_pixel = w + (n * G + g) * K * K * out_plane + i * Wo + j;
    acc_t acc = 0;
    for (I u = 0; u < K; ++u) {
      const I h = i * stride - pad + u * dil;
      if (h < 0 || h >= H) continue;
      for (I v = 0; v < K; ++v) {
        const I q = j * stride - pad + v * dil;
        if (q < 0 || q >= W) continue;
        acc += to_acc(w_pixel[(u * K + v) * out_plane]) * to_acc(x_plane[h * W + q]);
      }
    }
    y[idx] = from_acc<T>(acc);
  }
}

// dx: (N, C, H, W); one thread per dx element, gathering from every (u, v, i, j) whose
// window reads it.
template <typename T, typename I>
__global__ void involution_grad_input(INVOLUTION_ARGS(dy, w, dx)) {
  typedef typename AccType<T>::type acc_t;
  const I channels_per_group = C / G;
  const I out_plane = Ho * Wo;
  GRID_STRIDE_LOOP(idx, total) {
    const I q = idx % W;
    const I h = (idx / W) % H;
    const I c = (idx / (H * W)) % C;
    const I n = idx / (H * W * C);
    const I g = c / channels_per_group;
    const T* dy_plane = dy + (n * C + c) * out_plane;
    const T* w_group = w + (n * G + g) * K * K * out_plane;
    acc_t acc = 0;
    for (I u = 0; u < K; ++u) {
      const I i_scaled = h + pad - u * dil;  // = i * stride when (u, i) reads row h
      if (i_scaled < 0) break;              // only decreases with u
      if (i_scaled % stride != 0) continue;
      const I i = i_scaled / stride;
      if (i >= Ho) continue;
      for (I v = 0; v < K; ++v) {
        const I j_scaled = q + pad - v * dil;
        if (j_scaled < 0) break;
        if (j_scaled % stride != 0) continue;
        const I j = j_scaled / stride;
        if (j >= Wo) continue;
        acc += to_acc(w_group[(u * K + v) * out_plane + i * Wo + j]) *
               to_acc(dy_plane[i * Wo + j]);
      }
    }
    dx[idx] = from_acc<T>(acc);
  }
}

// dw: (N, G*K*K, Ho, Wo); one thread per dw element, summing over the group's channels.
template <typename T, typename I>
__global__ void involution_grad_kernel(INVOLUTION_ARGS(dy, x, dw)) {
  typedef typename AccType<T>::type acc_t;
  const I channels_per_group = C / G;
  const I out_plane = Ho * Wo;
  GRID_STRIDE_LOOP(idx, total) {
    const I j = idx % Wo;
    const I i = (idx / Wo) % Ho;
    const I uv = (idx / out_plane) % (K * K);
    const I g = (idx / (out_plane * K * K)) % G;
    const I n = idx / (out_plane * K * K * G);
    const I h = i * stride - pad + (uv / K) * dil;
    const I q = j * stride - pad + (uv % K) * dil;
    acc_t acc = 0;
    if (h >= 0 && h < H && q >= 0 && q < W) {
      const I c0 = g * channels_per_group;
      const T* dy_pixel = dy + (n * C + c0) * out_plane + i * Wo + j;
      const T* x_pixel = x + (n * C + c0) * H * W + h * W + q;
      for (I c = 0; c < channels_per_group; ++c) {
        acc += to_acc(dy_pixel[c * out_plane]) * to_acc(x_pixel[c * H * W]);
      }
    }
    dw[idx] = from_acc<T>(acc);
  }
}
