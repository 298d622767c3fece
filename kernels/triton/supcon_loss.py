"""Triton kernels of the supervised contrastive loss: the only N x N part of it, the per-anchor
log-sum-exp over the other samples of the anchor's group, and its gradient.

For anchors i and samples j, s_ij = z_i . z_j * scale (scale = 1 / temperature), and

    LSE_i = log sum_{j != i, g_j == g_i} exp(s_ij)            (-inf when the sum is empty)

Forward: one streaming pass over column tiles per block of anchors, with an online maximum,
flash-attention style (Dao et al. 2022); nothing of size N x N is stored.  Backward, with the
upstream gradient c_i of LSE_i and P_ij = c_i exp(s_ij - LSE_i) on the same support,

    dZ = (P + P^T) Z * scale.

The support is symmetric (j != i, same group) and so is s, so row i of P + P^T is

    W_ij = c_i exp(s_ij - LSE_i) + c_j exp(s_ij - LSE_j),

which a program owning rows i can compute from its own score tile and the partners' LSE and
c: the backward is ONE deterministic pass that recomputes each tile once, with no float
atomics and no transposed second pass (an earlier version ran P Z and P^T Z as two passes,
recomputing every tile twice).  Tiles whose group ranges cannot overlap are skipped, so a
batch whose groups are contiguous (the pixels of one image after another) costs the
block-diagonal only.

Work and bounds, for N anchors of dimension D with no groups (all tiles):
- forward:  2 N^2 D FLOPs (scores) + N^2 exp;  reads N D elements per row block.
- backward: 4 N^2 D FLOPs (scores again + W Z) + 2 N^2 exp  (the two-pass form was 8 N^2 D
  and 2 N^2 exp: fwd+bwd goes from 10 to 6 N^2 D).
- At N = 16384, D = 128: 6 N^2 D = 206 GFLOP.  Compute-bound: on an H100/H200 about 0.3 ms of
  dense bf16 tensor-core time, but ~3 ms at IEEE fp32 FMA rates (~67 TFLOP/s) -- and the exp
  (MUFU, 16/clk/SM) costs 3 N^2 = 0.8 G exp ~ 0.2 ms.  Measured before this change on an H200
  (benchmarks/results/gpu-h200.md): 43.2 ms fp32 (IEEE) and 3.9 ms bf16 fwd+bwd, i.e. far
  below both bounds: 64 x 64 tiles and the default warps are untuned.

Precision: products go through tl.dot with float32 accumulation (tensor cores for bf16/fp16).
float32 inputs follow torch's float32 matmul precision, as torch's own matmuls (and so the
dense reference) do: "highest" (torch's default) uses IEEE fp32 products, "high" and "medium"
use TF32 tensor cores.

Reference: supercl.ops.supcon_loss.supcon_loss_reference (dense) and the chunked torch path.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_NEG_INF = tl.constexpr(float("-inf"))


@triton.jit
def _tile_scores(Z, rows, cols, rmask, cmask, D, stride_n, stride_d, scale,
                 BLOCK_D: tl.constexpr, IEEE: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """s = Z[rows] . Z[cols]^T * scale, (BLOCK_M, BLOCK_N) in float32, over all of D."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        dmask = d < D
        zi = tl.load(Z + rows[:, None] * stride_n + d[None, :] * stride_d,
                     mask=rmask[:, None] & dmask[None, :], other=0.0)
        zj = tl.load(Z + cols[:, None] * stride_n + d[None, :] * stride_d,
                     mask=cmask[:, None] & dmask[None, :], other=0.0)
        if IEEE:
            acc += tl.dot(zi, tl.trans(zj), input_precision="ieee")
        else:
            acc += tl.dot(zi, tl.trans(zj))
    return acc * scale


