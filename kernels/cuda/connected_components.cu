// CUDA kernels of connected-component labeling, block-based: the algorithm, its tile shapes,
// occupancy and roofline are in supercl/connected_components_block.h; the per-pixel rules
// (neighbours, equality, background, union-find) in supercl/connected_components.h.  Compiled at
// run time by NVRTC through CuPy (kernels/cuda/launch.py), which runs on torch's current stream
// and without host synchronisation:
//   cc_tiles -> cc_borders -> cc_roots -> (1-D inclusive cumsums, torch) -> cc_gather_kernel
// (the last two in segments of whole images, see below).
// The tile kernels loop over tiles with a 64-bit grid stride and over a tile's pixels with block
// strides between __syncthreads(), so they are correct for any grid and block size, including the
// one block of one thread of the host emulation (tests/cuda_host_shim.h).  Parent indices are
// local to each image (int32; an image holds < 2^31 pixels), all batch-wide indices 64-bit.
// cc_roots and cc_gather_kernel see each image as a flat forest and serve the 3-D labeling too.
#include "supercl/connected_components_block.h"

using namespace supercl;

// One tile per block iteration: the tile's values and local forest live in shared memory.
template <typename T>
__device__ void cc_tiles(const T* image, int64_t batch, int64_t height, int64_t width, int64_t sb,
                         int64_t sy, int64_t sx, int connectivity, bool has_background,
                         T background, int32_t* parent) {
  __shared__ T values[kCcTile];
  __shared__ int32_t local[kCcTile];
  const int64_t tiles = batch * cc_ceil_div(height, kCcTileH) * cc_ceil_div(width, kCcTileW);
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const CcTile t = cc_tile(tile, 1, height, width, 1, kCcTileH, kCcTileW);
    const T* img = image + t.b * sb;
    int32_t* par = parent + t.b * height * width;
    const int n = t.h * t.w;
    for (int l = threadIdx.x; l < n; l += blockDim.x) {
      const T v = img[(t.y0 + l / t.w) * sy + (t.x0 + l % t.w) * sx];
      values[l] = v;
      local[l] = cc_is_background(v, has_background, background) ? -1 : l;
    }
    __syncthreads();
    // The tile as an image of its own, w wide: the ordinary merge (decision tree, union-find
    // with atomicMin), on shared memory.
    for (int l = threadIdx.x; l < n; l += blockDim.x)
      cc_merge_pixel<T, true>(values, t.w, 1, t.w, l / t.w, l % t.w, connectivity,
                              has_background, background, local);
    __syncthreads();
    for (int l = threadIdx.x; l < n; l += blockDim.x) {
      const int32_t p = local[l];
      int32_t g = -1;
      if (p >= 0) {
        const int32_t r = cc_find_split(local, p);  // merges done: only finds run now
        g = static_cast<int32_t>((t.y0 + r / t.w) * width + t.x0 + r % t.w);
      }
      par[(t.y0 + l / t.w) * width + t.x0 + l % t.w] = g;
    }
    __syncthreads();  // the next tile overwrites the shared arrays
  }
}

template <typename T>
__device__ void cc_borders(const T* image, int64_t batch, int64_t height, int64_t width,
                           int64_t sb, int64_t sy, int64_t sx, int connectivity,
                           bool has_background, T background, int32_t* parent) {
  const int64_t tiles = batch * cc_ceil_div(height, kCcTileH) * cc_ceil_div(width, kCcTileW);
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const CcTile t = cc_tile(tile, 1, height, width, 1, kCcTileH, kCcTileW);
    const int slots = cc_border_count(t, connectivity);
    for (int s = threadIdx.x; s < slots; s += blockDim.x) {
      int ly, lx;
      cc_border_pixel(t, s, ly, lx);
      cc_merge_pixel_across<T>(image + t.b * sb, sy, sx, width, t.y0 + ly, t.x0 + lx,
                               connectivity, has_background, background,
                               parent + t.b * height * width);
    }
  }
}

// image: element strides (sb, sy, sx); parent: contiguous (B, H, W).
#define SUPERCL_CC_KERNELS(T, SUFFIX)                                                          \
  extern "C" __global__ void cc_tiles_##SUFFIX(                                               \
      const T* image, int64_t batch, int64_t height, int64_t width, int64_t sb, int64_t sy,  \
      int64_t sx, int32_t connectivity, int32_t has_background, T background,                 \
      int32_t* parent) {                                                                      \
    cc_tiles<T>(image, batch, height, width, sb, sy, sx, connectivity, has_background != 0,  \
                background, parent);                                                          \
  }                                                                                           \
  extern "C" __global__ void cc_borders_##SUFFIX(                                             \
      const T* image, int64_t batch, int64_t height, int64_t width, int64_t sb, int64_t sy,  \
      int64_t sx, int32_t connectivity, int32_t has_background, T background,                 \
      int32_t* parent) {                                                                      \
    cc_borders<T>(image, batch, height, width, sb, sy, sx, connectivity, has_background != 0, \
                  background, parent);                                                        \
  }

SUPERCL_CC_DTYPES(SUPERCL_CC_KERNELS)

// The roots and gather passes visit each image's flat forest in segments of kCcSegment
// consecutive nodes, one segment per block iteration (grid stride over segments, block stride
// inside one): the segment's image and its first node cost one 64-bit division per segment,
// where a flat grid stride over the batch paid i / size and i % size (64-bit, a ptxas
// subroutine of dozens of instructions) for every pixel, twice in the gather.

// Compress + root flag, fused (roots are final after the border pass).  flags may be the output
// buffer: the gather overwrites it.
extern "C" __global__ void cc_roots(int32_t* parent, int64_t batch, int64_t size,
                                    int32_t* flags) {
  const int64_t per_image = cc_ceil_div(size, kCcSegment);
  for (int64_t s = blockIdx.x; s < batch * per_image; s += gridDim.x) {
    const CcSegment g = cc_segment(s, per_image, size);
    int32_t* par = parent + g.b * size;
    int32_t* flag = flags + g.b * size + g.start;
    for (int k = threadIdx.x; k < g.n; k += blockDim.x)
      flag[k] = cc_compress_root_flag(par, g.start + k);
  }
}

// rank: inclusive prefix sums of the flags over chunks of `step` whole images (1-D scans);
// parent: compressed.  Writes the labels and, from each image's last pixel, its count.
extern "C" __global__ void cc_gather_kernel(const int32_t* parent, const int32_t* rank,
                                            int64_t batch, int64_t size, int64_t step,
                                            int32_t* out, int64_t* counts) {
  const int64_t per_image = cc_ceil_div(size, kCcSegment);
  for (int64_t s = blockIdx.x; s < batch * per_image; s += gridDim.x) {
    const CcSegment g = cc_segment(s, per_image, size);
    const int64_t base = g.b * size;
    const int32_t offset = cc_rank_offset(rank, g.b, size, step);
    for (int k = threadIdx.x; k < g.n; k += blockDim.x) {
      const int64_t i = base + g.start + k;
      const int32_t p = parent[i];
      out[i] = p < 0 ? 0 : rank[base + p] - offset;
      if (g.start + k == size - 1) counts[g.b] = rank[i] - offset;
    }
  }
}
