// CPU driver of SLIC: loops over the shared steps of supercl/slic.h.  One image runs on one
// thread when the batch keeps all threads busy; a smaller batch splits the assignment's rows
// instead.  The centre update of an image always runs on one thread, which is what lets
// sc_accumulate be a plain add on the host (supercl/common.h).
#include "supercl/slic.h"

#include <vector>

#include "ops.h"
#include "parallel.h"

namespace supercl {
namespace cpu {
namespace {

// Evaluates centre k for the pixels xs..xe of one row: keep it where it is strictly closer.
// Written branch-free (selects, no early exit) so that the compiler vectorises the loop over
// x; masked pixels are computed too and restored by the caller.  row_values: the row's
// fixed-point values as doubles; xcoord[x] = x: every array the loop touches has 8-byte
// elements.
template <int kChannels>
inline void scan_run_body(const double* __restrict row_values, int64_t channel_stride,
                          int64_t channels, double fy, const double* __restrict xcoord,
                          const double* __restrict centre, const SlicParams& params, int64_t k,
                          int64_t xs, int64_t xe, double* __restrict best,
                          int64_t* __restrict labels) {
  const SlicParams p = params;  // a local copy: provably not aliased by the stores below
  const int64_t n = xe - xs + 1;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t x = xs + i;
    const double d = slic_distance<kChannels>(row_values + x, channel_stride, channels, fy,
                                              xcoord[x], centre, p);
    const double b = best[x];
    // All ones where closer.  GCC 12 does not if-convert an int select on a floating-point
    // compare ("control flow in loop"); the explicit mask vectorises.
    const int64_t closer = -static_cast<int64_t>(d < b);
    best[x] = d < b ? d : b;
    labels[x] = (k & closer) | (labels[x] & ~closer);
  }
}

// GCC 12 vectorises the double-precision loop above with AVX2 but not with baseline SSE2
// (-fopt-info-vec: "no vectype"), and the build must not assume -march=native.  target_clones
// compiles an AVX2 and a baseline version and picks one at load time.  Both perform the same
// correctly rounded operations (no FMA: -ffp-contract=off, and FMA is not part of the avx2
// target), so the labels do not depend on which one runs.
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define SUPERCL_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SUPERCL_CLONES
#endif

SUPERCL_CLONES void scan_run_grey(const double* __restrict row_values, int64_t channel_stride,
                                  double fy, const double* __restrict xcoord,
                                  const double* __restrict centre, const SlicParams& params,
                                  int64_t k, int64_t xs, int64_t xe, double* __restrict best,
                                  int64_t* __restrict labels) {
  scan_run_body<1>(row_values, channel_stride, 1, fy, xcoord, centre, params, k, xs, xe, best,
                   labels);
}

SUPERCL_CLONES void scan_run_any(const double* __restrict row_values, int64_t channel_stride,
                                 int64_t channels, double fy, const double* __restrict xcoord,
                                 const double* __restrict centre, const SlicParams& params,
                                 int64_t k, int64_t xs, int64_t xe, double* __restrict best,
                                 int64_t* __restrict labels) {
  scan_run_body<0>(row_values, channel_stride, channels, fy, xcoord, centre, params, k, xs, xe,
                   best, labels);
}

// Assigns one row; returns the number of pixels whose label changed.  The candidates are the
// same centres in the same ascending order as slic_assign_pixel, but evaluated a run of pixels
// at a time (the pixels of one row that share a grid cell), so that the inner loop over x is a
// plain loop the compiler can vectorise.  Keeping the first strictly smaller distance gives
// the same label as the per-pixel form.
int64_t assign_row(const double* values, const double* xcoord, const uint8_t* mask,
                   int64_t channels, int64_t height, int64_t width, int64_t y, const SlicGrid& g,
                   const double* centres, const SlicParams& p, int32_t* labels, double* best,
                   int64_t* row_labels) {
  const int64_t hw = height * width;
  const int64_t iy = slic_cell(y, g.y0, g.sy, g.ny);
  const double fy = static_cast<double>(y);
  const double* row_values = values + y * width;
  int32_t* prev = labels + y * width;
  for (int64_t x = 0; x < width; ++x) {
    best[x] = SUPERCL_DBL_MAX;
    row_labels[x] = prev[x];
  }
  // Centre (jy, jx) is a candidate of the pixels whose cell is jx - 1 .. jx + 1, a contiguous
  // x range: scanning the centres in ascending index, each over its whole range, shows every
  // pixel its candidates in ascending index, as slic_assign_pixel does, in runs three cells
  // long.
  for (int64_t jy = sc_max<int64_t>(0, iy - 1); jy <= sc_min<int64_t>(g.ny - 1, iy + 1); ++jy) {
    for (int64_t jx = 0; jx < g.nx; ++jx) {
      const int64_t k = jy * g.nx + jx;
      const double* c = centres + k * (2 + channels);
      if (!slic_in_window(c[0], p.window, y)) continue;
      // First pixel of cell jx - 1 and last pixel of cell jx + 1 (slic_cell's boundaries).
      const int64_t xa = jx - 1 <= 0 ? 0 : g.x0 + (jx - 1) * g.sx - g.sx / 2;
      const int64_t xb = jx + 2 >= g.nx ? width : g.x0 + (jx + 2) * g.sx - g.sx / 2;
      // The x-window of slic_in_window as an index range.
      const int64_t lo = static_cast<int64_t>(sc_floor(sc_dsub(c[1], p.window)));
      const int64_t hi = static_cast<int64_t>(sc_floor(sc_dadd(c[1], p.window)));
      const int64_t xs = sc_max(xa, lo), xe = sc_min(sc_min(xb, width) - 1, hi);
      if (xs > xe) continue;
      if (channels == 1)
        scan_run_grey(row_values, hw, fy, xcoord, c, p, k, xs, xe, best, row_labels);
      else
        scan_run_any(row_values, hw, channels, fy, xcoord, c, p, k, xs, xe, best, row_labels);
    }
  }
  const uint8_t* mrow = mask ? mask + y * width : nullptr;
  int64_t changed = 0;
  for (int64_t x = 0; x < width; ++x) {
    const int32_t label = (mrow && !mrow[x]) ? -1 : static_cast<int32_t>(row_labels[x]);
    changed += label != prev[x];
    prev[x] = label;
  }
  return changed;
}

// The device's assignment, pixel by pixel through slic_assign_pixel (for the tests: it must
// give the same labels as assign_row).
int64_t assign_per_pixel(const int32_t* quant, const uint8_t* mask, int64_t channels,
                         int64_t height, int64_t width, const SlicGrid& g, const double* centres,
                         const SlicParams& p, int32_t* labels) {
  std::vector<int32_t> next(height * width);
  int64_t changed = 0;
  for (int64_t y = 0; y < height; ++y) {
    for (int64_t x = 0; x < width; ++x) {
      const int64_t i = y * width + x;
      next[i] = (mask && !mask[i])
                    ? -1
                    : slic_assign_pixel(quant, channels, height, width, y, x, g, centres, p,
                                        labels[i]);
      changed += next[i] != labels[i];
    }
  }
  for (int64_t i = 0; i < height * width; ++i) labels[i] = next[i];
  return changed;
}

void enforce_connectivity(int32_t* labels, bool masked, int64_t height, int64_t width,
                          int64_t min_size, int32_t start_label, int threads) {
  const int64_t n = height * width;
  std::vector<int32_t> cc(n);
  const int32_t count = connected_components_image<int32_t>(
      labels, width, 1, height, width, /*connectivity=*/1, masked, -1, cc.data(), threads);
  std::vector<int64_t> size(count + 1, 0), first(count + 1, -1);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t c = cc[i];
    if (c <= 0) continue;
    if (size[c]++ == 0) first[c] = i;
  }
  std::vector<int32_t> target(count + 1, 0), final_id(count + 1, 0), rank(count + 1, 0);
  for (int32_t c = 1; c <= count; ++c) target[c] = slic_merge_target(cc.data(), width, first[c]);
  // Merge pointers always point to smaller ids, so one ascending pass resolves the chains.
  int32_t kept = 0;
  for (int32_t c = 1; c <= count; ++c) {
    const int32_t m = slic_merge_parent(size.data(), target.data(), min_size, c);
    final_id[c] = m == c ? c : final_id[m];
    if (final_id[c] == c) rank[c] = ++kept;
  }
  for (int64_t i = 0; i < n; ++i)
    labels[i] = slic_final_label(cc[i], cc[i] <= 0, final_id.data(), rank.data(), start_label);
}

// Without connectivity enforcement: renumber the centres that own pixels consecutively, in
// centre order.
void compact_labels(int32_t* labels, int64_t n, int64_t k_count, int32_t start_label) {
  std::vector<int32_t> rank(k_count, 0);
  for (int64_t i = 0; i < n; ++i)
    if (labels[i] >= 0) rank[labels[i]] = 1;
  int32_t used = 0;
  for (int64_t k = 0; k < k_count; ++k)
    if (rank[k]) rank[k] = ++used;
  for (int64_t i = 0; i < n; ++i)
    labels[i] = slic_final_label(labels[i], labels[i] < 0, nullptr, rank.data(), start_label);
}

void slic_image(const float* image, const uint8_t* mask, int64_t channels, int64_t height,
                int64_t width, const int64_t* grid, const double* params, int64_t max_num_iter,
                bool enforce, int64_t min_size, int32_t start_label, int32_t* labels,
                int threads, bool use_gpu_form) {
  const SlicGrid g = slic_grid(grid);
  const int64_t hw = height * width, k_count = g.ny * g.nx;
  std::vector<int32_t> quant(channels * hw);
  for (int64_t i = 0; i < channels * hw; ++i) quant[i] = slic_quantize(image[i]);
  std::vector<double> values(quant.begin(), quant.end()), xcoord(width);
  for (int64_t x = 0; x < width; ++x) xcoord[x] = static_cast<double>(x);
  std::vector<double> centres(k_count * (2 + channels));
  for (int64_t k = 0; k < k_count; ++k)
    slic_init_centre(g, k, channels, centres.data() + k * (2 + channels));
  std::vector<int64_t> sums(k_count * (3 + channels));
  for (int64_t i = 0; i < hw; ++i) labels[i] = -1;

  // With a mask: a spatial-only phase spreads the centres inside it first (slic.h).
  const int phases = mask ? 2 : 1;
  for (int phase = 0; phase < phases; ++phase) {
    const bool last_phase = phase == phases - 1;
    const SlicParams pp = slic_params(params, last_phase);
    for (int64_t it = 0; it < max_num_iter; ++it) {
      int64_t changed = 0;
      if (use_gpu_form) {
        changed = assign_per_pixel(quant.data(), mask, channels, height, width, g,
                                   centres.data(), pp, labels);
      } else {
#pragma omp parallel num_threads(threads) if (threads > 1) reduction(+ : changed)
        {
          std::vector<double> best(width);
          std::vector<int64_t> row(width);
#pragma omp for schedule(static)
          for (int64_t y = 0; y < height; ++y)
            changed += assign_row(values.data(), xcoord.data(), mask, channels, height, width,
                                  y, g, centres.data(), pp, labels, best.data(), row.data());
        }
      }
      // No label changed: the centres are a fixed point (slic.h), later iterations are no-ops.
      if (changed == 0) break;
      // The update after the last assignment of the final phase would not be used.
      if (last_phase && it + 1 == max_num_iter) break;
      for (auto& s : sums) s = 0;
      for (int64_t y = 0; y < height; ++y) {
        const int32_t* row = labels + y * width;
        for (int64_t x0 = 0, x1 = 1; x0 < width; x0 = x1++) {
          // Runs of equal labels; the GPU form accumulates pixel by pixel, as the device does.
          while (!use_gpu_form && x1 < width && row[x1] == row[x0]) ++x1;
          slic_accumulate_run(quant.data(), channels, height, width, y, x0, x1, row[x0],
                              sums.data());
        }
      }
      for (int64_t k = 0; k < k_count; ++k)
        slic_update_centre(sums.data(), k, channels, centres.data());
    }
  }
  if (enforce)
    enforce_connectivity(labels, mask != nullptr, height, width, min_size, start_label, threads);
  else
    compact_labels(labels, hw, k_count, start_label);
}

}  // namespace

void slic(const float* image, const uint8_t* mask, int64_t batch, int64_t channels,
          int64_t height, int64_t width, const int64_t* grid, const double* params,
          int64_t max_num_iter, bool enforce_connectivity, const int64_t* min_size,
          int32_t start_label, int32_t* out, int num_threads, bool use_gpu_form) {
  const int threads = resolve_threads(num_threads);
  const int64_t hw = height * width;
  auto one = [&](int64_t b, int row_threads) {
    slic_image(image + b * channels * hw, mask ? mask + b * hw : nullptr, channels, height, width,
               grid + 6 * b, params + 5 * b, max_num_iter, enforce_connectivity, min_size[b],
               start_label, out + b * hw, row_threads, use_gpu_form);
  };
  if (batch >= threads || threads == 1) {
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t b = 0; b < batch; ++b) one(b, 1);
  } else {
    for (int64_t b = 0; b < batch; ++b) one(b, threads);
  }
}

}  // namespace cpu
}  // namespace supercl
