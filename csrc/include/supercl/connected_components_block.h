// supercl/connected_components_block.h -- the per-pixel rules of the GPU's block-based
// connected-component labeling (kernels/cuda/connected_components.cu and
// connected_components_3d.cu): tile geometry, the merges across tile borders, and the fused
// compress + root flag.  The union-find (root = smallest index) is that of
// supercl/connected_components.h, with path splitting by atomicMin where threads merge
// concurrently (cc_find_split, cc_union_split, below, with the argument why it is exact).  The
// 2-D merges inside a tile are cc_merge_pixel's; the 3-D merges of both passes are
// cc3_merge_voxel_pruned (below), which prunes like the 2-D decision tree.
//
// Algorithm (Allegretti, Bolelli & Grana, "Optimized Block-Based Algorithms to Label Connected
// Components on GPUs", IEEE TPDS 2020; Komura 2015), adapted to multi-label maps and to
// scikit-image's numbering:
//   1. tiles    one CUDA block per tile of kCcTileH x kCcTileW pixels (kCc3TileD x kCc3TileH x
//               kCc3TileW voxels in 3-D).  The block copies the tile's values into shared memory
//               and runs the ordinary union-find on the tile as if it were a whole image, with
//               shared-memory atomicMin, over tile-local raster indices l = ly * tw + lx (tw the
//               tile's width, clipped at the image's right edge).  Inside one tile the local
//               raster order is the global raster order, so a tile-local root -- the smallest
//               local index of its tree -- is also the smallest global index of that piece.  The
//               block then writes, for each pixel, the global (per-image) index of its local root:
//               every pixel points straight at its piece's root, background -1.
//   2. borders  only the pixels that have an earlier neighbour in another tile (the tile's first
//               row and column, and its last column for the up-right neighbour of 8-connectivity;
//               its first z, y and x faces and, with diagonal offsets, its last y and x faces in
//               3-D) union themselves with those neighbours, through the global forest with
//               atomicMin.  Roots only ever link to smaller indices, so the global rule of
//               supercl/connected_components.h holds: every root is the first pixel of its
//               component in raster order.
//   3. roots    roots are final once the border pass has ended: a kernel finds each pixel's
//               root, compresses the path it walked (every node on it gets the root: the same
//               value whichever thread writes it) and writes the root flag, over segments of
//               kCcSegment nodes of one image (one 64-bit division per segment, not per pixel).
//   4. numbers  1-D inclusive prefix sums of the flags (torch.cumsum, int32, over chunks of whole
//               images, cc_rank_offset) and a gather through the compressed parents that also
//               writes the counts: scikit-image's numbering, exactly as before.
// Why the partition is exact: the tile pass computes the closure of the equal-neighbour pairs
// inside each tile (cc_merge_pixel's decision tree is valid for any rectangle taken as an image;
// so is cc3_merge_voxel_pruned for a box: a pruned side M and the voxel v lie in the tile, hence so
// does the row centre N between them, and v -- N, N -- M are unioned inside it),
// the border pass adds every pair that crosses a tile border (pruned only where the pruned pair's
// ends are joined through a pair that is always unioned, see cc_merge_pixel_across), and the
// closure of both is the closure of all pairs.  Thread order changes nothing.
//
// Tile shapes.  2-D: 32 x 64 = 2048 pixels; 3-D: 8 x 8 x 32 = 2048 voxels.  Rows of 64 (32)
// pixels make the global loads and the int32 parent stores full 32-byte sectors; 2048 nodes keep
// the shared footprint at 2048 * (4 + sizeof(T)) <= 24 KiB per block (int64 maps), so an H200 SM
// (228 KB shared, 2048 threads) holds 8 blocks of 256 threads: full thread occupancy, 192 KB of
// shared memory in the worst case, 40 KB for uint8.  Registers (ptxas, sm_90, CUDA 13.0): 31 per
// thread in the 2-D tile kernel (8 blocks fit the 64 K registers), 40 in the 3-D one (6 blocks,
// 75 % of the threads).  The border pass sees the pixels with an
// earlier neighbour across a border: 64 + 2 * 31 = 126 of 2048 (6 %) in 2-D.  In 3-D the crossing
// pairs per voxel are about 9 / 8 (z faces) + 6 / 8 (y) + 4 / 32 (x) = 2.0 of the 13 earlier
// offsets with 26-connectivity, against 13 (pruned to ~4 by equality) for the per-voxel kernel.
// The voxels the 3-D border pass visits: with 26-connectivity those on the first z face or the
// first or last y or x face, 1 - (7/8)(6/8)(30/32) = 38 % of an inner 8 x 8 x 32 tile (26 %
// with 6-connectivity, first faces only).  Other shapes of 2048 voxels do no better: 4 x 16 x 32
// and 16 x 8 x 16 also give 1 - 0.615 = 38 %, and rows narrower than 32 voxels would split the
// 32-byte sectors of the loads; so the shape stays, and the work per border voxel is cut instead
// (cc3_merge_voxel_pruned: a z-face voxel inside a region of one value makes 3 unions, not 9).
//
// Roofline (uint8 input, int32 output, per pixel): image read once (1 B), parent written by the
// tile pass (4 B), read and (rarely) written by the roots pass (4 B) plus its flag (4 B), the scan
// (read 4 B, write 4 B), the gather (parent 4 B, rank 4 B mostly cached, out 4 B): ~33 B per
// pixel.  32 x 512^2 = 8.4 Mpx is ~0.28 GB, ~70 us at ~4 TB/s (an H200's 4.8 TB/s peak); 256^3 =
// 16.8 Mvx is ~0.55 GB, ~0.14 ms.  The launches are 5 per call (tiles, borders, roots, scan,
// gather), ~5 us each of launch latency, so small batches are latency-bound.
//
// Measured on an H200 (pytest-benchmark medians, whole batch, before the changes below): 2-D
// 0.39 ms for 32 x 256^2 and 0.84 ms for 32 x 512^2 (binary), ~0.24 ms + 72 ps per pixel; 3-D
// 1.83 ms (binary blobs 256^3), 3.58 ms (smoothed noise 256^3), 5.55 ms (supervoxels
// 128 x 256 x 256, 1905 components).  What was changed, and the predicted effect (unmeasured):
//  - host: the launcher passes raw pointers instead of 7 cupy.from_dlpack per call, memoises the
//    kernel handles, allocates the int32 scratch once, and eager calls skip the custom op's
//    dispatch (kernels/cuda/launch.py, supercl/ops/connected_components.py): an estimated 50-80
//    of the ~240 us fixed cost.
//  - path splitting (cc_find_split) in the border passes: a big component's tile roots were
//    linked into chains up to one node per tile long (128 per 512^2 image, 8192 per 256^3
//    volume), walked in full by every later find, one dependent L2 load (~0.3 us) per node; now
//    O(log) on average.  Mostly for the binary cases (2-D binary, 3-D blobs).
//  - 3-D pruning (cc3_merge_voxel_pruned): 5 unions instead of 13 per voxel of a region of one
//    value (26-connectivity).  Why the supervoxel map was the worst case: every voxel is
//    foreground and almost every neighbour equal, so the tile pass made 13 shared-memory unions
//    per voxel (26 finds + 13 atomics, 8.4 M voxels), where blobs and noise are mostly
//    background; and each of the 38 % border voxels made up to 9 global unions.  The pruning
//    takes 60 % of those unions away; predicted the largest gain of the three (3-D supervoxels
//    and blobs).
//  - roots and gather in segments: no 64-bit division per pixel.
//
// Why the per-pixel global kernel lost on the noisy 3-D volume (14.1 ms against cupyx's 4.7 ms):
// thresholded smoothed noise has many small components whose voxels mostly have several equal
// earlier neighbours: each voxel made up to 13 unions, each a pair of finds through L2 (latency
// ~250 ns per dependent load) plus an atomicMin, with trees that grow deep while 16.8 M threads
// link concurrently, and contended atomics on the roots of every blob.  Here those unions happen
// in shared memory (~30 cycles per access, atomics local to the SM) and only ~2 crossing pairs per
// voxel, on 47 % of the voxels, go to the global forest.  Unmeasured on a GPU at the time of
// writing; see benchmarks/test_bench_connected_components_3d.py.
#pragma once

