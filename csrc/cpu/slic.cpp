// CPU driver of SLIC over the shared steps of supercl/slic.h.  One image runs on one thread
// when the batch keeps all threads busy; a smaller batch splits the assignment's rows instead.
// The centre update of an image always runs on one thread, which is what lets sc_accumulate
// be a plain add on the host (supercl/common.h).
//
// The labels are slic_assign_pixel's, computed in double (the GPU's form).  The host gets them
// faster (measured on one thread of the 2-core machine, 32 slices: from 6.6x to 12.4-12.6x
// scikit-image at 256^2, from 5.6x to 14.4-14.8x at 512^2; benchmarks/results/cpu-2core.md):
//   - assignment in float (8 lanes with AVX2, 4 with the SSE2 baseline), keeping per pixel the
//     two smallest distances; a proven float/double error bound decides when the float winner
//     is the double winner, and the other pixels (near-ties) are settled in double with
//     slic_distance in slic_assign_pixel's order (see "The host's assignment" below);
//   - grey rows blocked by cell column: 16 pixels keep best, second and label in registers
//     over their 9 candidates; the x part of the spatial term is a table per centre, +inf
//     outside its window (no window test, no scalar tail); a row of candidates that cannot
//     win nor make a near-tie for a block (its smallest row term against the block's best
//     distances) is skipped (scan_cell; issue 24: with the unrolled 3 x 3 cell and the
//     in-place candidates, 11.8-15.7 % fewer instructions on the benchmark's 2-D inputs);
//   - centre sums over runs of equal labels, each run's sum of q from per-row prefix sums;
//     connectivity enforcement over runs too (csrc/cpu/runs.h);
//   - the [0, 1] rescaling of float input in one C++ pass (slic_rescale), not torch's six.
#include "supercl/slic.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "ops.h"
#include "parallel.h"
#include "runs.h"
#include "slic_shared.h"

namespace supercl {
namespace cpu {

const char* simd_level() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const char* level = [] {
    const char* env = std::getenv("SUPERCL_SIMD");
    if (env && std::string(env) == "baseline") return "baseline";
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? "avx2" : "baseline";
  }();
  return level;
#else
  return "baseline";
#endif
}

namespace {

// ---------------------------------------------------------------------------------------------
// The host's assignment: float distances, exact labels.
//
// The labels are defined by slic_assign_pixel's double-precision distances (the GPU runs it per
// pixel).  The host evaluates the same candidates in float, 8 pixels per AVX2 instruction
// instead of 4 doubles, and keeps per pixel the smallest float distance, its centre and the
// second smallest distance.  Every float distance is within a proven bound of the double one
// (float_margin below), so when the two smallest float distances are further apart than twice
// that bound the double comparison has the same winner; only the other pixels (near-ties, in
// practice the pixels on an exact mid-line between two centres of equal colour, and the rare
// images whose compactness makes the colour term swamp float's 24 bits) are assigned again by
// slic_assign_pixel itself.  The labels are therefore bit-identical to the GPU's.
//
// Float form of the distance of pixel (y, x), value q, to centre k (cy, cx, m):
//   d = (A_k(y) + T_k(x)) + cw * sum_c ((q_c - mi_kc) - mf_kc)^2
// with A_k(y) = sw spy^2 (y - cy)^2 and T_k(x) = sw spx^2 (x - cx)^2 computed in double and
// rounded to float (T once per centre and iteration, a table over the centre's x range), and
// the centre's colour split into an integer part mi (q - mi is exact in float) and a fraction
// mf in [0, 1) (rounding error <= 2^-25).  All terms are non-negative, so relative errors add:
// with u = 2^-24 and C channels, |d - D| <= (8 + 2C) u D + C cw 2^-8 (the second term from
// mf's rounding times |q - m| <= 2^16, doubled diff), and D, the double result, is itself within
// 10 * 2^-53 of the real value.  float_margin takes twice these terms.
// ---------------------------------------------------------------------------------------------

struct FloatMargin {
  double relative, absolute;
};

FloatMargin float_margin(int64_t channels, double colour_weight) {
  const double u = std::ldexp(1.0, -24);
  return {2.0 * (8.0 + 2.0 * static_cast<double>(channels) + 1.0) * u,
          2.0 * static_cast<double>(channels) * colour_weight * std::ldexp(1.0, -8) +
              std::ldexp(1.0, -100)};
}

// Whether the float form is safe for these weights: every weight is 0 or a normal float with
// room for the products (no underflow that would lose a term, no overflow).  Otherwise the
// image is assigned by slic_assign_pixel alone.
bool float_form_applies(const SlicParams& p) {
  const double lo = std::ldexp(1.0, -60), hi = std::ldexp(1.0, 60);
  for (double w : {p.spatial_weight * p.spacing_y2, p.spatial_weight * p.spacing_x2,
                   p.colour_weight})
    if (w != 0.0 && !(w >= lo && w <= hi)) return false;
  return true;
}

// Per centre and iteration: its candidate rectangle (rows in its y window; columns in its x
// window and in cells jx - 1 .. jx + 1), its split colour and the offset of its T table.
struct CentreScan {
  int64_t y_lo, y_hi, xs, xe;  // inclusive; xs > xe: no pixel
  int64_t xa;                  // first pixel of its cells (xs >= xa)
  int64_t table;               // offset of T_k(xa) in the table array
};

// Every scan covers a multiple of kPad pixels (16 floats, two AVX2 vectors): the row buffers and
// the values carry kPad elements of slack at their end.
constexpr int64_t kPad = 16;

// The pixels xs..xe of one row against one centre (see above).  Written branch-free so that
// the loop vectorises: 4-byte elements throughout, selects through an integer mask (GCC 12 does
// not if-convert an int select on a float compare).
template <int kChannels>
SUPERCL_ALWAYS_INLINE void scan_float_body(const float* __restrict row_values,
                                           int64_t channel_stride, int64_t channels,
                                           const float* __restrict table, float a,
                                           const float* __restrict mi,
                                           const float* __restrict mf, float cw, int32_t k,
                                           int64_t xs, int64_t xe, float* __restrict best,
                                           float* __restrict second,
                                           int32_t* __restrict labels) {
  const int64_t n = kChannels > 0 ? kChannels : channels;
  const int64_t count = (xe - xs + kPad) / kPad * kPad;  // padded, see plan_float
  float* __restrict b = best + xs;
  float* __restrict s = second + xs;
  int32_t* __restrict l = labels + xs;
  const float* __restrict v = row_values + xs;
  for (int64_t i = 0; i < count; ++i) {
    float colour = 0.0f;
    for (int64_t c = 0; c < n; ++c) {
      const float diff = (v[c * channel_stride + i] - mi[c]) - mf[c];
      colour += diff * diff;
    }
    const float d = (a + table[i]) + colour * cw;
    const float old = b[i];
    s[i] = std::min(s[i], std::max(old, d));
    const int32_t closer = -static_cast<int32_t>(d < old);
    b[i] = d < old ? d : old;
    l[i] = (k & closer) | (l[i] & ~closer);
  }
}

// Each scan in two versions, AVX2 and the baseline (slic_shared.h).
SUPERCL_TARGET_AVX2 void scan_float_any_avx2(const float* __restrict row_values,
                                             int64_t channel_stride, int64_t channels,
                                             const float* table, float a, const float* mi,
                                             const float* mf, float cw, int32_t k, int64_t xs,
                                             int64_t xe, float* best, float* second,
                                             int32_t* labels) {
  scan_float_body<0>(row_values, channel_stride, channels, table, a, mi, mf, cw, k, xs, xe, best,
                     second, labels);
}

void scan_float_any(const float* __restrict row_values, int64_t channel_stride, int64_t channels,
                    const float* table, float a, const float* mi, const float* mf, float cw,
                    int32_t k, int64_t xs, int64_t xe, float* best, float* second,
                    int32_t* labels) {
  if (SUPERCL_AVX2_VERSION && use_avx2())
    scan_float_any_avx2(row_values, channel_stride, channels, table, a, mi, mf, cw, k, xs, xe,
                        best, second, labels);
  else
    scan_float_body<0>(row_values, channel_stride, channels, table, a, mi, mf, cw, k, xs, xe,
                       best, second, labels);
}

// Float-form state of one image's iteration: what the rows share.
struct FloatPlan {
  std::vector<CentreScan> scan;
  std::vector<float> table;   // T_k(x) of every centre, back to back
  std::vector<float> mi, mf;  // K x C split colours
  FloatMargin margin;
  float cw;
};

// t[x] for xa <= x < end: T_k(x) = wx (x - cx)^2 rounded to float for xs <= x <= xe, +inf
// elsewhere.  The values 4 at a time (exact: x as a double is x + 0.0 .. x + 3.0, and every
// operation is the scalar one lane-wise; the scalar loop was 3.4 % of SLIC's instructions on
// the real_mri 256^2 slices, callgrind).
typedef double v4d __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));

