// supercl/slic.h -- SLIC superpixels (Achanta et al., "SLIC Superpixels Compared to
// State-of-the-Art Superpixel Methods", TPAMI 2012) with the semantics of
// skimage.segmentation.slic, written once for the host and the device.
//
// Algorithm.  Each image (C channels, H x W) is first rescaled to [0, 1] over all its channels
// (by the Python layer) and quantised here to fixed point: q = floor(v * 2^16 + 1/2), an integer in
// [0, 65536].  K = ny * nx cluster centres start on a regular grid (origin y0, x0, integer steps
// sy, sx; see supercl/ops/slic.py for the grid, a port of skimage.util.regular_grid) with colour
// 0, as scikit-image starts them.  Each iteration then
//   assign  (pixel-centric, the form a GPU runs well): pixel (y, x) finds its nearest grid cell
//           (iy, ix) and compares the centres of the 3x3 cells around it, in ascending centre
//           index, keeping the first strictly smallest distance
//             D = ((spy (y - cy))^2 + (spx (x - cx))^2) / S^2 + sum_c (q_c - m_c)^2 * wc,
//           wc = 1 / (2^32 compactness^2), S = max(sy, sx), spy/spx the pixel spacing.  This is
//           skimage's distance (intensity scaled by 1 / compactness) in fixed-point units,
//           evaluated in double precision as scikit-image does: at small compactness the
//           colour term exceeds the spatial one by more than float's 24 bits, and float then
//           loses the spatial tie-break (skimage's test_enforce_connectivity, compactness 1e-4,
//           fails in float).  A
//           centre competes only if the pixel lies in its window |p - c| <= 2S (floored as
//           skimage floors it).  A pixel that no centre reaches keeps its previous label.
//   update  every centre becomes the mean of its pixels.  The sums are int64 fixed point:
//           count, sum of y, sum of x (integers, exact) and sum of q per channel.  Integer sums
//           do not depend on the order of accumulation, so the device's atomics and the host's
//           loops give the same centres bit for bit; the mean is one correctly rounded
//           division to double (sc_int_ratio).  A centre with no pixel keeps its position and
//           colour.
// The loop stops after max_num_iter assignments, or earlier once an assignment changes no
// label: the centres are then a fixed point, so stopping early never changes the result.
//
// Range limits of the fixed point: intensities are resolved to 2^-16 of the image's range
// (1.5e-5); a per-centre sum is exact while it stays below 2^53 (the exact range of the double
// used for the mean), i.e. for up to 2^37 pixels per superpixel, and int64 cannot overflow
// before that.  Coordinates are exact in float below 2^24, so images are limited to
// 16,777,216 pixels per side (checked in Python).
//
// With a mask, pixels outside it get label -1 here and take part in nothing; the centres first
// run max_num_iter spatial-only iterations (colour ignored) to spread inside the mask, as
// scikit-image does after its k-means seeding, then the colour iterations.
//
// Connectivity enforcement (skimage's _enforce_label_connectivity_cython, in parallel form):
// 4-connected components of the label map (supercl/connected_components.h) numbered in raster
// order; a component smaller than min_size is merged into the component of the pixel above its
// first pixel (or, in the top row of its extent, to the left of it), whose number is always
// smaller, so following merge pointers ends at a kept component (a pointer-jumping pass on the
// device, one ascending pass on the host).  Kept components are renumbered in raster order.  A
// small component whose first pixel has no valid up or left neighbour (the one holding the
// first valid pixel of the image) is kept.  Merging an adjacent region keeps every label a
// single 4-connected region.
#pragma once

#include "supercl/common.h"

