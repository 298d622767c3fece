// CPU driver of connected-component labeling.
//
// Algorithm on one thread: a run-based two-pass over the union-find of
// supercl/connected_components.h.  A run is a maximal stretch of one row of equal, non-background
// value.  Pass 1 walks the rows, cuts each into runs (32 bytes compared per step where the row
// is contiguous, csrc/cpu/runs.h) and joins every run with the runs of the row above that have
// the same value and touch it (cc_runs_touch: overlapping columns with 4-connectivity,
// overlapping or diagonal with 8), sweeping both rows' run lists with two pointers.  Runs are
// numbered in raster order and the union-find links the larger root to the smaller (cc_union),
// so a component's root is its first run, which holds its first pixel.  Pass 2 gives the runs
// their final labels in raster order (a root takes the next number, any other run its
// parent's, which is earlier and already final): exactly skimage.measure.label's numbering.
// Pass 3 writes each row as fills of its runs' labels and of 0 for background.
//
// Why the CPU differs from the GPU (which runs one union-find node per pixel, every pixel
// merging concurrently): a superpixel map or an organ mask has few runs per row (~10 at 512^2
// with 100 superpixels), so the run form does one union per run instead of one decision per
// pixel, and its inner loops are a vectorisable comparison and a fill.  Per pixel the pixel
// form cost ~30 instructions (callgrind) and reached 0.5-0.9x cc3d on one thread; the run form
// reaches 1.25-1.43x cc3d on superpixel maps and 2.5-4.3x on binary masks (32 slices of 256^2
// and 512^2, benchmarks/results/cpu-2core.md).  The run form is sequential along a column
// (each row needs the one above), which suits one thread per image and not a GPU's thread per
// pixel.  Both forms perform unions whose closure is the same partition (the pixel rules,
// stated for runs in the header), with the same smallest-index roots and raster numbering, so
// they give the same labels; the tests compare both with scikit-image (the GPU's pixel form
// through tests/test_cuda_emulated.py, which runs the .cu kernels on the host).  With more threads than images, the rows of one image merge concurrently in the
// pixel form with atomic unions, as on the GPU.
#include "supercl/connected_components.h"

#include <vector>

#include "ops.h"
#include "parallel.h"
#include "runs.h"

