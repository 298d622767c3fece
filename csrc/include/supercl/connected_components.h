// supercl/connected_components.h -- connected-component labeling of multi-label 2D images,
// written once for the host and the device.
//
// Algorithm: label equivalence with a union-find forest over pixel indices (Playne & Hawick,
// "A New Algorithm for Parallel Connected-Component Labelling on GPUs", IEEE TPDS 2018;
// Komura, "GPU-based cluster-labeling algorithm without the use of conventional iteration",
// 2015).  Each image is labeled independently; within an image every pixel is a node whose
// parent is a 32-bit local index (so one image holds at most 2^31 - 1 pixels; the batch is
// indexed with 64 bits).  Background pixels get parent -1 and take part in nothing.
//   1. init      parent[i] = i, or -1 for background.
//   2. merge     every pixel unions itself with the already-scanned neighbours of equal value
//                (up and left for 4-connectivity; up-left, up, up-right and left for 8).  A
//                decision tree (Wu, Otoo & Suzuki 2009) skips unions that another pixel makes
//                anyway: with 4-connectivity, left is skipped when up and up-left also equal
//                x (both are 4-adjacent to up-left); with 8-connectivity, if the up neighbour b equals x then up-left,
//                up-right and left are all adjacent to b and are joined to b by their own
//                merges, so only union(x, b) is needed; otherwise up-left and left are adjacent
//                to each other and one of them suffices, plus up-right.  The argument is about
//                the closure of the unions performed, not their order, so it holds when all
//                pixels merge concurrently.
//                union(a, b) repeatedly finds both roots and lowers the larger root's parent to
//                the smaller one with an atomic min; when the atomic finds the slot already
//                changed it retries from the value it found.  Roots therefore only ever point
//                to smaller indices, and every tree's root is its smallest pixel index: the
//                first pixel of the component in raster order.
//   3. compress  parent[i] = find(i): every pixel points straight at its root.
//   4. relabel   a root flag per pixel, an inclusive prefix sum of the flags in raster order,
//                and a gather through parent: the component whose first pixel comes k-th in
//                raster order gets label k (1-based), background 0.  This is exactly the
//                numbering of skimage.measure.label and scipy.ndimage.label.
// The result does not depend on the order in which threads run: the partition is the closure
// of the unions and the numbering is a function of the partition.
// The GPU runs these steps tile by tile (supercl/connected_components_block.h): the merge of
// step 2 on each 32 x 64 tile in shared memory, then only the pairs across tile borders in the
// global forest, then step 3 fused with step 4a.
//
// The host's single-thread path runs the same union-find (cc_find, cc_union, root = smallest
// index, relabel in raster order) over runs of equal value instead of pixels; see
// csrc/cpu/connected_components.cpp for why the CPU differs.  cc_is_background, cc_reach and
// cc_runs_touch state the per-pixel rules for runs.
//
// kAtomic: the device always uses atomics; the host uses them when rows of one image merge
// concurrently, and the plain forms (cc_find<false>, cc_union<false>) in its run-based scan,
// where one thread owns the image.  Its relabel reads the final label of each node's parent,
// which precedes it in raster order, so the host needs no compress step.
#pragma once

#include "supercl/common.h"

// The label dtypes that the labeling is compiled for, each with the suffix of its CUDA kernels
// (cc_tiles_u8, ...): the one list that the C++ drivers' instantiations (csrc/cpu), the kernels
// of kernels/cuda and the dtype dispatch of csrc/bindings.cpp expand, X(type, suffix) per
// dtype.  Its Python side is supercl.kernels.CC_DTYPES; tests/test_connected_components.py
// checks that the two agree.
#define SUPERCL_CC_DTYPES(X) X(uint8_t, u8) X(int32_t, i32) X(int64_t, i64)

