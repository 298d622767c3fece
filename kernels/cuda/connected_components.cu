// CUDA kernels of connected-component labeling: thin __global__ wrappers over the shared steps
// in supercl/connected_components.h (init, merge, compress, root flag, gather).  Compiled at
// run time by NVRTC through CuPy (kernels/cuda/launch.py); the launcher runs, on torch's current
// stream and without host synchronisation:
//   init -> merge -> compress -> root_flag -> (per-image inclusive cumsum, torch) -> gather.
// One thread per pixel of the whole (B, H, W) batch, grid-stride loops, 64-bit indices.
// Parent indices are local to each image (int32; an image holds < 2^31 pixels).
//
// Roofline: the five launches stream the image once and the int32 parent/flag/rank/out maps
// about ten times (~45 B per pixel with a uint8 image); 32 slices of 512^2 = 8.4 Mpx move
// ~0.4 GB, ~0.12 ms at an H100's 3.35 TB/s.  Measured on an H200: 1.0 ms, 0.89x
// cupyx.scipy.ndimage.label on binary masks (benchmarks/results/gpu-h200.md).  The gap is the
// merge pass: global union-find with atomicMin and pointer chasing through L2.  The design
// that would close it (not built yet) is block-based: label each tile in shared memory, then
// merge only the tile borders in global memory (Komura 2015; Allegretti et al. 2019's BUF),
// keeping the final raster-order renumbering that makes the labels equal scikit-image's.
#include "supercl/connected_components.h"

using namespace supercl;

#define SUPERCL_GRID_STRIDE(i, n)                                                        \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// image: element strides (sb, sy, sx); parent, rank, out: contiguous (B, H, W).
#define SUPERCL_CC_KERNELS(T, SUFFIX)                                                            \
  extern "C" __global__ void cc_init_##SUFFIX(const T* image, int64_t batch, int64_t height,    \
                                              int64_t width, int64_t sb, int64_t sy,            \
                                              int64_t sx, int32_t has_background, T background, \
                                              int32_t* parent) {                                \
    const int64_t hw = height * width;                                                          \
    SUPERCL_GRID_STRIDE(i, batch * hw) {                                                        \
      const int64_t b = i / hw, p = i % hw;                                                     \
      cc_init_pixel<T>(image + b * sb, sy, sx, width, p / width, p % width,                     \
                       has_background != 0, background, parent + b * hw);                      \
    }                                                                                           \
  }                                                                                             \
  extern "C" __global__ void cc_merge_##SUFFIX(                                                 \
      const T* image, int64_t batch, int64_t height, int64_t width, int64_t sb, int64_t sy,    \
      int64_t sx, int32_t connectivity, int32_t has_background, T background, int32_t* parent) { \
    const int64_t hw = height * width;                                                          \
    SUPERCL_GRID_STRIDE(i, batch * hw) {                                                        \
      const int64_t b = i / hw, p = i % hw;                                                     \
      cc_merge_pixel<T, true, false>(image + b * sb, sy, sx, width, p / width, p % width,       \
                                     connectivity, has_background != 0, background,            \
                                     parent + b * hw);                                          \
    }                                                                                           \
  }

SUPERCL_CC_KERNELS(uint8_t, u8)
SUPERCL_CC_KERNELS(int32_t, i32)
SUPERCL_CC_KERNELS(int64_t, i64)

extern "C" __global__ void cc_compress(int32_t* parent, int64_t batch, int64_t hw) {
  SUPERCL_GRID_STRIDE(i, batch * hw) { cc_compress_pixel(parent + (i / hw) * hw, i % hw); }
}

extern "C" __global__ void cc_root_flag_kernel(const int32_t* parent, int64_t batch, int64_t hw,
                                               int32_t* flags) {
  SUPERCL_GRID_STRIDE(i, batch * hw) { flags[i] = cc_root_flag(parent + (i / hw) * hw, i % hw); }
}

// rank: the per-image inclusive prefix sum of the flags.
extern "C" __global__ void cc_gather_kernel(const int32_t* parent, const int32_t* rank,
                                            int64_t batch, int64_t hw, int32_t* out) {
  SUPERCL_GRID_STRIDE(i, batch * hw) {
    const int64_t base = (i / hw) * hw;
    out[i] = cc_gather(parent + base, rank + base, i % hw);
  }
}