namespace supercl {
namespace cpu {

namespace {

// Relabel in one raster pass, in place over the forest: the root flag and the running count
// give a root its rank; any other pixel copies the final label of its parent, which lies
// earlier in raster order and is already final (it is in the same component).  This needs no
// compress step, unlike the GPU's parallel gather.
int32_t relabel_in_place(int32_t* forest, int64_t n) {
  int32_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t p = forest[i];
    if (p < 0)
      forest[i] = 0;
    else if (cc_root_flag(forest, i))
      forest[i] = ++count;
    else
      forest[i] = forest[p];
  }
  return count;
}

// Run lists of one image, reused across the images one thread labels.
struct Runs {
  std::vector<int32_t> start, end, parent;  // per run, raster order; parent: the union-find
  std::vector<int32_t> first;               // per row: index of its first run (height + 1)
};

// Pass 1 for rows of element stride sx (kUnitStride: sx == 1, where run_end compares 32 bytes
// per step).
template <typename T, bool kUnitStride>
void scan_runs(const T* image, int64_t sy, int64_t sx, int64_t height, int64_t width,
               int connectivity, bool has_background, T background, Runs& runs) {
  const int64_t reach = cc_reach(connectivity);
  runs.start.clear();
  runs.end.clear();
  runs.parent.clear();
  runs.first.assign(height + 1, 0);
  int32_t n = 0;
  for (int64_t y = 0; y < height; ++y) {
    const T* row = image + y * sy;
    const T* up_row = row - sy;
    // The runs of the row above: [up, up_end), swept once from left to right.
    int32_t up = y > 0 ? runs.first[y - 1] : 0;
    const int32_t up_end = n;
    runs.first[y] = n;
    for (int64_t x = 0; x < width;) {
      const T v = kUnitStride ? row[x] : row[x * sx];
      const int64_t x1 = kUnitStride ? run_end(row, x + 1, width, v)
                                     : run_end(row, sx, x + 1, width, v);
      if (!cc_is_background(v, has_background, background)) {
        const int32_t r = n++;
        runs.start.push_back(static_cast<int32_t>(x));
        runs.end.push_back(static_cast<int32_t>(x1));
        runs.parent.push_back(r);
        int32_t* parent = runs.parent.data();
        // Runs above that end before this one's reach cannot touch this or any later run.
        while (up < up_end && runs.end[up] + reach <= x) ++up;
        bool fresh = true;
        for (int32_t q = up; q < up_end && cc_runs_touch(runs.start[q], runs.end[q], x, x1, reach);
             ++q) {
          const int64_t s = runs.start[q];
          if ((kUnitStride ? up_row[s] : up_row[s * sx]) != v) continue;
          if (fresh) {  // r is a fresh root, larger than every run above: link it directly
            parent[r] = cc_find<false>(parent, q);
            fresh = false;
          } else {
            cc_union<false>(parent, r, q);
          }
        }
      }
      x = x1;
    }
  }
  runs.first[height] = n;
}

// Passes 2 and 3: final labels of the runs in raster order (in place over the forest, as
// relabel_in_place below), then the rows written as fills.  Returns the component count.
int32_t write_runs(Runs& runs, int64_t height, int64_t width, int32_t* out) {
  int32_t* label = runs.parent.data();
  const int32_t n = runs.first[height];
  int32_t count = 0;
  for (int32_t r = 0; r < n; ++r) label[r] = cc_root_flag(label, r) ? ++count : label[label[r]];
  for (int64_t y = 0; y < height; ++y) {
    int32_t* row = out + y * width;
    int64_t x = 0;
    for (int32_t r = runs.first[y]; r < runs.first[y + 1]; ++r) {
      fill_run(row, x, runs.start[r], 0);
      fill_run(row, runs.start[r], runs.end[r], label[r]);
      x = runs.end[r];
    }
    fill_run(row, x, width, 0);
  }
  return count;
}

template <typename T>
int32_t label_runs(const T* image, int64_t sy, int64_t sx, int64_t height, int64_t width,
                   int connectivity, bool has_background, T background, int32_t* out,
                   Runs& runs) {
  if (sx == 1)
    scan_runs<T, true>(image, sy, 1, height, width, connectivity, has_background, background,
                       runs);
  else
    scan_runs<T, false>(image, sy, sx, height, width, connectivity, has_background, background,
                        runs);
  return write_runs(runs, height, width, out);
}

// One image.  One thread: the run form above (runs: the caller's reusable buffers).  More:
// the pixel form, rows merging concurrently with atomic unions.
template <typename T>
int32_t label_image(const T* image, int64_t sy, int64_t sx, int64_t height, int64_t width,
                    int connectivity, bool has_background, T background, int32_t* out,
                    int num_threads, Runs* runs) {
  if (num_threads <= 1)
    return label_runs(image, sy, sx, height, width, connectivity, has_background, background, out,
                      *runs);
  // The output buffer doubles as the union-find forest.
  int32_t* parent = out;
#pragma omp parallel num_threads(num_threads)
  {
#pragma omp for schedule(static)
    for (int64_t y = 0; y < height; ++y)
      for (int64_t x = 0; x < width; ++x)
        cc_init_pixel(image, sy, sx, width, y, x, has_background, background, parent);
    // Rows merge concurrently: the unions are atomic (supercl/common.h).
#pragma omp for schedule(static)
    for (int64_t y = 0; y < height; ++y)
      for (int64_t x = 0; x < width; ++x)
        cc_merge_pixel<T, true>(image, sy, sx, width, y, x, connectivity, has_background,
                                background, parent);
  }
  return relabel_in_place(parent, height * width);
}

}  // namespace

template <typename T>
int32_t connected_components_image(const T* image, int64_t sy, int64_t sx, int64_t height,
                                   int64_t width, int connectivity, bool has_background,
                                   T background, int32_t* out, int num_threads) {
  Runs runs;
  return label_image(image, sy, sx, height, width, connectivity, has_background, background, out,
                     num_threads, &runs);
}

template <typename T>
void connected_components(const T* image, int64_t batch, int64_t height, int64_t width,
                          int64_t stride_b, int64_t stride_y, int64_t stride_x, int connectivity,
                          bool has_background, T background, int32_t* out, int64_t* counts,
                          int num_threads) {
  const int threads = resolve_threads(num_threads);
  const int64_t hw = height * width;
  if (batch >= threads || threads == 1) {
#pragma omp parallel num_threads(threads)
    {
      Runs runs;  // one set of buffers per thread, reused over its images
#pragma omp for schedule(dynamic, 1)
      for (int64_t b = 0; b < batch; ++b)
        counts[b] = label_image(image + b * stride_b, stride_y, stride_x, height, width,
                                connectivity, has_background, background, out + b * hw, 1, &runs);
    }
  } else {
    Runs runs;
    for (int64_t b = 0; b < batch; ++b)
      counts[b] = label_image(image + b * stride_b, stride_y, stride_x, height, width,
                              connectivity, has_background, background, out + b * hw, threads,
                              &runs);
  }
}

#define SUPERCL_INSTANTIATE_CC(T, suffix)                                                      \
  template int32_t connected_components_image<T>(const T*, int64_t, int64_t, int64_t, int64_t, \
                                                 int, bool, T, int32_t*, int);                  \
  template void connected_components<T>(const T*, int64_t, int64_t, int64_t, int64_t, int64_t, \
                                        int64_t, int, bool, T, int32_t*, int64_t*, int);

SUPERCL_CC_DTYPES(SUPERCL_INSTANTIATE_CC)

}  // namespace cpu
}  // namespace supercl
