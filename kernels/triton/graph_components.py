"""Triton kernels of ``graph_components``: lock-free union-find over the edges of a k-NN graph.

Algorithm (Playne & Hawick, "A new algorithm for parallel connected-component labelling on
GPUs", IEEE TPDS 2018; the same union as ECL-CC, Jaiganesh & Burtscher, HPDC 2018):

``parent`` starts as the identity. The hook kernel gives one lane to every edge (a, b) and
runs, in a single launch over all edges::

    loop:
        a, b = find(a), find(b)               # roots, halving the paths on the way
        if a == b: done
        lo, hi = min(a, b), max(a, b)
        old = atomic_min(&parent[hi], lo)
        if old == hi: done                    # hi was still a root: hooked under lo
        a, b = lo, old                        # hi was hooked meanwhile: union lo with it

The compress kernel then points every node straight at its root (full path compression).

Why it is correct, with any interleaving of the lanes (and under the interpreter, which runs
the programs one after another):

- *Every write is* ``atomic_min(&parent[x], v)`` *with* ``v < x``. So ``parent[x] <= x``
  always, a chain of parents strictly decreases, there is no cycle, and ``find`` ends.
- *Writes never split a tree for good.* A path-halving write ``atomic_min(&parent[x], gp)``
  takes ``gp``, an ancestor of ``x`` and smaller than ``x``, hence not a descendant of ``x``
  (descendants are larger): the tree stays connected. A hook that finds ``hi`` still a root
  joins two trees. A hook that finds ``hi`` already hooked (``old != hi``) may re-link ``hi``
  from ``old`` to ``lo``; the lane then unions ``lo`` with ``old``, which joins the pieces
  again. Every write joins nodes that the graph connects, so nothing is merged wrongly.
- *Every union ends.* ``find`` never returns more than its argument and a failed hook
  replaces ``hi`` by ``old < hi``, so ``a + b`` strictly decreases from one iteration to the
  next. Stale loads (a value another lane has since lowered) are still ancestors, which keeps
  all of the above true; the loads are ``volatile`` so that they go past L1 and see the
  latest values soon.
- *The root of a component is its smallest node*, because parents decrease along chains.

So after the hook kernel each component is one tree rooted at its smallest node, and after
the compress kernel ``parent[x]`` is that node. Renumbering (``supercl.ops.graph_components``)
is then a flag, a prefix sum and a gather: no host synchronisation anywhere.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Edges per program of the hook kernel. The union loop of a program runs until its slowest
# lane is done, so small blocks waste less on GPUs; the interpreter instead pays per
# iteration and per program, and wants large blocks.
_HOOK_BLOCK_CUDA = 128
_COMPRESS_BLOCK_CUDA = 256
_BLOCK_INTERPRETER = 1024


@triton.jit
def _find_root(parent_ptr, x, active):
    """Root of ``x`` for the active lanes (``x`` itself for the others), halving the path: every
    node passed is pointed at its grandparent (``atomic_min``, so it never goes up)."""
    p = tl.load(parent_ptr + x, mask=active, other=0, volatile=True)
    p = tl.where(active, p, x)
    while tl.max((p != x).to(tl.int32), axis=0) > 0:
        moving = p != x
        gp = tl.load(parent_ptr + p, mask=moving, other=0, volatile=True)
        gp = tl.where(moving, gp, p)
        tl.atomic_min(parent_ptr + x, gp, mask=moving & (gp != p), sem="relaxed")
        x = gp
        p = tl.load(parent_ptr + x, mask=moving, other=0, volatile=True)
        p = tl.where(moving, p, x)
    return x


@triton.jit
def _graph_components_hook_kernel(
    neighbors_ptr,  # (N, K) int32 or int64, strides (stride_row, stride_col)
    parent_ptr,  # (N,) int32, initialised to arange(N); the forest, updated in place
    n_edges,  # N * K
    k,
    stride_row,
    stride_col,
    BLOCK: tl.constexpr,
):
    """Union of the two ends of every edge ``(i, neighbors[i, j])``, edge ``e = i * K + j``."""
    pid = tl.program_id(0).to(tl.int64)
    edge = pid * BLOCK + tl.arange(0, BLOCK)
    valid = edge < n_edges
    row = tl.where(valid, edge // k, 0)
    col = tl.where(valid, edge % k, 0)
    b = tl.load(neighbors_ptr + row * stride_row + col * stride_col, mask=valid, other=0)
    a = row.to(tl.int32)
    b = b.to(tl.int32)
    todo = valid & (a != b)  # self loops join nothing
    while tl.max(todo.to(tl.int32), axis=0) > 0:
        a = _find_root(parent_ptr, a, todo)
        b = _find_root(parent_ptr, b, todo)
        lo = tl.minimum(a, b)
        hi = tl.maximum(a, b)
        todo = todo & (lo != hi)
        old = tl.atomic_min(parent_ptr + hi, lo, mask=todo)
        todo = todo & (old != hi)
        a = lo
        b = tl.where(todo, old, hi)


@triton.jit
def _graph_components_compress_kernel(
    parent_ptr,  # (N,) int32 forest from the hook kernel; becomes root of every node
    n,
    BLOCK: tl.constexpr,
):
    """``parent[x] = root(x)``. The forest no longer changes but by compression, so the root
    found is final and a plain store is safe."""
    pid = tl.program_id(0).to(tl.int64)
    x = pid * BLOCK + tl.arange(0, BLOCK)
    valid = x < n
    node = tl.where(valid, x, 0).to(tl.int32)
    root = _find_root(parent_ptr, node, valid)
    tl.store(parent_ptr + x, root, mask=valid)


def graph_components_roots(neighbors: torch.Tensor, block: int | None = None) -> torch.Tensor:
    """Smallest node of the component of every node, by union-find in two launches.

    Parameters
    ----------
    neighbors : torch.Tensor
        (N, K) int32 or int64, any strides, values in [0, N) (validated by the caller),
        N < 2**31, K >= 1; on a CUDA device, or on the CPU under ``TRITON_INTERPRET=1``.
    block : int, optional
        Edges (hook) and nodes (compress) per program, a power of 2; by default 128 / 256 on
        GPUs and 1024 in the interpreter. The tests vary it to change how the unions
        interleave.

    Returns
    -------
    torch.Tensor
        (N,) int32 on the device of ``neighbors``: ``root[i]`` is the smallest node of the
        connected component of ``i`` in the undirected graph with edges
        ``i -- neighbors[i, j]``.
    """
    n, k = neighbors.shape
    parent = torch.arange(n, dtype=torch.int32, device=neighbors.device)
    if n == 0 or k == 0:
        return parent
    on_gpu = neighbors.device.type == "cuda"
    hook_block = block or (_HOOK_BLOCK_CUDA if on_gpu else _BLOCK_INTERPRETER)
    compress_block = block or (_COMPRESS_BLOCK_CUDA if on_gpu else _BLOCK_INTERPRETER)
    n_edges = n * k
    _graph_components_hook_kernel[(triton.cdiv(n_edges, hook_block),)](
        neighbors, parent, n_edges, k, neighbors.stride(0), neighbors.stride(1),
        BLOCK=hook_block, num_warps=4,
    )
    _graph_components_compress_kernel[(triton.cdiv(n, compress_block),)](
        parent, n, BLOCK=compress_block, num_warps=4,
    )
    return parent
