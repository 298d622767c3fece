// supercl/slic_3d.h -- SLIC supervoxels of 3-D volumes with the semantics of
// skimage.segmentation.slic on (D, H, W) input, written once for the host and the device.
//
// The 2-D algorithm of supercl/slic.h, one dimension up (scikit-image itself runs its 2-D SLIC
// as a volume of depth 1):
//   - each volume (C channels, D x H x W) is rescaled to [0, 1] over all its channels (Python)
//     and quantised to q = floor(v * 2^16 + 1/2) (slic_quantize);
//   - K = nz * ny * nx centres start on a regular grid {z0, y0, x0, nz, ny, nx, sz, sy, sx} (a
//     port of skimage.util.regular_grid, supercl/ops/slic.py) with colour 0;
//   - assign: voxel (z, y, x) finds its grid cell (iz, iy, ix) and compares the centres of the
//     3 x 3 x 3 cells around it in ascending centre index, keeping the first strictly smallest
//       D = ((wz (z - cz)^2 + wy (y - cy)^2) + wx (x - cx)^2) + sum_c (q_c - m_c)^2 cw,
//     in double, w_a = spacing_a^2 / S^2, cw = 1 / (2^32 compactness^2), S = max(sz, sy, sx)
//     (skimage's distance in fixed-point units, the spatial weight folded into the spacing
//     weights, which saves the host's vectorised scan a multiply per voxel and centre); a centre competes only when the voxel lies in its window
//     |p - c| <= 2S along every axis (floored as skimage floors it).  A voxel that no centre
//     reaches keeps its previous label;
//   - update: int64 fixed-point sums {count, sum z, sum y, sum x, sum q_c ..}, so the order of
//     accumulation (atomics on the device, loops on the host) cannot change the centres; each
//     mean is one correctly rounded division (sc_int_ratio);
//   - stop after max_num_iter assignments or once an assignment changes nothing;
//   - with a mask: max_num_iter spatial-only iterations first, masked voxels get -1;
//   - connectivity enforcement: 6-connected components of the label map
//     (supercl/connected_components_3d.h) numbered in raster order; one smaller than min_size
//     merges into the component of the voxel in front of its first voxel (z - 1), else above it
//     (y - 1), else left of it (x - 1) -- each earlier in raster order, so its number is
//     smaller and merge chains end at a kept component; kept components are renumbered in
//     raster order.
// The limits of supercl/slic.h hold per volume: coordinates exact below 2^24 per side, sums
// exact up to 2^37 voxels per supervoxel.
#pragma once

#include "supercl/common.h"
#include "supercl/slic.h"

