"""Triton kernels of the supervised contrastive loss: the whole loss per anchor in one forward
and one backward kernel (the log-sum-exp over the anchor's group, the positive term and their
gradient), or the log-sum-exp alone (the positions path, whose positives are not labels).

For anchors i and samples j, s_ij = z_i . z_j * scale (scale = 1 / temperature), and

    LSE_i = log sum_{j != i, g_j == g_i} exp(s_ij)            (-inf when the sum is empty)
    POS_i = sum_{j in P(i)} s_ij,  CNT_i = |P(i)|,  P(i) = {j != i, g_j == g_i, y_j == y_i}
    LOSS_i = ratio * (LSE_i - POS_i / CNT_i)                  (0 when CNT_i = 0)

with ratio = temperature / base_temperature.  POS and CNT cost nothing extra in memory
traffic: the forward already streams every score tile s_ij of i's group, and the labels of a
column tile are BLOCK_N integers.

Forward, FlashAttention-2 style (Dao 2023): a program owns BLOCK_M anchors, loads their rows of
Z ONCE (D <= 256: the whole row tile, as FA2 keeps Q) and streams the column tiles, one tl.dot
per tile; nothing of size N x N is stored.  The running maximum is FIXED when the caller
guarantees a bound on |s| (L2-normalised z: |s| <= scale): m = scale, no row maximum and no
rescaling per tile.  That is exact in float32 as long as every term exp(s - m) >= exp(-2 m) is
a normal number, i.e. 2 m log2(e) < 126: the launcher takes the fixed maximum only for
m <= 40 (temperature >= 0.025), else the online maximum.  Exponentials are exp2 of scores
pre-multiplied by scale * log2(e) (one FMA per element, as FA2 does).

Backward, with the upstream gradient c_i of LSE_i and P_ij = c_i exp(s_ij - LSE_i) on the same
support,

    dZ = (P + P^T) Z * scale.

The support is symmetric (j != i, same group) and so is s, so row i of P + P^T is

    W_ij = c_i exp(s_ij - LSE_i) + c_j exp(s_ij - LSE_j),

which a program owning rows i computes from its own score tile and the partners' LSE and c:
ONE deterministic pass, no float atomics, no transposed second pass.  For D <= 256 a program
owns all D columns of its rows: it loads its row tile once, and each partner tile once, for
both products (s = Z_own Z_p^T, then acc += W Z_p): no recomputation per D block.  (D > 256,
and the 3xTF32 backward beyond D = 128, fall back to a second grid axis over D blocks,
recomputing s per block: see _TILES.)

The positive term in the backward: with g_i the upstream gradient of LOSS_i, c_i = ratio g_i
and b_i = -c_i / CNT_i (both 0 where CNT_i = 0: the anchor is left out), dLOSS/ds_ij on the
support is c_i exp(s_ij - LSE_i) + b_i [y_i == y_j], and as the positive relation is symmetric
too, W gains [y_i == y_j] (b_i + b_j) on the support: the same one pass, with the partners'
labels, g and CNT loaded beside their LSE.  The kernel stores dZ in z's dtype.

Kernels per supcon_loss call, bf16, N = 16384, D = 128, labels, no groups, mean, fwd + bwd:
before this fusion 230 (measured, torch.profiler on an H200: 3.51 ms wall, 3.25 ms of host
time, the two Triton kernels 0.195 + 0.345 ms; _positive_sums' sorts, scatters, gathers and
their backward, the tile-range ops of both passes, the isfinite check with its host sync,
dtype conversions); after it, counted with a dispatch log on the CPU: forward 9 (norm,
clamp_min, div; this forward kernel; the mean's gt, sum, clamp, sum, div), backward 9-10
(the mean's div, this backward kernel, the 6 of the row normalisation's backward, ones_like
of .backward()), ~19 in all; groups add the 9 of tile_ranges (once per call, shared by both
passes).  Expected (unmeasured): GPU time ~0.6 ms (the two kernels, a few % slower than
before for the label compare and masked sums, plus ~15 small glue kernels of ~2-3 us) against
~0.4-0.5 ms of host time (~19 launches at ~10 us, two Triton launches and two custom-op
dispatches), so ~0.65-0.8 ms wall, no longer host-bound (target 1.5 ms).

Tile skipping: tile_ranges gives every TABLE_TILE (32) rows the range [first, end) of
32-column tiles whose group ranges can meet its own (prefix maximum / suffix minimum of the
column tiles' group ranges: no tile outside it can hold a pair of one group), once per call
and for both passes; a program of BLOCK_M rows takes the union of its BLOCK_M / 32 entries,
rounded out to its BLOCK_N columns.  For contiguous groups (one
image's pixels after another) that range is the block-diagonal band exactly; the loop has no
data-dependent branch, so Triton can software-pipeline its loads (num_stages).

Roofline, N anchors of dimension D, no groups (every tile), fwd + bwd:
- FLOPs: forward 2 N^2 D (s); backward 4 N^2 D (s again, and W Z).  6 N^2 D in all.
- exp: N^2 forward, 2 N^2 backward (MUFU ex2, 16/clk/SM: 132 SMs x 1.98 GHz = 4.2 T/s).
- bytes: every program streams all of Z (for the tiles it needs) once per pass:
  (N / BLOCK_M) x N D elements.  At N = 16384, D = 128: Z is 4 MB (bf16) / 8 MB (fp32), so the
  bf16 forward (BLOCK_M = 128) reads 128 x 4 MB = 0.5 GB and the bf16 backward and both fp32
  passes (BLOCK_M = 64) 256 x 4-8 MB = 1-2 GB, nearly all from L2 (Z fits in the 50 MB L2;
  HBM sees Z once).  Intensity: 2 BLOCK_M FLOPs per element read forward, 4 BLOCK_M backward,
  i.e. 128 FLOP/byte for bf16 and 32-64 for fp32: at ~5-7 TB/s of L2 bandwidth that allows
  ~650-900 TFLOP/s (bf16) and ~160-450 (fp32), above what the kernel can issue except for the
  TF32 forward (32 FLOP/byte: ~160-220 TFLOP/s of L2, near its own issue rate; BLOCK_M = 128
  would halve that traffic if a GPU run shows it bound).  Compute- and exp-bound otherwise,
  L2 a close second for bf16 (the reason not to go below BLOCK_M = 64 or 128).
- At N = 16384, D = 128: 6 N^2 D = 206 GFLOP, 3 N^2 = 0.8 G exp (0.19 ms at the MUFU rate).
  H200 dense tensor-core peaks (FLOP/s): bf16 ~990 T, TF32 ~495 T, 3xTF32 (three TF32 products
  per product) ~165 T effective; the elementwise work (mask, FMA, exp2, sum: ~6-10 instr per
  score) caps a FA2-style Triton kernel at ~40-60 % of the tensor-core peak (FA2 itself
  reaches ~35-50 % on H100).  Expected fwd+bwd: bf16 0.2 ms of MMA at peak + 0.2 ms of exp
  -> ~0.5-0.8 ms (forward alone ~0.15-0.3 ms); fp32 "high" (TF32) ~0.9-1.5 ms; fp32
  "highest" (3xTF32) ~2.5-4 ms.  Unmeasured (written without a GPU): the targets are 1.5 ms
  (bf16), 3 ms (TF32) and 8 ms (fp32 "highest"); before this version an H200 measured 3.7 ms
  (bf16; forward 1.17 ms) and 26.2 ms (fp32 IEEE).

Precision: products go through tl.dot with float32 accumulation.  bf16/fp16 tiles go to the
tensor cores in their own dtype (W is rounded to it for the second product, as torch's bf16
matmul would).  float32 follows torch's float32 matmul precision, like torch's own matmuls
(and so the dense reference):
- "high" / "medium": TF32 (tl.dot input_precision="tf32"; 10-bit mantissa products).
- "highest" (torch's default): 3xTF32 (input_precision="tf32x3"), NOT bit-identical IEEE fp32
  products but of the same accuracy class, on tensor cores.  Each operand is split
  a = hi + lo with hi = tf32(a), lo = tf32(a - hi); a.b = hi.hi + hi.lo + lo.hi, dropping
  lo.lo.  |a - hi| <= 2^-11 |a| and lo carries a - hi to 2^-11 of itself, so each product is
  off by at most ~3 x 2^-22 |a||b| (the hi.hi products are exact in the fp32 accumulator), and
  a D-term dot by at most ~3 x 2^-22 sum |a_k b_k| <= 7e-7 |z_i||z_j| -- against up to
  D x 2^-24 = 7.6e-6 relative for an IEEE fp32 dot of D = 128 terms accumulated in sequence.
  The float32 accumulation adds the same rounding as an IEEE dot; W Z in the backward obeys
  the same bound relative to sum |W_ij||z_j|.  At scale 10 that is <= 7e-6 in s and in LSE,
  ~1e-6 relative on a loss of ~5: within the 1e-5 relative the tests ask of float32.
  (Triton's interpreter ignores input_precision, so the CPU tests cannot see this;
  tests/test_supcon_loss.py emulates the split in torch and checks the bound against
  float64, and the GPU tests compare with float64.)  The CUDA-core IEEE path (~50-60 TFLOP/s
  at best: 206 GFLOP -> >= 3.5 ms) stays available: set _HIGHEST_PRECISION = "ieee" (it
  takes the 3xTF32 tiles).  float64 (interpreter only) is IEEE.

Reference: supercl.ops.supcon_loss.supcon_loss_reference (dense) and the chunked torch path.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_NEG_INF = tl.constexpr(float("-inf"))
_LOG2E = 1.4426950408889634

# tl.dot's input precision for float32 under torch's "highest": "tf32x3" (tensor cores, fp32
# accuracy class: see the module docstring) or "ieee" (CUDA-core FMA, bit-faithful fp32).
_HIGHEST_PRECISION = "tf32x3"
# The fixed maximum m = bound (see the docstring) is exact while exp(-2 m) is a normal float32:
# 2 m log2(e) < 126, m < 43.6; 40 leaves room for |z| = 1 + a few ulps of bf16 after
# normalisation (|s| <= m (1 + 2^-7)^2).
_FIXED_MAX_LIMIT = 40.0
# Column dimensions up to this are loaded whole (one row tile per program, all of D).
_RESIDENT_D = 256


@triton.jit
def _tile_scores(Z, rows, cols, rmask, cmask, D, stride_n, stride_d,
                 PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_D: tl.constexpr):
    """Z[rows] . Z[cols]^T, (BLOCK_M, BLOCK_N) float32, looping over D in BLOCK_D blocks and
    loading both sides each time: the path for D > _RESIDENT_D (and the 3xTF32 backward
    beyond D = 128; see _TILES)."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        dmask = d < D
        zi = tl.load(Z + rows[:, None] * stride_n + d[None, :] * stride_d,
                     mask=rmask[:, None] & dmask[None, :], other=0.0)
        zj = tl.load(Z + cols[:, None] * stride_n + d[None, :] * stride_d,
                     mask=cmask[:, None] & dmask[None, :], other=0.0)
        acc += tl.dot(zi, tl.trans(zj), input_precision=PRECISION)
    return acc