#include "supercl/common.h"
#include "supercl/connected_components.h"
#include "supercl/connected_components_3d.h"

namespace supercl {

// Tile shapes; kernels/cuda/launch.py mirrors them (_CC_TILE, _CC3_TILE) to size its grids, and
// tests/test_cuda_emulated.py checks that the two agree.
constexpr int kCcTileH = 32;
constexpr int kCcTileW = 64;
constexpr int kCc3TileD = 8;
constexpr int kCc3TileH = 8;
constexpr int kCc3TileW = 32;
constexpr int kCcTile = kCcTileH * kCcTileW;
constexpr int kCc3Tile = kCc3TileD * kCc3TileH * kCc3TileW;

SUPERCL_HD int64_t cc_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Tile `tile` (0 <= tile < batch * tiles per image, 64-bit) of a (B, D, H, W) batch cut into
// td x th x tw tiles (td = 1 in 2-D): its image, origin and clipped extent.
struct CcTile {
  int64_t b, z0, y0, x0;
  int d, h, w;
};

SUPERCL_HD CcTile cc_tile(int64_t tile, int64_t depth, int64_t height, int64_t width, int td,
                          int th, int tw) {
  const int64_t nz = cc_ceil_div(depth, td), ny = cc_ceil_div(height, th),
                nx = cc_ceil_div(width, tw);
  const int64_t per_image = nz * ny * nx;
  CcTile t;
  t.b = tile / per_image;
  const int64_t r = tile % per_image;
  t.z0 = r / (ny * nx) * td;
  t.y0 = r / nx % ny * th;
  t.x0 = r % nx * tw;
  t.d = static_cast<int>(depth - t.z0 < td ? depth - t.z0 : td);
  t.h = static_cast<int>(height - t.y0 < th ? height - t.y0 : th);
  t.w = static_cast<int>(width - t.x0 < tw ? width - t.x0 : tw);
  return t;
}

// The concurrent union-find of the passes that merge through shared or global memory while other
// threads merge too, with path splitting: a find points every node it walks past at the node's
// grandparent.  The plain atomic cc_find of supercl/connected_components.h does not compress (its
// comment: a plain store could undo a concurrent atomic min); here the shortcut is itself an
// atomicMin, and it is exact under any interleaving:
//   (a) every node's parent is <= the node (roots are the smallest index of their tree, cc_union
//       links the larger root under the smaller, and a shortcut stores a grandparent, smaller
//       still), and no write ever raises a parent (all are atomicMin): chains strictly decrease,
//       so no write can make a cycle, and a node that is not a root never becomes one again.
//   (b) a shortcut writes only to a node i it has seen as a non-root (parent p != i), so it never
//       touches a root: roots still change only by cc_union's atomicMin, and the root of a
//       component is still its smallest index (the numbering relies on it).
//   (c) the shortcut's value g was read as the parent of p, p as the parent of i: g is in i's
//       tree when read, and stays in it (trees only merge, see below).  atomicMin(parent + i, g)
//       either leaves parent[i] (already smaller, hence a higher node of the same chain) or
//       replaces it by g: i's subtree is cut from its parent and hung under g, which is in the
//       same tree and not in the subtree (g < i, and every node of i's subtree is >= i).  The
//       partition into trees is unchanged.  cc_union's own atomicMin on a node that was linked
//       meanwhile (old != a) can move a's subtree under b before the union goes on with old and
//       b; the union then joins those two trees, so at its end the partition is the closure of
//       the unions asked, and a shortcut meanwhile only moves a subtree between trees that this
//       union joins.  The merges therefore end with the same partition as without compression,
//       and the roots pass (cc_compress_root_flag) runs after them, as before.
// Cost: the shortcut is an atomicMin whose result is unused (a fire-and-forget reduction on the
// device), on a node the find has just read (in L1/L2 or shared memory).  Gain: the border pass of
// a big component links its tiles' roots into chains (up to one node per tile, 128 for a
// 512 x 512 image, 8192 for a 256^3 volume) that every later find through them walked in full,
// each step a dependent L2 load (~0.3 us); splitting halves a walked path each time, so the depth
// seen by later finds falls to O(log) and the roots pass walks short chains.
SUPERCL_HD int32_t cc_find_split(int32_t* parent, int32_t i) {
  int32_t p = sc_load(parent + i);
  while (p != i) {
    const int32_t grandparent = sc_load(parent + p);
    if (grandparent != p) sc_atomic_min(parent + i, grandparent);  // i is not a root: (b)
    i = p;
    p = grandparent;
  }
  return i;
}

// cc_union of supercl/connected_components.h (link the larger root under the smaller with
// atomicMin, retry with the new parent when it was linked meanwhile) over cc_find_split.
SUPERCL_HD void cc_union_split(int32_t* parent, int32_t a, int32_t b) {
  while (true) {
    a = cc_find_split(parent, a);
    b = cc_find_split(parent, b);
    if (a == b) return;
    if (a < b) {
      const int32_t t = a;
      a = b;
      b = t;
    }
    const int32_t old = sc_atomic_min(parent + a, b);
    if (old == a) return;
    a = old;
  }
}

// Step 2 in 2-D for pixel (y, x) of one image (element strides sy, sx; parent holds the image's
// global forest): union with each earlier neighbour of equal value that lies in another tile.
// Pairs inside a tile were closed by the tile pass.  With 8-connectivity, when the up neighbour
// equals x, the up-left and up-right pairs are skipped: both are joined to up through a pair of
// row y - 1 (up-left -- up, up -- up-right), which is always unioned (by the tile pass if inside
// a tile, else by this function's unpruned left pair of the later pixel), and x -- up is unioned
// (here, or by the tile pass).
template <typename T>
SUPERCL_HD void cc_merge_pixel_across(const T* image, int64_t sy, int64_t sx, int64_t width,
                                      int64_t y, int64_t x, int connectivity,
                                      bool has_background, T background, int32_t* parent) {
  const T v = image[y * sy + x * sx];
  if (cc_is_background(v, has_background, background)) return;
  const int32_t i = static_cast<int32_t>(y * width + x);
  const int64_t ty = y / kCcTileH, tx = x / kCcTileW;
  const auto across = [&](int64_t y2, int64_t x2) {
    return y2 / kCcTileH != ty || x2 / kCcTileW != tx;
  };
  const auto join = [&](int dy, int dx) {
    cc_union_split(parent, i, static_cast<int32_t>(i + dy * width + dx));
  };
  if (x > 0 && across(y, x - 1) && image[y * sy + (x - 1) * sx] == v) join(0, -1);
  if (y == 0) return;
  const bool up = image[(y - 1) * sy + x * sx] == v;
  if (up && across(y - 1, x)) join(-1, 0);
  if (connectivity == 1 || up) return;
  if (x > 0 && across(y - 1, x - 1) && image[(y - 1) * sy + (x - 1) * sx] == v) join(-1, -1);
  if (x + 1 < width && across(y - 1, x + 1) && image[(y - 1) * sy + (x + 1) * sx] == v)
    join(-1, 1);
}

// Which pixels of a 2-D tile have an earlier neighbour in another tile: the first row, the first
// column, and with 8-connectivity the last column (its up-right neighbour).  The border pass
// visits cc_border_count slots; slot s is pixel cc_border_pixel(s) of the tile.  A one-column
// tile lists its column once.
SUPERCL_HD int cc_border_count(const CcTile& t, int connectivity) {
  const int columns = (connectivity == 2 && t.w > 1) ? 2 : 1;
  return t.w + (t.h - 1) * columns;
}

SUPERCL_HD void cc_border_pixel(const CcTile& t, int s, int& ly, int& lx) {
  if (s < t.w) {
    ly = 0;
    lx = s;
    return;
  }
  s -= t.w;
  ly = 1 + s % (t.h - 1);
  lx = s < t.h - 1 ? 0 : t.w - 1;
}

// Whether voxel (lz, ly, lx) of a 3-D tile can have an earlier neighbour (of `connectivity`) in
// another tile of the volume: it lies on the tile's first z, y or x face (with a tile before it),
// or, when diagonal offsets count (connectivity >= 2), on its last y or x face with a tile after.
SUPERCL_HD bool cc3_on_border(const CcTile& t, int64_t height, int64_t width, int lz, int ly,
                              int lx, int connectivity) {
  if ((lz == 0 && t.z0 > 0) || (ly == 0 && t.y0 > 0) || (lx == 0 && t.x0 > 0)) return true;
  if (connectivity == 1) return false;
  return (ly == t.h - 1 && t.y0 + t.h < height) || (lx == t.w - 1 && t.x0 + t.w < width);
}

// The 3-D border pass's slots: the tile's whole first plane (lz = 0), then, for each later plane,
// its ring: rows ly = 0 and ly = h - 1 in full, then voxels lx = 0 and lx = w - 1 of the rows
// between.  Every voxel that cc3_on_border can accept is listed once (in an inner 8 x 8 x 32 tile
// 256 + 7 * 76 = 788 slots, exactly its border voxels with 26-connectivity); the pass still
// filters by cc3_on_border (tiles at the volume's edges, 6-connectivity).  Why: a flat loop over
// all 2048 voxels gave each 32-voxel row of the tile's interior planes one warp with 2 active lanes
// (the row's two end voxels), so 64 warps per tile, each waiting on dependent L2 loads, did the
// work of ~25 full ones; the border pass is latency-bound, so ~2.5x fewer warps per tile.
SUPERCL_HD int cc3_ring(const CcTile& t) {
  if (t.h == 1) return t.w;
  return 2 * t.w + (t.h - 2) * (t.w == 1 ? 1 : 2);
}

SUPERCL_HD int cc3_border_count(const CcTile& t) { return t.h * t.w + (t.d - 1) * cc3_ring(t); }

SUPERCL_HD void cc3_border_voxel(const CcTile& t, int s, int& lz, int& ly, int& lx) {
  const int plane = t.h * t.w;
  if (s < plane) {
    lz = 0;
    ly = s / t.w;
    lx = s % t.w;
    return;
  }
  s -= plane;
  const int ring = cc3_ring(t);
  lz = 1 + s / ring;
  s %= ring;
  if (t.h == 1) {
    ly = 0;
    lx = s;
  } else if (s < 2 * t.w) {
    ly = s < t.w ? 0 : t.h - 1;
    lx = s % t.w;
  } else if (t.w == 1) {
    ly = 1 + (s - 2);
    lx = 0;
  } else {
    s -= 2 * t.w;
    ly = 1 + s / 2;
    lx = s % 2 == 0 ? 0 : t.w - 1;
  }
}

// Steps 1 and 2 in 3-D for voxel (z, y, x) of a volume with element strides (sz, sy, sx), H x W
// per slice: union with its earlier neighbours of equal value, pruned, through cc_union_split.
// With tile extents (td, th, tw) > 0 (the border pass) only the pairs that cross a tile border
// are unioned; with 0 (the tile pass, on the tile's shared copy taken as a volume) all of them.
// Pruning, the 2-D rule of cc_merge_pixel_across applied to each earlier row: the 13 earlier
// offsets are the x-pair (0, 0, -1) and four rows (dz, dy) = (0, -1), (-1, -1), (-1, 0), (-1, 1)
// of up to three voxels (dz, dy, -1), (dz, dy, 0), (dz, dy, +1).  When the row's centre N equals
// the voxel v, its sides M are skipped: M -- N is an x-pair, and x-pairs are never pruned, so
// every equal x-pair is unioned by one of the passes (inside a tile by the tile pass; across a
// border by the border pass of the later voxel, which is on its tile's first x face), and v -- N
// is unioned (here, or by the tile pass when the border pass sees N in v's tile).  So M is joined
// to v whenever it is equal to v and N is.  The sides are neighbours only where the centre is (it
// has fewer non-zero coordinates), so a row whose centre is no neighbour is skipped whole.
// Effect: in a region of one value with 26-connectivity, 5 unions per voxel instead of 13 (4 + 1
// with 18-connectivity instead of 9); the tile pass of all-foreground maps (supervoxels) and the
// border pass of big blobs did mostly redundant unions, each two finds and an atomic.
template <typename T>
SUPERCL_HD void cc3_merge_voxel_pruned(const T* volume, int64_t sz, int64_t sy, int64_t sx,
                                       int64_t height, int64_t width, int64_t z, int64_t y,
                                       int64_t x, int connectivity, bool has_background,
                                       T background, int32_t* parent, int td = 0, int th = 0,
                                       int tw = 0) {
  const T v = volume[z * sz + y * sy + x * sx];
  if (cc_is_background(v, has_background, background)) return;
  const int32_t i = static_cast<int32_t>((z * height + y) * width + x);
  // Whether the pair with the neighbour at this offset is left to the other pass.
  const auto skip = [&](int dz, int dy, int dx) {
    if (td == 0) return false;
    return (z + dz) / td == z / td && (y + dy) / th == y / th && (x + dx) / tw == x / tw;
  };
  const auto join = [&](int dz, int dy, int dx) {
    cc_union_split(parent, i, static_cast<int32_t>(i + (dz * height + dy) * width + dx));
  };
  if (x > 0 && !skip(0, 0, -1) && volume[z * sz + y * sy + (x - 1) * sx] == v) join(0, 0, -1);
  for (int row = 0; row < 4; ++row) {
    const int dz = row == 0 ? 0 : -1, dy = row == 0 ? -1 : row - 2;
    if (z + dz < 0 || y + dy < 0 || y + dy >= height) continue;
    if (!cc3_is_neighbour(dz, dy, 0, connectivity)) continue;
    const T* line = volume + (z + dz) * sz + (y + dy) * sy;
    if (line[x * sx] == v) {
      if (!skip(dz, dy, 0)) join(dz, dy, 0);
      continue;  // the sides are joined to the centre by x-pairs
    }
    if (!cc3_is_neighbour(dz, dy, 1, connectivity)) continue;
    if (x > 0 && !skip(dz, dy, -1) && line[(x - 1) * sx] == v) join(dz, dy, -1);
    if (x + 1 < width && !skip(dz, dy, 1) && line[(x + 1) * sx] == v) join(dz, dy, 1);
  }
}

// Step 3 for pixel i of one image's forest, all merges done: compress i and the path it walked
// to the root (each node on it gets the root, whichever thread stores it), and return i's root
// flag (1 where i is the first pixel of its component).  Background (-1) gives 0.
SUPERCL_HD int32_t cc_compress_root_flag(int32_t* parent, int64_t i) {
  int32_t p = sc_load(parent + i);
  if (p < 0) return 0;
  const int32_t root = cc_find(parent, p);
  if (p != root) {
    sc_store(parent + i, root);
    while (p != root) {  // the nodes between i and the root: tile roots linked by the borders
      const int32_t next = sc_load(parent + p);
      if (next != root) sc_store(parent + p, root);
      p = next;
    }
  }
  return root == static_cast<int32_t>(i) ? 1 : 0;
}

// Segments of the roots and gather passes: kCcSegment consecutive nodes of one image's flat
// forest (the last of an image clipped).  Segment s (0 <= s < batch * per_image, per_image =
// ceil(size / kCcSegment)) is nodes [start, start + n) of image b.
constexpr int kCcSegment = 2048;

struct CcSegment {
  int64_t b, start;
  int n;
};

SUPERCL_HD CcSegment cc_segment(int64_t s, int64_t per_image, int64_t size) {
  CcSegment g;
  g.b = s / per_image;
  g.start = (s - g.b * per_image) * kCcSegment;
  g.n = static_cast<int>(size - g.start < kCcSegment ? size - g.start : kCcSegment);
  return g;
}

// Step 4 on the GPU: the flags are scanned (inclusive, int32) over chunks of `step` whole images
// of `size` pixels, flat, so that a chunk's running count stays below 2**31 and each scan is one
// device-wide scan rather than one block per image.  Image b's numbers are the running counts
// less this offset: the count at the end of the previous image of its chunk, 0 for a chunk's
// first image.
SUPERCL_HD int32_t cc_rank_offset(const int32_t* rank, int64_t b, int64_t size, int64_t step) {
  return b % step == 0 ? 0 : rank[b * size - 1];
}

}  // namespace supercl
