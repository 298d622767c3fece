// CUDA kernels of SLIC: thin __global__ wrappers over the shared steps in supercl/slic.h.
// Compiled at run time by NVRTC through CuPy (kernels/cuda/launch.py).  The launcher runs the
// whole batch in one set of launches on torch's current stream, with no host synchronisation
// inside the iterations:
//   quantize, init centres (sums zeroed once), then per iteration: assign -> accumulate (runs
//   of equal labels in 16-pixel chunks of a row, reduced per block in shared memory) -> update
//   (which also zeroes the sums it read: 3 launches per iteration, no memset); then
//   connectivity enforcement: connected components of the labels
//   (connected_components.cu), component stats, merge targets, pointer jumping, renumbering.
// With a mask the plan (grids, params) arrives as device tensors planned from the mask's
// bounding boxes on the device (supercl/ops/slic.py, _plan_masked), and K is the bound H * W:
// kernels skip centres k >= ny * nx of their image, so nothing waits for the host.
// The device never stops early: once an assignment changes nothing the centres are a fixed
// point (slic.h), so running the remaining iterations gives the labels the CPU's early stop
// gives.  Integer sums make the atomics order-independent: labels equal the CPU's bit for bit.
// Indices: every size, offset and grid-stride index is int64 (batches past 2^31 pixels); ids
// within an image are int32 (H * W < 2^31, checked in Python).
//
// Roofline, per pixel and grey image (C = 1), per iteration:
//   bytes: assign reads quant and the previous label and writes the label (12 B, + 1 B mask),
//     accumulate reads label and quant (8 B): 20 B/px/iteration, 200 B for 10 iterations;
//     rescaling (float64) and connectivity enforcement (a CCL and 4 passes over int32 maps)
//     add ~100 B once.  256 slices of 256^2 = 16.8 Mpx: 336 MB per iteration (70 us at an
//     H200's 4.8 TB/s), ~5 GB in all: ~1.1 ms, i.e. ~230,000 slices/s if bandwidth-bound.
//   FLOPs: 9 candidate centres x ~12 FP64 operations ~ 110 DFLOP/px/iteration, 18 GDFLOP for
//     the batch's 10 iterations: ~0.5 ms at ~34 FP64 TFLOP/s.  Bandwidth-bound.
//   atomics: ~0.1 runs/px (1.6 runs per 16-px chunk) x 4 sums = 0.4 int64 atomics/px/iteration
//     (6.7 M per iteration for that batch, all on the ~100 K addresses of 25,600 centres, each
//     hit ~260 times) before the per-block table; with it, those become shared-memory atomics
//     (+ 0.1 CAS/px) and a block of 4096 px flushes ~15 centres x 4 = 60 global atomics:
//     0.015/px, ~250 K per iteration (~27x fewer).
//   launches: 3 per iteration (was 4 with the memset), ~35 for 10 iterations + enforcement.
//   measured (H200, issue 22, before the table and the device plan): 15,700 slices/s
//     unmasked, 8,700-10,200 masked (a mask doubles the iterations: spatial-only phase first).
//
// Layouts: image (B, C, H, W) float32 and quant (B, C, H, W) int32, contiguous; labels
// (B, H, W) int32; grid (B, 6) int64 {y0, x0, ny, nx, sy, sx}; params (B, 5) float64
// SlicParams; centres (B, K, 2 + C) float64; sums (B, K, 3 + C) int64, K = the largest ny * nx.
#include "supercl/slic.h"
#include "supercl/slic_block_sums.h"

using namespace supercl;

#define SUPERCL_GRID_STRIDE(i, n)                                                        \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

extern "C" __global__ void slic_quantize_kernel(const float* image, int64_t n, int32_t* quant) {
  SUPERCL_GRID_STRIDE(i, n) { quant[i] = slic_quantize(image[i]); }
}

extern "C" __global__ void slic_init_kernel(const int64_t* grid, int64_t batch, int64_t k_max,
                                            int64_t channels, double* centres) {
  SUPERCL_GRID_STRIDE(i, batch * k_max) {
    const int64_t b = i / k_max, k = i % k_max;
    const SlicGrid g = slic_grid(grid + 6 * b);
    if (k < g.ny * g.nx) slic_init_centre(g, k, channels, centres + i * (2 + channels));
  }
}