SUPERCL_ALWAYS_INLINE void fill_table_body(float* __restrict t, int64_t xa, int64_t end,
                                           int64_t xs, int64_t xe, double cx, double wx) {
  const float inf = std::numeric_limits<float>::infinity();
  const int64_t lo_end = sc_max(xa, sc_min(xs, end));
  const int64_t mid_end = sc_max(lo_end, sc_min(xe + 1, end));
  int64_t x = xa;
  for (; x < lo_end; ++x) t[x] = inf;
  const v4d step = {0.0, 1.0, 2.0, 3.0};
  for (; x + 4 <= mid_end; x += 4) {
    const v4d dx = (static_cast<double>(x) + step) - cx;
    const v4f f = __builtin_convertvector(wx * (dx * dx), v4f);
    std::memcpy(t + x, &f, sizeof f);
  }
  for (; x < mid_end; ++x) {
    const double dx = static_cast<double>(x) - cx;
    t[x] = static_cast<float>(wx * (dx * dx));
  }
  for (; x < end; ++x) t[x] = inf;
}

SUPERCL_TARGET_AVX2 void fill_table_avx2(float* t, int64_t xa, int64_t end, int64_t xs,
                                         int64_t xe, double cx, double wx) {
  fill_table_body(t, xa, end, xs, xe, cx, wx);
}

void fill_table(float* t, int64_t xa, int64_t end, int64_t xs, int64_t xe, double cx,
                double wx) {
  if (SUPERCL_AVX2_VERSION && use_avx2()) return fill_table_avx2(t, xa, end, xs, xe, cx, wx);
  fill_table_body(t, xa, end, xs, xe, cx, wx);
}