@triton.jit
def _support(G, rows, cols, rmask, cmask, stride_g, HAS_GROUPS: tl.constexpr):
    """Pairs (i, j) in the denominator: both in range, j != i, same group."""
    ok = rmask[:, None] & cmask[None, :] & (rows[:, None] != cols[None, :])
    if HAS_GROUPS:
        gi = tl.load(G + rows * stride_g, mask=rmask, other=-1)
        gj = tl.load(G + cols * stride_g, mask=cmask, other=-2)
        ok = ok & (gi[:, None] == gj[None, :])
    return ok


@triton.jit
def _column_span(TILES, pid, N, HAS_GROUPS: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr, TILE: tl.constexpr):
    """[lo, hi): the columns a program owning rows pid * BLOCK_M ... must visit, as a multiple
    of BLOCK_N from lo.  TILES holds, per TILE rows, the [first, end) TILE-column tiles that
    can share a group with them (tile_ranges); a program's row block is BLOCK_M / TILE such
    rows (the last clamped to the final table row, which lies in the same block)."""
    if HAS_GROUPS:
        last = (N - 1) // TILE
        r = tl.minimum(pid * (BLOCK_M // TILE), last)
        first = tl.load(TILES + 2 * r)
        end = tl.load(TILES + 2 * r + 1)
        for k in tl.static_range(1, BLOCK_M // TILE):
            r = tl.minimum(pid * (BLOCK_M // TILE) + k, last)
            first = tl.minimum(first, tl.load(TILES + 2 * r))
            end = tl.maximum(end, tl.load(TILES + 2 * r + 1))
        lo = (first * TILE) // BLOCK_N
        hi = tl.cdiv(end * TILE, BLOCK_N)
    else:
        lo = 0
        hi = tl.cdiv(N, BLOCK_N)
    # Bounds as multiples of BLOCK_N (as the loop's step): with hi = N ptxas gave the bf16
    # forward 114 registers instead of 64.
    return lo * BLOCK_N, hi * BLOCK_N


@triton.jit
def _lse_forward_kernel(Z, Y, G, TILES, LSE, LOSS, CNT, N, D, stride_n, stride_d, stride_y,
                        stride_g, scale, scale2, bound2, ratio,
                        HAS_GROUPS: tl.constexpr, HAS_LABELS: tl.constexpr,
                        FIXED_MAX: tl.constexpr, PRECISION: tl.constexpr, ONE_D: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                        TILE: tl.constexpr):
    """LSE[rows] for one block of BLOCK_M anchors; with HAS_LABELS also, from the same score
    tiles, the positive count CNT_i = |P(i)| and sum_{p in P(i)} s_ip, and from them the
    anchor's loss LOSS_i = ratio * (LSE_i - sum / CNT_i) (0 where CNT_i = 0).
    scale2 = scale * log2(e); with FIXED_MAX, bound2 = (bound on |s|) * log2(e) is the
    maximum in base 2."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < N
    lo, hi = _column_span(TILES, pid, N, HAS_GROUPS, BLOCK_M, BLOCK_N, TILE)
    if ONE_D:
        # The anchor tile, loaded once for the whole column sweep.
        d = tl.arange(0, BLOCK_D)
        dmask = d < D
        zi = tl.load(Z + rows[:, None] * stride_n + d[None, :] * stride_d,
                     mask=rmask[:, None] & dmask[None, :], other=0.0)
    m_i = tl.full((BLOCK_M,), _NEG_INF, dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    if HAS_LABELS:
        y_i = tl.load(Y + rows * stride_y, mask=rmask, other=0)
        pos_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
        cnt_i = tl.zeros((BLOCK_M,), dtype=tl.int32)
    for start in range(lo, hi, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        cmask = cols < N
        if ONE_D:
            zj = tl.load(Z + cols[:, None] * stride_n + d[None, :] * stride_d,
                         mask=cmask[:, None] & dmask[None, :], other=0.0)
            s = tl.dot(zi, tl.trans(zj), input_precision=PRECISION)
        else:
            s = _tile_scores(Z, rows, cols, rmask, cmask, D, stride_n, stride_d, PRECISION,
                             BLOCK_M, BLOCK_N, BLOCK_D)
        s = s.to(tl.float32)
        support = _support(G, rows, cols, rmask, cmask, stride_g, HAS_GROUPS)
        if HAS_LABELS:
            # The positive term rides on the same tile: z_i . z_j summed over P(i).
            y_j = tl.load(Y + cols * stride_y, mask=cmask, other=0)
            positive = support & (y_i[:, None] == y_j[None, :])
            pos_i += tl.sum(tl.where(positive, s, 0.0), axis=1)
            cnt_i += tl.sum(positive.to(tl.int32), axis=1)
        s = tl.where(support, s * scale2, _NEG_INF)
        if FIXED_MAX:
            # s <= bound2 (up to rounding): every term in (2^-126, ~1]; off-support lanes -> 0.
            l_i += tl.sum(tl.exp2(s - bound2), axis=1)
        else:
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            # Rows with nothing seen yet keep m = -inf; shift them by 0 to avoid inf - inf.
            shift = tl.where(m_new == _NEG_INF, 0.0, m_new)
            l_i = l_i * tl.exp2(m_i - shift) + tl.sum(tl.exp2(s - shift[:, None]), axis=1)
            m_i = m_new
    if FIXED_MAX:
        m_i = tl.zeros((BLOCK_M,), dtype=tl.float32) + bound2
    # log2 of 1 where the sum is empty (no log of 0); no clamp on l: with the fixed maximum a
    # row's sum may be as small as exp(-80) ~ 2^-115, which is still a normal float32.
    lse = tl.where(l_i > 0, (m_i + tl.log2(tl.where(l_i > 0, l_i, 1.0))) * 0.6931471805599453,
                   _NEG_INF)
    tl.store(LSE + rows, lse, mask=rmask)
    if HAS_LABELS:
        # An anchor with a positive has a finite LSE (its positives are in the support).
        has = cnt_i > 0
        mean_pos = pos_i * scale / tl.maximum(cnt_i, 1).to(tl.float32)
        tl.store(LOSS + rows, tl.where(has, ratio * (lse - mean_pos), 0.0), mask=rmask)
        tl.store(CNT + rows, cnt_i, mask=rmask)


@triton.jit
def _coefficients(GRAD, CNT, idx, mask, stride_grad, ratio, HAS_LABELS: tl.constexpr):
    """(c, b) per sample: the loss's derivative by LSE_i and by sum_{p in P(i)} s_ip.  With
    HAS_LABELS, GRAD is the upstream gradient g of the anchor losses: c = ratio g, b = -c / CNT
    (both 0 without a positive); without, GRAD is c itself (b unused)."""
    g = tl.load(GRAD + idx * stride_grad, mask=mask, other=0.0).to(tl.float32)
    if HAS_LABELS:
        cnt = tl.load(CNT + idx, mask=mask, other=0)
        c = tl.where(cnt > 0, g * ratio, 0.0)
        b = -c / tl.maximum(cnt, 1).to(tl.float32)
    else:
        c = g
        b = g * 0.0
    return c, b


@triton.jit
def _lse_base2(LSE, idx, mask):
    """LSE in base 2 (to match exp2 of the base-2 scores); -inf (an anchor alone in its
    group, whose coefficient is 0) -> 0, which keeps its exponentials finite."""
    lse = tl.load(LSE + idx, mask=mask, other=0.0)
    return tl.where(lse == _NEG_INF, 0.0, lse) * 1.4426950408889634


@triton.jit
def _lse_backward_kernel(Z, Y, G, TILES, LSE, CNT, GRAD, DZ, N, D, stride_n, stride_d,
                         stride_y, stride_g, stride_grad, stride_out_n, stride_out_d, scale,
                         scale2, ratio,
                         HAS_GROUPS: tl.constexpr, HAS_LABELS: tl.constexpr,
                         PRECISION: tl.constexpr, ONE_D: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, TILE: tl.constexpr):
    """Program (pid, pid_d) writes DZ[own, d-block] = scale * sum over partners j of
    W[own, j] Z[j, d-block], W = P + P^T (+ the positive term) on the support (see the module
    docstring).  With ONE_D the d-block is all of D (pid_d = 0) and each partner tile is
    loaded once."""
    pid = tl.program_id(0)
    pid_d = tl.program_id(1)
    own = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    omask = own < N
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    lo, hi = _column_span(TILES, pid, N, HAS_GROUPS, BLOCK_M, BLOCK_N, TILE)
    if ONE_D:
        zo = tl.load(Z + own[:, None] * stride_n + d[None, :] * stride_d,
                     mask=omask[:, None] & dmask[None, :], other=0.0)
    lse_own = _lse_base2(LSE, own, omask)
    c_own, b_own = _coefficients(GRAD, CNT, own, omask, stride_grad, ratio, HAS_LABELS)
    if HAS_LABELS:
        y_own = tl.load(Y + own * stride_y, mask=omask, other=0)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for start in range(lo, hi, BLOCK_N):
        partner = start + tl.arange(0, BLOCK_N)
        pmask = partner < N
        zp = tl.load(Z + partner[:, None] * stride_n + d[None, :] * stride_d,
                     mask=pmask[:, None] & dmask[None, :], other=0.0)
        # s[own, partner] = z_own . z_partner * scale, symmetric in the pair.
        if ONE_D:
            s = tl.dot(zo, tl.trans(zp), input_precision=PRECISION)
        else:
            s = _tile_scores(Z, own, partner, omask, pmask, D, stride_n, stride_d, PRECISION,
                             BLOCK_M, BLOCK_N, BLOCK_D)
        # Off the support s = -inf, so both exps give 0 there (no overflow on the diagonal,
        # where s_ii may exceed LSE_i); on it s <= LSE of either end and both are <= 1.
        support = _support(G, own, partner, omask, pmask, stride_g, HAS_GROUPS)
        s = tl.where(support, s.to(tl.float32) * scale2, _NEG_INF)
        lse_p = _lse_base2(LSE, partner, pmask)
        c_p, b_p = _coefficients(GRAD, CNT, partner, pmask, stride_grad, ratio, HAS_LABELS)
        w = (tl.exp2(s - lse_own[:, None]) * c_own[:, None]
             + tl.exp2(s - lse_p[None, :]) * c_p[None, :])
        if HAS_LABELS:
            # d/ds_ij of b_i sum_{P(i)} s + b_j sum_{P(j)} s: b_i + b_j on positive pairs.
            y_p = tl.load(Y + partner * stride_y, mask=pmask, other=0)
            positive = support & (y_own[:, None] == y_p[None, :])
            w += tl.where(positive, b_own[:, None] + b_p[None, :], 0.0)
        acc += tl.dot(w.to(zp.dtype), zp, input_precision=PRECISION).to(tl.float32)
    # DZ has z's dtype: the store rounds once (as .to(z.dtype) would), no extra kernel.
    tl.store(DZ + own[:, None] * stride_out_n + d[None, :] * stride_out_d, acc * scale,
             mask=omask[:, None] & dmask[None, :])


# Rows and columns per entry of the tile-range table: one table, computed once per call on
# the host side of the op and used by both passes whatever their tiles (every BLOCK_M and
# BLOCK_N in _TILES is a multiple of it).
TABLE_TILE = 32


def _block_group_ranges(groups: torch.Tensor, n: int, block: int):
    """Per block of `block` rows: the smallest and largest group id (cdiv(n, block),) each.
    The last block is padded with the last id, which it holds already: one cat, one
    aminmax."""
    blocks = triton.cdiv(n, block)
    pad = blocks * block - n
    g = torch.cat([groups, groups[-1:].expand(pad)]) if pad else groups.contiguous()
    return torch.aminmax(g.view(blocks, block), dim=1)


def tile_ranges(groups: torch.Tensor | None, n: int, block_m: int = TABLE_TILE,
                block_n: int = TABLE_TILE, device=None):
    """(cdiv(n, block_m), 2) int32: for each block of block_m rows, the column tiles
    [first, end) (of block_n columns) outside which no pair shares a group.  A column tile c
    meets row block r iff cmin[c] <= rmax[r] and cmax[c] >= rmin[r]; every c before the first
    c with prefixmax(cmax)[c] >= rmin[r] fails the second test, every c from the first with
    suffixmin(cmin)[c] > rmax[r] the first one.  O(N), on the device, no host sync; with
    block_m == block_n (the kernels' table) 9 kernels."""
    rows, cols = triton.cdiv(n, block_m), triton.cdiv(n, block_n)
    if groups is None:
        out = torch.zeros((rows, 2), dtype=torch.int32, device=device)
        out[:, 1] = cols
        return out
    rmin, rmax = _block_group_ranges(groups, n, block_m)
    cmin, cmax = (rmin, rmax) if block_n == block_m else _block_group_ranges(groups, n, block_n)
    prefix_max = torch.cummax(cmax, 0).values
    suffix_min = torch.flip(torch.cummin(torch.flip(cmin, (0,)), 0).values, (0,))
    first = torch.searchsorted(prefix_max, rmin, out_int32=True)
    end = torch.searchsorted(suffix_min, rmax, right=True, out_int32=True)
    return torch.stack([first, end], 1)


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot's input_precision for Z of ``dtype``: float64 "ieee"; float32 "tf32" when torch's
    float32 matmul precision is "high" or "medium", else _HIGHEST_PRECISION ("tf32x3");
    "tf32" (tl.dot's default, which 16-bit inputs ignore) for float16/bfloat16."""
    if dtype == torch.float64:
        return "ieee"
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return _HIGHEST_PRECISION
    return "tf32"


# Tiles per (products, pass, D class): (BLOCK_M, BLOCK_N, num_warps, num_stages).  Products:
# "16" (bf16/fp16), "tf32", "tf32x3" (also used for "ieee"); D class: "128" (D <= 128, one
# pass over D), "256" (129..256, one pass), "loop" (over D in 64-wide blocks: D > 256, and the
# 3xTF32 backward from D = 129, whose resident 64 x 256 accumulator spills).
# Budget per SM on an H100/H200: 64K 32-bit registers (<= 255 per thread, allocated per warp
# in steps of 8), 228 KB of shared memory (227 KB per block).  Chosen on paper, then checked
# with ptxas (Triton 3.9's bundled ptxas-blackwell, CUDA 13.4, sm_90a, the fused kernels with
# int64 labels, unit strides specialised as a launch does; registers/thread, spilled bytes):
# untimed.  Register counts are high but occupancy is set by the grid at the benchmarked
# N = 16384: the forward has 128-256 CTAs for 132 SMs, so one or two CTAs per SM whatever
# the count.
# - 16-bit forward, D <= 128: 128 x 64, 8 warps (FA2's forward shape on Hopper; the two
#   warpgroups split the 128 rows, 64 each, so nothing crosses between them).  Anchor tile
#   128 x 128 bf16 = 32 KB, kept on chip for the sweep; column tiles 64 x 128 bf16 = 16 KB a
#   stage, 3 stages; the score tile 128 x 64 fp32 = 32 regs/thread over 256 threads.
#   ptxas: 64 regs for the LSE alone, 254 with the positive sum and count (int64 labels of 16
#   columns a thread, their compare masks, pipelined label loads), no spill, 48 KB smem ->
#   1 CTA/SM of 8 warps: 128 CTAs at N = 16384 fill 128 of 132 SMs either way.
# - 16-bit backward, D <= 128: 64 x 64, 4 warps (one warpgroup: the score tile comes out of
#   wgmma in registers and feeds the second wgmma as its A operand, no shared-memory hop):
#   accumulator 64 x 128 fp32 = 64 regs/thread over 128 threads, s and W 32 each, labels and
#   coefficients of 64 partners.  ptxas: 254 regs, no spill (2 stages: 24 bytes spilled),
#   35 KB -> 2 CTAs/SM (256 regs x 128 threads x 2 = 64K exactly), 256 CTAs at N = 16384.
# - TF32 forward, D <= 128: 64 x 64, 8 warps, 2 stages (fp32 tiles are twice the bytes: 32 KB
#   a stage).  ptxas: 148 regs, no spill.
# - TF32 backward, D <= 128: 64 x 32, 4 warps, 3 stages.  Measured 2.66 ms with 64 x 64 and
#   8 warps (vs 0.35 ms for bf16): with BLOCK_M = 64 two warpgroups cannot split the rows
#   (wgmma is m64), so they split the columns, and every tile's W went through shared memory
#   to reach the other warpgroup for W Z (ptxas: 255 regs, 48 st.shared in the loop).  One
#   warpgroup as in the bf16 backward; 64 x 64 then needs acc 64 + s 32 + W 32 (tf32 A
#   operand) + exp temporaries ~32 + labels/coefficients of 64 partners ~40 + addresses:
#   ptxas 255 and 24 bytes spilled; 64 x 32 halves s, W and the partner vectors: ptxas 198
#   regs, no spill, 67 KB smem (3 stages of 16 KB column tiles, the 32 KB anchor tile) ->
#   2 CTAs/SM (200 x 128 x 2 = 51K regs), 256 CTAs at N = 16384.  32 x 64 (168 regs) would
#   lose wgmma (m64) for mma.sync.  Untimed.
# - 3xTF32 holds hi and lo copies of the operands: forward 64 x 64, 8 warps: 215 regs, no
#   spill; backward 128 x 32 with 3 stages (two warpgroups split the rows): 255 regs and 28
#   bytes spilled with the positive term (4 before it; 64 x 32 with 4 warps spills 248),
#   197 KB smem, 1 CTA/SM of 8 warps; 128 CTAs at N = 16384.
# - D class "256": the same with 32-wide fp32 column tiles and 2 stages (ptxas before the
#   positive term: <= 8 bytes of spill); "loop": BLOCK_D = 64 (<= 8 bytes).  Their 16-bit and
#   TF32 backward tiles still split 64 rows over 8 warps (the W hop above): a candidate for
#   4 warps if a GPU run shows D > 128 slow.
_TILES = {
    ("16", "fwd", "128"): (128, 64, 8, 3), ("16", "bwd", "128"): (64, 64, 4, 3),
    ("16", "fwd", "256"): (128, 64, 8, 2), ("16", "bwd", "256"): (64, 64, 8, 2),
    ("16", "fwd", "loop"): (128, 64, 8, 2), ("16", "bwd", "loop"): (64, 64, 8, 2),
    ("tf32", "fwd", "128"): (64, 64, 8, 2), ("tf32", "bwd", "128"): (64, 32, 4, 3),
    ("tf32", "fwd", "256"): (64, 32, 8, 2), ("tf32", "bwd", "256"): (64, 32, 8, 2),
    ("tf32", "fwd", "loop"): (64, 32, 8, 2), ("tf32", "bwd", "loop"): (64, 32, 8, 2),
    ("tf32x3", "fwd", "128"): (64, 64, 8, 2), ("tf32x3", "bwd", "128"): (128, 32, 8, 3),
    ("tf32x3", "fwd", "256"): (64, 32, 8, 2),
    ("tf32x3", "fwd", "loop"): (64, 32, 8, 2), ("tf32x3", "bwd", "loop"): (64, 32, 8, 1),
}
_LOOP_BLOCK_D = 64


def config(dtype: torch.dtype, d: int, direction: str):
    """(BLOCK_M, BLOCK_N, BLOCK_D, ONE_D, num_warps, num_stages, precision) for a pass
    ("fwd" or "bwd") over Z of ``dtype`` and width ``d``."""
    precision = dot_precision(dtype)
    products = ("16" if dtype in (torch.float16, torch.bfloat16)
                else "tf32" if precision == "tf32" else "tf32x3")
    block_d = max(16, triton.next_power_of_2(d))
    d_class = "128" if block_d <= 128 else "256" if block_d <= _RESIDENT_D else "loop"
    if (products, direction, d_class) not in _TILES:
        d_class = "loop"
    one_d = d_class != "loop"
    if not one_d:
        block_d = _LOOP_BLOCK_D
    block_m, block_n, warps, stages = _TILES[(products, direction, d_class)]
    return block_m, block_n, block_d, one_d, warps, stages, precision


def _table(groups: torch.Tensor | None, n: int, device) -> torch.Tensor:
    if groups is None:  # the kernels sweep every column without reading it
        return torch.empty((0, 2), dtype=torch.int32, device=device)
    return tile_ranges(groups, n, TABLE_TILE, TABLE_TILE, device)


def supcon_forward(z: torch.Tensor, labels: torch.Tensor | None, groups: torch.Tensor | None,
                   tiles: torch.Tensor, scale: float, ratio: float, bound: float = 0.0):
    """One kernel: (LSE, LOSS, CNT) per anchor.

    z: (N, D) float32/float16/bfloat16 (float64 in the interpreter only), any strides.
    labels, groups: (N,) integer, any strides, or None (without labels only LSE is computed;
    LOSS and CNT are then None).  tiles: tile_ranges(groups, n) (TABLE_TILE blocks), unused
    without groups.  bound: a guaranteed bound on |s_ij| = |z_i . z_j| * scale (``scale``
    for L2-normalised z), 0 when unknown; a bound <= 40 lets the kernel use it as a fixed
    maximum.  Returns LSE (N,) float32 (-inf for an anchor alone in its group), LOSS (N,)
    float32 = ratio * (LSE_i - mean_{p in P(i)} s_ip), 0 without a positive, and CNT (N,)
    int32 = |P(i)|.
    """
    n, d = z.shape
    block_m, block_n, block_d, one_d, warps, stages, precision = config(z.dtype, d, "fwd")
    fixed = 0.0 < bound <= _FIXED_MAX_LIMIT
    lse = torch.empty(n, dtype=torch.float32, device=z.device)
    has_labels = labels is not None
    loss = torch.empty(n, dtype=torch.float32, device=z.device) if has_labels else None
    count = torch.empty(n, dtype=torch.int32, device=z.device) if has_labels else None
    _lse_forward_kernel[(triton.cdiv(n, block_m),)](
        z, labels if has_labels else lse, groups if groups is not None else lse, tiles, lse,
        loss if has_labels else lse, count if has_labels else lse, n, d,
        z.stride(0), z.stride(1), labels.stride(0) if has_labels else 0,
        groups.stride(0) if groups is not None else 0, float(scale), float(scale) * _LOG2E,
        float(bound) * _LOG2E if fixed else 0.0, float(ratio),
        HAS_GROUPS=groups is not None, HAS_LABELS=has_labels, FIXED_MAX=fixed,
        PRECISION=precision, ONE_D=one_d, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        TILE=TABLE_TILE, num_warps=warps, num_stages=stages,
    )
    return lse, loss, count


def supcon_backward(z: torch.Tensor, labels: torch.Tensor | None, groups: torch.Tensor | None,
                    tiles: torch.Tensor, lse: torch.Tensor, count: torch.Tensor | None,
                    grad: torch.Tensor, scale: float, ratio: float = 1.0) -> torch.Tensor:
    """One kernel: dZ = scale * W Z, W_ij = c_i exp(s_ij - LSE_i) + c_j exp(s_ij - LSE_j)
    + [j in P(i)] (b_i + b_j) on the support.

    With labels: grad (N,) is the upstream gradient g of supcon_forward's LOSS, c = ratio g
    and b = -c / CNT where CNT > 0 (else 0).  Without: grad is c itself (the gradient of
    LSE) and there is no positive term.  lse: (N,) float32 as supcon_forward gives it (-inf
    allowed); grad: any stride (an expanded scalar too).  Returns (N, D) in z's dtype.
    """
    n, d = z.shape
    block_m, block_n, block_d, one_d, warps, stages, precision = config(z.dtype, d, "bwd")
    out = torch.empty((n, d), dtype=z.dtype, device=z.device)
    has_labels = labels is not None
    grid = (triton.cdiv(n, block_m), 1 if one_d else triton.cdiv(d, block_d))
    _lse_backward_kernel[grid](
        z, labels if has_labels else lse, groups if groups is not None else lse, tiles, lse,
        count if has_labels else lse, grad, out, n, d, z.stride(0), z.stride(1),
        labels.stride(0) if has_labels else 0, groups.stride(0) if groups is not None else 0,
        grad.stride(0), out.stride(0), out.stride(1), float(scale), float(scale) * _LOG2E,
        float(ratio),
        HAS_GROUPS=groups is not None, HAS_LABELS=has_labels, PRECISION=precision,
        ONE_D=one_d, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, TILE=TABLE_TILE,
        num_warps=warps, num_stages=stages,
    )
    return out


def supcon_lse(z: torch.Tensor, groups: torch.Tensor | None, scale: float,
               bound: float = 0.0) -> torch.Tensor:
    """LSE_i over the other samples of i's group alone (the positions path's N x N part):
    supcon_forward without labels.  Returns (N,) float32, -inf for an anchor alone."""
    lse, _, _ = supcon_forward(z, None, groups, _table(groups, z.shape[0], z.device), scale,
                               1.0, bound)
    return lse


def supcon_lse_backward(z: torch.Tensor, groups: torch.Tensor | None, lse: torch.Tensor,
                        coef: torch.Tensor, scale: float) -> torch.Tensor:
    """dZ = (P + P^T) Z * scale with P_ij = coef_i exp(s_ij - lse_i) on the LSE support:
    supcon_backward without labels.  lse, coef: (N,) float32 (lse -inf allowed where coef is
    0).  Returns (N, D) in z's dtype."""
    return supcon_backward(z, None, groups, _table(groups, z.shape[0], z.device), lse, None,
                           coef, scale)
