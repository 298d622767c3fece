// CPU driver of 3-D connected-component labeling.
//
// Algorithm: the run-based union-find of the 2-D driver (csrc/cpu/connected_components.cpp),
// over the rows (z, y) of a volume.  A run is a maximal stretch of one row of equal,
// non-background value (32 bytes compared per step where rows are contiguous, runs.h).  Runs
// are numbered in raster order; each run is joined with the runs of equal value that touch it in
// the earlier rows of its neighbourhood -- (z, y-1), and (z-1, y-1), (z-1, y), (z-1, y+1) --
// each with the sideways reach that cc3_row_reach derives from the per-voxel rule of
// supercl/connected_components_3d.h (with 26-connectivity a row is passed over where a
// run of equal value in another earlier row already reaches all it could add: join_row_covered).
// The larger root is always linked to the smaller, so a
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

// Whether a run of the row at offset (dz, dy) from another row's run can touch it, and how far
// sideways: cc3_row_reach for any pair of the rows of a neighbourhood (either sign, since
// adjacency is symmetric); -1 when the rows are further apart than one step.
inline int64_t rows_reach(int dz, int dy, int connectivity) {
  if (dz < -1 || dz > 1 || dy < -1 || dy > 1 || (dz == 0 && dy == 0)) return -1;
  return cc3_row_reach(dz, dy, connectivity);
}

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

// Joins run r (its fields in cur) with the runs of one earlier row that touch it, from *q (the
// row's pointer, advanced past the runs that end before r's reach) to q1.  kCover: returns
// cover[i] for every i where a run of equal value spans [lo[i], hi[i]) (see join_row).
template <typename T, bool kAtomic, bool kCover>
inline unsigned join_run(const Run<T>* runs, int32_t* parent, int32_t r, const Run<T>& cur,
                         int32_t* q, int32_t q1, int64_t reach, const int64_t* lo,
                         const int64_t* hi, const unsigned* cover) {
  constexpr int kBuffer = 32;
  int32_t equal[kBuffer];
  int32_t qn = *q;
  // Runs of the other row that end before this one's reach touch no later run either.
  while (qn < q1 && runs[qn].end + reach <= cur.start) ++qn;
  *q = qn;
  unsigned covers = 0;
  int count = 0;
  for (; qn < q1 && cc_runs_touch(runs[qn].start, runs[qn].end, cur.start, cur.end, reach);
       ++qn) {
    equal[count] = qn;
    const bool same = runs[qn].value == cur.value;
    count += same;
    if (kCover) {
      const int64_t s = runs[qn].start, e = runs[qn].end;
      const unsigned c = ((s <= lo[0] && e >= hi[0]) ? cover[0] : 0u) |
                         ((s <= lo[1] && e >= hi[1]) ? cover[1] : 0u);
      covers |= same ? c : 0u;
    }
    if (count == kBuffer) {
      join_equal<kAtomic>(parent, r, equal, count);
      count = 0;
    }
  }
  join_equal<kAtomic>(parent, r, equal, count);
  return covers;
}