// Builds the per-centre part of the float form for the current centres.
void plan_float(const SlicGrid& g, int64_t channels, int64_t height, int64_t width,
                const double* centres, const SlicParams& p, FloatPlan& plan) {
  const int64_t k_count = g.ny * g.nx;
  plan.scan.resize(k_count);
  plan.mi.resize(k_count * channels);
  plan.mf.resize(k_count * channels);
  plan.table.clear();
  plan.margin = float_margin(channels, p.colour_weight);
  plan.cw = static_cast<float>(p.colour_weight);
  const double wx = p.spatial_weight * p.spacing_x2;
  for (int64_t k = 0; k < k_count; ++k) {
    const double* c = centres + k * (2 + channels);
    const int64_t jx = k % g.nx;
    CentreScan& cs = plan.scan[k];
    // slic_in_window's ranges as integers, and the pixels whose cell is jx - 1 .. jx + 1
    // (slic_cell's boundaries).
    cs.y_lo = static_cast<int64_t>(sc_floor(sc_dsub(c[0], p.window)));
    cs.y_hi = static_cast<int64_t>(sc_floor(sc_dadd(c[0], p.window)));
    const int64_t xa = jx - 1 <= 0 ? 0 : g.x0 + (jx - 1) * g.sx - g.sx / 2;
    const int64_t xb = jx + 2 >= g.nx ? width : g.x0 + (jx + 2) * g.sx - g.sx / 2;
    const int64_t lo = static_cast<int64_t>(sc_floor(sc_dsub(c[1], p.window)));
    const int64_t hi = static_cast<int64_t>(sc_floor(sc_dadd(c[1], p.window)));
    cs.xs = sc_max<int64_t>(sc_max<int64_t>(xa, lo), 0);
    cs.xe = sc_min(sc_min<int64_t>(xb, width) - 1, hi);
    // T_k over the centre's cells xa .. xb - 1 and kPad more, +inf outside its window: an
    // infinite distance changes neither the best, the second nor the label, so scans may
    // cover whole vectors (no scalar tail) and whole cells (no window test).
    cs.xa = xa;
    cs.table = static_cast<int64_t>(plan.table.size());
    plan.table.resize(plan.table.size() + (xb + kPad - xa));
    fill_table(plan.table.data() + cs.table - xa, xa, xb + kPad, cs.xs, cs.xe, c[1], wx);
    for (int64_t ch = 0; ch < channels; ++ch) {
      const double m = c[2 + ch];
      const double whole = std::floor(m);
      plan.mi[k * channels + ch] = static_cast<float>(whole);  // an integer <= 2^16: exact
      plan.mf[k * channels + ch] = static_cast<float>(m - whole);  // m - whole is exact
    }
  }
  (void)height;
}

// The near-tie test of one pixel, in float with room for the rounding of the test itself (a
// few u more than the margin; TieTest).  "No second candidate" is FLT_MAX (the scans' initial
// value), whose difference with any distance passes the test; no candidate at all fails it and
// goes to the exact resolution, which keeps the previous label.  rel * s + rel * b does not
// overflow at FLT_MAX.
struct TieTest {
  float rel, abs2;
  explicit TieTest(const FloatMargin& m)
      : rel(static_cast<float>(m.relative + std::ldexp(1.0, -21))),
        abs2(static_cast<float>(2.0 * m.absolute) * (1.0f + 1e-6f)) {}
};

// Grey rows, blocked: the pixels of one cell column share their candidates (the centres of
// cells iy +- 1, ix +- 1), so each block of 8 pixels keeps its best, second and label in
// registers over all of them and is written once, with its near-tie flag.  A block may run
// past its cell: the next cell's blocks overwrite those pixels (and the last one runs into the
// buffers' kPad slack); the tables reach kPad past their cells.  GCC vector extensions: AVX2
// registers in the avx2 clone, pairs of SSE2 registers in the default one.
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

struct BlockCandidate {
  const float* table;  // T_k indexed by x
  float a, mi, mf;
  int32_t k;
};

// One candidate's update of a block of 16 pixels (two vectors of 8).
SUPERCL_ALWAYS_INLINE void visit(const BlockCandidate* __restrict c, int64_t x, v8f v0, v8f v1,
                                 float cw, v8f& b0, v8f& b1, v8f& s0, v8f& s1, v8i& l0,
                                 v8i& l1) {
  v8f t0, t1;
  std::memcpy(&t0, c->table + x, sizeof t0);
  std::memcpy(&t1, c->table + x + 8, sizeof t1);
  v8i k = {};
  k += c->k;
  const v8f e0 = (v0 - c->mi) - c->mf, e1 = (v1 - c->mi) - c->mf;
  const v8f d0 = (c->a + t0) + (e0 * e0) * cw, d1 = (c->a + t1) + (e1 * e1) * cw;
  // max(b, d), written as maxps computes it (one instruction, not a compare and a blend); the
  // two forms differ only where d == b, which gives the same value
  const v8f h0 = d0 > b0 ? d0 : b0, h1 = d1 > b1 ? d1 : b1;
  s0 = h0 < s0 ? h0 : s0;  // min(s, max(b, d))
  s1 = h1 < s1 ? h1 : s1;
  const v8i closer0 = d0 < b0, closer1 = d1 < b1;
  b0 = closer0 ? d0 : b0;
  b1 = closer1 ? d1 : b1;
  l0 = closer0 ? k : l0;
  l1 = closer1 ? k : l1;
}

