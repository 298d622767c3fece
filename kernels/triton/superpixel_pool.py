"""Triton kernels of superpixel pooling: the segment sum of a feature map over superpixel ids
(forward of ``superpixel_pool`` / ``superpixel_mean_map``, backward of ``superpixel_unpool``)
and the paint-back that gives every pixel its segment's value (forward of ``superpixel_unpool``,
backward of ``superpixel_pool`` / ``superpixel_mean_map``).

For features x (B, C, H, W) and ids s (B, H, W) in [0, K):

    sums[b, k, c]  = sum_{p : s[b, p] = k} x[b, c, p]          counts[b, k] = #{p : s[b, p] = k}
    out[b, c, p]   = values[b, s[b, p], c]                      (paint)

**Segment sum as a one-hot matrix product.** A program takes BLOCK_P pixels of one image and
BLOCK_C channels, and for each block of BLOCK_K segment ids builds the one-hot tile
``onehot[k, p] = (s[p] == k)`` and computes ``onehot @ x_tile`` with ``tl.dot`` (tensor cores
on a GPU): (BLOCK_K, BLOCK_P) x (BLOCK_P, BLOCK_C).  The products are exact (one-hot entries
are 0 or 1) and accumulate in float32 (float64 for float64 input).  float32 features are split
exactly into three bfloat16 parts, x = hi + mid + lo (8 + 8 + 8 significant bits), so three
bf16 products give the float32 sum without TF32's 10-bit truncation; fp16 and bf16 features go
through one product in their own dtype.

Only the id blocks between the smallest and the largest id of the pixel block are visited.
Superpixel maps numbered in raster order (SLIC, connected components) are spatially compact,
so a block of consecutive pixels spans a few dozen ids and costs one or two products.  A block
whose ids span more than ``MAX_K_BLOCKS`` id blocks (scattered numbering) falls back to one
atomic per (pixel, channel), so the cost never exceeds that of a plain scatter.

**Contention.**  The atomic kernel issues one float atomic per (segment present in the pixel
block, channel), not one per pixel: a hot segment sees (its pixels / BLOCK_P) atomics per
channel instead of its pixel count.  Float atomics make the order of additions, and so the
last bits of the result, vary from run to run.

**Deterministic variant** (no float atomics): one program per (image, block of BLOCK_K ids,
block of channels) walks all pixel blocks of its image in order, skips those whose id range
misses its ids, and stores its sums once.  Same products, fixed order: bitwise reproducible.
It has fewer programs (B x ceil(K / BLOCK_K) x ceil(C / BLOCK_C)) and reads the ids
ceil(K / BLOCK_K) times, so it is the slower of the two.

**Limits and caveats.**  Offsets within one image are int32: C * H * W and K * C must stay
below 2**31 (the batch offset is int64).  The three-way split is exact for normal float32
values; parts that fall below bf16's normal range (|x| < ~1e-33) may be flushed by the tensor
cores.  Triton's interpreter (CPU tensors, TRITON_INTERPRET=1) multiplies bf16 tiles as their
raw bits, so on CPU tensors the launcher sets UPCAST and the products run in float32 on the
same (exact) operands: the interpreter checks the split and the indexing, not the bf16 MMA.
Block sizes are sensible defaults, not tuned on a GPU.

**Roofline.** Pooling and paint-back are memory-bound: fwd+bwd must read x once and write its
gradient once (2 B C H W f bytes, f = bytes per element) plus the ids (twice, 4 B each per
pixel); the (B, K, C) sums are small.  At B = 32, C = 64, 256^2 in float32 that is ~1.1 GB: 0.23
ms at an H200's 4.8 TB/s.  Measured on an H200 (benchmarks/results/gpu-h200.md): 1.25 ms fwd +
bwd, 18 % of HBM bandwidth, 3.7x index_add_.  Each program re-reads its pixel block's ids
per id block and runs three bf16 products per float32 tile; tuning BLOCK_P / BLOCK_C and
num_warps on a GPU is the first thing to try.

Reference: ``supercl.ops.superpixel_pool.superpixel_pool_reference`` (``index_add``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Pixel block whose ids span more id blocks than this switches to per-pixel atomics.
MAX_K_BLOCKS = 8
_INT32_MAX = tl.constexpr(2**31 - 1)

# MODE of the product (constexpr): one product in the input dtype with float32 accumulation
# (fp16, bf16), the exact three-way bfloat16 split of float32, or float64 throughout.
_DIRECT = 0
_BF16X3 = 1
_FP64 = 2


@triton.jit
def _load_ids(S, b, offs_p, W, N, K, stride_sb, stride_sh, stride_sw):
    """Ids of pixels ``offs_p`` of image ``b`` as int32; -1 for pixels past the end and for ids
    outside [0, K) (the public function rejects those; this keeps every access in bounds)."""
    pmask = offs_p < N
    h = offs_p // W
    w = offs_p % W
    ids = tl.load(S + b * stride_sb + h * stride_sh + w * stride_sw, mask=pmask, other=-1)
    ok = pmask & (ids >= 0) & (ids < K)
    return tl.where(ok, ids, -1).to(tl.int32), ok, h, w


@triton.jit
def _id_range(ids, ok):
    """Smallest and largest valid id of a block (INT32_MAX and -1 when none is valid)."""
    lo = tl.min(tl.where(ok, ids, _INT32_MAX), axis=0)
    hi = tl.max(tl.where(ok, ids, -1), axis=0)
    return lo, hi


@triton.jit
def _load_tile(X, b, h, w, offs_c, ok, C, stride_xb, stride_xc, stride_xh, stride_xw):
    """(BLOCK_P, BLOCK_C) tile of x; zero for invalid pixels and channels past C."""
    cmask = offs_c < C
    ptrs = (X + b * stride_xb + offs_c[None, :] * stride_xc
            + h[:, None] * stride_xh + w[:, None] * stride_xw)
    return tl.load(ptrs, mask=ok[:, None] & cmask[None, :], other=0.0)


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
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_p = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    pid_c = tl.program_id(2)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = offs_c < C
    ids, ok, h, w = _load_ids(S, b, offs_p, W, N, K, stride_sb, stride_sh, stride_sw)
    lo_id, hi_id = _id_range(ids, ok)
    x = _load_tile(X, b, h, w, offs_c, ok, C, stride_xb, stride_xc, stride_xh, stride_xw)
    sums = SUMS + b * K * C
    counts = COUNTS + b * K
    first = (lo_id // BLOCK_K) * BLOCK_K
    if hi_id // BLOCK_K - lo_id // BLOCK_K < MAX_K_BLOCKS:
        xh, xm, xl = _split(x, MODE)
        for k0 in range(first, hi_id + 1, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            part, count = _onehot_dot(ids, ks, xh, xm, xl, MODE, ACC, UPCAST, BLOCK_K, BLOCK_C)
            present = count > 0                            # absent ids: no atomic at all
            tl.atomic_add(sums + ks[:, None] * C + offs_c[None, :], part,
                          mask=present[:, None] & cmask[None, :], sem="relaxed")
            if pid_c == 0:
                tl.atomic_add(counts + ks, count, mask=present, sem="relaxed")
    else:
        # Scattered ids: a plain scatter is cheaper than visiting every id block between.
        tl.atomic_add(sums + ids[:, None] * C + offs_c[None, :], x.to(ACC),
                      mask=ok[:, None] & cmask[None, :], sem="relaxed")
        if pid_c == 0:
            tl.atomic_add(counts + ids, tl.full(ids.shape, 1, tl.int32), mask=ok, sem="relaxed")


@triton.jit
def _segment_sum_ordered_kernel(
    X, S, SUMS, COUNTS, C, W, N, K,
    stride_xb, stride_xc, stride_xh, stride_xw, stride_sb, stride_sh, stride_sw,
    MODE: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr,
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
    total = tl.zeros((BLOCK_K,), dtype=tl.int32)
    for p0 in range(0, N, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        ids, ok, h, w = _load_ids(S, b, offs_p, W, N, K, stride_sb, stride_sh, stride_sw)
        lo_id, hi_id = _id_range(ids, ok)
        if (hi_id >= k_first) & (lo_id < k_first + BLOCK_K):
            x = _load_tile(X, b, h, w, offs_c, ok, C, stride_xb, stride_xc, stride_xh,
                           stride_xw)
            xh, xm, xl = _split(x, MODE)
            part, count = _onehot_dot(ids, ks, xh, xm, xl, MODE, ACC, UPCAST, BLOCK_K, BLOCK_C)
            acc += part
            total += count
    kmask = ks < K
    tl.store(SUMS + b * K * C + ks[:, None] * C + offs_c[None, :], acc,
             mask=kmask[:, None] & cmask[None, :])
    if pid_c == 0:
        tl.store(COUNTS + b * K + ks, total, mask=kmask)


@triton.jit
def _paint_kernel(
    V, S, OUT, C, W, N, K,
    stride_vb, stride_vk, stride_vc, stride_sb, stride_sh, stride_sw,
    stride_ob, stride_oc, stride_oh, stride_ow,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid_p = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    pid_c = tl.program_id(2)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = offs_c < C
    ids, ok, h, w = _load_ids(S, b, offs_p, W, N, K, stride_sb, stride_sh, stride_sw)
    v = tl.load(V + b * stride_vb + ids[:, None] * stride_vk + offs_c[None, :] * stride_vc,
                mask=ok[:, None] & cmask[None, :], other=0.0)
    pmask = offs_p < N
    tl.store(OUT + b * stride_ob + offs_c[None, :] * stride_oc + h[:, None] * stride_oh
             + w[:, None] * stride_ow, v.to(OUT.dtype.element_ty),
             mask=pmask[:, None] & cmask[None, :])


_ACC = {torch.float64: tl.float64}
_MODE = {torch.float32: _BF16X3, torch.float64: _FP64}


def _block_c(channels: int) -> int:
    # tl.dot needs every tile side >= 16.
    return max(16, min(64, triton.next_power_of_2(channels)))


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
    counts : (B, K) int32, contiguous.
    """
    batch, channels, height, width = x.shape
    n = height * width
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    block_p, block_k, block_c = 64, 32, _block_c(channels)
    # Triton's interpreter (CPU tensors) multiplies bf16 tiles as their raw bits.
    upcast = x.device.type != "cuda"
    meta = dict(MODE=_MODE.get(x.dtype, _DIRECT), ACC=_ACC.get(x.dtype, tl.float32),
                UPCAST=upcast,
                BLOCK_P=block_p, BLOCK_C=block_c, BLOCK_K=block_k)
    args_strides = (*x.stride(), *segments.stride())
    if deterministic:
        sums = torch.empty(batch, num_segments, channels, device=x.device, dtype=acc_dtype)
        counts = torch.empty(batch, num_segments, device=x.device, dtype=torch.int32)
        grid = (triton.cdiv(num_segments, block_k), batch, triton.cdiv(channels, block_c))
        _segment_sum_ordered_kernel[grid](x, segments, sums, counts, channels, width, n,
                                          num_segments, *args_strides, **meta)
    else:
        sums = torch.zeros(batch, num_segments, channels, device=x.device, dtype=acc_dtype)
        counts = torch.zeros(batch, num_segments, device=x.device, dtype=torch.int32)
        grid = (triton.cdiv(n, block_p), batch, triton.cdiv(channels, block_c))
        _segment_sum_atomic_kernel[grid](x, segments, sums, counts, channels, width, n,
                                         num_segments, *args_strides,
                                         MAX_K_BLOCKS=MAX_K_BLOCKS, **meta)
    return sums, counts


def paint(values: torch.Tensor, segments: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """Every pixel takes its segment's value: ``out[b, c, h, w] = values[b, segments[b, h, w], c]``.

    Parameters
    ----------
    values : (B, K, C) any float dtype, any strides.
    segments : (B, H, W) int32 or int64, any strides; pixels with ids outside [0, K) get 0.
    out_dtype : dtype of the result (values are cast on store).

    Returns
    -------
    out : (B, C, H, W) ``out_dtype``, contiguous.
    """
    batch, num_segments, channels = values.shape
    _, height, width = segments.shape
    n = height * width
    out = torch.empty(batch, channels, height, width, device=values.device, dtype=out_dtype)
    block_p, block_c = 64, _block_c(channels)
    grid = (triton.cdiv(n, block_p), batch, triton.cdiv(channels, block_c))
    _paint_kernel[grid](values, segments, out, channels, width, n, num_segments,
                        *values.stride(), *segments.stride(), *out.stride(),
                        BLOCK_P=block_p, BLOCK_C=block_c)
    return out
