"""Triton kernels of superpixel pooling: the segment sum of a feature map over superpixel ids
(forward of ``superpixel_pool`` / ``superpixel_mean_map``, backward of ``superpixel_unpool``)
and the paint-back that gives every pixel its segment's value (forward of ``superpixel_unpool``,
backward of ``superpixel_pool`` / ``superpixel_mean_map``).

For features x (B, C, H, W) and ids s (B, H, W) in [0, K):

    sums[b, k, c]  = sum_{p : s[b, p] = k} x[b, c, p]          counts[b, k] = #{p : s[b, p] = k}
    out[b, c, p]   = values[b, s[b, p], c] (/ max(counts[b, s[b, p]], 1) when given)   (paint)

**Segment sum as a one-hot matrix product.** A program takes BLOCK_P consecutive pixels of one
image and BLOCK_C channels, and for each window of BLOCK_K segment ids builds the one-hot tile
``onehot[k, p] = (s[p] == k)`` and computes ``onehot @ x_tile`` with ``tl.dot`` (tensor cores
on a GPU): (BLOCK_K, BLOCK_P) x (BLOCK_P, BLOCK_C).  The products are exact (one-hot entries
are 0 or 1) and accumulate in float32 (float64 for float64 input).  float32 features are split
exactly into three bfloat16 parts, x = hi + mid + lo (8 + 8 + 8 significant bits), so three
bf16 products give the float32 sum without TF32's 10-bit truncation; fp16 and bf16 features go
through one product in their own dtype.  This is the per-block reduction before the global
atomics: one atomic per (segment present in the block, channel), not one per pixel.

The id windows start at the block's smallest id and stop at its largest.  Superpixel maps
numbered in raster order (SLIC, connected components) are spatially compact, so a block of
one or two image rows spans 10-30 ids at K ~ 100 on 256^2 and costs one window.  A block whose
ids span more than ``MAX_K_BLOCKS`` windows (scattered numbering) falls back to one atomic per
(pixel, channel), so the cost never exceeds that of a plain scatter.  Float atomics make the
order of additions, and so the last bits of the result, vary from run to run.

**Deterministic variant** (no float atomics): one program per (image, block of BLOCK_K ids,
block of channels) walks all pixel blocks of its image in order, skips those whose id range
misses its ids, and stores its sums once.  Same products, fixed order: bitwise reproducible.
It has fewer programs (B x ceil(K / BLOCK_K) x ceil(C / BLOCK_C)) and reads the ids
ceil(K / BLOCK_K) times, so it is the slower of the two.

**Addressing.**  When a tensor's pixels form one strided axis (stride_h == W * stride_w: any
contiguous or channels_last layout, and channel slices of them), the launcher sets FLAT_* and
a pixel's offset is ``p * stride_w``; Triton specialises a stride of 1, proves the pixel axis
contiguous and issues 16-byte vector loads and stores.  Other views (transposed H and W) take
``(p // W) * stride_h + (p % W) * stride_w``: correct, still coalesced across a warp, but
scalar.  The paint writes a fresh contiguous (B, C, H, W) tensor, always flat.

**Block sizes** (``_blocks``): tiles of 32 KB of features (TILE_BYTES), BLOCK_C =
min(64, next_pow2(C)) (>= 16 for tl.dot), BLOCK_P = 32 KB / (BLOCK_C * itemsize) clamped to
[64, 512]: fp32 at C = 64 gives 128 x 64, fp16/bf16 256 x 64, fp64 64 x 64, and C <= 16 (the
ASP map has C = 1) 512 pixels.  Why 32 KB and 4 warps (128 threads): a 128 x 64 fp32 tile is 64
registers per thread; its three bf16 parts go to shared memory as the dot's operand, the
one-hot tile (32 x 128 bf16) is 16 registers and the (32, 64) fp32 accumulator 16.  The sm_90
build (Triton 3.9, cuobjdump) has 130 registers, no spills and 56 KB of shared memory: three
programs per SM (3 x 130 x 128 = 50 K of 64 K registers, 168 of 228 KB shared), 96 KB of loads
in flight per SM, 12.7 MB on 132 SMs, well above the ~3.4-5 MB that Little's law asks of HBM
(4.8 TB/s x ~0.7-1 us latency).  bf16: 175 registers, two programs, 64 KB in flight; the paint:
120 registers, 32 KB shared, four programs.  A 1024 x 32 fp32 tile (128 KB = 32 K values)
would be 256 registers per thread for the tile alone at 4 warps (over the 255 limit: spills)
and 128 at 8 warps, leaving one program per SM with nothing to overlap its loads with its
products.  Grid: B * C * H * W / (BLOCK_P * BLOCK_C) programs, 16384 for 32 x 64 x 256^2 in
fp32: ~41 waves of 3 per SM, no tail effect.  The benchmark's SLIC labels (K = 90) span 14 ids
per 128-pixel block on average (p99 40, max 56): one id window for 97 % of the blocks, never
the scatter fallback, and 6.4 segments present, so one atomic per 20 feature values.

**Roofline.**  Pooling and paint-back are memory-bound.  Bytes moved by fwd + bwd of
``superpixel_pool``: features read once by the segment sum, their gradient written once by the
paint (2 B C H W f, f = bytes per element), the ids read ceil(C / BLOCK_C) times by each of the
two kernels (once at C <= 64: 2 B H W s), and the (B, K, C) tables (sums: one atomic per
(present segment, channel) per block, about C / 20 per pixel at K = 100, L2-resident; the
paint's gathers hit L1/L2).  At B = 32, C = 64, 256^2, K = 100, float32, int32 ids that is
2 x 537 MB + 2 x 8.4 MB = 1.09 GB: 0.23 ms at an H200's 4.8 TB/s, ~0.26 ms at the ~88 % that
streaming kernels reach; the benchmark's ``bytes_moved`` counts the same.  FLOPs are no limit:
3 bf16 products x 2 x BLOCK_K = 192 tensor-core FLOPs per fp32 element, 26 GFLOP, ~50 us on
mma.sync (m16n8k16; BLOCK_K = 32 rows is below wgmma's 64), overlapped with the loads of the
other programs on the SM.  Measured on an H200 before this layout (64 x 64 tiles, a load mask
that depended on the ids and so made every feature load a scalar ld.global.b32, div/mod
addressing, id windows aligned to multiples of BLOCK_K, four small torch kernels around the
paint): 1.17 ms fwd + bwd, 19 % of HBM.  Expected now: ~0.26 ms of kernels plus the host's
launches (custom ops, autograd, the id-range check), which the timed round also holds.  The
figure is for the GPU run to give (benchmarks/results/gpu-h200.md,
group superpixel_pool-cuda-32x64x256x256).

**Limits and caveats.**  Offsets within one image are int32: C * H * W and K * C must stay
below 2**31 (the batch offset is int64).  The three-way split is exact for normal float32
values; parts that fall below bf16's normal range (|x| < ~1e-33) may be flushed by the tensor
cores.  Triton's interpreter (CPU tensors, TRITON_INTERPRET=1) multiplies bf16 tiles as their
raw bits, so on CPU tensors the launcher sets UPCAST and the products run in float32 on the
same (exact) operands: the interpreter checks the split and the indexing, not the bf16 MMA.
Non-finite features: in the one-hot product 0 x NaN = 0 x inf = NaN, so a NaN or infinite
value makes NaN the sums of every segment present in its pixel block (a few neighbours), where
``index_add`` confines it to its own segment; finite inputs are unaffected.
The paint's division is ``div_rn`` (IEEE round-to-nearest, as torch divides), not Triton's
default approximate fp32 division, so the fused paint equals torch's ``(v / n).to(dtype)``.

Reference: ``supercl.ops.superpixel_pool.superpixel_pool_reference`` (``index_add``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Pixel block whose ids span more id windows than this switches to per-pixel atomics.
MAX_K_BLOCKS = 8
# Bytes of features per program's tile, and the bounds of its pixel side (see the header).
TILE_BYTES = 32 * 1024
MIN_BLOCK_P, MAX_BLOCK_P = 64, 512
BLOCK_K = 32
NUM_WARPS = 4
_INT32_MAX = tl.constexpr(2**31 - 1)

# MODE of the product (constexpr): one product in the input dtype with float32 accumulation
# (fp16, bf16), the exact three-way bfloat16 split of float32, or float64 throughout.
_DIRECT = 0
_BF16X3 = 1
_FP64 = 2


@triton.jit
def _pixel_offsets(offs_p, W, stride_h, stride_w, FLAT: tl.constexpr):
    """Element offsets of pixels ``offs_p`` (raster order) in an (H, W) plane: one strided axis
    when FLAT (stride_h == W * stride_w, so Triton sees the contiguity), else via row/column."""
    if FLAT:
        return offs_p * stride_w
    else:
        return (offs_p // W) * stride_h + (offs_p % W) * stride_w


@triton.jit
def _load_ids(S, offs_p, W, N, K, stride_sh, stride_sw, FLAT_S: tl.constexpr):
    """Ids of pixels ``offs_p`` of one image (S points at it) as int32; -1 for pixels past the
    end and for ids outside [0, K) (the public function rejects those; this keeps every access
    in bounds)."""
    pmask = offs_p < N
    ids = tl.load(S + _pixel_offsets(offs_p, W, stride_sh, stride_sw, FLAT_S), mask=pmask,
                  other=-1)
    ok = pmask & (ids >= 0) & (ids < K)
    return tl.where(ok, ids, -1).to(tl.int32), ok


@triton.jit
def _id_range(ids, ok):
    """Smallest and largest valid id of a block (INT32_MAX and -1 when none is valid)."""
    lo = tl.min(tl.where(ok, ids, _INT32_MAX), axis=0)
    hi = tl.max(tl.where(ok, ids, -1), axis=0)
    return lo, hi


@triton.jit
def _load_tile(X, offs_p, offs_c, ok, C, W, N, stride_xc, stride_xh, stride_xw,
               FLAT_X: tl.constexpr):
    """(BLOCK_P, BLOCK_C) tile of one image's x (X points at it); zero for invalid pixels and
    channels past C.  The load's mask is only (pixel < N, channel < C): Triton vectorises a
    load only where the mask is constant over the vector, and a mask that depends on the ids
    (``ok``) would make every access scalar (seen in the sm_90 PTX: ld.global.b32).  Pixels
    with invalid ids are zeroed after the load instead (a NaN there would poison the one-hot
    product: 0 * NaN = NaN); the public functions reject such ids anyway."""
    pmask = offs_p < N
    cmask = offs_c < C
    pix = _pixel_offsets(offs_p, W, stride_xh, stride_xw, FLAT_X)
    ptrs = X + offs_c[None, :] * stride_xc + pix[:, None]
    x = tl.load(ptrs, mask=pmask[:, None] & cmask[None, :], other=0.0)
    return tl.where(ok[:, None], x, 0.0)


@triton.jit
def _split(x, MODE: tl.constexpr):
    """(hi, mid, lo) with hi + mid + lo == x exactly: bf16 parts of float32 (BF16X3), or
    x itself three times, of which only the first is used (DIRECT, FP64)."""
    if MODE == 1:
        hi = x.to(tl.bfloat16)
        r = x - hi.to(tl.float32)          # exact: hi is x rounded to 8 bits
        mid = r.to(tl.bfloat16)
        lo = (r - mid.to(tl.float32)).to(tl.bfloat16)  # the remaining <= 8 bits, exact
        return hi, mid, lo
    else:
        return x, x, x


@triton.jit
def _dot(onehot, x, acc, UPCAST: tl.constexpr):
    """acc + onehot @ x in float32, on tensor cores in x's dtype (bf16 or fp16).  UPCAST
    multiplies as float32 instead (the same exact products), for Triton's interpreter, which
    treats bf16 tiles as their raw uint16 bits in dot and in casts from int1."""
    if UPCAST:
        return tl.dot(onehot.to(tl.float32), x.to(tl.float32), acc, input_precision="ieee",
                      out_dtype=tl.float32)
    else:
        return tl.dot(onehot.to(x.dtype), x, acc, out_dtype=tl.float32)


@triton.jit
def _onehot_dot(ids, ks, hi, mid, lo, MODE: tl.constexpr, ACC: tl.constexpr,
                UPCAST: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr):
    """onehot(ks, ids) @ x as (BLOCK_K, BLOCK_C) in ACC, and the per-id counts (BLOCK_K,)."""
    hit = ks[:, None] == ids[None, :]                      # (BLOCK_K, BLOCK_P)
    count = tl.sum(hit.to(tl.int32), axis=1)
    if MODE == 2:
        part = tl.dot(hit.to(tl.float64), hi, out_dtype=tl.float64)
    else:
        part = tl.zeros((BLOCK_K, BLOCK_C), dtype=tl.float32)
        if MODE == 1:
            part = _dot(hit, lo, part, UPCAST)             # smallest part first
            part = _dot(hit, mid, part, UPCAST)
        part = _dot(hit, hi, part, UPCAST)
    return part.to(ACC), count


@triton.jit
def _segment_sum_atomic_kernel(
    X, S, SUMS, COUNTS, C, W, N, K,
    stride_xb, stride_xc, stride_xh, stride_xw, stride_sb, stride_sh, stride_sw,
    MODE: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr, MAX_K_BLOCKS: tl.constexpr,
    FLAT_X: tl.constexpr, FLAT_S: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # Program (pixel block, image, channel block); pixel blocks vary fastest, so neighbouring
    # programs add into the same few segments' rows while those are hot in L2.
    pid_p = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    pid_c = tl.program_id(2)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = offs_c < C
    ids, ok = _load_ids(S + b * stride_sb, offs_p, W, N, K, stride_sh, stride_sw, FLAT_S)
    lo_id, hi_id = _id_range(ids, ok)
    # Issue the whole tile's loads before any reduction: 32 KB in flight per program.
    x = _load_tile(X + b * stride_xb, offs_p, offs_c, ok, C, W, N, stride_xc, stride_xh,
                   stride_xw, FLAT_X)
    sums = SUMS + b * K * C
    counts = COUNTS + b * K
    # (No valid id: lo = INT32_MAX, hi = -1, the difference is INT32_MIN and the loop empty.)
    if hi_id - lo_id < MAX_K_BLOCKS * BLOCK_K:
        xh, xm, xl = _split(x, MODE)
        # Windows start at the block's own smallest id (not a multiple of BLOCK_K): a span of
        # up to BLOCK_K ids is one window wherever it lies.
        for k0 in range(lo_id, hi_id + 1, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            part, count = _onehot_dot(ids, ks, xh, xm, xl, MODE, ACC, UPCAST, BLOCK_K, BLOCK_C)
            present = count > 0                            # absent ids (and ks >= K): no atomic
            tl.atomic_add(sums + ks[:, None] * C + offs_c[None, :], part,
                          mask=present[:, None] & cmask[None, :], sem="relaxed")
            if pid_c == 0:
                tl.atomic_add(counts + ks, count.to(tl.int64), mask=present, sem="relaxed")
    else:
        # Scattered ids: a plain scatter is cheaper than visiting every id window between.
        tl.atomic_add(sums + ids[:, None] * C + offs_c[None, :], x.to(ACC),
                      mask=ok[:, None] & cmask[None, :], sem="relaxed")
        if pid_c == 0:
            tl.atomic_add(counts + ids, tl.full(ids.shape, 1, tl.int64), mask=ok, sem="relaxed")


@triton.jit
def _segment_sum_ordered_kernel(
    X, S, SUMS, COUNTS, C, W, N, K,
    stride_xb, stride_xc, stride_xh, stride_xw, stride_sb, stride_sh, stride_sw,
    MODE: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr,
    FLAT_X: tl.constexpr, FLAT_S: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_k = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    pid_c = tl.program_id(2)
    k_first = pid_k * BLOCK_K
    ks = k_first + tl.arange(0, BLOCK_K)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = offs_c < C
    acc = tl.zeros((BLOCK_K, BLOCK_C), dtype=ACC)
    total = tl.zeros((BLOCK_K,), dtype=tl.int64)
    for p0 in range(0, N, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        ids, ok = _load_ids(S + b * stride_sb, offs_p, W, N, K, stride_sh, stride_sw, FLAT_S)
        lo_id, hi_id = _id_range(ids, ok)
        if (hi_id >= k_first) & (lo_id < k_first + BLOCK_K):
            x = _load_tile(X + b * stride_xb, offs_p, offs_c, ok, C, W, N, stride_xc,
                           stride_xh, stride_xw, FLAT_X)
            xh, xm, xl = _split(x, MODE)
            part, count = _onehot_dot(ids, ks, xh, xm, xl, MODE, ACC, UPCAST, BLOCK_K, BLOCK_C)
            acc += part
            total += count.to(tl.int64)
    kmask = ks < K
    tl.store(SUMS + b * K * C + ks[:, None] * C + offs_c[None, :], acc,
             mask=kmask[:, None] & cmask[None, :])
    if pid_c == 0:
        tl.store(COUNTS + b * K + ks, total, mask=kmask)


@triton.jit
def _paint_kernel(
    V, S, COUNTS, OUT, C, W, N, K,
    stride_vb, stride_vk, stride_vc, stride_sb, stride_sh, stride_sw,
    ACC: tl.constexpr, DIVIDE: tl.constexpr, FLAT_S: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # OUT is a fresh contiguous (B, C, H, W): pixel offsets are flat and the stores 16-byte
    # vectors along the pixel axis.  The (B, K, C) table is tiny and stays in L1/L2.
    pid_p = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    pid_c = tl.program_id(2)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = offs_c < C
    ids, ok = _load_ids(S + b * stride_sb, offs_p, W, N, K, stride_sh, stride_sw, FLAT_S)
    v = tl.load(V + b * stride_vb + ids[:, None] * stride_vk + offs_c[None, :] * stride_vc,
                mask=ok[:, None] & cmask[None, :], other=0.0)
    if DIVIDE:
        # values / max(count, 1) in ACC, rounded to nearest like torch's division.
        n = tl.maximum(tl.load(COUNTS + b * K + ids, mask=ok, other=1), 1).to(ACC)[:, None]
        if ACC == tl.float64:
            v = v.to(ACC) / n                    # float64 division is IEEE (div.rn.f64)
        else:
            v = tl.math.div_rn(v.to(ACC), n)     # not the default approximate div.full.f32
    pmask = offs_p < N
    tl.store(OUT + b * C * N + offs_c[None, :] * N + offs_p[:, None],
             v.to(OUT.dtype.element_ty), mask=pmask[:, None] & cmask[None, :])


_ACC = {torch.float64: tl.float64}
_MODE = {torch.float32: _BF16X3, torch.float64: _FP64}


def _blocks(channels: int, itemsize: int) -> tuple[int, int]:
    """(BLOCK_P, BLOCK_C): 32 KB feature tiles (reasons in the module docstring)."""
    block_c = max(16, min(64, triton.next_power_of_2(channels)))  # tl.dot: every side >= 16
    block_p = max(MIN_BLOCK_P, min(MAX_BLOCK_P, TILE_BYTES // (block_c * itemsize)))
    return block_p, block_c


def _is_flat(stride_h: int, stride_w: int, height: int, width: int) -> bool:
    """True when the (H, W) plane is one strided axis: pixel p at p * stride_w."""
    return height == 1 or stride_h == width * stride_w


def segment_sum(x: torch.Tensor, segments: torch.Tensor, num_segments: int,
                deterministic: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-segment sums and pixel counts.

    Parameters
    ----------
    x : (B, C, H, W) float16, bfloat16, float32 or float64, any strides.
    segments : (B, H, W) int32 or int64, any strides, ids in [0, num_segments); pixels with
        other ids are ignored.
    num_segments : K >= 1.
    deterministic : True for the ordered kernel (no float atomics, bitwise reproducible).

    Returns
    -------
    sums : (B, K, C) float32 (float64 for float64 ``x``), contiguous.
    counts : (B, K) int64, contiguous (the public functions' dtype: no conversion kernel).
    """
    batch, channels, height, width = x.shape
    n = height * width
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    block_p, block_c = _blocks(channels, x.element_size())
    # Triton's interpreter (CPU tensors) multiplies bf16 tiles as their raw bits.
    upcast = x.device.type != "cuda"
    meta = dict(MODE=_MODE.get(x.dtype, _DIRECT), ACC=_ACC.get(x.dtype, tl.float32),
                UPCAST=upcast,
                FLAT_X=_is_flat(x.stride(2), x.stride(3), height, width),
                FLAT_S=_is_flat(segments.stride(1), segments.stride(2), height, width),
                BLOCK_P=block_p, BLOCK_C=block_c, BLOCK_K=BLOCK_K, num_warps=NUM_WARPS)
    args_strides = (*x.stride(), *segments.stride())
    if deterministic:
        sums = torch.empty(batch, num_segments, channels, device=x.device, dtype=acc_dtype)
        counts = torch.empty(batch, num_segments, device=x.device, dtype=torch.int64)
        grid = (triton.cdiv(num_segments, BLOCK_K), batch, triton.cdiv(channels, block_c))
        _segment_sum_ordered_kernel[grid](x, segments, sums, counts, channels, width, n,
                                          num_segments, *args_strides, **meta)
    else:
        sums = torch.zeros(batch, num_segments, channels, device=x.device, dtype=acc_dtype)
        counts = torch.zeros(batch, num_segments, device=x.device, dtype=torch.int64)
        grid = (triton.cdiv(n, block_p), batch, triton.cdiv(channels, block_c))
        _segment_sum_atomic_kernel[grid](x, segments, sums, counts, channels, width, n,
                                         num_segments, *args_strides,
                                         MAX_K_BLOCKS=MAX_K_BLOCKS, **meta)
    return sums, counts


