// The kernels' vector type, free of any framework: Vectorized<T> holds as
// many floats or doubles as the widest vector register the build targets
// (AVX-512: 64 bytes, AVX2: 32, otherwise 16), with unaligned and masked
// (first `len` lanes) loads and stores, a fused multiply-add, and the few
// whole-array helpers the passes use. The same instructions ATen's
// at::vec::Vectorized emits for these operations: AVX-512 masked loads and
// stores, FMA where the target has it, a 16x16 register transpose for float
// on AVX-512.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace mmplug_involution_cpu {

#if defined(__AVX512F__)
constexpr int64_t kVectorBytes = 64;
#elif defined(__AVX2__)
constexpr int64_t kVectorBytes = 32;
#else
constexpr int64_t kVectorBytes = 16;
#endif

// a GCC vector of the target's width (the same type as __m512 for float
// on AVX-512, so intrinsics take it as it is)
template <typename T>
struct NativeVector;
template <>
struct NativeVector<float> {
  typedef float type __attribute__((vector_size(kVectorBytes)));
};
template <>
struct NativeVector<double> {
  typedef double type __attribute__((vector_size(kVectorBytes)));
};

template <typename T>
struct Vectorized {
  using Native = typename NativeVector<T>::type;
  Native v;

  static constexpr int64_t size() { return kVectorBytes / sizeof(T); }
  Vectorized() = default;
  Vectorized(Native native) : v(native) {}
  Vectorized(T scalar) : v(broadcast(scalar)) {}

  static Native broadcast(T scalar) {
#if defined(__AVX512F__)
    if constexpr (sizeof(T) == 4) return _mm512_set1_ps(scalar);
    if constexpr (sizeof(T) == 8) return _mm512_set1_pd(scalar);
#elif defined(__AVX2__)
    if constexpr (sizeof(T) == 4) return _mm256_set1_ps(scalar);
    if constexpr (sizeof(T) == 8) return _mm256_set1_pd(scalar);
#endif
    Native native;
    for (int64_t lane = 0; lane < size(); ++lane) native[lane] = scalar;
    return native;
  }

  static Vectorized loadu(const T* ptr) {
    Native native;
    std::memcpy(&native, ptr, sizeof(Native));
    return native;
  }
  // The first `len` lanes from ptr, the rest zero.
  static Vectorized loadu(const T* ptr, int64_t len);
  void store(T* ptr) const { std::memcpy(ptr, &v, sizeof(Native)); }
  // The first `len` lanes to ptr.
  void store(T* ptr, int64_t len) const;

  Vectorized operator+(const Vectorized& other) const { return v + other.v; }
};

#if defined(__AVX512F__)
inline __mmask16 first_lanes16(int64_t len) {
  return static_cast<__mmask16>((1u << len) - 1);
}
inline __mmask8 first_lanes8(int64_t len) {
  return static_cast<__mmask8>((1u << len) - 1);
}
template <>
inline Vectorized<float> Vectorized<float>::loadu(const float* ptr,
                                                  int64_t len) {
  return _mm512_maskz_loadu_ps(first_lanes16(len), ptr);
}
template <>
inline Vectorized<double> Vectorized<double>::loadu(const double* ptr,
                                                    int64_t len) {
  return _mm512_maskz_loadu_pd(first_lanes8(len), ptr);
}
template <>
inline void Vectorized<float>::store(float* ptr, int64_t len) const {
  _mm512_mask_storeu_ps(ptr, first_lanes16(len), v);
}
template <>
inline void Vectorized<double>::store(double* ptr, int64_t len) const {
  _mm512_mask_storeu_pd(ptr, first_lanes8(len), v);
}
#else
template <typename T>
inline Vectorized<T> Vectorized<T>::loadu(const T* ptr, int64_t len) {
  Native native{};
  std::memcpy(&native, ptr, len * sizeof(T));
  return native;
}
template <typename T>
inline void Vectorized<T>::store(T* ptr, int64_t len) const {
  std::memcpy(ptr, &v, len * sizeof(T));
}
#endif

// a * b + c, fused where the target has FMA.
template <typename T>
inline Vectorized<T> fmadd(const Vectorized<T>& a, const Vectorized<T>& b,
                           const Vectorized<T>& c) {
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4) {
    return _mm512_fmadd_ps(a.v, b.v, c.v);
  } else {
    return _mm512_fmadd_pd(a.v, b.v, c.v);
  }
#elif defined(__AVX2__) && defined(__FMA__)
  if constexpr (sizeof(T) == 4) {
    return _mm256_fmadd_ps(a.v, b.v, c.v);
  } else {
    return _mm256_fmadd_pd(a.v, b.v, c.v);
  }
#else
  return a.v * b.v + c.v;
#endif
}

// sum of ptr[0:len]: lane-wise over whole vectors, then across the lanes.
template <typename T>
inline T reduce_sum(const T* ptr, int64_t len) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  Vec acc(T(0));
  for (int64_t i = 0; i < len; i += V) {
    acc = acc + Vec::loadu(ptr + i, std::min(V, len - i));
  }
  T sum = 0;
  for (int64_t lane = 0; lane < V; ++lane) sum += acc.v[lane];
  return sum;
}

// dst[0:len] += src[0:len]
template <typename T>
inline void add_into(T* dst, const T* src, int64_t len) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  int64_t i = 0;
  for (; i + V <= len; i += V) {
    (Vec::loadu(dst + i) + Vec::loadu(src + i)).store(dst + i);
  }
  if (i < len) {
    (Vec::loadu(dst + i, len - i) + Vec::loadu(src + i, len - i))
        .store(dst + i, len - i);
  }
}

#if defined(__AVX512F__)
// The 16 rows of a 16x16 float block, transposed in registers.
inline void transpose_16x16(__m512 (&r)[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {  // pairs of rows: interleave lanes
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // pairs of pairs: interleave 64 bits
    for (int j = 0; j < 2; ++j) {
      const __m512d a = _mm512_castps_pd(t[i + j]);
      const __m512d b = _mm512_castps_pd(t[i + j + 2]);
      r[i + 2 * j] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
      r[i + 2 * j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    }
  }
  for (int i = 0; i < 16; i += 8) {  // 128-bit lanes, two steps
    for (int j = 0; j < 4; ++j) {
      t[i + j] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0x88);
      t[i + j + 4] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0xdd);
    }
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
  }
}
#endif

// dst[j * ld_dst + i] = src[i * ld_src + j] for an m x n block.
template <typename T>
inline void transpose_block(const T* src, int64_t ld_src, T* dst,
                            int64_t ld_dst, int64_t m, int64_t n) {
  int64_t i0 = 0;
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4) {
    for (; i0 + 16 <= m; i0 += 16) {
      int64_t j0 = 0;
      for (; j0 + 16 <= n; j0 += 16) {
        __m512 rows[16];
        for (int i = 0; i < 16; ++i) {
          rows[i] = _mm512_loadu_ps(src + (i0 + i) * ld_src + j0);
        }
        transpose_16x16(rows);
        for (int j = 0; j < 16; ++j) {
          _mm512_storeu_ps(dst + (j0 + j) * ld_dst + i0, rows[j]);
        }
      }
      for (int64_t i = i0; i < i0 + 16; ++i) {
        for (int64_t j = j0; j < n; ++j) dst[j * ld_dst + i] = src[i * ld_src + j];
      }
    }
  }
#endif
  for (int64_t i = i0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) dst[j * ld_dst + i] = src[i * ld_src + j];
  }
}

}  // namespace mmplug_involution_cpu