namespace supercl {

// Fixed-point scale of intensities: q = round(v * kSlicScale) for v in [0, 1].
#define SUPERCL_SLIC_SCALE 65536.0f

// Grid of initial centres of one image: {y0, x0, ny, nx, sy, sx}.
struct SlicGrid {
  int64_t y0, x0, ny, nx, sy, sx;
};

SUPERCL_HD SlicGrid slic_grid(const int64_t* g) {
  SlicGrid r;
  r.y0 = g[0];
  r.x0 = g[1];
  r.ny = g[2];
  r.nx = g[3];
  r.sy = g[4];
  r.sx = g[5];
  return r;
}

// Scalars of the distance, identical for both backends (computed once in Python).
struct SlicParams {
  double spatial_weight;  // 1 / S^2
  double colour_weight;   // 1 / (2^32 compactness^2), or 0 for the spatial-only phase
  double spacing_y2;      // spy^2
  double spacing_x2;      // spx^2
  double window;          // 2 S
};

// The distance scalars of one image from its row {spatial, colour, spy^2, spx^2, window} of
// the (B, 5) params array; with_colour = false gives the spatial-only phase.
SUPERCL_HD SlicParams slic_params(const double* q, bool with_colour) {
  SlicParams p;
  p.spatial_weight = q[0];
  p.colour_weight = with_colour ? q[1] : 0.0;
  p.spacing_y2 = q[2];
  p.spacing_x2 = q[3];
  p.window = q[4];
  return p;
}

SUPERCL_HD int32_t slic_quantize(float v) {
  // v * 2^16 is exact; adding 1/2 and truncating (v >= 0) rounds to nearest, ties up.  The
  // same two IEEE operations on both sides, and no libm call in the host's loop.
  return static_cast<int32_t>(sc_fadd(sc_fmul(v, SUPERCL_SLIC_SCALE), 0.5f));
}

// Centre k at its grid position, colour 0.  centre: 2 + C doubles {cy, cx, m_0, ..}.
SUPERCL_HD void slic_init_centre(const SlicGrid& g, int64_t k, int64_t channels,
                                 double* centre) {
  const int64_t iy = k / g.nx, ix = k % g.nx;
  centre[0] = static_cast<double>(g.y0 + iy * g.sy);
  centre[1] = static_cast<double>(g.x0 + ix * g.sx);
  for (int64_t c = 0; c < channels; ++c) centre[2 + c] = 0.0;
}

// Index of the grid cell nearest to coordinate p along one axis.
SUPERCL_HD int64_t slic_cell(int64_t p, int64_t origin, int64_t step, int64_t n) {
  const int64_t i = sc_floordiv(p - origin + step / 2, step);
  return sc_max<int64_t>(0, sc_min<int64_t>(n - 1, i));
}

// scikit-image's window: p in [floor(c - w), floor(c + w)].
SUPERCL_HD bool slic_in_window(double centre, double window, int64_t p) {
  const double fp = static_cast<double>(p);
  return fp >= sc_floor(sc_dsub(centre, window)) && fp <= sc_floor(sc_dadd(centre, window));
}

// Distance of the pixel at (y, x), with channel values pixel[c * channel_stride], to centre.
// kChannels > 0 fixes the channel count at compile time (the CPU driver's grey fast path);
// 0 takes `channels`.  The spatial-only phase passes colour_weight = 0: the colour term then
// adds an exact +0, so no branch is needed and the result equals the purely spatial distance.
// Pixel values may be given as int32 (the device) or as the same values converted to double
// (the host's vectorised loop, which then has one element width throughout); the conversion is
// exact, so both give the same distance.
template <int kChannels = 0, typename P = int32_t>
SUPERCL_HD double slic_distance(const P* pixel, int64_t channel_stride, int64_t channels,
                                double y, double x, const double* centre, const SlicParams& p) {
  const int64_t n = kChannels > 0 ? kChannels : channels;
  const double dy = sc_dsub(y, centre[0]);
  const double dx = sc_dsub(x, centre[1]);
  const double spatial = sc_dadd(sc_dmul(p.spacing_y2, sc_dmul(dy, dy)),
                                 sc_dmul(p.spacing_x2, sc_dmul(dx, dx)));
  double colour = 0.0;
  for (int64_t c = 0; c < n; ++c) {
    const double diff = sc_dsub(static_cast<double>(pixel[c * channel_stride]), centre[2 + c]);
    colour = sc_dadd(colour, sc_dmul(diff, diff));
  }
  return sc_dadd(sc_dmul(spatial, p.spatial_weight), sc_dmul(colour, p.colour_weight));
}

// The assignment of one pixel: the definition of the labels, and what the GPU runs.  The CPU
// driver evaluates the same candidates in float, many pixels at a time, and settles every
// pixel whose two best float distances are within a proven error bound of each other in
// double with slic_distance, in this order (csrc/cpu/slic.cpp): the same labels, bit for bit.
// quant: the image's (C, H, W) fixed-point values;
// centres: K x (2 + C).  Returns the new label, `previous` when no centre reaches the pixel.
SUPERCL_HD int32_t slic_assign_pixel(const int32_t* quant, int64_t channels, int64_t height,
                                     int64_t width, int64_t y, int64_t x, const SlicGrid& g,
                                     const double* centres, const SlicParams& p,
                                     int32_t previous) {
  const int64_t hw = height * width;
  const int32_t* pixel = quant + y * width + x;
  const int64_t iy = slic_cell(y, g.y0, g.sy, g.ny), ix = slic_cell(x, g.x0, g.sx, g.nx);
  const double fy = static_cast<double>(y), fx = static_cast<double>(x);
  double best = SUPERCL_DBL_MAX;
  int32_t label = previous;
  for (int64_t jy = sc_max<int64_t>(0, iy - 1); jy <= sc_min<int64_t>(g.ny - 1, iy + 1); ++jy) {
    for (int64_t jx = sc_max<int64_t>(0, ix - 1); jx <= sc_min<int64_t>(g.nx - 1, ix + 1); ++jx) {
      const int64_t k = jy * g.nx + jx;
      const double* c = centres + k * (2 + channels);
      if (!slic_in_window(c[0], p.window, y) || !slic_in_window(c[1], p.window, x)) continue;
      const double d = slic_distance(pixel, hw, channels, fy, fx, c, p);
      if (d < best) {
        best = d;
        label = static_cast<int32_t>(k);
      }
    }
  }
  return label;
}

// The position part of a run's sums -- count, sum y, sum x of the pixels x0 .. x1 - 1 of row
// y -- added to centre `label`'s {count, sum y, sum x, sum q_c ..}; returns that centre's sums
// for the caller to add the per-channel sums of q.  label >= 0.
SUPERCL_HD int64_t* slic_accumulate_position(int64_t channels, int64_t y, int64_t x0, int64_t x1,
                                             int32_t label, int64_t* sums) {
  int64_t* s = sums + static_cast<int64_t>(label) * (3 + channels);
  const int64_t n = x1 - x0;
  sc_accumulate(s, n);
  sc_accumulate(s + 1, y * n);
  sc_accumulate(s + 2, (x0 + x1 - 1) * n / 2);  // x0 + .. + (x1 - 1); the product is even
  return s;
}

// Adds the pixels x0 .. x1 - 1 of row y, all of label `label`, to the int64 sums of that
// centre: {count, sum y, sum x, sum q_c ..}, given the run's per-channel sums of q (totals).
SUPERCL_HD void slic_accumulate_totals(int64_t channels, int64_t y, int64_t x0, int64_t x1,
                                       int32_t label, const int64_t* totals, int64_t* sums) {
  if (label < 0) return;
  int64_t* s = slic_accumulate_position(channels, y, x0, x1, label, sums);
  for (int64_t c = 0; c < channels; ++c) sc_accumulate(s + 3 + c, totals[c]);
}

// The same, summing q along the run.  Both sides call it with runs of equal labels, which
// keeps the sums in registers along the run: the device within chunks of a row (one thread
// per chunk), so a run costs one set of atomics; the host's GPU form.  The host's own driver
// takes the totals from per-row prefix sums of q instead (exact integers: the same sums).
SUPERCL_HD void slic_accumulate_run(const int32_t* quant, int64_t channels, int64_t height,
                                    int64_t width, int64_t y, int64_t x0, int64_t x1,
                                    int32_t label, int64_t* sums) {
  if (label < 0) return;
  int64_t* s = slic_accumulate_position(channels, y, x0, x1, label, sums);
  for (int64_t c = 0; c < channels; ++c) {
    const int32_t* q = quant + c * height * width + y * width;
    int64_t total = 0;
    for (int64_t x = x0; x < x1; ++x) total += q[x];
    sc_accumulate(s + 3 + c, total);
  }
}

// Centre k becomes the mean of its pixels; an empty centre stays where it is.
SUPERCL_HD void slic_update_centre(const int64_t* sums, int64_t k, int64_t channels,
                                   double* centres) {
  const int64_t* s = sums + k * (3 + channels);
  const int64_t n = s[0];
  if (n <= 0) return;
  double* c = centres + k * (2 + channels);
  for (int64_t f = 0; f < 2 + channels; ++f) c[f] = sc_int_ratio(s[1 + f], n);
}

// Connectivity enforcement.  cc: 4-connected component ids of the label map (1-based, 0 for
// masked pixels).  The component whose first pixel is `first` merges into the component above
// that pixel, else into the one left of it; 0 when it has neither.
SUPERCL_HD int32_t slic_merge_target(const int32_t* cc, int64_t width, int64_t first) {
  const int64_t y = first / width, x = first % width;
  if (y > 0 && cc[first - width] > 0) return cc[first - width];
  if (x > 0 && cc[first - 1] > 0) return cc[first - 1];
  return 0;
}

// The component a component merges into (itself if it is kept).  size, target: per component.
SUPERCL_HD int32_t slic_merge_parent(const int64_t* size, const int32_t* target, int64_t min_size,
                                     int32_t c) {
  return (size[c] < min_size && target[c] > 0) ? target[c] : c;
}

// Final label of a pixel whose id (a component after enforcement, a centre without it) is
// `id`, given parent (what each id merged into; nullptr: itself) and rank (inclusive prefix
// sum over ids of the kept/used flags).  Negative or zero-for-masked ids give 0.
SUPERCL_HD int32_t slic_final_label(int32_t id, bool masked, const int32_t* parent,
                                    const int32_t* rank, int32_t start_label) {
  if (masked) return 0;
  return rank[parent ? parent[id] : id] - 1 + start_label;
}

}  // namespace supercl
