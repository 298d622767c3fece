// CPU driver of connected-component labeling: loops over the shared steps of
// supercl/connected_components.h (init, merge, compress, relabel).
#include "supercl/connected_components.h"

#include <type_traits>
#include <vector>

#include "ops.h"
#include "parallel.h"

namespace supercl {
namespace cpu {

namespace {

// Relabel in one raster pass, in place over the forest: the root flag and the running count
// give a root its rank; any other pixel copies the final label of its parent, which lies
// earlier in raster order and is already final (it is in the same component).  This needs no
// compress step, unlike the GPU's parallel gather.
int32_t relabel_in_place(int32_t* forest, int64_t n) {
  int32_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t p = forest[i];
    if (p < 0)
      forest[i] = 0;
    else if (cc_root_flag(forest, i))
      forest[i] = ++count;
    else
      forest[i] = forest[p];
  }
  return count;
}

// The GPU's sequence of passes, run serially: init, merge, compress, root flags, inclusive
// prefix sum, gather.  Used by the tests (gpu_form=True) to check on the CPU the exact steps
// that the CUDA backend launches.
template <typename T>
int32_t gpu_form(const T* image, int64_t sy, int64_t sx, int64_t height, int64_t width,
                 int connectivity, bool has_background, T background, int32_t* out) {
  const int64_t n = height * width;
  std::vector<int32_t> parent(n), rank(n);
  for (int64_t y = 0; y < height; ++y)
    for (int64_t x = 0; x < width; ++x)
      cc_init_pixel(image, sy, sx, width, y, x, has_background, background, parent.data());
  for (int64_t y = 0; y < height; ++y)
    for (int64_t x = 0; x < width; ++x)
      cc_merge_pixel<T, true>(image, sy, sx, width, y, x, connectivity, has_background,
                              background, parent.data());
  for (int64_t i = 0; i < n; ++i) cc_compress_pixel(parent.data(), i);
  for (int64_t i = 0; i < n; ++i) rank[i] = cc_root_flag(parent.data(), i);
  for (int64_t i = 1; i < n; ++i) rank[i] += rank[i - 1];
  for (int64_t i = 0; i < n; ++i) out[i] = cc_gather(parent.data(), rank.data(), i);
  return n ? rank[n - 1] : 0;
}

}  // namespace

template <typename T>
int32_t connected_components_image(const T* image, int64_t sy, int64_t sx, int64_t height,
                                   int64_t width, int connectivity, bool has_background,
                                   T background, int32_t* out, int num_threads) {
  // The output buffer doubles as the union-find forest.
  int32_t* parent = out;
  if (num_threads <= 1) {
    // One thread owns the image: plain loads and stores, init fused into the merge pass (a
    // pixel's merge only touches itself and earlier pixels) and its first join a plain link.
    // Rows of unit stride get their own instance, in which the compiler folds the x stride.
    auto scan = [&](auto x_stride) {
      for (int64_t y = 0; y < height; ++y) {
        for (int64_t x = 0; x < width; ++x)
          cc_merge_pixel<T, false, true>(image, sy, static_cast<int64_t>(x_stride), width, y, x,
                                         connectivity, has_background, background, parent);
      }
    };
    if (sx == 1)
      scan(std::integral_constant<int64_t, 1>());
    else
      scan(sx);
  } else {
#pragma omp parallel num_threads(num_threads)
    {
#pragma omp for schedule(static)
      for (int64_t y = 0; y < height; ++y)
        for (int64_t x = 0; x < width; ++x)
          cc_init_pixel(image, sy, sx, width, y, x, has_background, background, parent);
      // Rows merge concurrently: the unions are atomic (supercl/common.h).
#pragma omp for schedule(static)
      for (int64_t y = 0; y < height; ++y)
        for (int64_t x = 0; x < width; ++x)
          cc_merge_pixel<T, true>(image, sy, sx, width, y, x, connectivity, has_background,
                                  background, parent);
    }
  }
  return relabel_in_place(parent, height * width);
}

template <typename T>
void connected_components(const T* image, int64_t batch, int64_t height, int64_t width,
                          int64_t stride_b, int64_t stride_y, int64_t stride_x, int connectivity,
                          bool has_background, T background, int32_t* out, int64_t* counts,
                          int num_threads, bool use_gpu_form) {
  const int threads = resolve_threads(num_threads);
  if (use_gpu_form) {
    for (int64_t b = 0; b < batch; ++b)
      counts[b] = gpu_form(image + b * stride_b, stride_y, stride_x, height, width, connectivity,
                           has_background, background, out + b * height * width);
    return;
  }
  const int64_t hw = height * width;
  if (batch >= threads || threads == 1) {
    (void)threads;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t b = 0; b < batch; ++b)
      counts[b] = connected_components_image(image + b * stride_b, stride_y, stride_x, height,
                                             width, connectivity, has_background, background,
                                             out + b * hw, 1);
  } else {
    for (int64_t b = 0; b < batch; ++b)
      counts[b] = connected_components_image(image + b * stride_b, stride_y, stride_x, height,
                                             width, connectivity, has_background, background,
                                             out + b * hw, threads);
  }
}

#define SUPERCL_INSTANTIATE_CC(T)                                                               \
  template int32_t connected_components_image<T>(const T*, int64_t, int64_t, int64_t, int64_t, \
                                                 int, bool, T, int32_t*, int);                  \
  template void connected_components<T>(const T*, int64_t, int64_t, int64_t, int64_t, int64_t, \
                                        int64_t, int, bool, T, int32_t*, int64_t*, int, bool);

SUPERCL_INSTANTIATE_CC(uint8_t)
SUPERCL_INSTANTIATE_CC(int32_t)
SUPERCL_INSTANTIATE_CC(int64_t)

}  // namespace cpu
}  // namespace supercl
