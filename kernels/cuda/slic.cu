// CUDA kernels of SLIC: thin __global__ wrappers over the shared steps in supercl/slic.h.
// Compiled at run time by NVRTC through CuPy (kernels/cuda/launch.py).  The launcher runs the
// whole batch in one set of launches on torch's current stream, with no host synchronisation
// inside the iterations:
//   quantize, init centres, then per iteration: assign -> zero sums (torch) -> accumulate (runs
//   of equal labels in 16-pixel chunks of a row) -> update; then connectivity enforcement:
//   connected components of the labels
//   (connected_components.cu), component stats, merge targets, pointer jumping, renumbering.
// The device never stops early: once an assignment changes nothing the centres are a fixed
// point (slic.h), so running the remaining iterations gives the labels the CPU's early stop
// gives.  Integer sums make the atomics order-independent: labels equal the CPU's bit for bit.
//
// Roofline, per pixel and grey image (C = 1), 10 iterations:
//   bytes: assign reads quant and the previous label and writes the label (12 B, + 1 B mask),
//     accumulate reads label and quant (8 B): ~200 B; rescaling (float64) and connectivity
//     enforcement (a CCL and 4 passes over int32 maps) add ~100 B.  256 slices of 256^2 =
//     16.8 Mpx move ~5 GB: ~1.5 ms at an H100's 3.35 TB/s, ~1.1 ms at an H200's 4.8 TB/s.
//   FLOPs: 9 candidate centres x ~12 FP64 operations x 10 iterations ~ 1,100 DFLOP/px, 18
//     GDFLOP for the batch: ~0.5 ms at ~34 FP64 TFLOP/s.  So bandwidth-bound near ~1.5 ms,
//     i.e. ~170,000 slices/s, against a target of 20,000 (12.8 ms).
//   atomics: per-pixel accumulation issued 4 int64 atomics per pixel per iteration (600 M
//     for that batch) onto few addresses (all pixels of a superpixel hit the same 4); runs in
//     16-pixel chunks cut that ~10x.
//   measured (H200, before the chunked accumulation): 37 ms = 6,900 slices/s; the rest of
//     the gap is the host-side plan (numpy over the batch), ~60 launches through CuPy (~10 us
//     each), and with a mask one host synchronisation for the bounding boxes (4,100 slices/s).
//
// Layouts: image (B, C, H, W) float32 and quant (B, C, H, W) int32, contiguous; labels
// (B, H, W) int32; grid (B, 6) int64 {y0, x0, ny, nx, sy, sx}; params (B, 5) float64
// SlicParams; centres (B, K, 2 + C) float64; sums (B, K, 3 + C) int64, K = the largest ny * nx.
#include "supercl/slic.h"

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
// to the centre's sums with one set of 3 + C atomics (slic_accumulate_run, as on the CPU),
// instead of one set per pixel.  A superpixel is ~sqrt(H W / K) pixels wide (26 at 256^2,
// K = 100), so a 16-pixel chunk holds 1-2 runs: ~10x fewer atomics on the few addresses that
// all pixels of a superpixel hit.  Integer sums: the result does not depend on the chunking.
extern "C" __global__ void slic_accumulate_kernel(const int32_t* quant, const int32_t* labels,
                                                  int64_t batch, int64_t channels,
                                                  int64_t height, int64_t width, int64_t k_max,
                                                  int64_t chunk, int64_t* sums) {
  const int64_t hw = height * width;
  const int64_t chunks = (width + chunk - 1) / chunk;
  SUPERCL_GRID_STRIDE(i, batch * height * chunks) {
    const int64_t row = i / chunks, b = row / height, y = row % height;
    const int64_t begin = (i % chunks) * chunk;
    const int64_t end = begin + chunk < width ? begin + chunk : width;
    const int32_t* lab = labels + row * width;
    for (int64_t x0 = begin; x0 < end;) {
      const int32_t label = lab[x0];
      int64_t x1 = x0 + 1;
      while (x1 < end && lab[x1] == label) ++x1;
      slic_accumulate_run(quant + b * channels * hw, channels, height, width, y, x0, x1, label,
                          sums + b * k_max * (3 + channels));
      x0 = x1;
    }
  }
}

extern "C" __global__ void slic_update_kernel(int64_t* sums, const int64_t* grid,
                                              int64_t batch, int64_t k_max, int64_t channels,
                                              double* centres) {
  SUPERCL_GRID_STRIDE(i, batch * k_max) {
    const int64_t b = i / k_max, k = i % k_max;
    const SlicGrid g = slic_grid(grid + 6 * b);
    if (k >= g.ny * g.nx) continue;  // beyond this image's centres (k_max may be a bound)
    int64_t* s = sums + b * k_max * (3 + channels);
    slic_update_centre(s, k, channels, centres + b * k_max * (2 + channels));
    // Zero the sums read, for the next accumulation: the launcher zeroes the array once, and
    // only live centres (k < ny * nx) are ever accumulated into, so no memset per iteration.
    for (int64_t f = 0; f < 3 + channels; ++f) s[k * (3 + channels) + f] = 0;
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
