// CPU drivers of supercl's image ops: loops over the shared kernel bodies in
// csrc/include/supercl/, with OpenMP over the batch (or over the rows of one image when the
// batch is smaller than the thread count).  Called from csrc/bindings.cpp with the GIL released.
#pragma once

#include <cstdint>

namespace supercl {
namespace cpu {

// Labels of the connected components of one (H, W) image with element strides (sy, sx); out is
// (H, W) int32 contiguous.  Returns the number of components.  num_threads > 1 splits the rows.
template <typename T>
int32_t connected_components_image(const T* image, int64_t stride_y, int64_t stride_x,
                                   int64_t height, int64_t width, int connectivity,
                                   bool has_background, T background, int32_t* out,
                                   int num_threads);

// Labels of the connected components of each image of a (B, H, W) batch given by a base pointer
// and element strides.  out: (B, H, W) int32, contiguous; counts: (B,) int64.
template <typename T>
void connected_components(const T* image, int64_t batch, int64_t height, int64_t width,
                          int64_t stride_b, int64_t stride_y, int64_t stride_x, int connectivity,
                          bool has_background, T background, int32_t* out, int64_t* counts,
                          int num_threads);

// Labels of the connected components of each volume of a (B, D, H, W) batch given by a base
// pointer and element strides; connectivity 1, 2 or 3 (6-, 18-, 26-neighbourhood).  out:
// (B, D, H, W) int32, contiguous; counts: (B,) int64.
template <typename T>
void connected_components_3d(const T* volume, int64_t batch, int64_t depth, int64_t height,
                             int64_t width, int64_t stride_b, int64_t stride_z, int64_t stride_y,
                             int64_t stride_x, int connectivity, bool has_background,
                             T background, int32_t* out, int64_t* counts, int num_threads);

// The vector instruction set of SLIC's scans: "avx2" where the CPU has it, else "baseline"
// (SSE2 on x86-64); SUPERCL_SIMD=baseline in the environment forces the baseline (read once).
const char* simd_level();

// Each image of a (B, C, H, W) contiguous float32 or float64 batch rescaled to [0, 1] over all
// its channels and the pixels of mask ((B, H, W) uint8 or nullptr), as the torch form in
// supercl/ops/slic.py (_rescale) does it, bit for bit; out: (B, C, H, W) float32.  Returns false
// when a pixel inside the mask is NaN or infinite.
template <typename T>
bool slic_rescale(const T* image, const uint8_t* mask, int64_t batch, int64_t channels,
                  int64_t height, int64_t width, float* out, int num_threads);

// SLIC of a (B, C, H, W) contiguous float32 batch rescaled to [0, 1].  mask: (B, H, W) uint8 or
// nullptr; grid: (B, 6) {y0, x0, ny, nx, sy, sx}; params: (B, 5) SlicParams; min_size: (B,).
// out: (B, H, W) int32.
void slic(const float* image, const uint8_t* mask, int64_t batch, int64_t channels,
          int64_t height, int64_t width, const int64_t* grid, const double* params,
          int64_t max_num_iter, bool enforce_connectivity, const int64_t* min_size,
          int32_t start_label, int32_t* out, int num_threads);

// Without connectivity enforcement: the labels (centre ids, negative for masked pixels) of
// one image or volume of n pixels and k_count centres renumbered consecutively in centre order
// from start_label, the centres that own no pixel skipped; masked pixels get 0.  Shared by
// the 2-D and the 3-D driver (slic.cpp).
void slic_compact_labels(int32_t* labels, int64_t n, int64_t k_count, int32_t start_label);

// SLIC of a (B, C, D, H, W) contiguous float32 batch of volumes rescaled to [0, 1].  mask:
// (B, D, H, W) uint8 or nullptr; grid: (B, 9) {z0, y0, x0, nz, ny, nx, sz, sy, sx}; params:
// (B, 5) Slic3Params; min_size: (B,).  out: (B, D, H, W) int32.
void slic_3d(const float* image, const uint8_t* mask, int64_t batch, int64_t channels,
             int64_t depth, int64_t height, int64_t width, const int64_t* grid,
             const double* params, int64_t max_num_iter, bool enforce_connectivity,
             const int64_t* min_size, int32_t start_label, int32_t* out, int num_threads);

}  // namespace cpu
}  // namespace supercl
