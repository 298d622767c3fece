// Runs of equal values along a row, for the CPU drivers (connected components, SLIC's centre
// sums and connectivity enforcement): finding where a run ends is their innermost loop.
#pragma once

#include <cstdint>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace supercl {
namespace cpu {

// The first index >= x (or width) where the contiguous row differs from v.  With SSE2 (every
// x86-64) 32 bytes are compared per step, as two 16-byte compares: an element differs iff one
// of its bytes differs, so the first differing byte, divided by the element size, is the first
// differing element.
template <typename T>
inline int64_t run_end(const T* row, int64_t x, int64_t width, T v) {
#if defined(__SSE2__)
  if constexpr (sizeof(T) == 1 || sizeof(T) == 4 || sizeof(T) == 8) {
    constexpr int64_t kPerVector = 16 / static_cast<int64_t>(sizeof(T));
    __m128i pattern;
    if constexpr (sizeof(T) == 1)
      pattern = _mm_set1_epi8(static_cast<char>(v));
    else if constexpr (sizeof(T) == 4)
      pattern = _mm_set1_epi32(static_cast<int>(v));
    else
      pattern = _mm_set1_epi64x(static_cast<long long>(v));
    auto equal_bytes = [&](int64_t at) {
      const __m128i chunk = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + at));
      return static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(chunk, pattern)));
    };
    for (; x + 2 * kPerVector <= width; x += 2 * kPerVector) {
      const unsigned both = equal_bytes(x) | (equal_bytes(x + kPerVector) << 16);
      if (both != 0xFFFFFFFFu) return x + __builtin_ctz(~both) / static_cast<int>(sizeof(T));
    }
    for (; x + kPerVector <= width; x += kPerVector) {
      const unsigned equal = equal_bytes(x);
      if (equal != 0xFFFFu) return x + __builtin_ctz(~equal) / static_cast<int>(sizeof(T));
    }
  }
#endif
  while (x < width && row[x] == v) ++x;
  return x;
}

// out[x0 .. x1 - 1] = value.  Runs are short (tens of pixels): 4 elements per SSE2 store, the
// last store overlapping the previous ones instead of a scalar tail.
inline void fill_run(int32_t* out, int64_t x0, int64_t x1, int32_t value) {
#if defined(__SSE2__)
  if (x1 - x0 >= 4) {
    const __m128i v = _mm_set1_epi32(value);
    for (; x0 + 4 < x1; x0 += 4) _mm_storeu_si128(reinterpret_cast<__m128i*>(out + x0), v);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + x1 - 4), v);
    return;
  }
#endif
  for (; x0 < x1; ++x0) out[x0] = value;
}

// The same for a row of element stride sx.
template <typename T>
inline int64_t run_end(const T* row, int64_t sx, int64_t x, int64_t width, T v) {
  while (x < width && row[x * sx] == v) ++x;
  return x;
}

}  // namespace cpu
}  // namespace supercl