namespace supercl {

// Grid of initial centres of one volume: {z0, y0, x0, nz, ny, nx, sz, sy, sx}.
struct Slic3Grid {
  int64_t z0, y0, x0, nz, ny, nx, sz, sy, sx;
};

SUPERCL_HD Slic3Grid slic3_grid(const int64_t* g) {
  Slic3Grid r;
  r.z0 = g[0];
  r.y0 = g[1];
  r.x0 = g[2];
  r.nz = g[3];
  r.ny = g[4];
  r.nx = g[5];
  r.sz = g[6];
  r.sy = g[7];
  r.sx = g[8];
  return r;
}

// Scalars of the distance, from a volume's row {wz, wy, wx, colour, window} of the (B, 5)
// params array: w_a = spacing_a^2 / S^2 (each one product, computed once in Python), colour =
// 1 / (2^32 compactness^2), window = 2S; with_colour = false gives the spatial-only phase.
struct Slic3Params {
  double weight_z, weight_y, weight_x, colour_weight, window;
};

SUPERCL_HD Slic3Params slic3_params(const double* q, bool with_colour) {
  Slic3Params p;
  p.weight_z = q[0];
  p.weight_y = q[1];
  p.weight_x = q[2];
  p.colour_weight = with_colour ? q[3] : 0.0;
  p.window = q[4];
  return p;
}

// Centre k at its grid position, colour 0.  centre: 3 + C doubles {cz, cy, cx, m_0, ..}.
SUPERCL_HD void slic3_init_centre(const Slic3Grid& g, int64_t k, int64_t channels,
                                  double* centre) {
  const int64_t ix = k % g.nx, iy = (k / g.nx) % g.ny, iz = k / (g.nx * g.ny);
  centre[0] = static_cast<double>(g.z0 + iz * g.sz);
  centre[1] = static_cast<double>(g.y0 + iy * g.sy);
  centre[2] = static_cast<double>(g.x0 + ix * g.sx);
  for (int64_t c = 0; c < channels; ++c) centre[3 + c] = 0.0;
}

// The (z, y) part of the distance: wz dz^2 + wy dy^2.  The host's row scan computes it once per
// row and centre; its sum with the x part is the same double operation as here, so both give
// the same distances bit for bit.
SUPERCL_HD double slic3_spatial_zy(double z, double y, const double* centre,
                                   const Slic3Params& p) {
  const double dz = sc_dsub(z, centre[0]);
  const double dy = sc_dsub(y, centre[1]);
  return sc_dadd(sc_dmul(p.weight_z, sc_dmul(dz, dz)), sc_dmul(p.weight_y, sc_dmul(dy, dy)));
}

// The x part: wx dx^2.
SUPERCL_HD double slic3_spatial_x(double x, const double* centre, const Slic3Params& p) {
  const double dx = sc_dsub(x, centre[2]);
  return sc_dmul(p.weight_x, sc_dmul(dx, dx));
}

// The colour part: sum_c (q_c - m_c)^2, channels at pixel[c * channel_stride].
template <typename P = int32_t>
SUPERCL_HD double slic3_colour(const P* pixel, int64_t channel_stride, int64_t channels,
                               const double* centre) {
  double colour = 0.0;
  for (int64_t c = 0; c < channels; ++c) {
    const double diff = sc_dsub(static_cast<double>(pixel[c * channel_stride]), centre[3 + c]);
    colour = sc_dadd(colour, sc_dmul(diff, diff));
  }
  return colour;
}

// D from its parts: (zy + x) + colour * cw.
SUPERCL_HD double slic3_combine(double zy, double x, double colour, const Slic3Params& p) {
  return sc_dadd(sc_dadd(zy, x), sc_dmul(colour, p.colour_weight));
}

// The assignment of one voxel: the definition of the labels, and what the GPU runs.  quant: the
// volume's (C, D, H, W) fixed-point values; centres: K x (3 + C).
SUPERCL_HD int32_t slic3_assign_voxel(const int32_t* quant, int64_t channels, int64_t depth,
                                      int64_t height, int64_t width, int64_t z, int64_t y,
                                      int64_t x, const Slic3Grid& g, const double* centres,
                                      const Slic3Params& p, int32_t previous) {
  const int64_t n = depth * height * width;
  const int32_t* voxel = quant + (z * height + y) * width + x;
  const int64_t iz = slic_cell(z, g.z0, g.sz, g.nz), iy = slic_cell(y, g.y0, g.sy, g.ny),
                ix = slic_cell(x, g.x0, g.sx, g.nx);
  const double fz = static_cast<double>(z), fy = static_cast<double>(y),
               fx = static_cast<double>(x);
  double best = SUPERCL_DBL_MAX;
  int32_t label = previous;
  for (int64_t jz = sc_max<int64_t>(0, iz - 1); jz <= sc_min<int64_t>(g.nz - 1, iz + 1); ++jz) {
    for (int64_t jy = sc_max<int64_t>(0, iy - 1); jy <= sc_min<int64_t>(g.ny - 1, iy + 1); ++jy) {
      for (int64_t jx = sc_max<int64_t>(0, ix - 1); jx <= sc_min<int64_t>(g.nx - 1, ix + 1);
           ++jx) {
        const int64_t k = (jz * g.ny + jy) * g.nx + jx;
        const double* c = centres + k * (3 + channels);
        if (!slic_in_window(c[0], p.window, z) || !slic_in_window(c[1], p.window, y) ||
            !slic_in_window(c[2], p.window, x))
          continue;
        const double d = slic3_combine(slic3_spatial_zy(fz, fy, c, p),
                                       slic3_spatial_x(fx, c, p),
                                       slic3_colour(voxel, n, channels, c), p);
        if (d < best) {
          best = d;
          label = static_cast<int32_t>(k);
        }
      }
    }
  }
  return label;
}

// The position part of a run's sums -- count, sum z, sum y, sum x of the voxels x0 .. x1 - 1
// of row (z, y) -- added to centre `label`'s {count, sum z, sum y, sum x, sum q_c ..}; returns
// that centre's sums for the caller to add the per-channel sums of q.  label >= 0.
SUPERCL_HD int64_t* slic3_accumulate_position(int64_t channels, int64_t z, int64_t y,
                                              int64_t x0, int64_t x1, int32_t label,
                                              int64_t* sums) {
  int64_t* s = sums + static_cast<int64_t>(label) * (4 + channels);
  const int64_t n = x1 - x0;
  sc_accumulate(s, n);
  sc_accumulate(s + 1, z * n);
  sc_accumulate(s + 2, y * n);
  sc_accumulate(s + 3, (x0 + x1 - 1) * n / 2);  // x0 + .. + (x1 - 1); the product is even
  return s;
}

// Adds a run of label `label` given its per-channel sums of q (the host: from prefix sums).
SUPERCL_HD void slic3_accumulate_totals(int64_t channels, int64_t z, int64_t y, int64_t x0,
                                        int64_t x1, int32_t label, const int64_t* totals,
                                        int64_t* sums) {
  if (label < 0) return;
  int64_t* s = slic3_accumulate_position(channels, z, y, x0, x1, label, sums);
  for (int64_t c = 0; c < channels; ++c) sc_accumulate(s + 4 + c, totals[c]);
}

// The same, summing q along the run (the device: runs within chunks of a row, one set of
// atomics per run).  Integer sums: the same totals as the host's prefix sums.
SUPERCL_HD void slic3_accumulate_run(const int32_t* quant, int64_t channels, int64_t depth,
                                     int64_t height, int64_t width, int64_t z, int64_t y,
                                     int64_t x0, int64_t x1, int32_t label, int64_t* sums) {
  if (label < 0) return;
  int64_t* s = slic3_accumulate_position(channels, z, y, x0, x1, label, sums);
  const int64_t n = depth * height * width, row = (z * height + y) * width;
  for (int64_t c = 0; c < channels; ++c) {
    const int32_t* q = quant + c * n + row;
    int64_t total = 0;
    for (int64_t x = x0; x < x1; ++x) total += q[x];
    sc_accumulate(s + 4 + c, total);
  }
}

// Centre k becomes the mean of its voxels; an empty centre stays where it is.
SUPERCL_HD void slic3_update_centre(const int64_t* sums, int64_t k, int64_t channels,
                                    double* centres) {
  const int64_t* s = sums + k * (4 + channels);
  const int64_t n = s[0];
  if (n <= 0) return;
  double* c = centres + k * (3 + channels);
  for (int64_t f = 0; f < 3 + channels; ++f) c[f] = sc_int_ratio(s[1 + f], n);
}

// Connectivity enforcement: the component whose first voxel is `first` merges into the
// component in front of that voxel, else above it, else left of it; 0 when it has none.
// cc: 6-connected component ids (1-based, 0 for masked voxels) of one (D, H, W) volume.
SUPERCL_HD int32_t slic3_merge_target(const int32_t* cc, int64_t height, int64_t width,
                                      int64_t first) {
  const int64_t hw = height * width;
  const int64_t z = first / hw, y = (first % hw) / width, x = first % width;
  if (z > 0 && cc[first - hw] > 0) return cc[first - hw];
  if (y > 0 && cc[first - width] > 0) return cc[first - width];
  if (x > 0 && cc[first - 1] > 0) return cc[first - 1];
  return 0;
}

}  // namespace supercl