@triton.jit
def _support(G, rows, cols, rmask, cmask, HAS_GROUPS: tl.constexpr):
    """Pairs (i, j) in the denominator: both in range, j != i, same group."""
    ok = rmask[:, None] & cmask[None, :] & (rows[:, None] != cols[None, :])
    if HAS_GROUPS:
        gi = tl.load(G + rows, mask=rmask, other=-1)
        gj = tl.load(G + cols, mask=cmask, other=-2)
        ok = ok & (gi[:, None] == gj[None, :])
    return ok


@triton.jit
def _overlaps(GMIN, GMAX, lo, hi, block):
    """Whether the group range [lo, hi] of one tile side meets that of `block` of the other
    (always, without groups: the launcher then passes ranges of zeros)."""
    return (tl.load(GMIN + block) <= hi) & (tl.load(GMAX + block) >= lo)


@triton.jit
def _lse_forward_kernel(Z, G, GMIN, GMAX, LSE, N, D, stride_n, stride_d, scale,
                        HAS_GROUPS: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < N
    lo = tl.load(GMIN + pid)
    hi = tl.load(GMAX + pid)
    m_i = tl.full((BLOCK_M,), _NEG_INF, dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for start in range(0, N, BLOCK_N):
        if _overlaps(GMIN, GMAX, lo, hi, start // BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            cmask = cols < N
            s = _tile_scores(Z, rows, cols, rmask, cmask, D, stride_n, stride_d, scale,
                             BLOCK_D, IEEE, BLOCK_M, BLOCK_N)
            s = tl.where(_support(G, rows, cols, rmask, cmask, HAS_GROUPS), s, _NEG_INF)
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            # Rows with nothing seen yet keep m = -inf; shift them by 0 to avoid inf - inf.
            shift = tl.where(m_new == _NEG_INF, 0.0, m_new)
            l_i = l_i * tl.exp(m_i - shift) + tl.sum(tl.exp(s - shift[:, None]), axis=1)
            m_i = m_new
    lse = tl.where(l_i > 0, m_i + tl.log(tl.maximum(l_i, 1e-30)), _NEG_INF)
    tl.store(LSE + rows, lse, mask=rmask)


@triton.jit
def _lse_backward_kernel(Z, G, GMIN, GMAX, LSE, COEF, DZ, N, D, stride_n, stride_d,
                         stride_out_n, scale, HAS_GROUPS: tl.constexpr, IEEE: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """Program (pid, pid_d) writes DZ[own, d-block] = scale * sum over partners j of
    W[own, j] Z[j, d-block], W = P + P^T on the support (see the module docstring)."""
    pid = tl.program_id(0)
    pid_d = tl.program_id(1)
    own = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    omask = own < N
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    lo = tl.load(GMIN + pid)
    hi = tl.load(GMAX + pid)
    lse_own = tl.load(LSE + own, mask=omask, other=0.0)
    coef_own = tl.load(COEF + own, mask=omask, other=0.0)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for start in range(0, N, BLOCK_N):
        if _overlaps(GMIN, GMAX, lo, hi, start // BLOCK_N):
            partner = start + tl.arange(0, BLOCK_N)
            pmask = partner < N
            # s[own, partner] = z_own . z_partner * scale, symmetric in the pair.
            s = _tile_scores(Z, own, partner, omask, pmask, D, stride_n, stride_d, scale,
                             BLOCK_D, IEEE, BLOCK_M, BLOCK_N)
            support = _support(G, own, partner, omask, pmask, HAS_GROUPS)
            lse_p = tl.load(LSE + partner, mask=pmask, other=0.0)
            coef_p = tl.load(COEF + partner, mask=pmask, other=0.0)
            # On the support s <= LSE of either end, so both exps are <= 1; off it the lanes
            # may overflow, and tl.where drops them.
            p = (tl.exp(s - lse_own[:, None]) * coef_own[:, None]
                 + tl.exp(s - lse_p[None, :]) * coef_p[None, :])
            p = tl.where(support, p, 0.0)
            zp = tl.load(Z + partner[:, None] * stride_n + d[None, :] * stride_d,
                         mask=pmask[:, None] & dmask[None, :], other=0.0)
            if IEEE:
                acc += tl.dot(p, zp, input_precision="ieee")
            else:
                acc += tl.dot(p.to(zp.dtype), zp)
    tl.store(DZ + own[:, None] * stride_out_n + d[None, :], acc * scale,
             mask=omask[:, None] & dmask[None, :])


def _block_group_ranges(groups: torch.Tensor | None, n: int, block: int, device):
    """Per block of `block` rows: the smallest and largest group id, (cdiv(n, block),) int64
    each; zeros (every tile overlaps) when there are no groups."""
    blocks = triton.cdiv(n, block)
    if groups is None:
        zeros = torch.zeros(blocks, dtype=torch.int64, device=device)
        return zeros, zeros
    pad = blocks * block - n
    g = groups.to(torch.int64)
    low = torch.cat([g, g.new_full((pad,), torch.iinfo(torch.int64).max)]).view(blocks, block)
    high = torch.cat([g, g.new_full((pad,), torch.iinfo(torch.int64).min)]).view(blocks, block)
    return low.amin(1).contiguous(), high.amax(1).contiguous()


def ieee_products(dtype: torch.dtype) -> bool:
    """Whether tl.dot takes IEEE products for inputs of ``dtype``: always for float64; for
    float32 when torch's float32 matmul precision is "highest" (its default), else TF32."""
    if dtype == torch.float64:
        return True
    return dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest"


def _config(z: torch.Tensor):
    # 64 x 64 tiles: tensor-core friendly on the GPU, and few enough tiles that the
    # interpreter (CPU tests) runs N = 1000 in seconds.  Untuned on a GPU (see the docstring).
    block = 64
    block_d = min(128, max(16, triton.next_power_of_2(z.shape[1])))
    return block, block_d, ieee_products(z.dtype)


def supcon_lse(z: torch.Tensor, groups: torch.Tensor | None, scale: float) -> torch.Tensor:
    """LSE_i over the other samples of i's group.

    z: (N, D) float32/float16/bfloat16 (float64 in the interpreter only), any strides.
    groups: (N,) int64 or None.  Returns (N,) float32, -inf for an anchor alone in its group.
    """
    n, d = z.shape
    block, block_d, ieee = _config(z)
    lse = torch.empty(n, dtype=torch.float32, device=z.device)
    gmin, gmax = _block_group_ranges(groups, n, block, z.device)
    g = groups if groups is not None else gmin
    _lse_forward_kernel[(triton.cdiv(n, block),)](
        z, g, gmin, gmax, lse, n, d, z.stride(0), z.stride(1),
        float(scale), HAS_GROUPS=groups is not None, IEEE=ieee, BLOCK_M=block, BLOCK_N=block,
        BLOCK_D=block_d,
    )
    return lse


def supcon_lse_backward(z: torch.Tensor, groups: torch.Tensor | None, lse: torch.Tensor,
                        coef: torch.Tensor, scale: float) -> torch.Tensor:
    """dZ = (P + P^T) Z * scale with P_ij = coef_i exp(s_ij - lse_i) on the LSE support.

    z: (N, D); groups: (N,) int64 or None; lse, coef: (N,) float32 (lse finite where coef is
    nonzero, and finite everywhere: the caller replaces -inf by 0).  Returns (N, D) float32.
    """
    n, d = z.shape
    block, block_d, ieee = _config(z)
    gmin, gmax = _block_group_ranges(groups, n, block, z.device)
    g = groups if groups is not None else gmin
    out = torch.empty((n, d), dtype=torch.float32, device=z.device)
    grid = (triton.cdiv(n, block), triton.cdiv(d, block_d))
    _lse_backward_kernel[grid](
        z, g, gmin, gmax, lse, coef, out, n, d, z.stride(0), z.stride(1), out.stride(0),
        float(scale), HAS_GROUPS=groups is not None, IEEE=ieee,
        BLOCK_M=block, BLOCK_N=block, BLOCK_D=block_d,
    )
    return out
