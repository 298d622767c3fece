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
// x86-64) 16 bytes are compared at a time: an element differs iff one of its bytes differs,
// so the first differing byte, divided by the element size, is the first differing element.
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
    for (; x + kPerVector <= width; x += kPerVector) {
      const __m128i chunk = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + x));
      const unsigned equal = static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(chunk, pattern)));
      if (equal != 0xFFFFu) return x + __builtin_ctz(~equal) / static_cast<int>(sizeof(T));
    }
  }
#endif
  while (x < width && row[x] == v) ++x;
  return x;
}

// The same for a row of element stride sx.
template <typename T>
inline int64_t run_end(const T* row, int64_t sx, int64_t x, int64_t width, T v) {
  while (x < width && row[x * sx] == v) ++x;
  return x;
}

}  // namespace cpu
}  // namespace supercl