namespace supercl {

// Root of i's tree.  Concurrent writers only ever lower parents, so a plain walk is safe; the
// atomic form does not compress (a plain store could undo a concurrent atomic min), the
// single-owner host form halves the path as it walks (parent[i] = grandparent), which keeps
// the trees shallow.
template <bool kAtomic = true>
SUPERCL_HD int32_t cc_find(int32_t* parent, int32_t i) {
  int32_t p = sc_load<kAtomic>(parent + i);
  while (p != i) {
    const int32_t grandparent = sc_load<kAtomic>(parent + p);
    if (!kAtomic) parent[i] = grandparent;
    i = p;
    p = grandparent;
  }
  return i;
}

template <bool kAtomic = true>
SUPERCL_HD void cc_union(int32_t* parent, int32_t a, int32_t b) {
  while (true) {
    a = cc_find<kAtomic>(parent, a);
    b = cc_find<kAtomic>(parent, b);
    if (a == b) return;
    if (a < b) {  // make a the larger root: it is the one that gets linked
      const int32_t t = a;
      a = b;
      b = t;
    }
    const int32_t old = sc_atomic_min<kAtomic>(parent + a, b);
    if (old == a) return;  // a was still a root and now points at b
    a = old;               // a had been linked meanwhile; join its new parent with b instead
  }
}

// Whether a pixel of value v is background, i.e. takes part in no component (parent -1).
template <typename T>
SUPERCL_HD bool cc_is_background(T v, bool has_background, T background) {
  return has_background && v == background;
}

// Step 1 for pixel (y, x).  image: element strides (sy, sx) from the image's origin.
template <typename T>
SUPERCL_HD void cc_init_pixel(const T* image, int64_t sy, int64_t sx, int64_t width, int64_t y,
                              int64_t x, bool has_background, T background, int32_t* parent) {
  const int64_t i = y * width + x;
  const T v = image[y * sy + x * sx];
  parent[i] = cc_is_background(v, has_background, background) ? -1 : static_cast<int32_t>(i);
}

// Step 2 for pixel (y, x).  connectivity: 1 (4-neighbourhood) or 2 (8-neighbourhood).
template <typename T, bool kAtomic = true>
SUPERCL_HD void cc_merge_pixel(const T* image, int64_t sy, int64_t sx, int64_t width, int64_t y,
                               int64_t x, int connectivity, bool has_background, T background,
                               int32_t* parent) {
  const T v = image[y * sy + x * sx];
  const int32_t i = static_cast<int32_t>(y * width + x);
  if (cc_is_background(v, has_background, background)) return;
  const bool has_up = y > 0, has_left = x > 0, has_right = x + 1 < width;
  const bool up = has_up && image[(y - 1) * sy + x * sx] == v;
  if (connectivity == 1) {
    if (up) cc_union<kAtomic>(parent, i, static_cast<int32_t>(i - width));
    // Left and up are both 4-adjacent to up-left: when all three equal x, left is already
    // joined to up through up-left's own merges.
    if (has_left && image[y * sy + (x - 1) * sx] == v &&
        !(up && image[(y - 1) * sy + (x - 1) * sx] == v))
      cc_union<kAtomic>(parent, i, i - 1);
    return;
  }
  if (up) {
    cc_union<kAtomic>(parent, i, static_cast<int32_t>(i - width));
    return;
  }
  if (has_up && has_right && image[(y - 1) * sy + (x + 1) * sx] == v)
    cc_union<kAtomic>(parent, i, static_cast<int32_t>(i - width + 1));
  if (has_up && has_left && image[(y - 1) * sy + (x - 1) * sx] == v)
    cc_union<kAtomic>(parent, i, static_cast<int32_t>(i - width - 1));
  else if (has_left && image[y * sy + (x - 1) * sx] == v)
    cc_union<kAtomic>(parent, i, i - 1);
}

// ---------------------------------------------------------------------------------------------
// The same rules stated for runs (maximal horizontal stretches of equal value in one row), for
// the host's single-thread run-based scan (csrc/cpu/connected_components.cpp).  They are the
// per-pixel rules above, taken over a run: no new semantics.
// ---------------------------------------------------------------------------------------------

// How far a pixel reaches sideways into the row above: 0 with 4-connectivity (only straight up),
// 1 with 8-connectivity (up-left, up, up-right), the neighbourhoods cc_merge_pixel examines.
SUPERCL_HD int64_t cc_reach(int connectivity) { return connectivity == 1 ? 0 : 1; }

// Whether the run [s, e) of the row above and the run [s1, e1) of the current row, of equal
// value, hold a pair of adjacent pixels: some x in [s1, e1) and x' in [s, e) with
// |x - x'| <= reach.  Two runs of one row are never joined directly (they are maximal, so
// neighbours in a row have different values or one is background).
SUPERCL_HD bool cc_runs_touch(int64_t s, int64_t e, int64_t s1, int64_t e1, int64_t reach) {
  return s < e1 + reach && s1 < e + reach;
}

// Step 3 for pixel i.
SUPERCL_HD void cc_compress_pixel(int32_t* parent, int64_t i) {
  const int32_t p = sc_load(parent + i);
  if (p < 0) return;
  sc_store(parent + i, cc_find(parent, p));
}

// Step 4a: 1 where pixel i is the first pixel (the root) of its component, else 0.
SUPERCL_HD int32_t cc_root_flag(const int32_t* parent, int64_t i) {
  return parent[i] == static_cast<int32_t>(i) ? 1 : 0;
}

// Step 4c: the final label of pixel i, given rank = the inclusive prefix sum of root flags
// (rank[r] is the 1-based number of root r).  Background gives 0.
SUPERCL_HD int32_t cc_gather(const int32_t* parent, const int32_t* rank, int64_t i) {
  const int32_t p = parent[i];
  return p < 0 ? 0 : rank[p];
}

}  // namespace supercl