// mask: (B, H, W) uint8, or anything when has_mask is 0.  labels are read (previous) and
// written by the pixel's own thread only.
extern "C" __global__ void slic_assign_kernel(const int32_t* quant, const uint8_t* mask,
                                              int32_t has_mask, const int64_t* grid,
                                              const double* params, int32_t with_colour,
                                              const double* centres, int64_t batch,
                                              int64_t channels, int64_t height, int64_t width,
                                              int64_t k_max, int32_t* labels) {
  const int64_t hw = height * width;
  SUPERCL_GRID_STRIDE(i, batch * hw) {
    const int64_t b = i / hw, p = i % hw;
    if (has_mask && !mask[i]) {
      labels[i] = -1;
      continue;
    }
    labels[i] = slic_assign_pixel(quant + b * channels * hw, channels, height, width, p / width,
                                  p % width, slic_grid(grid + 6 * b),
                                  centres + b * k_max * (2 + channels),
                                  slic_params(params + 5 * b, with_colour != 0), labels[i]);
  }
}

// One thread per chunk of `chunk` pixels of a row: each run of equal labels in the chunk goes
// to its centre's sums with one set of 3 + C adds (slic_accumulate_run, as on the CPU), not one
// set per pixel; a superpixel is ~sqrt(H W / K) pixels wide (26 at 256^2, K = 100), so a
// 16-pixel chunk holds 1-2 runs.  With use_table, the block first adds its runs in shared
// memory (supercl/slic_block_sums.h) and flushes one set of global int64 atomics per centre it
// touched: a block of 256 chunks covers 16 rows of a 256-pixel image, which ~10-20 centres own,
// instead of ~400 runs.  Integer sums: the result depends neither on the chunking nor on the
// path a run takes.  The tile loop's bound depends on the block only, so every thread of a
// block reaches every barrier.
extern "C" __global__ void slic_accumulate_kernel(const int32_t* quant, const int32_t* labels,
                                                  int64_t batch, int64_t channels,
                                                  int64_t height, int64_t width, int64_t k_max,
                                                  int64_t chunk, int32_t use_table,
                                                  int64_t* sums) {
  SUPERCL_SHARED unsigned long long slot_keys[SUPERCL_SLIC_SLOTS];
  SUPERCL_SHARED int64_t slot_sums[SUPERCL_SLIC_SLOTS * SUPERCL_SLIC_SLOT_FIELDS];
  const int64_t hw = height * width, fields = 3 + channels;
  const int64_t chunks = (width + chunk - 1) / chunk, n = batch * height * chunks;
  const int64_t thread = threadIdx.x, threads = blockDim.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t tile = blockIdx.x * threads; tile < n; tile += stride) {
    if (use_table) slic_block_clear(slot_keys, slot_sums, thread, threads);
    SUPERCL_SYNC();
    const int64_t i = tile + thread;
    if (i < n) {
      const int64_t row = i / chunks, b = row / height, y = row % height;
      const int64_t begin = (i % chunks) * chunk;
      const int64_t end = begin + chunk < width ? begin + chunk : width;
      const int32_t* lab = labels + row * width;
      const int32_t* q = quant + b * channels * hw;
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
            slic_accumulate_run(q, channels, height, width, y, x0, x1, 0, slot);
          else
            slic_accumulate_run(q, channels, height, width, y, x0, x1, label,
                                sums + b * k_max * fields);
        }
        x0 = x1;
      }
    }
    SUPERCL_SYNC();
    if (use_table) slic_block_flush(slot_keys, slot_sums, fields, thread, threads, sums);
    SUPERCL_SYNC();
  }
}

// `parts` blocks per image: block blk serves image blk / parts, centres k = (blk % parts) *
// blockDim.x + threadIdx.x stepping by parts * blockDim.x up to the image's own ny * nx, so the
// work follows the live centres, not the k_max bound (H * W with a mask); the blocks themselves
// grid-stride (one block of one thread on the host visits every (image, centre)).
extern "C" __global__ void slic_update_kernel(int64_t* sums, const int64_t* grid,
                                              int64_t batch, int64_t k_max, int64_t channels,
                                              int64_t parts, double* centres) {
  const int64_t step = parts * static_cast<int64_t>(blockDim.x);
  for (int64_t blk = blockIdx.x; blk < batch * parts; blk += gridDim.x) {
    const int64_t b = blk / parts;
    const SlicGrid g = slic_grid(grid + 6 * b);
    int64_t* s = sums + b * k_max * (3 + channels);
    for (int64_t k = (blk % parts) * blockDim.x + threadIdx.x; k < g.ny * g.nx; k += step) {
      slic_update_centre(s, k, channels, centres + b * k_max * (2 + channels));
      // Zero the sums read, for the next accumulation: the launcher zeroes the array once,
      // and only live centres (k < ny * nx) are ever accumulated into: no memset per
      // iteration.
      for (int64_t f = 0; f < 3 + channels; ++f) s[k * (3 + channels) + f] = 0;
    }
  }
}

