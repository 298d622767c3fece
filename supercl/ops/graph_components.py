"""Connected components of k-nearest-neighbour graphs: the CCL weak labels of SuperCL's IGCP.

Two public ops, both registered with ``torch.library`` (``supercl::graph_components``,
``supercl::knn_weak_labels``) so that ``torch.compile(fullgraph=True)`` traces them:

- :func:`graph_components` -- connected components of the undirected graph given by an
  (N, K) table of neighbour indices, numbered like ``scipy.sparse.csgraph``.
- :func:`knn_weak_labels` -- the CCL module: cosine k-NN graph (self excluded) of a batch of
  embeddings, optionally with the two views of every image joined, and its components.

Backends: Triton (CUDA tensors; lock-free union-find, ``kernels/triton/graph_components.py``)
and torch (CPU tensors; Shiloach-Vishkin hooking with a proven round count, below). Neither
synchronises with the host on CUDA tensors.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from supercl._validate import check_tensor

from ._common import as_tensor, check_bool, check_int, resolve_triton_backend, to_output

__all__ = ["graph_components", "knn_weak_labels"]

# The Triton kernels keep node indices in int32.
_MAX_NODES_TRITON = 2**31 - 1
# Index dtypes taken as they are; the other integer dtypes are widened to int64 once.
_INDEX_DTYPES = (torch.int32, torch.int64)
_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_NORMALIZE_EPS = 1e-12


# --------------------------------------------------------------------------------------------
# torch backend


def _smallest_member_torch(
    neighbors: torch.Tensor, early_exit: bool | None = None
) -> torch.Tensor:
    """Smallest node of the component of every node, (N,) int64, from (N, K) int32/int64
    neighbours with K >= 1, in plain torch ops. ``early_exit`` (default: on CPU tensors only)
    stops at the first round that changes nothing, which needs a host check.

    Shiloach-Vishkin (1982) connectivity with full shortcutting, as in Awerbuch & Shiloach
    (1987). Every round starts from a forest of *stars* (trees of depth <= 1; at first every
    node alone) and does, with ``r(x)`` the root of ``x``:

    1. *Conditional hooking*: every root ``r`` takes as parent the smallest ``r(v)`` over the
       edges (u, v) with ``r(u) = r`` and ``r(v) < r``, if any (a scatter-min).
    2. *Unconditional hooking*: a root that neither hooked in 1 nor had another root hook onto
       it (a *stagnant* star) takes the smallest ``r(v) != r`` over its edges, if any.
    3. *Shortcutting*: ``ceil(log2 N)`` pointer jumps ``parent = parent[parent]``.

    Proof of the round count. (a) No cycle: hooks of 1 go to smaller roots; two adjacent
    stars cannot both be stagnant (the larger root would have hooked in 1), so a stagnant star
    hooks onto a non-stagnant tree, and nothing hooks onto a stagnant star. (b) After 1-2 a
    tree has at most N nodes, hence depth <= N - 1, and j jumps make a depth d at most
    ``ceil(d / 2^j)``; ``2^ceil(log2 N) >= N`` makes it <= 1: the next round again starts
    from stars. (c) Call a star *unfinished* if its component holds another star; it has an
    edge to another star, so in 1-2 it hooks or is hooked onto. Every new tree that holds an
    unfinished star therefore holds at least two old stars, and the number m of unfinished
    stars at least halves each round. m <= N at first, m = 1 is impossible, so after
    ``R = ceil(log2 N)`` rounds m <= N / 2^R <= 1 means m = 0: every star is a component.

    So ``R`` rounds always suffice and the CUDA path runs exactly that many, with no host
    synchronisation. On the CPU a round that changes nothing proves convergence (no star has
    an edge to another star), and the loop stops there: usually after a few rounds.
    """
    n, k = neighbors.shape
    device = neighbors.device
    nodes = torch.arange(n, device=device)
    src = nodes[:, None].expand(n, k).reshape(-1)  # row of every edge
    dst = neighbors.reshape(-1).to(torch.int64)
    u = torch.cat([src, dst])  # both directions: the graph is undirected
    v = torch.cat([dst, src])
    steps = (n - 1).bit_length()  # ceil(log2 N), 0 for N = 1
    if early_exit is None:
        early_exit = device.type != "cuda"
    parent = nodes.clone()
    for _ in range(steps):
        ru, rv = parent[u], parent[v]  # roots, since every tree is a star here
        is_root = parent == nodes
        # 1. conditional hooking (include_self keeps min(r, ...) for roots, parents elsewhere)
        hooked = parent.scatter_reduce(0, ru, rv, reduce="amin", include_self=True)
        hooked_root = is_root & (hooked != nodes)
        received = torch.zeros(n, dtype=torch.int64, device=device)
        received.scatter_add_(0, hooked, hooked_root.to(torch.int64))
        stagnant = is_root & ~hooked_root & (received == 0)
        # 2. unconditional hooking of stagnant stars (n marks "no other star adjacent")
        other = torch.full((n,), n, dtype=torch.int64, device=device)
        other.scatter_reduce_(0, ru, torch.where(rv != ru, rv, n), reduce="amin")
        hooked = torch.where(stagnant & (other < n), other, hooked)
        # 3. shortcutting to stars
        for _ in range(steps):
            hooked = hooked[hooked]
        if early_exit and torch.equal(hooked, parent):
            break  # nothing moved: converged (a host check, free on the CPU)
        parent = hooked
    # Roots are arbitrary members here; take each component's smallest one.
    smallest = torch.full((n,), n, dtype=torch.int64, device=device)
    smallest.scatter_reduce_(0, parent, nodes, reduce="amin")
    return smallest[parent]


def _renumber(smallest: torch.Tensor) -> torch.Tensor:
    """Component ids 0, 1, ... in the order of the components' smallest nodes (scipy's order),
    from the smallest node of the component of every node: flag, prefix sum, gather."""
    nodes = torch.arange(smallest.numel(), device=smallest.device)
    ids = torch.cumsum((smallest == nodes).to(torch.int64), 0) - 1
    return ids[smallest]


def _check_neighbor_values(neighbors: torch.Tensor) -> None:
    """Values of ``neighbors`` in [0, N). On CUDA tensors a device-side assertion (raising at
    the next synchronisation), so that the op never waits for the GPU."""
    n = neighbors.shape[0]
    if neighbors.numel() == 0:
        return
    if neighbors.device.type == "cuda":
        inside = ((neighbors >= 0) & (neighbors < n)).all()
        torch._assert_async(inside, f"graph_components: neighbors values must be in [0, N = {n})")
        return
    lo, hi = int(neighbors.min()), int(neighbors.max())
    if lo < 0 or hi >= n:
        raise ValueError(
            f"neighbors must hold node indices in [0, N) = [0, {n}), got values in [{lo}, {hi}]"
        )


def _components(neighbors: torch.Tensor, backend: str) -> torch.Tensor:
    """The component ids of validated (N, K) int32/int64 neighbours, N >= 1, on ``backend``."""
    n, k = neighbors.shape
    if k == 0:
        return torch.arange(n, device=neighbors.device)
    if backend == "triton":
        from supercl.kernels.triton.graph_components import graph_components_roots

        smallest = graph_components_roots(neighbors).to(torch.int64)
    else:
        smallest = _smallest_member_torch(neighbors)
    return _renumber(smallest)


# --------------------------------------------------------------------------------------------
# k-NN graph


def _knn(embeddings: torch.Tensor, k: int) -> torch.Tensor:
    """(N, k) int64: the k most cosine-similar other rows of every row, ties to the smaller
    index. Similarities in float64 for float64 input, float32 otherwise."""
    dtype = torch.float64 if embeddings.dtype == torch.float64 else torch.float32
    x = F.normalize(embeddings.to(dtype), dim=1, eps=_NORMALIZE_EPS)
    similarity = x @ x.T
    similarity.fill_diagonal_(-math.inf)
    # A stable descending sort keeps equal similarities in index order; torch.topk does not
    # promise any order for ties. N is the number of instances (2 x batch), so N^2 is small.
    order = torch.sort(similarity, dim=1, descending=True, stable=True).indices
    return order[:, :k]


def _partner_views(n: int, device: torch.device) -> torch.Tensor:
    """(N, 1) int64: the other view of every instance, ``(i + N/2) mod N``."""
    return ((torch.arange(n, device=device) + n // 2) % n)[:, None]


# --------------------------------------------------------------------------------------------
# custom ops


@torch.library.custom_op("supercl::graph_components", mutates_args=())
def _graph_components_op(neighbors: torch.Tensor, backend: str) -> torch.Tensor:
    """(N, K) int32/int64, N >= 1 -> (N,) int64 component ids; checks the values first."""
    _check_neighbor_values(neighbors)
    return _components(neighbors, backend)


@_graph_components_op.register_fake
def _graph_components_fake(neighbors: torch.Tensor, backend: str) -> torch.Tensor:
    return neighbors.new_empty((neighbors.shape[0],), dtype=torch.int64)


@torch.library.custom_op("supercl::knn_weak_labels", mutates_args=())
def _knn_weak_labels_op(
    embeddings: torch.Tensor, k: int, pair_views: bool, backend: str
) -> torch.Tensor:
    """(N, D) float, N >= 1 -> (N,) int64 component ids of the k-NN graph."""
    if embeddings.device.type == "cuda":
        torch._assert_async(
            torch.isfinite(embeddings).all(), "knn_weak_labels: embeddings contain NaN or inf"
        )
    elif not bool(torch.isfinite(embeddings).all()):
        raise ValueError("embeddings must be finite, got NaN or inf values")
    n = embeddings.shape[0]
    if n == 1:
        return torch.zeros(1, dtype=torch.int64, device=embeddings.device)
    neighbors = _knn(embeddings, k)
    if pair_views:
        neighbors = torch.cat([neighbors, _partner_views(n, embeddings.device)], dim=1)
    return _components(neighbors, backend)


@_knn_weak_labels_op.register_fake
def _knn_weak_labels_fake(
    embeddings: torch.Tensor, k: int, pair_views: bool, backend: str
) -> torch.Tensor:
    return embeddings.new_empty((embeddings.shape[0],), dtype=torch.int64)


# --------------------------------------------------------------------------------------------
# public functions


def graph_components(neighbors: Any, *, backend: str | None = None):
    """Connected components of the undirected graph given by neighbour lists.

    Node ``i`` is joined to ``neighbors[i, j]`` for every ``j``; edges count in both
    directions (a k-NN graph "made undirected"), repeated edges and self loops are allowed.
    The result equals the labels of
    ``scipy.sparse.csgraph.connected_components(graph, directed=False)`` exactly: components
    are numbered 0, 1, ... in the order of their smallest node, so node 0 is in component 0.

    Everything runs on the device of ``neighbors``, without host synchronisation on CUDA
    tensors (no ``.item()``, no data-dependent loop count), so it can sit inside a training
    step and under CUDA graphs.

    Parameters
    ----------
    neighbors : torch.Tensor or numpy.ndarray
        (N, K) int32 or int64 (also int8, int16, uint8), any strides, values in [0, N).
        K may be 0 (N isolated nodes) and N may be 0 (empty result).
    backend : {None, "torch", "triton", "cpu", "cuda"}
        ``None`` chooses by the device (or the ``SUPERCL_BACKEND`` variable): CUDA tensors run
        the Triton kernels (lock-free union-find with atomic-min hooking in one launch, then
        pointer jumping; ``kernels/triton/graph_components.py``), CPU tensors run torch
        (Shiloach-Vishkin hooking and shortcutting, ``ceil(log2 N)`` rounds at most).
        ``"triton"`` on CPU tensors needs ``TRITON_INTERPRET=1`` (tests). All give the same
        labels.

    Returns
    -------
    labels : int64 tensor (on the device of ``neighbors``) or numpy array for an array input
        (N,): component id of every node, consecutive from 0;
        ``n_components = labels.max() + 1`` for N >= 1.

    Raises
    ------
    TypeError
        ``neighbors`` is not a tensor/array, or not of an integer dtype (float, bool, ...).
    ValueError
        ``neighbors`` is not 2-D; values outside [0, N) (on CUDA tensors this is a device-side
        assertion, reported as a CUDA error at the next synchronisation, so that the op never
        waits for the GPU); N >= 2**31 with the Triton backend; an unknown ``backend``.
    RuntimeError
        ``backend="triton"`` without Triton, or on CPU tensors without ``TRITON_INTERPRET=1``.

    Examples
    --------
    >>> import torch
    >>> from supercl.ops import graph_components
    >>> neighbors = torch.tensor([[3], [4], [0], [3], [1]])  # 0-3, 1-4, 2-0
    >>> graph_components(neighbors)
    tensor([0, 1, 0, 0, 1])
    """
    x, as_numpy = as_tensor(neighbors, "neighbors")
    check_tensor(x, "neighbors", dtype=_INTEGER_DTYPES, dims="(N, K)")
    chosen = resolve_triton_backend("graph_components", backend, x.device)
    n = x.shape[0]
    if chosen == "triton" and n > _MAX_NODES_TRITON:
        raise ValueError(f"neighbors has N = {n} rows; the Triton backend takes N < 2**31")
    if n == 0:
        return to_output(torch.empty(0, dtype=torch.int64, device=x.device), as_numpy)
    if x.dtype not in _INDEX_DTYPES:
        x = x.to(torch.int64)
    return to_output(_graph_components_op(x, chosen), as_numpy)


def knn_weak_labels(
    embeddings: Any, k: int = 1, *, pair_views: bool = False, backend: str | None = None
):
    """Weak labels of SuperCL's IGCP: connected components of the cosine k-NN graph (CCL).

    Every row of ``embeddings`` (one instance, e.g. the ASP vector of one view) is joined to
    its ``k`` most cosine-similar *other* rows; the graph is made undirected and its connected
    components, numbered like :func:`graph_components` (by smallest member), are the labels.
    With ``pair_views=True`` the rows are two views of N/2 images, view 1 of every image
    first then view 2 in the same order, and rows ``i`` and ``i + N/2`` are joined too: both
    views of an image always share a label.

    Cosine similarity is ``x_i . x_j / (max(|x_i|, 1e-12) max(|x_j|, 1e-12))``, computed in
    float64 for float64 input and float32 otherwise; the diagonal is excluded. Equal
    similarities go to the smaller index, deterministically (duplicated or zero embeddings
    therefore link to the first of them). The N x N similarity matrix is materialised, which
    is what N = 2 x batch calls for.

    Parameters
    ----------
    embeddings : torch.Tensor or numpy.ndarray
        (N, D) float16, bfloat16, float32 or float64, finite, D >= 1. No gradient flows.
    k : int
        Neighbours per row, ``1 <= k <= N - 1`` (reference: 1). For N = 1 any ``k >= 1`` gives
        ``[0]``; N = 0 gives an empty result.
    pair_views : bool
        Also join ``i`` and ``i + N/2`` (needs an even N).
    backend : {None, "torch", "triton", "cpu", "cuda"}
        Backend of the component step, as in :func:`graph_components`; the similarities and
        the neighbour search are torch ops on the device of ``embeddings``.

    Returns
    -------
    labels : int64 tensor (on the device of ``embeddings``) or numpy array for an array input
        (N,): the weak label of every row, consecutive from 0.

    Raises
    ------
    TypeError
        ``embeddings`` is not a tensor/array or not floating point; ``k`` not an int;
        ``pair_views`` not a bool.
    ValueError
        ``embeddings`` not 2-D or with D = 0; NaN or inf values (on CUDA tensors a device-side
        assertion, reported at the next synchronisation); ``k < 1`` or ``k > N - 1``;
        ``pair_views`` with an odd N; an unknown ``backend``.
    RuntimeError
        As :func:`graph_components` for ``backend="triton"``.

    Examples
    --------
    >>> import torch
    >>> from supercl.ops import knn_weak_labels
    >>> embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    >>> knn_weak_labels(embeddings, k=1)
    tensor([0, 1, 0, 1])
    >>> knn_weak_labels(embeddings, k=1, pair_views=True)  # joins 0-2 and 1-3 as well
    tensor([0, 1, 0, 1])
    """
    x, as_numpy = as_tensor(embeddings, "embeddings")
    check_tensor(x, "embeddings", dtype="floating", dims="(N, D)", nonempty="D")
    n = x.shape[0]
    k = check_int(k, "k", minimum=1)
    pair_views = check_bool(pair_views, "pair_views")
    if n >= 2 and k > n - 1:
        raise ValueError(f"k must be <= N - 1 = {n - 1} (self is excluded), got {k}")
    if pair_views and n % 2:
        raise ValueError(f"pair_views=True needs an even number of rows (2 views), got N = {n}")
    chosen = resolve_triton_backend("knn_weak_labels", backend, x.device)
    if n == 0:
        return to_output(torch.empty(0, dtype=torch.int64, device=x.device), as_numpy)
    return to_output(_knn_weak_labels_op(x.detach(), k, pair_views, chosen), as_numpy)
