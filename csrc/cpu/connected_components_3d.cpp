// CPU driver of 3-D connected-component labeling.
//
// Algorithm: the run-based union-find of the 2-D driver (csrc/cpu/connected_components.cpp),
// over the rows (z, y) of a volume.  A run is a maximal stretch of one row of equal,
// non-background value (32 bytes compared per step where rows are contiguous, runs.h).  Runs
// are numbered in raster order; each run is joined with the runs of equal value that touch it in
// the earlier rows of its neighbourhood -- (z, y-1), and (z-1, y-1), (z-1, y), (z-1, y+1) --
// each with the sideways reach that cc3_row_reach derives from the per-voxel rule of
// supercl/connected_components_3d.h.  The larger root is always linked to the smaller, so a
// component's root is its first run, which holds its first voxel; the final labels are then
// given to the runs in raster order (a root takes the next number, any other run its parent's,
// which is earlier and already final) and written as fills: skimage.measure.label's numbering.
//
// One thread per volume: one pass, each row cut into runs and joined at once, unions without
// atomics.  A volume with more threads than the batch has volumes: the same steps split over
// rows -- count the runs of every row, a prefix sum, cut the rows into runs, join every row with
// its earlier rows through atomic unions (rows join concurrently, as the GPU's voxels do), then
// the serial numbering of the runs and parallel fills.  The partition is the closure of the same
// unions and the roots are the same smallest indices, so both give the same labels.
#include <vector>

#include "ops.h"
#include "parallel.h"
#include "runs.h"
#include "supercl/connected_components_3d.h"