// The blocks of one cell's pixels pa .. pb - 1 against the centres base[r * stride + j],
// r < rows, j < per_row; row `mid` is the cell's own row of centres.  kRows, kPer > 0 fix
// those counts at compile time (3 x 3, every cell off the image's border; mid is then 1): the
// candidate loop is then unrolled, 3 % fewer instructions for all of SLIC on the real_mri
// 256^2 slices (callgrind, 309.3M -> 300.2M).
//
// Rows pruned per block: the own row's centres go first; then another row of centres is
// skipped when the smallest of its row terms, L (a lower bound of each of its float distances:
// T and the colour term are >= 0 and rounding is monotone), passes the near-tie test against
// the largest best distance B of the block's pixels in this cell: L - B > rel L + rel B + abs2.
// Such a candidate can then neither be a pixel's best nor make it a near-tie (d >= L and
// b <= B, so the test holds for d and b too): the labels and the near-tie flags are those of
// the full scan, whatever the candidates of that row.  On flat background a pixel row in the
// upper half of its cell is far from the centres below, and vice versa.  The lanes past pb
// (overwritten by the next cell) are left out of B.
//
// The near-tie flags of the cell's pixels (pa .. pb - 1) are or-ed into the lanes of `ties`.
template <int kRows, int kPer>
SUPERCL_ALWAYS_INLINE void scan_cell(const float* __restrict row_values,
                                     const BlockCandidate* base, int64_t stride, int64_t rows,
                                     int64_t per_row, int64_t mid, int64_t pa, int64_t pb,
                                     float cw, float rel, float abs2,
                                     int32_t* __restrict row_labels,
                                     int32_t* __restrict near, v8i& ties) {
  const int64_t nr = kRows > 0 ? kRows : rows;
  const int64_t np = kPer > 0 ? kPer : per_row;
  const int64_t own = kRows == 3 ? 1 : mid;
  const float inf = std::numeric_limits<float>::infinity();
  float row_a[3];  // per row of centres: the smallest row term
  for (int64_t r = 0; r < nr; ++r) {
    float m = inf;
    for (int64_t j = 0; j < np; ++j) m = std::min(m, base[r * stride + j].a);
    row_a[r] = m;
  }
  const v8i lane0 = {0, 1, 2, 3, 4, 5, 6, 7}, lane1 = lane0 + 8;
  // Two blocks of 8 at a time: each candidate's update of a block is a dependent chain
  // (compare, select), which one block alone leaves latency-bound.
  static_assert(kPad == 16, "two blocks of 8 per step");
  for (int64_t x = pa; x < pb; x += kPad) {
    v8f v0, v1, b0, b1, s0, s1;
    std::memcpy(&v0, row_values + x, sizeof v0);
    std::memcpy(&v1, row_values + x + 8, sizeof v1);
    for (int i = 0; i < 8; ++i) b0[i] = std::numeric_limits<float>::max();
    b1 = b0;
    s0 = b0;
    s1 = b0;
    v8i l0 = {}, l1 = {};
#pragma GCC unroll 3
    for (int64_t j = 0; j < np; ++j)
      visit(base + own * stride + j, x, v0, v1, cw, b0, b1, s0, s1, l0, l1);
    const int32_t in_cell = static_cast<int32_t>(pb - x);
    const v8f zero = {};
    const v8i inside0 = lane0 < in_cell, inside1 = lane1 < in_cell;
    const v8f m0 = inside0 ? b0 : zero, m1 = inside1 ? b1 : zero;
    // the largest lane in three shuffle-and-max steps (a scalar loop cost twice as much)
    v8f m = m0 > m1 ? m0 : m1;
    v8f p = __builtin_shuffle(m, v8i{4, 5, 6, 7, 0, 1, 2, 3});
    m = m > p ? m : p;
    p = __builtin_shuffle(m, v8i{2, 3, 0, 1, 6, 7, 4, 5});
    m = m > p ? m : p;
    p = __builtin_shuffle(m, v8i{1, 0, 3, 2, 5, 4, 7, 6});
    m = m > p ? m : p;
    const float bound = m[0];
#pragma GCC unroll 3
    for (int64_t r = 0; r < nr; ++r) {
      if (r == own) continue;
      const float low = row_a[r];
      if (low == inf || low - bound > rel * low + rel * bound + abs2) continue;
#pragma GCC unroll 3
      for (int64_t j = 0; j < np; ++j)
        visit(base + r * stride + j, x, v0, v1, cw, b0, b1, s0, s1, l0, l1);
    }
    const v8i tie0 = ~((s0 - b0) > (rel * s0 + rel * b0 + abs2));
    const v8i tie1 = ~((s1 - b1) > (rel * s1 + rel * b1 + abs2));
    std::memcpy(row_labels + x, &l0, sizeof l0);
    std::memcpy(row_labels + x + 8, &l1, sizeof l1);
    std::memcpy(near + x, &tie0, sizeof tie0);
    std::memcpy(near + x + 8, &tie1, sizeof tie1);
    ties |= (tie0 & inside0) | (tie1 & inside1);
  }
}

SUPERCL_ALWAYS_INLINE int32_t scan_row_grey_body(const float* __restrict row_values,
                                                 const SlicGrid& g, int64_t width,
                                                 const BlockCandidate* centre_rows, int64_t rows,
                                                 int64_t mid, float cw, float rel, float abs2,
                                                 int32_t* __restrict row_labels,
                                                 int32_t* __restrict near) {
  // Ties of the pixels < width only (the slack past it holds junk): scan_cell's flags of
  // its own pixels (a loop over the row's flags here cost 1.1 %, callgrind).
  v8i ties = {};
  // slic_cell's boundaries, cell ix covering pa .. pb - 1, kept in locals (g is read through a
  // reference, which the compiler reloaded for each cell)
  const int64_t nx = g.nx, sx = g.sx;
  int64_t pb = 0, edge = g.x0 + sx - sx / 2;
  for (int64_t ix = 0; ix < nx; ++ix, edge += sx) {
    const int64_t pa = pb;
    pb = ix + 1 >= nx ? width : edge;
    // The centres of cells (iy +- 1, ix +- 1): up to 3 consecutive entries of each centre row,
    // read in place (copying them to a local array per cell cost a memcpy call per row of
    // centres: 7 % of SLIC's instructions on the real_mri 256^2 slices, callgrind).
    const int64_t ja = ix > 0 ? ix - 1 : 0, jb = ix + 1 < nx ? ix + 1 : nx - 1;
    const BlockCandidate* base = centre_rows + ja;
    const int64_t per_row = jb - ja + 1;
    if (rows == 3 && per_row == 3)
      scan_cell<3, 3>(row_values, base, nx, rows, per_row, mid, pa, pb, cw, rel, abs2,
                      row_labels, near, ties);
    else
      scan_cell<0, 0>(row_values, base, nx, rows, per_row, mid, pa, pb, cw, rel, abs2,
                      row_labels, near, ties);
  }
  int32_t found = 0;
  for (int i = 0; i < 8; ++i) found |= ties[i];
  return found;
}

SUPERCL_TARGET_AVX2 int32_t scan_row_grey_avx2(const float* row_values, const SlicGrid& g,
                                               int64_t width, const BlockCandidate* centre_rows,
                                               int64_t rows, int64_t mid, float cw, float rel,
                                               float abs2, int32_t* row_labels, int32_t* near) {
  return scan_row_grey_body(row_values, g, width, centre_rows, rows, mid, cw, rel, abs2,
                            row_labels, near);
}

