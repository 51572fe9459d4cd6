// Runs the involution CUDA kernels on the CPU, one emulated thread at a time, so that
// their index arithmetic, bounds checks, grid-stride loops and 16-bit conversions can
// be tested against the float64 reference on a machine without a GPU.
// Built by test_backend_cupy_source.py with g++; not part of the package.
#include <cstring>

#define MMPLUG_HOST_EMULATION
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__

struct Dim3 { unsigned int x, y, z; };
static Dim3 blockIdx, blockDim, threadIdx, gridDim;

struct half_t { unsigned short bits; };
struct bfloat16_t { unsigned short bits; };

inline float __uint_as_float(unsigned int u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned int __float_as_uint(float f) { unsigned int u; std::memcpy(&u, &f, 4); return u; }
// GCC's _Float16 rounds to nearest even, as cvt.rn.f16.f32 does on the GPU.
inline float half_bits_to_float(unsigned short h) { _Float16 v; std::memcpy(&v, &h, 2); return (float)v; }
inline unsigned short float_to_half_bits(float f) { _Float16 v = (_Float16)f; unsigned short h; std::memcpy(&h, &v, 2); return h; }

#include "involution_kernels.cu"

template <typename T, typename I>
static int dispatch_kernel(int kernel, const void* a, const void* b, void* out, const long long* s) {
  typedef void (*Fn)(const T*, const T*, T*, I, I, I, I, I, I, I, I, I, I, I);
  Fn fns[3] = {involution_forward<T, I>, involution_grad_input<T, I>, involution_grad_kernel<T, I>};
  if (kernel < 0 || kernel > 2) return 1;
  for (unsigned int blk = 0; blk < gridDim.x; ++blk) {
    for (unsigned int thr = 0; thr < blockDim.x; ++thr) {
      blockIdx.x = blk;
      threadIdx.x = thr;
      fns[kernel]((const T*)a, (const T*)b, (T*)out, (I)s[0], (I)s[1], (I)s[2], (I)s[3], (I)s[4],
                  (I)s[5], (I)s[6], (I)s[7], (I)s[8], (I)s[9], (I)s[10]);
    }
  }
  return 0;
}

template <typename T>
static int dispatch_index(int kernel, int index64, const void* a, const void* b, void* out,
                          const long long* s) {
  return index64 ? dispatch_kernel<T, long long>(kernel, a, b, out, s)
                 : dispatch_kernel<T, int>(kernel, a, b, out, s);
}

// kernel: 0 forward, 1 grad_input, 2 grad_kernel; dtype: 0 float, 1 double, 2 half, 3 bf16.
// sizes: total, C, H, W, Ho, Wo, G, K, stride, pad, dil.
extern "C" int run_involution_kernel(int kernel, int dtype, int index64, const void* a,
                                     const void* b, void* out, const long long* sizes,
                                     unsigned int blocks, unsigned int threads) {
  gridDim.x = blocks; gridDim.y = gridDim.z = 1;
  blockDim.x = threads; blockDim.y = blockDim.z = 1;
  switch (dtype) {
    case 0: return dispatch_index<float>(kernel, index64, a, b, out, sizes);
    case 1: return dispatch_index<double>(kernel, index64, a, b, out, sizes);
    case 2: return dispatch_index<half_t>(kernel, index64, a, b, out, sizes);
    case 3: return dispatch_index<bfloat16_t>(kernel, index64, a, b, out, sizes);
  }
  return 2;
}