namespace supercl {
namespace cpu {

namespace {

// The earlier rows of a row's neighbourhood, as (dz, dy).
constexpr int kRowDz[4] = {0, -1, -1, -1};
constexpr int kRowDy[4] = {-1, -1, 0, 1};

struct Volume {
  int64_t depth, height, width, sz, sy, sx;
};

// A run: [start, end) of its row and its value, side by side, so that the joins read the runs
// of the earlier rows sequentially instead of gathering their values from the volume.
template <typename T>
struct Run {
  int32_t start, end;
  T value;
};

// Run lists of one volume, reused across the volumes one thread labels.
template <typename T>
struct Runs3 {
  std::vector<Run<T>> run;      // raster order
  std::vector<int32_t> parent;  // the union-find over runs
  std::vector<int32_t> first;   // per row: index of its first run (D * H + 1)
};

template <typename T, bool kUnitStride>
inline int64_t next_run(const T* row, int64_t sx, int64_t x, int64_t width, T v) {
  return kUnitStride ? run_end(row, x + 1, width, v) : run_end(row, sx, x + 1, width, v);
}

// The unions of run r with the runs q[0..n).  On one thread a run and the runs it meets
// usually point at the same root already (scan_volume points every finished row at its roots),
// and comparing the two parents skips the union's two finds and their path-halving stores,
// which dirtied the previous slice's cache lines.
template <bool kAtomic>
inline void join_equal(int32_t* parent, int32_t r, const int32_t* q, int n) {
  for (int i = 0; i < n; ++i)
    if (kAtomic || parent[q[i]] != parent[r]) cc_union<kAtomic>(parent, r, q[i]);
}

// Joins the runs [r0, r1) of row (z, y) with the runs of its earlier rows (two pointers per
// row pair).  kAtomic: rows join concurrently.  The runs of equal value are first collected
// branch-free into a small buffer, then joined (whether a touching run has the same value is
// close to a coin toss on a supervoxel map; as a branch perf found it mispredicted often).
//
// Speed, one thread, 128 x 256 x 256 supervoxel map with 26-connectivity: 0.46-0.64x cc3d
// (benchmarks/results/cpu-2core-3d.md); on binary masks 2.1-2.2x.  The supervoxel map has
// ~734,000 runs, and each costs ~60 ns here (up to 12 candidate runs in 4 rows, their value
// tests and unions) against cc3d's ~4 ns per voxel.  Neither the packed runs, nor the
// branch-free collection, nor the root pointers changed that by more than the machine's noise
// (none was measured in isolation on a quiet machine); a decision tree over runs, as cc3d has
// over voxels, is the open idea.
template <typename T, bool kAtomic>
void join_row(const Volume& v, int64_t z, int64_t y, int connectivity, const int32_t* first,
              const Run<T>* runs, int32_t* parent, int32_t r0, int32_t r1) {
  if (r0 == r1) return;
  constexpr int kBuffer = 32;
  int32_t equal[kBuffer];
  for (int n = 0; n < 4; ++n) {
    const int64_t zz = z + kRowDz[n], yy = y + kRowDy[n];
    if (zz < 0 || yy < 0 || yy >= v.height) continue;
    const int64_t reach = cc3_row_reach(kRowDz[n], kRowDy[n], connectivity);
    if (reach < 0) continue;
    const int64_t other = zz * v.height + yy;
    int32_t q0 = first[other];
    const int32_t q1 = first[other + 1];
    for (int32_t r = r0; r < r1 && q0 < q1; ++r) {
      const Run<T> cur = runs[r];
      // Runs of the other row that end before this one's reach touch no later run either.
      while (q0 < q1 && runs[q0].end + reach <= cur.start) ++q0;
      int count = 0;
      for (int32_t q = q0; q < q1 && cc_runs_touch(runs[q].start, runs[q].end, cur.start,
                                                    cur.end, reach);
           ++q) {
        equal[count] = q;
        count += runs[q].value == cur.value;
        if (count == kBuffer) {
          join_equal<kAtomic>(parent, r, equal, count);
          count = 0;
        }
      }
      join_equal<kAtomic>(parent, r, equal, count);
    }
  }
}

// Appends the runs of one row, numbered from n; returns the next number.
template <typename T, bool kUnitStride>
inline int32_t cut_row(const T* row, int64_t sx, int64_t width, bool has_background,
                       T background, std::vector<Run<T>>& runs, std::vector<int32_t>& parent,
                       int32_t n) {
  for (int64_t x = 0; x < width;) {
    const T value = kUnitStride ? row[x] : row[x * sx];
    const int64_t x1 = next_run<T, kUnitStride>(row, sx, x, width, value);
    if (!cc_is_background(value, has_background, background)) {
      runs.push_back({static_cast<int32_t>(x), static_cast<int32_t>(x1), value});
      parent.push_back(n++);
    }
    x = x1;
  }
  return n;
}

template <typename T, bool kUnitStride>
void scan_volume(const T* volume, const Volume& v, int connectivity, bool has_background,
                 T background, Runs3<T>& runs) {
  const int64_t rows = v.depth * v.height;
  runs.run.clear();
  runs.parent.clear();
  runs.first.assign(rows + 1, 0);
  int32_t n = 0;
  for (int64_t z = 0; z < v.depth; ++z) {
    for (int64_t y = 0; y < v.height; ++y) {
      const int32_t r0 = n;
      runs.first[z * v.height + y] = n;
      n = cut_row<T, kUnitStride>(volume + z * v.sz + y * v.sy, v.sx, v.width, has_background,
                                  background, runs.run, runs.parent, n);
      runs.first[z * v.height + y + 1] = n;
      join_row<T, false>(v, z, y, connectivity, runs.first.data(), runs.run.data(),
                         runs.parent.data(), r0, n);
      // Point the row's runs at their current roots: the later rows' finds then start one
      // hop from a root instead of walking chains through older slices, and join_equal can
      // skip most unions (perf put the finds' pointer chasing at the top on supervoxel maps).
      int32_t* parent = runs.parent.data();
      for (int32_t r = r0; r < n; ++r) parent[r] = cc_find<false>(parent, r);
    }
  }
}

// The rows split over threads: count, prefix sum, cut, join with atomics.
template <typename T, bool kUnitStride>
void scan_volume_parallel(const T* volume, const Volume& v, int connectivity,
                          bool has_background, T background, Runs3<T>& runs, int threads) {
  const int64_t rows = v.depth * v.height;
  runs.first.assign(rows + 1, 0);
  int32_t* first = runs.first.data();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = volume + (r / v.height) * v.sz + (r % v.height) * v.sy;
    int32_t count = 0;
    for (int64_t x = 0; x < v.width;) {
      const T value = kUnitStride ? row[x] : row[x * v.sx];
      const int64_t x1 = next_run<T, kUnitStride>(row, v.sx, x, v.width, value);
      count += !cc_is_background(value, has_background, background);
      x = x1;
    }
    first[r + 1] = count;
  }
  for (int64_t r = 0; r < rows; ++r) first[r + 1] += first[r];
  const int32_t total = first[rows];
  runs.run.resize(total);
  runs.parent.resize(total);
  Run<T>* run = runs.run.data();
  int32_t* parent = runs.parent.data();
#pragma omp parallel num_threads(threads)
  {
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = volume + (r / v.height) * v.sz + (r % v.height) * v.sy;
      int32_t n = first[r];
      for (int64_t x = 0; x < v.width;) {
        const T value = kUnitStride ? row[x] : row[x * v.sx];
        const int64_t x1 = next_run<T, kUnitStride>(row, v.sx, x, v.width, value);
        if (!cc_is_background(value, has_background, background)) {
          run[n] = {static_cast<int32_t>(x), static_cast<int32_t>(x1), value};
          parent[n] = n;
          ++n;
        }
        x = x1;
      }
    }
    // Every run is cut before any row joins (the barrier of the loop above).
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r)
      join_row<T, true>(v, r / v.height, r % v.height, connectivity, first, run, parent,
                        first[r], first[r + 1]);
  }
}