int32_t scan_row_grey(const float* row_values, const SlicGrid& g, int64_t width,
                      const BlockCandidate* centre_rows, int64_t rows, int64_t mid, float cw,
                      float rel, float abs2, int32_t* row_labels, int32_t* near) {
  if (SUPERCL_AVX2_VERSION && use_avx2())
    return scan_row_grey_avx2(row_values, g, width, centre_rows, rows, mid, cw, rel, abs2,
                              row_labels, near);
  return scan_row_grey_body(row_values, g, width, centre_rows, rows, mid, cw, rel, abs2,
                            row_labels, near);
}

// Writes a row's new labels (-1 outside the mask) over the previous ones; returns how many
// changed.  In two versions like the scans: the baseline's 4 lanes made it 4.4 % of SLIC's
// instructions on the real_mri 256^2 slices (callgrind).
SUPERCL_ALWAYS_INLINE int64_t finish_row_body(const uint8_t* __restrict mrow, int64_t width,
                                              const int32_t* __restrict row_labels,
                                              int32_t* __restrict prev) {
  // An int32 count (a row has < 2^24 pixels): 8 lanes, no widening to int64 per pixel.
  int32_t changed = 0;
  if (mrow) {
    for (int64_t x = 0; x < width; ++x) {
      const int32_t label = mrow[x] ? row_labels[x] : -1;
      changed += label != prev[x];
      prev[x] = label;
    }
  } else {
    for (int64_t x = 0; x < width; ++x) {
      changed += row_labels[x] != prev[x];
      prev[x] = row_labels[x];
    }
  }
  return changed;
}

SUPERCL_TARGET_AVX2 int64_t finish_row_avx2(const uint8_t* mrow, int64_t width,
                                            const int32_t* row_labels, int32_t* prev) {
  return finish_row_body(mrow, width, row_labels, prev);
}

int64_t finish_row(const uint8_t* mrow, int64_t width, const int32_t* row_labels,
                   int32_t* prev) {
  if (SUPERCL_AVX2_VERSION && use_avx2()) return finish_row_avx2(mrow, width, row_labels, prev);
  return finish_row_body(mrow, width, row_labels, prev);
}

// One thread's row buffers (kPad elements of slack past the width; see scan_row_grey).
struct RowWork {
  std::vector<float> best, second;
  std::vector<int32_t> row, near;
  std::vector<BlockCandidate> cands;  // the centres of three cell rows
  int64_t cands_iy = -1;              // the cell row they are for (a RowWork lives one iteration)
  RowWork(int64_t width, int64_t nx)
      : best(width + kPad), second(width + kPad), row(width + kPad), near(width + kPad),
        cands(3 * nx) {}
};

// Assigns one row in the float form; returns the number of pixels whose label changed.
// Candidates: the centres of the cell rows iy - 1 .. iy + 1 in ascending index, each over its
// column range, so that every pixel sees slic_assign_pixel's candidates in the same order.
// Near-ties are settled by slic_assign_pixel itself.
int64_t assign_row(const float* values, const int32_t* quant, const uint8_t* mask,
                   int64_t channels, int64_t height, int64_t width, int64_t y, const SlicGrid& g,
                   const double* centres, const SlicParams& p, const FloatPlan& plan,
                   int32_t* labels, RowWork& work) {
  const int64_t hw = height * width;
  const int64_t iy = slic_cell(y, g.y0, g.sy, g.ny);
  const float* row_values = values + y * width;
  int32_t* prev = labels + y * width;
  float* best = work.best.data();
  float* second = work.second.data();
  int32_t* near = work.near.data();
  int32_t* row_labels = work.row.data();
  const double wy = p.spatial_weight * p.spacing_y2;
  const double fy = static_cast<double>(y);
  const TieTest test(plan.margin);
  int32_t any_tie = 0;
  if (channels == 1) {
    // Each centre of the cell rows iy - 1 .. iy + 1 once, with +inf as its row term when the
    // row is outside its y window (then it changes nothing, see plan_float); scan_row_grey
    // takes each column's candidates from these, in any order: the float stage's outcome does
    // not depend on it, and ties go to the exact resolution below, which follows the ascending
    // order.
    const float inf = std::numeric_limits<float>::infinity();
    const int64_t jy0 = sc_max<int64_t>(0, iy - 1), jy1 = sc_min<int64_t>(g.ny - 1, iy + 1);
    // The rows of one cell row share their candidates but for the row term: the rest is
    // written once per cell row and iteration (per row it was 2.4 % of SLIC's instructions on
    // the real_mri 256^2 slices, callgrind).
    BlockCandidate* rows = work.cands.data();
    const bool fresh = work.cands_iy != iy;
    work.cands_iy = iy;
    for (int64_t jy = jy0; jy <= jy1; ++jy) {
      for (int64_t jx = 0; jx < g.nx; ++jx) {
        const int64_t k = jy * g.nx + jx;
        const CentreScan& cs = plan.scan[k];
        const double dy = fy - centres[k * 3];
        BlockCandidate& c = rows[(jy - jy0) * g.nx + jx];
        c.a = (y < cs.y_lo || y > cs.y_hi) ? inf : static_cast<float>(wy * (dy * dy));
        if (fresh) {
          c.table = plan.table.data() + cs.table - cs.xa;
          c.mi = plan.mi[k];
          c.mf = plan.mf[k];
          c.k = static_cast<int32_t>(k);
        }
      }
    }
    any_tie = scan_row_grey(row_values, g, width, rows, jy1 - jy0 + 1, iy - jy0, plan.cw,
                            test.rel, test.abs2, row_labels, near);
  } else {
    const float none = std::numeric_limits<float>::max();
    for (int64_t x = 0; x < width; ++x) {
      best[x] = none;
      second[x] = none;
      row_labels[x] = 0;
    }
    for (int64_t jy = sc_max<int64_t>(0, iy - 1); jy <= sc_min<int64_t>(g.ny - 1, iy + 1);
         ++jy) {
      for (int64_t jx = 0; jx < g.nx; ++jx) {
        const int64_t k = jy * g.nx + jx;
        const CentreScan& cs = plan.scan[k];
        if (y < cs.y_lo || y > cs.y_hi || cs.xs > cs.xe) continue;
        const double dy = fy - centres[k * (2 + channels)];
        const float a = static_cast<float>(wy * (dy * dy));
        const float* table = plan.table.data() + cs.table + (cs.xs - cs.xa);
        scan_float_any(row_values, hw, channels, table, a, plan.mi.data() + k * channels,
                       plan.mf.data() + k * channels, plan.cw, static_cast<int32_t>(k), cs.xs,
                       cs.xe, best, second, row_labels);
      }
    }
    for (int64_t x = 0; x < width; ++x) {
      const float b = best[x], s = second[x];
      const int32_t tie = !(s - b > test.rel * s + test.rel * b + test.abs2);
      near[x] = tie;
      any_tie |= tie;
    }
  }
  if (any_tie) {
    // slic_assign_pixel's loop, with its window tests read from the plan (the same integer
    // ranges; the emulated CUDA tests compare the two) and the same double distances.
    const int32_t* pixel_row = quant + y * width;
    for (int64_t x = 0; x < width; ++x) {
      // Near-ties are a few pixels a row: skip 8 flags at a time where none is set (the
      // buffer has kPad elements of slack; a flag read there is never acted on).  Per pixel,
      // this test was 4 % of SLIC's instructions on real_mri 256^2 (callgrind).
      if ((x & 7) == 0) {
        uint64_t w[4];
        std::memcpy(w, near + x, sizeof w);
        if ((w[0] | w[1] | w[2] | w[3]) == 0) {
          x += 7;
          continue;
        }
      }
      if (!near[x]) continue;
      const int64_t ix = slic_cell(x, g.x0, g.sx, g.nx);
      const double fx = static_cast<double>(x);
      double best_d = SUPERCL_DBL_MAX;
      int32_t label = prev[x];
      for (int64_t jy = sc_max<int64_t>(0, iy - 1); jy <= sc_min<int64_t>(g.ny - 1, iy + 1);
           ++jy) {
        for (int64_t jx = sc_max<int64_t>(0, ix - 1); jx <= sc_min<int64_t>(g.nx - 1, ix + 1);
             ++jx) {
          const int64_t k = jy * g.nx + jx;
          const CentreScan& cs = plan.scan[k];
          if (y < cs.y_lo || y > cs.y_hi || x < cs.xs || x > cs.xe) continue;
          const double d = slic_distance(pixel_row + x, hw, channels, fy, fx,
                                         centres + k * (2 + channels), p);
          if (d < best_d) {
            best_d = d;
            label = static_cast<int32_t>(k);
          }
        }
      }
      row_labels[x] = label;
    }
  }
  return finish_row(mask ? mask + y * width : nullptr, width, row_labels, prev);
}

