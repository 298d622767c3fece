// What the 2-D and the 3-D SLIC drivers (slic.cpp, slic_3d.cpp) share beyond the math of
// supercl/slic.h: the macros that build their scans twice, for AVX2 and for the baseline, the
// split of a batch over the threads, and connectivity enforcement, which differs between them
// only in how the pieces are labeled and which neighbour a small piece merges into.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ops.h"
#include "runs.h"
#include "supercl/slic.h"

namespace supercl {
namespace cpu {

// Two versions of each scan: AVX2 (8 float or 4 double lanes) and the baseline target (SSE2,
// 4 or 2 lanes), chosen once at run time (simd_level); the build must not assume
// -march=native.  Both give the same labels: the 2-D float distances may differ between them
// only within the proven margin that decides the labels, the 3-D double ones not at all.  No
// FMA in either (-ffp-contract=off; FMA is not part of the avx2 target).  The bodies are
// always_inline so that each version is compiled for its target.
#define SUPERCL_ALWAYS_INLINE __attribute__((always_inline)) inline
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SUPERCL_AVX2_VERSION 1
#define SUPERCL_TARGET_AVX2 __attribute__((target("avx2")))
#else
#define SUPERCL_AVX2_VERSION 0
#define SUPERCL_TARGET_AVX2
#endif

// Whether the AVX2 versions run (simd_level, read once).
inline bool use_avx2() {
  static const bool avx2 = std::string(simd_level()) == "avx2";
  return avx2;
}

// one(b, row_threads) for every image (volume) b of a batch: one image per thread when the
// batch keeps all threads busy, otherwise the images in turn, each splitting its rows over all
// the threads.
template <typename One>
void for_each_image(int64_t batch, int threads, One&& one) {
  if (batch >= threads || threads == 1) {
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t b = 0; b < batch; ++b) one(b, 1);
  } else {
    for (int64_t b = 0; b < batch; ++b) one(b, threads);
  }
}

// Connectivity enforcement of one image or volume of `rows` rows of `width` pixels, labels
// row-major.  label_pieces(cc) writes the raster-ordered ids of the pieces (the 4- or
// 6-connected components of equal label; masked pixels 0) into cc and returns their count;
// merge_target(cc, first) names the piece that a piece whose first pixel is `first` merges
// into when it is smaller than min_size (slic_merge_target, slic3_merge_target).  The kept
// pieces are numbered in raster order from start_label, masked pixels get 0.
template <typename LabelPieces, typename MergeTarget>
void enforce_connectivity(int32_t* labels, int64_t rows, int64_t width, int64_t min_size,
                          int32_t start_label, LabelPieces&& label_pieces,
                          MergeTarget&& merge_target) {
  const int64_t n = rows * width;
  // label_pieces writes every element (as the public connected-components ops do for their
  // outputs): no zero fill first (0.9 % of SLIC's instructions on the flat_ct 256^2 slices,
  // callgrind).
  std::unique_ptr<int32_t[]> cc_buffer(new int32_t[n]);
  int32_t* const cc = cc_buffer.get();
  const int32_t count = label_pieces(cc);
  std::vector<int64_t> size(count + 1, 0), first(count + 1, -1);
  // Sizes and first pixels a run of equal ids at a time (the ids come in long runs).
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* row = cc + r * width;
    for (int64_t x0 = 0, x1; x0 < width; x0 = x1) {
      const int32_t c = row[x0];
      x1 = run_end(row, x0 + 1, width, c);
      if (c <= 0) continue;
      if (size[c] == 0) first[c] = r * width + x0;
      size[c] += x1 - x0;
    }
  }
  std::vector<int32_t> target(count + 1, 0), final_id(count + 1, 0), rank(count + 1, 0);
  for (int32_t c = 1; c <= count; ++c) target[c] = merge_target(cc, first[c]);
  // Merge pointers always point to smaller ids, so one ascending pass resolves the chains.
  int32_t kept = 0;
  for (int32_t c = 1; c <= count; ++c) {
    const int32_t m = slic_merge_parent(size.data(), target.data(), min_size, c);
    final_id[c] = m == c ? c : final_id[m];
    if (final_id[c] == c) rank[c] = ++kept;
  }
  for (int64_t i0 = 0, i1; i0 < n; i0 = i1) {  // the same, a run of equal ids at a time
    const int32_t c = cc[i0];
    i1 = i0 + run_end(cc + i0, 1, n - i0, c);
    fill_run(labels, i0, i1,
             slic_final_label(c, c <= 0, final_id.data(), rank.data(), start_label));
  }
}

}  // namespace cpu
}  // namespace supercl
