// CPU driver of 3-D SLIC over the shared steps of supercl/slic_3d.h.  One volume runs on one
// thread when the batch keeps all threads busy; a smaller batch splits the rows (z, y) of the
// assignment instead.  The centre update of a volume always runs on one thread, which is what
// lets sc_accumulate be a plain add on the host (supercl/common.h).
//
// The labels are slic3_assign_voxel's.  The host computes them row by row and centre by centre
// instead of voxel by voxel: for row (z, y) it visits, in ascending centre index, every centre
// of the cells iz +- 1, iy +- 1 (all cell columns), and scans the voxels of the row whose cell
// column is within one of the centre's and that lie in its x window, keeping per voxel the
// first strictly smallest distance.  Each voxel thus meets exactly the centres that
// slic3_assign_voxel examines, in the same order, with the same double distance (the (z, y)
// part once per row and centre, summed with the x part by the same operation), so the labels
// are bit-identical; the inner loop is a branch-free scan along x that the compiler
// vectorises, with an AVX2 version chosen at run time as in 2-D (slic_shared.h).
// Grey volumes take the same candidates per cell column instead (grey_row), keeping each block
// of 8 voxels in registers.  The windows of the centres are planned once per iteration.
// Measured on one thread, 64 x 128 x 128 phantom, 250 supervoxels (2-core VM, other work
// beside it): the scans left scalar by the compiler 0.68 s; vectorised 0.37 s; windows planned
// once per iteration 0.26 s; the spatial weight folded into the spacing weights 0.22-0.26 s;
// scikit-image 2.4 s.  No float form with a tie fallback as in 2-D (slic.cpp): not built.
// Centre sums walk runs of equal labels (runs.h); connectivity enforcement runs on the 3-D
// connected components of the label map.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "ops.h"
#include "parallel.h"
#include "runs.h"
#include "slic_shared.h"
#include "supercl/slic_3d.h"