// The double-precision assignment of one row through slic_assign_pixel, for weights outside
// the float form's range (float_form_applies).
int64_t assign_row_double(const int32_t* quant, const uint8_t* mask, int64_t channels,
                          int64_t height, int64_t width, int64_t y, const SlicGrid& g,
                          const double* centres, const SlicParams& p, int32_t* labels,
                          int32_t* row_labels) {
  int32_t* prev = labels + y * width;
  for (int64_t x = 0; x < width; ++x)
    row_labels[x] = (mask && !mask[y * width + x])
                        ? -1
                        : slic_assign_pixel(quant, channels, height, width, y, x, g, centres, p,
                                            prev[x]);
  int64_t changed = 0;
  for (int64_t x = 0; x < width; ++x) {
    changed += row_labels[x] != prev[x];
    prev[x] = row_labels[x];
  }
  return changed;
}

// Where the runs of equal labels of a row start: start[x] = row[x] != row[x - 1] for
// 0 < x < width, one byte a pixel (a compare and a narrowing per vector).  The centre update
// then finds each run's end 8 flags at a time: 4.9 % of SLIC's instructions on the real_mri
// 256^2 slices where runs.h's run_end on the labels themselves cost 7.6 % (callgrind).
SUPERCL_ALWAYS_INLINE void mark_runs_body(const int32_t* __restrict row, int64_t width,
                                          uint8_t* __restrict start) {
  for (int64_t x = 1; x < width; ++x) start[x] = row[x] != row[x - 1];
}

SUPERCL_TARGET_AVX2 void mark_runs_avx2(const int32_t* row, int64_t width, uint8_t* start) {
  mark_runs_body(row, width, start);
}

void mark_runs(const int32_t* row, int64_t width, uint8_t* start) {
  if (SUPERCL_AVX2_VERSION && use_avx2()) return mark_runs_avx2(row, width, start);
  mark_runs_body(row, width, start);
}

// The first x > from with start[x] set; start[width .. width + 7] are set (the sentinel).
inline int64_t next_run(const uint8_t* start, int64_t from) {
  int64_t x = from + 1;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  for (;; x += 8) {
    uint64_t w;
    std::memcpy(&w, start + x, sizeof w);
    if (w) return x + __builtin_ctzll(w) / 8;
  }
#else
  while (!start[x]) ++x;
  return x;
#endif
}

}  // namespace

// Without connectivity enforcement: renumber the centres that own pixels consecutively, in
// centre order (declared in ops.h: the 3-D driver, slic_3d.cpp, uses it too).
void slic_compact_labels(int32_t* labels, int64_t n, int64_t k_count, int32_t start_label) {
  std::vector<int32_t> rank(k_count, 0);
  for (int64_t i = 0; i < n; ++i)
    if (labels[i] >= 0) rank[labels[i]] = 1;
  int32_t used = 0;
  for (int64_t k = 0; k < k_count; ++k)
    if (rank[k]) rank[k] = ++used;
  for (int64_t i = 0; i < n; ++i)
    labels[i] = slic_final_label(labels[i], labels[i] < 0, nullptr, rank.data(), start_label);
}

