// CUDA kernels of 3-D connected-component labeling, block-based: tiles of kCc3TileD x kCc3TileH x
// kCc3TileW voxels labeled in shared memory, then the voxels with an earlier neighbour in another
// tile merged through the global forest.  The algorithm, tile shape, occupancy and roofline are
// in supercl/connected_components_block.h; the per-voxel rules in
// supercl/connected_components_3d.h.  The launcher (kernels/cuda/launch.py,
// connected_components_3d) then runs the 2-D module's cc_roots and cc_gather_kernel over each
// volume's flat forest, with torch's per-volume inclusive cumsum in between, on torch's current
// stream and without host synchronisation.  Grid strides over tiles (64-bit), block strides over
// a tile's voxels between __syncthreads(): correct for any grid and block, including the host
// emulation's one thread.  Parent indices are local to each volume (int32).
#include "supercl/connected_components_block.h"

using namespace supercl;

template <typename T>
__device__ void cc3_tiles(const T* volume, int64_t batch, int64_t depth, int64_t height,
                          int64_t width, int64_t sb, int64_t sz, int64_t sy, int64_t sx,
                          int connectivity, bool has_background, T background, int32_t* parent) {
  __shared__ T values[kCc3Tile];
  __shared__ int32_t local[kCc3Tile];
  const int64_t tiles = batch * cc_ceil_div(depth, kCc3TileD) * cc_ceil_div(height, kCc3TileH) *
                        cc_ceil_div(width, kCc3TileW);
  const int64_t hw = height * width;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const CcTile t = cc_tile(tile, depth, height, width, kCc3TileD, kCc3TileH, kCc3TileW);
    const T* vol = volume + t.b * sb;
    int32_t* par = parent + t.b * depth * hw;
    const int plane = t.h * t.w, n = t.d * plane;
    for (int l = threadIdx.x; l < n; l += blockDim.x) {
      const int lz = l / plane, ly = l % plane / t.w, lx = l % t.w;
      const T v = vol[(t.z0 + lz) * sz + (t.y0 + ly) * sy + (t.x0 + lx) * sx];
      values[l] = v;
      local[l] = cc_is_background(v, has_background, background) ? -1 : l;
    }
    __syncthreads();
    // The tile as a volume of its own, d x h x w: the ordinary merge on shared memory.
    for (int l = threadIdx.x; l < n; l += blockDim.x)
      cc3_merge_voxel_pruned<T>(values, plane, t.w, 1, t.h, t.w, l / plane, l % plane / t.w,
                                l % t.w, connectivity, has_background, background, local);
    __syncthreads();
    for (int l = threadIdx.x; l < n; l += blockDim.x) {
      const int32_t p = local[l];
      int32_t g = -1;
      if (p >= 0) {
        const int32_t r = cc_find_split(local, p);  // merges done: only finds run now
        g = static_cast<int32_t>(((t.z0 + r / plane) * height + t.y0 + r % plane / t.w) * width +
                                 t.x0 + r % t.w);
      }
      par[((t.z0 + l / plane) * height + t.y0 + l % plane / t.w) * width + t.x0 + l % t.w] = g;
    }
    __syncthreads();  // the next tile overwrites the shared arrays
  }
}

template <typename T>
__device__ void cc3_borders(const T* volume, int64_t batch, int64_t depth, int64_t height,
                            int64_t width, int64_t sb, int64_t sz, int64_t sy, int64_t sx,
                            int connectivity, bool has_background, T background,
                            int32_t* parent) {
  const int64_t tiles = batch * cc_ceil_div(depth, kCc3TileD) * cc_ceil_div(height, kCc3TileH) *
                        cc_ceil_div(width, kCc3TileW);
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const CcTile t = cc_tile(tile, depth, height, width, kCc3TileD, kCc3TileH, kCc3TileW);
    const int slots = cc3_border_count(t);
    for (int s = threadIdx.x; s < slots; s += blockDim.x) {
      int lz, ly, lx;
      cc3_border_voxel(t, s, lz, ly, lx);
      if (!cc3_on_border(t, height, width, lz, ly, lx, connectivity)) continue;
      cc3_merge_voxel_pruned<T>(volume + t.b * sb, sz, sy, sx, height, width, t.z0 + lz,
                                t.y0 + ly, t.x0 + lx, connectivity, has_background, background,
                                parent + t.b * depth * height * width, kCc3TileD, kCc3TileH,
                                kCc3TileW);
    }
  }
}

// volume: element strides (sb, sz, sy, sx); parent: contiguous (B, D, H, W).
#define SUPERCL_CC3_KERNELS(T, SUFFIX)                                                          \
  extern "C" __global__ void cc3_tiles_##SUFFIX(                                                \
      const T* volume, int64_t batch, int64_t depth, int64_t height, int64_t width, int64_t sb, \
      int64_t sz, int64_t sy, int64_t sx, int32_t connectivity, int32_t has_background,         \
      T background, int32_t* parent) {                                                          \
    cc3_tiles<T>(volume, batch, depth, height, width, sb, sz, sy, sx, connectivity,             \
                 has_background != 0, background, parent);                                      \
  }                                                                                             \
  extern "C" __global__ void cc3_borders_##SUFFIX(                                              \
      const T* volume, int64_t batch, int64_t depth, int64_t height, int64_t width, int64_t sb, \
      int64_t sz, int64_t sy, int64_t sx, int32_t connectivity, int32_t has_background,         \
      T background, int32_t* parent) {                                                          \
    cc3_borders<T>(volume, batch, depth, height, width, sb, sz, sy, sx, connectivity,           \
                   has_background != 0, background, parent);                                    \
  }

SUPERCL_CC_DTYPES(SUPERCL_CC3_KERNELS)