// ---- connectivity enforcement.  cc: (B, H, W) component ids (1-based, 0 = masked);
// per-component arrays are (B, H * W + 1), indexed by id.

// size[c] += 1 and first[c] = min pixel index, for every pixel (integer atomics).  first
// starts at INT32_MAX (the launcher fills it).
extern "C" __global__ void slic_component_stats(const int32_t* cc, int64_t batch, int64_t hw,
                                                int64_t* size, int32_t* first) {
  SUPERCL_GRID_STRIDE(i, batch * hw) {
    const int32_t c = cc[i];
    if (c <= 0) continue;
    const int64_t base = (i / hw) * (hw + 1);
    atomicAdd(reinterpret_cast<unsigned long long*>(size + base + c), 1ULL);
    atomicMin(first + base + c, static_cast<int32_t>(i % hw));
  }
}

// parent[c] = the component c merges into (itself if kept or beyond the image's count).
// count: (B,) components per image; target is scratch, (B, H * W + 1).
extern "C" __global__ void slic_merge_parents(const int32_t* cc, const int64_t* size,
                                              const int32_t* first, const int64_t* count,
                                              const int64_t* min_size, int64_t batch,
                                              int64_t width, int64_t hw, int32_t* target,
                                              int32_t* parent) {
  SUPERCL_GRID_STRIDE(i, batch * (hw + 1)) {
    const int64_t b = i / (hw + 1), base = b * (hw + 1);
    const int32_t c = static_cast<int32_t>(i % (hw + 1));
    if (c < 1 || c > count[b]) {
      parent[i] = c;
      continue;
    }
    target[i] = slic_merge_target(cc + b * hw, width, first[i]);
    parent[i] = slic_merge_parent(size + base, target + base, min_size[b], c);
  }
}

// One round of pointer jumping: parent[c] = parent[parent[c]].  Merge pointers only go to
// smaller ids, so ceil(log2(H * W + 1)) + 1 rounds reach the kept components.
extern "C" __global__ void slic_jump(int64_t batch, int64_t hw, int32_t* parent) {
  SUPERCL_GRID_STRIDE(i, batch * (hw + 1)) {
    const int64_t base = (i / (hw + 1)) * (hw + 1);
    parent[i] = parent[base + parent[i]];
  }
}

// kept[c] = 1 for components that are their own parent (the renumbering flags).
extern "C" __global__ void slic_kept_flags(const int32_t* parent, const int64_t* count,
                                           int64_t batch, int64_t hw, int32_t* kept) {
  SUPERCL_GRID_STRIDE(i, batch * (hw + 1)) {
    const int64_t c = i % (hw + 1);
    kept[i] = (c >= 1 && c <= count[i / (hw + 1)] && parent[i] == c) ? 1 : 0;
  }
}

// rank: per-image inclusive cumsum of kept.  out = rank[parent[cc]] - 1 + start, 0 if masked.
extern "C" __global__ void slic_relabel(const int32_t* cc, const int32_t* parent,
                                        const int32_t* rank, int64_t batch, int64_t hw,
                                        int32_t start_label, int32_t* out) {
  SUPERCL_GRID_STRIDE(i, batch * hw) {
    const int64_t base = (i / hw) * (hw + 1);
    const int32_t c = cc[i];
    out[i] = slic_final_label(c, c <= 0, parent + base, rank + base, start_label);
  }
}

// Without enforcement: used[k] = 1 for centres that own a pixel; then out = rank[label] - 1 +
// start, with rank the per-image inclusive cumsum of used.
extern "C" __global__ void slic_mark_used(const int32_t* labels, int64_t batch, int64_t hw,
                                          int64_t k_max, int32_t* used) {
  SUPERCL_GRID_STRIDE(i, batch * hw) {
    if (labels[i] >= 0) used[(i / hw) * k_max + labels[i]] = 1;
  }
}

extern "C" __global__ void slic_compact(const int32_t* labels, const int32_t* rank,
                                        int64_t batch, int64_t hw, int64_t k_max,
                                        int32_t start_label, int32_t* out) {
  SUPERCL_GRID_STRIDE(i, batch * hw) {
    out[i] = slic_final_label(labels[i], labels[i] < 0, nullptr, rank + (i / hw) * k_max,
                              start_label);
  }
}