namespace supercl {
namespace cpu {

namespace {

// Voxels xs..xe of one row against one centre: d = slic3_combine(zy, x part, colour), kept
// where strictly smaller than the best so far.  Everything is double -- the voxel values, the
// x coordinates, and the label (a centre index, exact in double) -- so that the loop is one
// element width and vectorises (4 lanes with AVX2, 2 with SSE2); int32 labels beside double
// distances left it scalar ("control flow in loop", -fopt-info-vec).  colour: the colour term of
// each voxel for this centre (multi-channel), or nullptr for grey, where it is (q - m)^2 --
// the same value as slic3_colour's 0 + (q - m)^2.
SUPERCL_ALWAYS_INLINE void scan_body(const double* __restrict values,
                                     const double* __restrict colour,
                                     const double* __restrict xcoord, double m, double cx,
                                     double zy, const Slic3Params& p, double k, int64_t xs,
                                     int64_t xe, double* __restrict best,
                                     double* __restrict labels) {
  const double wx = p.weight_x, cw = p.colour_weight;
  for (int64_t x = xs; x <= xe; ++x) {
    const double dx = xcoord[x] - cx;
    double col;
    if (colour) {
      col = colour[x];
    } else {
      const double diff = values[x] - m;
      col = diff * diff;
    }
    const double d = (zy + wx * (dx * dx)) + col * cw;
    const double old = best[x];
    const bool closer = d < old;
    best[x] = closer ? d : old;
    labels[x] = closer ? k : labels[x];
  }
}

SUPERCL_TARGET_AVX2 void scan_grey_avx2(const double* values, const double* xcoord, double m,
                                        double cx, double zy, const Slic3Params& p, double k,
                                        int64_t xs, int64_t xe, double* best, double* labels) {
  scan_body(values, nullptr, xcoord, m, cx, zy, p, k, xs, xe, best, labels);
}

void scan_grey_baseline(const double* values, const double* xcoord, double m, double cx,
                        double zy, const Slic3Params& p, double k, int64_t xs, int64_t xe,
                        double* best, double* labels) {
  scan_body(values, nullptr, xcoord, m, cx, zy, p, k, xs, xe, best, labels);
}

SUPERCL_TARGET_AVX2 void scan_colour_avx2(const double* colour, const double* xcoord,
                                          double cx, double zy, const Slic3Params& p, double k,
                                          int64_t xs, int64_t xe, double* best,
                                          double* labels) {
  scan_body(nullptr, colour, xcoord, 0.0, cx, zy, p, k, xs, xe, best, labels);
}

void scan_colour_baseline(const double* colour, const double* xcoord, double cx, double zy,
                          const Slic3Params& p, double k, int64_t xs, int64_t xe, double* best,
                          double* labels) {
  scan_body(nullptr, colour, xcoord, 0.0, cx, zy, p, k, xs, xe, best, labels);
}

// The colour term of voxels xs..xe for a centre of C channels, in slic3_colour's order.
void colour_terms(const double* values, int64_t width, int64_t channels, const double* centre,
                  int64_t xs, int64_t xe, double* colour) {
  for (int64_t x = xs; x <= xe; ++x) colour[x] = 0.0;
  for (int64_t c = 0; c < channels; ++c) {
    const double* v = values + c * width;
    const double m = centre[3 + c];
    for (int64_t x = xs; x <= xe; ++x) {
      const double diff = v[x] - m;
      colour[x] = colour[x] + diff * diff;
    }
  }
}

// Grey rows, blocked by cell column: the voxels of one cell column ix share their candidates
// (the centres of cells iz +- 1, iy +- 1, ix +- 1), so each block of 8 voxels keeps its best
// distance and label in registers over all of them, in ascending centre index, and is written
// once; a centre's x window becomes a per-lane test.  This is scan_body's arithmetic and order
// per voxel (the same labels), without a load and store of best and label per candidate; by
// itself it measured no faster than the per-centre scans (0.38 against 0.37 s, see the top).
struct Candidate {
  double cx, m, zy, lo, hi, k;  // lo, hi: the x window (slic_in_window) as doubles
};

constexpr int kBlock = 8;

// GCC vector extensions: AVX2 registers in the avx2 version, pairs of SSE2 registers in the
// baseline one (plain loops over 8 lanes were left scalar by GCC 12).
typedef double v4d __attribute__((vector_size(32)));
typedef long long v4l __attribute__((vector_size(32)));

// kWindow: test the centre's x window per lane; a centre whose window covers the whole block
// (the common case) skips the test.
template <bool kWindow>
SUPERCL_ALWAYS_INLINE void grey_lanes(v4d v, v4d xc, const Candidate& c, double wx, double cw,
                                      v4d& b, v4d& l) {
  const v4d dx = xc - c.cx;
  const v4d diff = v - c.m;
  const v4d d = (c.zy + wx * (dx * dx)) + (diff * diff) * cw;
  v4l closer = d < b;
  if (kWindow) closer &= (xc >= c.lo) & (xc <= c.hi);
  b = closer ? d : b;
  l = closer ? v4d{c.k, c.k, c.k, c.k} : l;
}

SUPERCL_ALWAYS_INLINE void grey_blocks_body(const double* __restrict values,
                                            const double* __restrict xcoord, int64_t pa,
                                            int64_t pb, const Candidate* __restrict cands,
                                            int n_cands, const Slic3Params& p,
                                            double* __restrict labels) {
  static_assert(kBlock == 8, "two vectors of 4 per block");
  const double wx = p.weight_x, cw = p.colour_weight;
  for (int64_t x0 = pa; x0 < pb; x0 += kBlock) {
    v4d v0, v1, xc0, xc1, l0, l1;
    std::memcpy(&v0, values + x0, sizeof v0);
    std::memcpy(&v1, values + x0 + 4, sizeof v1);
    std::memcpy(&xc0, xcoord + x0, sizeof xc0);
    std::memcpy(&xc1, xcoord + x0 + 4, sizeof xc1);
    std::memcpy(&l0, labels + x0, sizeof l0);
    std::memcpy(&l1, labels + x0 + 4, sizeof l1);
    v4d b0 = {SUPERCL_DBL_MAX, SUPERCL_DBL_MAX, SUPERCL_DBL_MAX, SUPERCL_DBL_MAX}, b1 = b0;
    const double first = static_cast<double>(x0), last = static_cast<double>(x0 + kBlock - 1);
    for (int j = 0; j < n_cands; ++j) {
      const Candidate& c = cands[j];
      if (c.lo <= first && last <= c.hi) {
        grey_lanes<false>(v0, xc0, c, wx, cw, b0, l0);
        grey_lanes<false>(v1, xc1, c, wx, cw, b1, l1);
      } else {
        grey_lanes<true>(v0, xc0, c, wx, cw, b0, l0);
        grey_lanes<true>(v1, xc1, c, wx, cw, b1, l1);
      }
    }
    // The last block may run past the cell column: only its own voxels are written.
    double l[kBlock];
    std::memcpy(l, &l0, sizeof l0);
    std::memcpy(l + 4, &l1, sizeof l1);
    const int64_t count = pb - x0 < kBlock ? pb - x0 : kBlock;
    for (int i = 0; i < count; ++i) labels[x0 + i] = l[i];
  }
}

SUPERCL_TARGET_AVX2 void grey_blocks_avx2(const double* values, const double* xcoord,
                                          int64_t pa, int64_t pb, const Candidate* cands,
                                          int n_cands, const Slic3Params& p, double* labels) {
  grey_blocks_body(values, xcoord, pa, pb, cands, n_cands, p, labels);
}

void grey_blocks_baseline(const double* values, const double* xcoord, int64_t pa, int64_t pb,
                          const Candidate* cands, int n_cands, const Slic3Params& p,
                          double* labels) {
  grey_blocks_body(values, xcoord, pa, pb, cands, n_cands, p, labels);
}

// Per centre and iteration: slic_in_window's ranges along z, y and x, computed once instead of
// per row (for grey rows the per-row set-up of the candidates otherwise cost as much as their
// distances).
struct Window {
  int64_t z_lo, z_hi, y_lo, y_hi, x_lo, x_hi;  // inclusive
};

void plan_windows(const double* centres, int64_t k_count, int64_t channels, double window,
                  std::vector<Window>& out) {
  out.resize(k_count);
  for (int64_t k = 0; k < k_count; ++k) {
    const double* c = centres + k * (3 + channels);
    Window& w = out[k];
    w.z_lo = static_cast<int64_t>(sc_floor(sc_dsub(c[0], window)));
    w.z_hi = static_cast<int64_t>(sc_floor(sc_dadd(c[0], window)));
    w.y_lo = static_cast<int64_t>(sc_floor(sc_dsub(c[1], window)));
    w.y_hi = static_cast<int64_t>(sc_floor(sc_dadd(c[1], window)));
    w.x_lo = static_cast<int64_t>(sc_floor(sc_dsub(c[2], window)));
    w.x_hi = static_cast<int64_t>(sc_floor(sc_dadd(c[2], window)));
  }
}

// Per-thread row buffers; values and xcoord carry kBlock elements of slack for the last block.
struct RowWork {
  std::vector<double> best, labels, values, colour, xcoord;
  std::vector<Candidate> rows, cands;  // up to 9 rows of nx centres; one column's candidates
  std::vector<uint8_t> valid;
  RowWork(int64_t width, int64_t channels, int64_t nx)
      : best(width), labels(width + kBlock), values(width * channels + kBlock), colour(width),
        xcoord(width + kBlock), rows(9 * nx), cands(27), valid(9 * nx) {
    for (int64_t x = 0; x < width + kBlock; ++x) xcoord[x] = static_cast<double>(x);
  }
};

// First and one-past-last coordinate whose cell index along an axis is within one of cell j
// (slic_cell's boundaries), clipped to [0, size).
inline void cell_span(int64_t j, int64_t origin, int64_t step, int64_t n, int64_t size,
                      int64_t* lo, int64_t* hi) {
  *lo = j - 1 <= 0 ? 0 : origin + (j - 1) * step - step / 2;
  *hi = j + 2 >= n ? size : sc_min<int64_t>(size, origin + (j + 2) * step - step / 2);
}

// The grey assignment of one row, blocked by cell column (grey_blocks_body).
void grey_row(const double* values, int64_t iz, int64_t iy, double fz, double fy, int64_t z,
              int64_t y, const Slic3Grid& g, const double* centres, const Window* windows,
              const Slic3Params& p, int64_t width, bool avx2, RowWork& work) {
  const int64_t jz0 = sc_max<int64_t>(0, iz - 1), jz1 = sc_min<int64_t>(g.nz - 1, iz + 1);
  const int64_t jy0 = sc_max<int64_t>(0, iy - 1), jy1 = sc_min<int64_t>(g.ny - 1, iy + 1);
  int n_rows = 0;
  for (int64_t jz = jz0; jz <= jz1; ++jz) {
    for (int64_t jy = jy0; jy <= jy1; ++jy, ++n_rows) {
      for (int64_t jx = 0; jx < g.nx; ++jx) {
        const int64_t k = (jz * g.ny + jy) * g.nx + jx;
        const double* c = centres + k * 4;
        const Window& w = windows[k];
        Candidate& cand = work.rows[n_rows * g.nx + jx];
        const bool valid = z >= w.z_lo && z <= w.z_hi && y >= w.y_lo && y <= w.y_hi;
        work.valid[n_rows * g.nx + jx] = valid;
        if (!valid) continue;
        cand.cx = c[2];
        cand.m = c[3];
        cand.zy = slic3_spatial_zy(fz, fy, c, p);
        cand.lo = static_cast<double>(w.x_lo);
        cand.hi = static_cast<double>(w.x_hi);
        cand.k = static_cast<double>(k);
      }
    }
  }
  for (int64_t ix = 0; ix < g.nx; ++ix) {
    const int64_t pa = ix == 0 ? 0 : g.x0 + ix * g.sx - g.sx / 2;
    const int64_t pb = ix + 1 >= g.nx ? width : sc_min<int64_t>(width, g.x0 + (ix + 1) * g.sx - g.sx / 2);
    if (pa >= pb) continue;
    const int64_t ja = ix > 0 ? ix - 1 : 0, jb = ix + 1 < g.nx ? ix + 1 : g.nx - 1;
    int n = 0;
    for (int r = 0; r < n_rows; ++r)
      for (int64_t jx = ja; jx <= jb; ++jx)
        if (work.valid[r * g.nx + jx]) work.cands[n++] = work.rows[r * g.nx + jx];
    (avx2 ? grey_blocks_avx2 : grey_blocks_baseline)(values, work.xcoord.data(), pa, pb,
                                                     work.cands.data(), n, p,
                                                     work.labels.data());
  }
}

// Assigns row (z, y); returns the number of voxels whose label changed.
int64_t assign_row(const int32_t* quant, const uint8_t* mask, int64_t channels, int64_t depth,
                   int64_t height, int64_t width, int64_t z, int64_t y, const Slic3Grid& g,
                   const double* centres, const Window* windows, const Slic3Params& p,
                   int32_t* labels, RowWork& work) {
  const int64_t n = depth * height * width, offset = (z * height + y) * width;
  int32_t* prev = labels + offset;
  double* best = work.best.data();
  double* row = work.labels.data();
  double* values = work.values.data();
  const double* xcoord = work.xcoord.data();
  for (int64_t x = 0; x < width; ++x) {
    best[x] = SUPERCL_DBL_MAX;
    row[x] = static_cast<double>(prev[x]);
  }
  for (int64_t c = 0; c < channels; ++c)  // exact: |q| <= 2^16
    for (int64_t x = 0; x < width; ++x)
      values[c * width + x] = static_cast<double>(quant[c * n + offset + x]);
  const bool avx2 = SUPERCL_AVX2_VERSION && use_avx2();
  const int64_t iz = slic_cell(z, g.z0, g.sz, g.nz), iy = slic_cell(y, g.y0, g.sy, g.ny);
  const double fz = static_cast<double>(z), fy = static_cast<double>(y);
  const int64_t stride = 3 + channels;
  if (channels == 1) {
    grey_row(values, iz, iy, fz, fy, z, y, g, centres, windows, p, width, avx2, work);
  } else {
  for (int64_t jz = sc_max<int64_t>(0, iz - 1); jz <= sc_min<int64_t>(g.nz - 1, iz + 1); ++jz) {
    for (int64_t jy = sc_max<int64_t>(0, iy - 1); jy <= sc_min<int64_t>(g.ny - 1, iy + 1);
         ++jy) {
      for (int64_t jx = 0; jx < g.nx; ++jx) {
        const int64_t k = (jz * g.ny + jy) * g.nx + jx;
        const double* c = centres + k * stride;
        const Window& w = windows[k];
        if (z < w.z_lo || z > w.z_hi || y < w.y_lo || y > w.y_hi) continue;
        int64_t xa, xb;
        cell_span(jx, g.x0, g.sx, g.nx, width, &xa, &xb);
        const int64_t xs = sc_max(xa, w.x_lo), xe = sc_min(xb - 1, w.x_hi);
        if (xs > xe) continue;
        const double zy = slic3_spatial_zy(fz, fy, c, p), kd = static_cast<double>(k);
        if (channels == 1) {
          (avx2 ? scan_grey_avx2 : scan_grey_baseline)(values, xcoord, c[3], c[2], zy, p, kd, xs,
                                                       xe, best, row);
        } else {
          colour_terms(values, width, channels, c, xs, xe, work.colour.data());
          (avx2 ? scan_colour_avx2 : scan_colour_baseline)(work.colour.data(), xcoord, c[2], zy,
                                                           p, kd, xs, xe, best, row);
        }
      }
    }
  }
  }
  const uint8_t* m = mask ? mask + offset : nullptr;
  int64_t changed = 0;
  for (int64_t x = 0; x < width; ++x) {
    const int32_t label = (m && !m[x]) ? -1 : static_cast<int32_t>(row[x]);
    changed += label != prev[x];
    prev[x] = label;
  }
  return changed;
}

void slic_volume(const float* image, const uint8_t* mask, int64_t channels, int64_t depth,
                 int64_t height, int64_t width, const int64_t* grid, const double* params,
                 int64_t max_num_iter, bool enforce, int64_t min_size, int32_t start_label,
                 int32_t* labels, int threads) {
  const Slic3Grid g = slic3_grid(grid);
  const int64_t n = depth * height * width, rows = depth * height, k_count = g.nz * g.ny * g.nx;
  std::vector<int32_t> quant(channels * n);
  for (int64_t i = 0; i < channels * n; ++i) quant[i] = slic_quantize(image[i]);
  std::vector<double> centres(k_count * (3 + channels));
  for (int64_t k = 0; k < k_count; ++k)
    slic3_init_centre(g, k, channels, centres.data() + k * (3 + channels));
  std::vector<int64_t> sums(k_count * (4 + channels));
  std::vector<int64_t> totals(channels);
  std::vector<Window> windows;
  for (int64_t i = 0; i < n; ++i) labels[i] = -1;

  // With a mask: a spatial-only phase spreads the centres inside it first (slic_3d.h).
  const int phases = mask ? 2 : 1;
  for (int phase = 0; phase < phases; ++phase) {
    const bool last_phase = phase == phases - 1;
    const Slic3Params pp = slic3_params(params, last_phase);
    for (int64_t it = 0; it < max_num_iter; ++it) {
      int64_t changed = 0;
      plan_windows(centres.data(), k_count, channels, pp.window, windows);
#pragma omp parallel num_threads(threads) if (threads > 1) reduction(+ : changed)
      {
        RowWork work(width, channels, g.nx);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r)
          changed += assign_row(quant.data(), mask, channels, depth, height, width, r / height,
                                r % height, g, centres.data(), windows.data(), pp, labels,
                                work);
      }
      // No label changed: the centres are a fixed point, later iterations are no-ops.
      if (changed == 0) break;
      // The update after the last assignment of the final phase would not be used.
      if (last_phase && it + 1 == max_num_iter) break;
      std::fill(sums.begin(), sums.end(), 0);
      for (int64_t r = 0; r < rows; ++r) {
        const int32_t* row = labels + r * width;
        const int64_t z = r / height, y = r % height;
        for (int64_t x0 = 0, x1; x0 < width; x0 = x1) {
          x1 = run_end(row, x0 + 1, width, row[x0]);
          if (row[x0] < 0) continue;
          for (int64_t c = 0; c < channels; ++c) {
            const int32_t* q = quant.data() + c * n + r * width;
            int64_t total = 0;
            for (int64_t x = x0; x < x1; ++x) total += q[x];
            totals[c] = total;
          }
          slic3_accumulate_totals(channels, z, y, x0, x1, row[x0], totals.data(), sums.data());
        }
      }
      for (int64_t k = 0; k < k_count; ++k)
        slic3_update_centre(sums.data(), k, channels, centres.data());
    }
  }
  if (enforce)
    enforce_connectivity(
        labels, rows, width, min_size, start_label,
        [&](int32_t* cc) {
          int64_t count = 0;
          connected_components_3d<int32_t>(labels, 1, depth, height, width, n, height * width,
                                           width, 1, /*connectivity=*/1, mask != nullptr, -1, cc,
                                           &count, threads);
          return static_cast<int32_t>(count);
        },
        [&](const int32_t* cc, int64_t first) {
          return slic3_merge_target(cc, height, width, first);
        });
  else
    slic_compact_labels(labels, n, k_count, start_label);
}

}  // namespace

void slic_3d(const float* image, const uint8_t* mask, int64_t batch, int64_t channels,
             int64_t depth, int64_t height, int64_t width, const int64_t* grid,
             const double* params, int64_t max_num_iter, bool enforce_connectivity,
             const int64_t* min_size, int32_t start_label, int32_t* out, int num_threads) {
  const int threads = resolve_threads(num_threads);
  const int64_t n = depth * height * width;
  auto one = [&](int64_t b, int row_threads) {
    slic_volume(image + b * channels * n, mask ? mask + b * n : nullptr, channels, depth, height,
                width, grid + 9 * b, params + 5 * b, max_num_iter, enforce_connectivity,
                min_size[b], start_label, out + b * n, row_threads);
  };
  for_each_image(batch, threads, one);
}

}  // namespace cpu
}  // namespace supercl
