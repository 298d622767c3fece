// CUDA kernels of 3-D SLIC: thin __global__ wrappers over supercl/slic_3d.h.  The launcher
// (kernels/cuda/launch.py, slic: one sequence for images and volumes) runs them on torch's
// current stream, with the 2-D module's shape-agnostic kernels (quantise, component statistics,
// pointer jumping, kept flags, renumbering; they see each volume as a flat array) and the 3-D
// connected components:
//   quantize -> init -> [assign -> accumulate -> update] x iterations (x 2 phases with a mask)
//   -> 6-connected components -> stats -> merge parents -> jumps -> flags -> cumsum -> relabel.
// One thread per voxel (assign), per chunk of a row (accumulate, reduced per block in shared
// memory as in slic.cu), per centre (init, update; update zeroes the sums it read).
// With a mask the plan comes as device tensors and K is the bound D * H * W (see slic.cu).
// Roofline per voxel and iteration (grey): as slic.cu, 20 B (assign 12 + accumulate 8) and
// 27 candidate centres (~330 DFLOP): 300 x 512^2 = 78.6 M voxels move 1.6 GB per iteration,
// ~0.33 ms at 4.8 TB/s, ~3.3 ms for 10 iterations; 26 GDFLOP per iteration, ~0.8 ms at 34 FP64
// TFLOP/s: ~8 ms for 10, so 3-D SLIC is FP64-bound (the 27 candidates), against 189 ms
// measured on an H200 before this change (issue 22; target 100 ms).
#include "supercl/slic_3d.h"
#include "supercl/slic_block_sums.h"

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

// One thread per chunk of a row: runs of equal labels within the chunk, one set of 4 + C adds
// each; with use_table, first into the block's shared-memory table, flushed with one set of
// global atomics per centre (as slic_accumulate_kernel, slic.cu; integer sums, any order).
extern "C" __global__ void slic3_accumulate_kernel(const int32_t* quant, const int32_t* labels,
                                                   int64_t batch, int64_t channels,
                                                   int64_t depth, int64_t height, int64_t width,
                                                   int64_t k_max, int64_t chunk,
                                                   int32_t use_table, int64_t* sums) {
  SUPERCL_SHARED unsigned long long slot_keys[SUPERCL_SLIC_SLOTS];
  SUPERCL_SHARED int64_t slot_sums[SUPERCL_SLIC_SLOTS * SUPERCL_SLIC_SLOT_FIELDS];
  const int64_t n = depth * height * width, fields = 4 + channels;
  const int64_t chunks = (width + chunk - 1) / chunk, items = batch * depth * height * chunks;
  const int64_t thread = threadIdx.x, threads = blockDim.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t tile = blockIdx.x * threads; tile < items; tile += stride) {
    if (use_table) slic_block_clear(slot_keys, slot_sums, thread, threads);
    SUPERCL_SYNC();
    const int64_t i = tile + thread;
    if (i < items) {
      const int64_t row = i / chunks, b = row / (depth * height), r = row % (depth * height);
      const int64_t begin = (i % chunks) * chunk;
      const int64_t end = begin + chunk < width ? begin + chunk : width;
      const int32_t* lab = labels + row * width;
      const int32_t* q = quant + b * channels * n;
      for (int64_t x0 = begin; x0 < end;) {
        const int32_t label = lab[x0];
        int64_t x1 = x0 + 1;
        while (x1 < end && lab[x1] == label) ++x1;
        if (label >= 0) {
          int64_t* slot = use_table ? slic_block_slot(slot_keys, slot_sums,
                                                      static_cast<unsigned long long>(
                                                          b * k_max + label))
                                    : nullptr;
          if (slot)  // the slot holds this centre's sums: label 0 addresses it
            slic3_accumulate_run(q, channels, depth, height, width, r / height, r % height, x0,
                                 x1, 0, slot);
          else
            slic3_accumulate_run(q, channels, depth, height, width, r / height, r % height, x0,
                                 x1, label, sums + b * k_max * fields);
        }
        x0 = x1;
      }
    }
    SUPERCL_SYNC();
    if (use_table) slic_block_flush(slot_keys, slot_sums, fields, thread, threads, sums);
    SUPERCL_SYNC();
  }
}

// `parts` blocks per volume, over its live centres only (as slic_update_kernel, slic.cu).
extern "C" __global__ void slic3_update_kernel(int64_t* sums, const int64_t* grid,
                                               int64_t batch, int64_t k_max, int64_t channels,
                                               int64_t parts, double* centres) {
  const int64_t step = parts * static_cast<int64_t>(blockDim.x);
  for (int64_t blk = blockIdx.x; blk < batch * parts; blk += gridDim.x) {
    const int64_t b = blk / parts;
    const Slic3Grid g = slic3_grid(grid + 9 * b);
    int64_t* s = sums + b * k_max * (4 + channels);
    for (int64_t k = (blk % parts) * blockDim.x + threadIdx.x; k < g.nz * g.ny * g.nx;
         k += step) {
      slic3_update_centre(s, k, channels, centres + b * k_max * (3 + channels));
      // zero the sums read for the next accumulation (only live centres are accumulated into;
      // the launcher zeroes the array once)
      for (int64_t f = 0; f < 4 + channels; ++f) s[k * (4 + channels) + f] = 0;
    }
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
