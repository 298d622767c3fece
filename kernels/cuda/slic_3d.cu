// CUDA kernels of 3-D SLIC: thin __global__ wrappers over supercl/slic_3d.h.  The launcher
// (supercl/ops/_cuda.py, slic_3d) runs them on torch's current stream, with the 2-D module's
// shape-agnostic kernels (quantise, component statistics, pointer jumping, kept flags,
// renumbering; they see each volume as a flat array) and the 3-D connected components:
//   quantize -> init -> [assign -> accumulate -> update] x iterations (x 2 phases with a mask)
//   -> 6-connected components -> stats -> merge parents -> jumps -> flags -> cumsum -> relabel.
// One thread per voxel (assign), per chunk of a row (accumulate), per centre (init, update).
// Not measured on a GPU yet.
#include "supercl/slic_3d.h"

using namespace supercl;

#define SUPERCL_GRID_STRIDE(i, n)                                                        \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

extern "C" __global__ void slic3_init_kernel(const int64_t* grid, int64_t batch, int64_t k_max,
                                             int64_t channels, double* centres) {
  SUPERCL_GRID_STRIDE(i, batch * k_max) {
    const int64_t b = i / k_max, k = i % k_max;
    const Slic3Grid g = slic3_grid(grid + 9 * b);
    if (k < g.nz * g.ny * g.nx) slic3_init_centre(g, k, channels, centres + i * (3 + channels));
  }
}

extern "C" __global__ void slic3_assign_kernel(const int32_t* quant, const uint8_t* mask,
                                               int32_t has_mask, const int64_t* grid,
                                               const double* params, int32_t with_colour,
                                               const double* centres, int64_t batch,
                                               int64_t channels, int64_t depth, int64_t height,
                                               int64_t width, int64_t k_max, int32_t* labels) {
  const int64_t hw = height * width, n = depth * hw;
  SUPERCL_GRID_STRIDE(i, batch * n) {
    const int64_t b = i / n, p = i % n;
    if (has_mask && !mask[i]) {
      labels[i] = -1;
      continue;
    }
    labels[i] = slic3_assign_voxel(quant + b * channels * n, channels, depth, height, width,
                                   p / hw, (p % hw) / width, p % width, slic3_grid(grid + 9 * b),
                                   centres + b * k_max * (3 + channels),
                                   slic3_params(params + 5 * b, with_colour != 0), labels[i]);
  }
}

// One thread per chunk of a row: runs of equal labels within the chunk, one set of atomics each.
extern "C" __global__ void slic3_accumulate_kernel(const int32_t* quant, const int32_t* labels,
                                                   int64_t batch, int64_t channels,
                                                   int64_t depth, int64_t height, int64_t width,
                                                   int64_t k_max, int64_t chunk, int64_t* sums) {
  const int64_t n = depth * height * width;
  const int64_t chunks = (width + chunk - 1) / chunk;
  SUPERCL_GRID_STRIDE(i, batch * depth * height * chunks) {
    const int64_t row = i / chunks, b = row / (depth * height), r = row % (depth * height);
    const int64_t begin = (i % chunks) * chunk;
    const int64_t end = begin + chunk < width ? begin + chunk : width;
    const int32_t* lab = labels + row * width;
    for (int64_t x0 = begin; x0 < end;) {
      const int32_t label = lab[x0];
      int64_t x1 = x0 + 1;
      while (x1 < end && lab[x1] == label) ++x1;
      slic3_accumulate_run(quant + b * channels * n, channels, depth, height, width, r / height,
                           r % height, x0, x1, label, sums + b * k_max * (4 + channels));
      x0 = x1;
    }
  }
}

extern "C" __global__ void slic3_update_kernel(int64_t* sums, const int64_t* grid,
                                               int64_t batch, int64_t k_max, int64_t channels,
                                               double* centres) {
  SUPERCL_GRID_STRIDE(i, batch * k_max) {
    const int64_t b = i / k_max, k = i % k_max;
    const Slic3Grid g = slic3_grid(grid + 9 * b);
    if (k >= g.nz * g.ny * g.nx) continue;  // beyond this volume's centres (k_max: a bound)
    int64_t* s = sums + b * k_max * (4 + channels);
    slic3_update_centre(s, k, channels, centres + b * k_max * (3 + channels));
    // Zero the sums read for the next accumulation (only live centres are accumulated into;
    // the launcher zeroes the array once).
    for (int64_t f = 0; f < 4 + channels; ++f) s[k * (4 + channels) + f] = 0;
  }
}

// Per component c of each volume (ids 0 .. n, n = D * H * W): what it merges into.
extern "C" __global__ void slic3_merge_parents(const int32_t* cc, const int64_t* size,
                                               const int32_t* first, const int64_t* count,
                                               const int64_t* min_size, int64_t batch,
                                               int64_t height, int64_t width, int64_t n,
                                               int32_t* target, int32_t* parent) {
  SUPERCL_GRID_STRIDE(i, batch * (n + 1)) {
    const int64_t b = i / (n + 1), base = b * (n + 1);
    const int32_t c = static_cast<int32_t>(i % (n + 1));
    if (c < 1 || c > count[b]) {
      parent[i] = c;
      continue;
    }
    target[i] = slic3_merge_target(cc + b * n, height, width, first[i]);
    parent[i] = slic_merge_parent(size + base, target + base, min_size[b], c);
  }
}
