// CUDA kernels of 3-D connected-component labeling: thin __global__ wrappers over the per-voxel
// steps of supercl/connected_components_3d.h (init, merge).  The launcher
// (supercl/ops/_cuda.py, connected_components_3d) then runs the 2-D module's compress,
// root-flag and gather kernels over the flat (B, D*H*W) forest, with torch's per-volume
// inclusive cumsum in between, on torch's current stream and without host synchronisation.
// One thread per voxel of the whole (B, D, H, W) batch, grid-stride loops, 64-bit indices;
// parent indices are local to each volume (int32).
//
// Not measured on a GPU yet.  The merge visits up to 13 earlier neighbours per voxel with no
// decision tree (each equal one is a union: a find per side and an atomicMin); a block-based
// labeling (tiles in shared memory, then only tile faces in global memory) is the known way to
// cut that pointer chasing.
#include "supercl/connected_components_3d.h"

using namespace supercl;

#define SUPERCL_GRID_STRIDE(i, n)                                                        \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// volume: element strides (sb, sz, sy, sx); parent: contiguous (B, D, H, W).
#define SUPERCL_CC3_KERNELS(T, SUFFIX)                                                          \
  extern "C" __global__ void cc3_init_##SUFFIX(                                                 \
      const T* volume, int64_t batch, int64_t depth, int64_t height, int64_t width, int64_t sb, \
      int64_t sz, int64_t sy, int64_t sx, int32_t has_background, T background,                 \
      int32_t* parent) {                                                                        \
    const int64_t hw = height * width, n = depth * hw;                                          \
    SUPERCL_GRID_STRIDE(i, batch * n) {                                                         \
      const int64_t b = i / n, p = i % n;                                                       \
      cc3_init_voxel<T>(volume + b * sb, sz, sy, sx, height, width, p / hw, (p % hw) / width,   \
                        p % width, has_background != 0, background, parent + b * n);            \
    }                                                                                           \
  }                                                                                             \
  extern "C" __global__ void cc3_merge_##SUFFIX(                                                \
      const T* volume, int64_t batch, int64_t depth, int64_t height, int64_t width, int64_t sb, \
      int64_t sz, int64_t sy, int64_t sx, int32_t connectivity, int32_t has_background,         \
      T background, int32_t* parent) {                                                          \
    const int64_t hw = height * width, n = depth * hw;                                          \
    SUPERCL_GRID_STRIDE(i, batch * n) {                                                         \
      const int64_t b = i / n, p = i % n;                                                       \
      cc3_merge_voxel<T, true>(volume + b * sb, sz, sy, sx, height, width, p / hw,              \
                               (p % hw) / width, p % width, connectivity, has_background != 0,  \
                               background, parent + b * n);                                     \
    }                                                                                           \
  }

SUPERCL_CC3_KERNELS(uint8_t, u8)
SUPERCL_CC3_KERNELS(int32_t, i32)
SUPERCL_CC3_KERNELS(int64_t, i64)