// Final labels of the runs in raster order, then the rows as fills.  Returns the count.
template <typename T>
int32_t write_runs(Runs3<T>& runs, const Volume& v, int32_t* out, int threads) {
  const int64_t rows = v.depth * v.height;
  int32_t* label = runs.parent.data();
  const int32_t n = runs.first[rows];
  int32_t count = 0;
  for (int32_t r = 0; r < n; ++r) label[r] = cc_root_flag(label, r) ? ++count : label[label[r]];
  const int32_t* first = runs.first.data();
  const Run<T>* run = runs.run.data();
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t y = 0; y < rows; ++y) {
    int32_t* row = out + y * v.width;
    int64_t x = 0;
    for (int32_t r = first[y]; r < first[y + 1]; ++r) {
      fill_run(row, x, run[r].start, 0);
      fill_run(row, run[r].start, run[r].end, label[r]);
      x = run[r].end;
    }
    fill_run(row, x, v.width, 0);
  }
  return count;
}

template <typename T>
int32_t label_volume(const T* volume, const Volume& v, int connectivity, bool has_background,
                     T background, int32_t* out, int threads, Runs3<T>& runs) {
  const bool unit = v.sx == 1;
  if (threads <= 1) {
    if (unit)
      scan_volume<T, true>(volume, v, connectivity, has_background, background, runs);
    else
      scan_volume<T, false>(volume, v, connectivity, has_background, background, runs);
  } else {
    if (unit)
      scan_volume_parallel<T, true>(volume, v, connectivity, has_background, background, runs,
                                    threads);
    else
      scan_volume_parallel<T, false>(volume, v, connectivity, has_background, background, runs,
                                     threads);
  }
  return write_runs(runs, v, out, threads);
}

}  // namespace

template <typename T>
void connected_components_3d(const T* volume, int64_t batch, int64_t depth, int64_t height,
                             int64_t width, int64_t stride_b, int64_t stride_z, int64_t stride_y,
                             int64_t stride_x, int connectivity, bool has_background,
                             T background, int32_t* out, int64_t* counts, int num_threads) {
  const int threads = resolve_threads(num_threads);
  const Volume v{depth, height, width, stride_z, stride_y, stride_x};
  const int64_t n = depth * height * width;
  if (batch >= threads || threads == 1) {
#pragma omp parallel num_threads(threads)
    {
      Runs3<T> runs;  // one set of buffers per thread, reused over its volumes
#pragma omp for schedule(dynamic, 1)
      for (int64_t b = 0; b < batch; ++b)
        counts[b] = label_volume(volume + b * stride_b, v, connectivity, has_background,
                                 background, out + b * n, 1, runs);
    }
  } else {
    Runs3<T> runs;
    for (int64_t b = 0; b < batch; ++b)
      counts[b] = label_volume(volume + b * stride_b, v, connectivity, has_background, background,
                               out + b * n, threads, runs);
  }
}

#define SUPERCL_INSTANTIATE_CC3(T, suffix)                                                   \
  template void connected_components_3d<T>(const T*, int64_t, int64_t, int64_t, int64_t,     \
                                           int64_t, int64_t, int64_t, int64_t, int, bool, T, \
                                           int32_t*, int64_t*, int);

SUPERCL_CC_DTYPES(SUPERCL_INSTANTIATE_CC3)

}  // namespace cpu
}  // namespace supercl