namespace {

void slic_image(const float* image, const uint8_t* mask, int64_t channels, int64_t height,
                int64_t width, const int64_t* grid, const double* params, int64_t max_num_iter,
                bool enforce, int64_t min_size, int32_t start_label, int32_t* labels,
                int threads) {
  const SlicGrid g = slic_grid(grid);
  const int64_t hw = height * width, k_count = g.ny * g.nx;
  // quant, values and prefix are written in full below: allocated without the zero fill a
  // std::vector would do first (16 bytes a pixel; 3.9 % of SLIC's instructions on the
  // real_mri 256^2 slices, callgrind).
  std::unique_ptr<int32_t[]> quant(new int32_t[channels * hw]);
  for (int64_t i = 0; i < channels * hw; ++i) quant[i] = slic_quantize(image[i]);
  // The float form's copy of the values: integers <= 2^16, exact in float; kPad elements of
  // slack (read by the last block of a row, never acted on).
  std::unique_ptr<float[]> values(new float[channels * hw + kPad]);
  for (int64_t i = 0; i < channels * hw; ++i) values[i] = static_cast<float>(quant[i]);
  for (int64_t i = channels * hw; i < channels * hw + kPad; ++i) values[i] = 0.0f;
  // Per row and channel, prefix sums of q (prefix[x] = q[0] + .. + q[x - 1]): q never
  // changes, and a run's sum is then one subtraction in every iteration's centre update.
  std::unique_ptr<int64_t[]> prefix(new int64_t[channels * height * (width + 1)]);
  std::vector<int64_t> totals(channels);
  for (int64_t r = 0; r < channels * height; ++r) {
    const int32_t* q = quant.get() + r * width;
    int64_t* p = prefix.get() + r * (width + 1);
    p[0] = 0;
    for (int64_t x = 0; x < width; ++x) p[x + 1] = p[x] + q[x];
  }
  std::vector<double> centres(k_count * (2 + channels));
  for (int64_t k = 0; k < k_count; ++k)
    slic_init_centre(g, k, channels, centres.data() + k * (2 + channels));
  std::vector<int64_t> sums(k_count * (3 + channels));
  std::vector<uint8_t> start(width + 8, 1);  // mark_runs' flags and next_run's sentinel
  for (int64_t i = 0; i < hw; ++i) labels[i] = -1;
  FloatPlan plan;

  // With a mask: a spatial-only phase spreads the centres inside it first (slic.h).
  const int phases = mask ? 2 : 1;
  for (int phase = 0; phase < phases; ++phase) {
    const bool last_phase = phase == phases - 1;
    const SlicParams pp = slic_params(params, last_phase);
    const bool float_form = float_form_applies(pp);
    for (int64_t it = 0; it < max_num_iter; ++it) {
      int64_t changed = 0;
      if (float_form) plan_float(g, channels, height, width, centres.data(), pp, plan);
#pragma omp parallel num_threads(threads) if (threads > 1) reduction(+ : changed)
      {
        RowWork work(width, g.nx);
#pragma omp for schedule(static)
        for (int64_t y = 0; y < height; ++y)
          changed += float_form
                         ? assign_row(values.get(), quant.get(), mask, channels, height,
                                      width, y, g, centres.data(), pp, plan, labels, work)
                         : assign_row_double(quant.get(), mask, channels, height, width, y, g,
                                             centres.data(), pp, labels, work.row.data());
      }
      // No label changed: the centres are a fixed point (slic.h), later iterations are no-ops.
      if (changed == 0) break;
      // The update after the last assignment of the final phase would not be used.
      if (last_phase && it + 1 == max_num_iter) break;
      for (auto& s : sums) s = 0;
      for (int64_t y = 0; y < height; ++y) {
        const int32_t* row = labels + y * width;
        mark_runs(row, width, start.data());
        for (int64_t x0 = 0, x1; x0 < width; x0 = x1) {
          // Runs of equal labels; the GPU accumulates pixel by pixel through
          // slic_accumulate_run, the host takes each run's sums of q from the prefix sums
          // (one subtraction instead of a loop along the run).
          x1 = next_run(start.data(), x0);
          for (int64_t c = 0; c < channels; ++c) {
            const int64_t* p = prefix.get() + (c * height + y) * (width + 1);
            totals[c] = p[x1] - p[x0];
          }
          slic_accumulate_totals(channels, y, x0, x1, row[x0], totals.data(), sums.data());
        }
      }
      for (int64_t k = 0; k < k_count; ++k)
        slic_update_centre(sums.data(), k, channels, centres.data());
    }
  }
  if (enforce)
    enforce_connectivity(
        labels, height, width, min_size, start_label,
        [&](int32_t* cc) {
          return connected_components_image<int32_t>(labels, width, 1, height, width,
                                                     /*connectivity=*/1, mask != nullptr, -1, cc,
                                                     threads);
        },
        [&](const int32_t* cc, int64_t first) { return slic_merge_target(cc, width, first); });
  else
    slic_compact_labels(labels, hw, k_count, start_label);
}

}  // namespace