def paint(values: torch.Tensor, segments: torch.Tensor, out_dtype: torch.dtype,
          counts: torch.Tensor | None = None) -> torch.Tensor:
    """Every pixel takes its segment's value: ``out[b, c, h, w] = values[b, segments[b, h, w],
    c]``, divided by ``max(counts[b, segments[b, h, w]], 1)`` when ``counts`` is given.

    Parameters
    ----------
    values : (B, K, C) any float dtype, any strides.
    segments : (B, H, W) int32 or int64, any strides; pixels with ids outside [0, K) get 0.
    out_dtype : dtype of the result (values are cast on store).
    counts : optional (B, K) integer tensor, contiguous: the division happens in float32
        (float64 for float64 values), rounded to nearest, then the cast to ``out_dtype``, as
        ``(values.float() / counts.clamp_min(1)[..., None]).to(out_dtype)`` computes it.

    Returns
    -------
    out : (B, C, H, W) ``out_dtype``, contiguous.
    """
    batch, num_segments, channels = values.shape
    _, height, width = segments.shape
    n = height * width
    out = torch.empty(batch, channels, height, width, device=values.device, dtype=out_dtype)
    block_p, block_c = _blocks(channels, out.element_size())
    divide = counts is not None
    if divide:
        assert counts.shape == (batch, num_segments) and counts.is_contiguous()
    grid = (triton.cdiv(n, block_p), batch, triton.cdiv(channels, block_c))
    _paint_kernel[grid](values, segments, counts if divide else segments, out, channels, width,
                        n, num_segments, *values.stride(), *segments.stride(),
                        ACC=tl.float64 if values.dtype == torch.float64 else tl.float32,
                        DIVIDE=divide,
                        FLAT_S=_is_flat(segments.stride(1), segments.stride(2), height, width),
                        BLOCK_P=block_p, BLOCK_C=block_c, num_warps=NUM_WARPS)
    return out
