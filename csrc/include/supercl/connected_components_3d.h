// supercl/connected_components_3d.h -- connected-component labeling of multi-label 3-D volumes,
// written once for the host and the device.
//
// The algorithm is the 2-D one of supercl/connected_components.h, one dimension up: a union-find
// forest over voxel indices (local to each volume, 32 bits: a volume holds at most 2^31 - 1
// voxels), in which every voxel unions itself with its already-scanned neighbours of equal
// value, the larger root always linked to the smaller (atomic min), so that a component's root
// is its first voxel in raster (z, y, x) order; compress, root flags, an inclusive prefix sum
// and a gather then number the components 1, 2, ... in the raster order of their first voxel,
// background 0: exactly skimage.measure.label's numbering for 3-D input.
//
// Neighbourhoods, as scikit-image names them: connectivity 1 joins voxels that differ in one
// coordinate by 1 (6-neighbourhood), 2 in at most two coordinates (18), 3 in all three (26).
// A voxel examines the half of its neighbourhood that comes before it in raster order: the 13
// offsets (dz, dy, dx) with dz = -1, or dz = 0 and dy = -1, or dz = dy = 0 and dx = -1, kept
// when at most `connectivity` of the three are non-zero (3, 9 or 13 of them).  The GPU makes
// these unions, pruned by the 2-D decision tree's rule per earlier row (cc3_merge_voxel_pruned),
// on 8 x 8 x 32 tiles in shared memory, then only the pairs across tile faces in the global
// forest (supercl/connected_components_block.h).
//
// The host's single-thread path runs the same union-find over runs (maximal stretches of equal
// value along x), see csrc/cpu/connected_components_3d.cpp; cc3_row_reach states the per-voxel
// rule for runs.  The init, compress, root-flag and gather steps of the 2-D header apply to a
// volume unchanged: they only see flat indices.
#pragma once

#include "supercl/common.h"
#include "supercl/connected_components.h"

namespace supercl {

// Whether the offset (dz, dy, dx), each in {-1, 0, 1} and not all 0, is in the neighbourhood of
// `connectivity` (1, 2 or 3): at most that many of its coordinates are non-zero.
SUPERCL_HD bool cc3_is_neighbour(int dz, int dy, int dx, int connectivity) {
  return (dz != 0) + (dy != 0) + (dx != 0) <= connectivity;
}

// Step 1 for voxel (z, y, x) of a volume with element strides (sz, sy, sx), H x W per slice.
template <typename T>
SUPERCL_HD void cc3_init_voxel(const T* volume, int64_t sz, int64_t sy, int64_t sx,
                               int64_t height, int64_t width, int64_t z, int64_t y, int64_t x,
                               bool has_background, T background, int32_t* parent) {
  const int64_t i = (z * height + y) * width + x;
  const T v = volume[z * sz + y * sy + x * sx];
  parent[i] = cc_is_background(v, has_background, background) ? -1 : static_cast<int32_t>(i);
}

// The per-voxel rule stated for runs along x: how far a voxel reaches sideways into the earlier
// row at offset (dz, dy) (one of (0, -1), (-1, -1), (-1, 0), (-1, 1)): 1 when the diagonal
// offsets (dz, dy, +-1) are neighbours, 0 when only (dz, dy, 0) is, -1 when the row holds no
// neighbour.  cc_runs_touch (supercl/connected_components.h) then says whether two runs of the
// two rows hold a pair of adjacent voxels.
SUPERCL_HD int64_t cc3_row_reach(int dz, int dy, int connectivity) {
  if (cc3_is_neighbour(dz, dy, 1, connectivity)) return 1;
  if (cc3_is_neighbour(dz, dy, 0, connectivity)) return 0;
  return -1;
}

}  // namespace supercl