namespace {

// The range of a float image without a mask, 8 lanes at a time (the scalar loop in
// slic_rescale, a compare and a select per pixel for each bound, was 3 % of SLIC's
// instructions on the real_mri 256^2 slices, callgrind).  Returns false when a value is not
// finite: v * 0 is NaN exactly for inf and NaN, and a NaN stays in the sum.  The bounds are
// the scalar loop's, up to the sign of a zero bound (fixed by the caller).
SUPERCL_ALWAYS_INLINE bool float_range_body(const float* __restrict x, int64_t n, float& lo,
                                            float& hi) {
  const float inf = std::numeric_limits<float>::infinity();
  v8f l = {}, h = {}, z = {};
  l += inf;
  h -= inf;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    v8f v;
    std::memcpy(&v, x + i, sizeof v);
    l = v < l ? v : l;
    h = v > h ? v : h;
    z += v * 0.0f;
  }
  float lo_ = inf, hi_ = -inf, zero = 0.0f;
  for (int j = 0; j < 8; ++j) {
    lo_ = l[j] < lo_ ? l[j] : lo_;
    hi_ = h[j] > hi_ ? h[j] : hi_;
    zero += z[j];
  }
  for (; i < n; ++i) {
    lo_ = x[i] < lo_ ? x[i] : lo_;
    hi_ = x[i] > hi_ ? x[i] : hi_;
    zero += x[i] * 0.0f;
  }
  lo = lo_;
  hi = hi_;
  return zero == 0.0f;
}

SUPERCL_TARGET_AVX2 bool float_range_avx2(const float* x, int64_t n, float& lo, float& hi) {
  return float_range_body(x, n, lo, hi);
}

bool float_range(const float* x, int64_t n, float& lo, float& hi) {
  if (SUPERCL_AVX2_VERSION && use_avx2()) return float_range_avx2(x, n, lo, hi);
  return float_range_body(x, n, lo, hi);
}

// The rescaling itself: the same correctly rounded operations as the torch form, a
// subtraction and a division in double, clamp (NaN, possible outside the mask, stays NaN),
// rounding to float; 4 doubles a step (GCC 12 left the plain loop scalar: 14 instructions a
// pixel, callgrind).
template <typename T>
SUPERCL_ALWAYS_INLINE void rescale_body(const T* __restrict x, int64_t n, double lo, double span,
                                        float* __restrict o) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    v4d t;
    if constexpr (std::is_same<T, float>::value) {
      v4f v;
      std::memcpy(&v, x + i, sizeof v);
      t = __builtin_convertvector(v, v4d);
    } else {
      std::memcpy(&t, x + i, sizeof t);
    }
    t = (t - lo) / span;
    const v4d zero = {}, one = zero + 1.0;
    t = t < zero ? zero : t;
    t = t > one ? one : t;
    const v4f f = __builtin_convertvector(t, v4f);
    std::memcpy(o + i, &f, sizeof f);
  }
  for (; i < n; ++i) {
    double t = (static_cast<double>(x[i]) - lo) / span;
    t = t < 0.0 ? 0.0 : (t > 1.0 ? 1.0 : t);
    o[i] = static_cast<float>(t);
  }
}

template <typename T>
SUPERCL_TARGET_AVX2 void rescale_avx2(const T* x, int64_t n, double lo, double span, float* o) {
  rescale_body(x, n, lo, span, o);
}

template <typename T>
void rescale(const T* x, int64_t n, double lo, double span, float* o) {
  if (SUPERCL_AVX2_VERSION && use_avx2()) return rescale_avx2(x, n, lo, span, o);
  rescale_body(x, n, lo, span, o);
}

}  // namespace

template <typename T>
bool slic_rescale(const T* image, const uint8_t* mask, int64_t batch, int64_t channels,
                  int64_t height, int64_t width, float* out, int num_threads) {
  const int threads = resolve_threads(num_threads);
  const int64_t hw = height * width, n = channels * hw;
  int64_t bad = 0;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) reduction(+ : bad)
  for (int64_t b = 0; b < batch; ++b) {
    const T* x = image + b * n;
    const uint8_t* m = mask ? mask + b * hw : nullptr;
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    bool finite = true, any = false;
    if (std::is_same<T, float>::value && !m && n > 0) {
      float flo, fhi;
      finite = float_range(reinterpret_cast<const float*>(x), n, flo, fhi);
      lo = flo;
      hi = fhi;
      any = true;
      // The loop below keeps the first of equal values, so a zero bound has the sign of the
      // image's first zero (which may matter for the output's zeros: -0 - +0 is -0).
      if (finite && (lo == 0.0 || hi == 0.0)) {
        int64_t i = 0;
        while (static_cast<double>(x[i]) != 0.0) ++i;
        const double first_zero = static_cast<double>(x[i]);
        if (lo == 0.0) lo = first_zero;
        if (hi == 0.0) hi = first_zero;
      }
    } else {
      for (int64_t i = 0; i < n; ++i) {
        if (m && !m[i % hw]) continue;
        const double v = static_cast<double>(x[i]);
        finite &= std::isfinite(v);
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
        any = true;
      }
    }
    if (!finite) {
      ++bad;
      continue;
    }
    if (!any) {  // an empty mask: as supercl/ops/slic.py's _rescale
      lo = 0.0;
      hi = 1.0;
    }
    const double span = hi > lo ? hi - lo : 1.0;
    rescale(x, n, lo, span, out + b * n);
  }
  return bad == 0;
}

template bool slic_rescale<float>(const float*, const uint8_t*, int64_t, int64_t, int64_t,
                                  int64_t, float*, int);
template bool slic_rescale<double>(const double*, const uint8_t*, int64_t, int64_t, int64_t,
                                   int64_t, float*, int);

void slic(const float* image, const uint8_t* mask, int64_t batch, int64_t channels,
          int64_t height, int64_t width, const int64_t* grid, const double* params,
          int64_t max_num_iter, bool enforce_connectivity, const int64_t* min_size,
          int32_t start_label, int32_t* out, int num_threads) {
  const int threads = resolve_threads(num_threads);
  const int64_t hw = height * width;
  auto one = [&](int64_t b, int row_threads) {
    slic_image(image + b * channels * hw, mask ? mask + b * hw : nullptr, channels, height, width,
               grid + 6 * b, params + 5 * b, max_num_iter, enforce_connectivity, min_size[b],
               start_label, out + b * hw, row_threads);
  };
  for_each_image(batch, threads, one);
}

}  // namespace cpu
}  // namespace supercl
