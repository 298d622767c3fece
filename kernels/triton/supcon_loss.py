"""Triton kernels of the supervised contrastive loss: the only N x N part of it, the per-anchor
log-sum-exp over the other samples of the anchor's group, and its gradient.

For anchors i and samples j, s_ij = z_i . z_j * scale (scale = 1 / temperature), and

    LSE_i = log sum_{j != i, g_j == g_i} exp(s_ij)            (-inf when the sum is empty)

Forward: one streaming pass over column tiles per block of anchors, with an online maximum,
flash-attention style (Dao et al. 2022); nothing of size N x N is stored.  Backward, with the
upstream gradient c_i of LSE_i and P_ij = c_i exp(s_ij - LSE_i) on the same support,

    dZ = (P + P^T) Z * scale,

computed by two deterministic passes that recompute the tiles: one over anchor blocks (P Z,
each program owns its rows) and one over sample blocks (P^T Z, each program owns its
columns).  No float atomics.  Tiles whose group ranges cannot overlap are skipped, so a batch
whose groups are contiguous (the pixels of one image after another) costs the block-diagonal
only.  Products go through tl.dot with float32 accumulation (tensor cores for bf16/fp16; fp32
inputs use IEEE fp32, not TF32, so that fp32 results match the reference).

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
                         stride_out_n, scale, TRANSPOSED: tl.constexpr,
                         HAS_GROUPS: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """Program (pid, pid_d) writes DZ[own, d-block]: sum over partners of P Z (TRANSPOSED=False:
    own = anchors i, partners = samples j) or of P^T Z (TRANSPOSED=True: own = samples j,
    partners = anchors i), times scale."""
    pid = tl.program_id(0)
    pid_d = tl.program_id(1)
    own = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    omask = own < N
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    lo = tl.load(GMIN + pid)
    hi = tl.load(GMAX + pid)
    if not TRANSPOSED:
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
            if TRANSPOSED:  # P[partner, own] = c_partner exp(s - LSE_partner)
                lse_p = tl.load(LSE + partner, mask=pmask, other=0.0)
                coef_p = tl.load(COEF + partner, mask=pmask, other=0.0)
                p = tl.exp(s - lse_p[None, :]) * coef_p[None, :]
            else:  # P[own, partner] = c_own exp(s - LSE_own)
                p = tl.exp(s - lse_own[:, None]) * coef_own[:, None]
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


def _config(z: torch.Tensor):
    # 64 x 64 tiles: tensor-core friendly on the GPU, and few enough tiles that the
    # interpreter (CPU tests) runs N = 1000 in seconds.
    block = 64
    block_d = min(128, max(16, triton.next_power_of_2(z.shape[1])))
    return block, block_d, z.dtype == torch.float32 or z.dtype == torch.float64


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
    rows_part = torch.empty((n, d), dtype=torch.float32, device=z.device)
    cols_part = torch.empty((n, d), dtype=torch.float32, device=z.device)
    grid = (triton.cdiv(n, block), triton.cdiv(d, block_d))
    for transposed, out in ((False, rows_part), (True, cols_part)):
        _lse_backward_kernel[grid](
            z, g, gmin, gmax, lse, coef, out, n, d, z.stride(0), z.stride(1), out.stride(0),
            float(scale), TRANSPOSED=transposed, HAS_GROUPS=groups is not None, IEEE=ieee,
            BLOCK_M=block, BLOCK_N=block, BLOCK_D=block_d,
        )
    return rows_part + cols_part