// join_row for 26-connectivity: one pointer per earlier row, all advanced run by run, so that
// each run can pass over the rows it covers.  6-connectivity covers no row (a row's runs reach
// no other earlier row) and 18-connectivity few (the reaches differ, so a cover must overhang
// the run): both keep join_row, whose row-by-row sweep cost fewer instructions there (18: 441.3M
// against 458.3M on the MNI152 map).  The rule below holds for any connectivity.
//
// Covered rows are skipped.  Say run r meets a run p of equal value in row C (the rows (z, y-1)
// and (z-1, y) are the candidates), and p's reach into another earlier row R of r spans r's:
// [r.start - a, r.end + a) within [p.start - b, p.end + b), a and b the sideways reaches of r
// and p into R.  Then every run of R that touches r also touches p; p was joined with it (by
// p's own join or by that run's: R and C are neighbouring rows, both before r), and r is joined
// with p here, so R adds nothing and is not scanned.  Each skipped pair is implied by pairs of
// earlier rows, so by induction the unions' closure -- the partition, hence the roots (smallest
// index) and the labels -- is unchanged, on one thread or many.  The rows go in the order
// (z, y-1), (z-1, y), (z-1, y-1), (z-1, y+1) so that the two candidate rows come first: on a
// supervoxel map with 26-connectivity most runs are covered by the run above them or the one
// behind them (83% of the MNI152 map's runs), and scan two of the four rows.
//
// Speed, one thread (callgrind instructions of the op): the skip took the MNI152 supervoxel map
// at 26-connectivity from 474.9M to 441.8M, still above cc3d's 312.6M; the per-run scans of
// the rows that are left, not the unions, are the cost.
template <typename T, bool kAtomic>
void join_row_covered(const Volume& v, int64_t z, int64_t y, int connectivity,
                      const int32_t* first, const Run<T>* runs, int32_t* parent, int32_t r0,
                      int32_t r1) {
  if (r0 == r1) return;
  int32_t q[4], q1[4];
  int64_t reach[4];
  for (int n = 0; n < 4; ++n) {
    const int64_t zz = z + kRowDz[n], yy = y + kRowDy[n];
    reach[n] = cc3_row_reach(kRowDz[n], kRowDy[n], connectivity);
    q[n] = q1[n] = 0;  // no runs: the row is outside the volume or holds no neighbour
    if (zz < 0 || yy < 0 || yy >= v.height || reach[n] < 0) continue;
    q[n] = first[zz * v.height + yy];
    q1[n] = first[zz * v.height + yy + 1];
  }
  // The rows that a run of row C = 0 or 2 may cover (kTarget), with d = a - b and its bit (0
  // where R is no neighbour of C or either reach is undefined: never skipped).
  constexpr int kTarget[4][2] = {{1, 2}, {0, 0}, {1, 3}, {0, 0}};
  int64_t d[4][2] = {};
  unsigned bit[4][2] = {};
  for (int c = 0; c < 4; c += 2)
    for (int i = 0; i < 2; ++i) {
      const int t = kTarget[c][i];
      const int64_t b = rows_reach(kRowDz[t] - kRowDz[c], kRowDy[t] - kRowDy[c], connectivity);
      d[c][i] = reach[t] - b;
      bit[c][i] = reach[c] >= 0 && reach[t] >= 0 && b >= 0 ? 1u << t : 0u;
    }
  for (int32_t r = r0; r < r1; ++r) {
    const Run<T> cur = runs[r];
    int64_t lo[2], hi[2];
    lo[0] = cur.start - d[0][0], hi[0] = cur.end + d[0][0];
    lo[1] = cur.start - d[0][1], hi[1] = cur.end + d[0][1];
    unsigned skip = join_run<T, kAtomic, true>(runs, parent, r, cur, q + 0, q1[0], reach[0],
                                               lo, hi, bit[0]);
    if (!(skip & 4u)) {
      lo[0] = cur.start - d[2][0], hi[0] = cur.end + d[2][0];
      lo[1] = cur.start - d[2][1], hi[1] = cur.end + d[2][1];
      skip |= join_run<T, kAtomic, true>(runs, parent, r, cur, q + 2, q1[2], reach[2], lo, hi,
                                         bit[2]);
    }
    if (!(skip & 2u))
      join_run<T, kAtomic, false>(runs, parent, r, cur, q + 1, q1[1], reach[1], lo, hi, bit[1]);
    if (!(skip & 8u))
      join_run<T, kAtomic, false>(runs, parent, r, cur, q + 3, q1[3], reach[3], lo, hi, bit[3]);
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
      if (connectivity == 3)
        join_row_covered<T, false>(v, z, y, connectivity, runs.first.data(), runs.run.data(),
                                   runs.parent.data(), r0, n);
      else
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
      if (connectivity == 3)
        join_row_covered<T, true>(v, r / v.height, r % v.height, connectivity, first, run,
                                  parent, first[r], first[r + 1]);
      else
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
