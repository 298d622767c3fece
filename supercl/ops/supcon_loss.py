"""Supervised contrastive loss (Khosla et al. 2020) without an N x N matrix in memory."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from supercl._validate import check_tensor

from ._common import as_tensor, check_bool, check_float, resolve_triton_backend

__all__ = ["supcon_loss"]

# Rows of the similarity matrix per chunk on the torch path: 2**24 float32 entries (64 MiB)
# whatever N is, so memory grows as O(N * chunk), not O(N^2).
_CHUNK_ELEMENTS = 2**24
_REDUCTIONS = ("mean", "sum", "none")
# Whether the no-positive warning is done with: shown, or (on CUDA) checked once.
_warned_no_positive = False


def supcon_loss(
    features: Any,
    labels: Any = None,
    temperature: float = 0.1,
    base_temperature: float | None = None,
    groups: Any = None,
    normalize: bool = True,
    reduction: str = "mean",
    *,
    positions: Any = None,
    window: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Supervised contrastive loss with label- or position-defined positives, optionally
    within groups.

    The "out" form of Khosla et al. 2020 (eq. 2), as in the reference SupContrast code: with
    ``z = features / ||features||`` (when ``normalize``) and ``s_ij = z_i . z_j / temperature``,
    every sample i is an anchor with

    - denominator set A(i): the other samples (j != i) of its group,
    - positives P(i): the samples of A(i) with the same label -- or, with ``positions`` and
      ``window`` instead of ``labels``, the samples of A(i) with ``|p_i - p_j| < window``
      (computed in float64): PCL's threshold relation (positional contrastive learning, slices
      closer than 0.1 in relative position), which is not transitive and so no labelling,
    - ``loss_i = (temperature / base_temperature) * (log sum_{a in A(i)} exp(s_ia)
      - mean_{p in P(i)} s_ip)``.

    ``groups`` restricts every pair to one group, e.g. the image a pixel belongs to: that is
    SuperCL's pixel-level ILCP loss for a whole batch in one call. Anchors without a positive
    are left out of the mean (never NaN); a batch without any positive returns 0 with a zero
    gradient and warns once.

    Nothing of size N x N is kept.  On the Triton backend (CUDA tensors) with labels, one
    forward kernel streams the score tiles of each anchor's group once and gets the
    log-sum-exp, the sum of the positive scores and their count from them, and one backward
    kernel recomputes the tiles for the gradient of both terms (about 19 kernel launches per
    forward + backward call in all, against 230 before this fusion).  Elsewhere the positive
    term is linear, ``sum_p s_ip = z_i . (S_y - z_i) / t`` with S_y the sum of the embeddings
    of i's (group, label) -- for positions, the sum over i's window, a difference of prefix
    sums over the samples sorted by (group, position), whose ends a vectorised binary search
    finds (no host synchronisation) -- and the log-sum-exp is computed in one streaming pass
    over tiles (Triton) or in row chunks of at most 2**24 similarities (torch); the backward
    recomputes them.

    Parameters
    ----------
    features : (N, D) float tensor or numpy array (float32, float16, bfloat16; float64 on the
        torch backend)
    labels : (N,) integer tensor or numpy array, optional
        Positives share a label. Give either ``labels`` or ``positions``.
    temperature : float > 0
    base_temperature : float > 0, optional
        The loss is scaled by ``temperature / base_temperature``; None means ``temperature``.
    groups : (N,) integer tensor, optional
        Pairs across groups are ignored. Contiguous groups let the Triton kernels skip tiles.
    normalize : bool
        L2-normalise the features first (default True).
    reduction : {"mean", "sum", "none"}
        "mean" over anchors with a positive; "sum"; "none" gives (N,) with 0 for anchors
        without a positive.
    positions : (N,) float tensor or numpy array, optional (keyword)
        Positives are the samples whose position differs by less than ``window``.
    window : float > 0, optional (keyword)
        The positive window for ``positions`` (PCL: 0.1 on positions in [0, 1]).
    backend : {None, "torch", "triton", "cpu", "cuda"}
        None: Triton for CUDA tensors, torch otherwise; "cpu" is an alias of "torch", "cuda"
        of "triton". "triton" on CPU tensors needs ``TRITON_INTERPRET=1``.

    Returns
    -------
    torch.Tensor or numpy.ndarray
        0-d (or (N,) for ``reduction="none"``) float32 (float64 for float64 features); a
        numpy array (without gradient) when ``features`` is one.

    Raises
    ------
    TypeError
        Non-float features or positions, float labels or groups.
    ValueError
        Wrong shapes, N = 0, mismatched lengths or devices, ``temperature <= 0``, a bad
        ``reduction``, non-finite features (checked on CPU tensors only) or positions, both
        or neither of ``labels`` and ``positions``, ``window`` missing, not > 0, or given
        without ``positions``.

    Notes
    -----
    On GPU tensors the features are NOT checked for NaN or inf (that check would make the
    host wait for the GPU at every call): non-finite features give a NaN loss there.  The
    check for a batch without positives (to warn) synchronises once, at the first call;
    ``positions`` are checked for finiteness at every call (one synchronisation per call on
    the positions path).

    On the Triton backend float32 features follow ``torch.get_float32_matmul_precision()``
    as torch's matmuls do: "high"/"medium" multiply in TF32; "highest" (the default) in
    3xTF32 on tensor cores, of float32 accuracy (scores within ~1e-6 relative; see
    ``supercl/kernels/triton/supcon_loss.py``) but not bit-identical IEEE products.

    Examples
    --------
    >>> import torch
    >>> from supercl.ops import supcon_loss
    >>> from supercl.testing import supcon_loss_reference
    >>> g = torch.Generator().manual_seed(0)
    >>> z = torch.randn(10, 8, generator=g)
    >>> y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 1, 2])
    >>> loss = supcon_loss(z, y, temperature=0.5)
    >>> bool(torch.allclose(loss, supcon_loss_reference(z, y, temperature=0.5)))
    True
    >>> p = torch.linspace(0, 1, 10)  # e.g. relative slice positions: PCL's positives
    >>> loss = supcon_loss(z, positions=p, window=0.25, temperature=0.5)
    >>> ref = supcon_loss_reference(z, positions=p, window=0.25, temperature=0.5)
    >>> bool(torch.allclose(loss, ref))
    True
    """
    features, as_numpy = as_tensor(features, "features")
    if (labels is None) == (positions is None):
        raise ValueError("give exactly one of labels (positives share a label) and positions "
                         "(positives lie within window of each other)")
    if positions is None and window is not None:
        raise ValueError("window applies to positions; with labels leave it None")
    check_tensor(features, "features", dtype="floating", dims="(N, D)", nonempty="ND")
    n = features.shape[0]
    if labels is not None:
        labels, _ = as_tensor(labels, "labels")
        _check_ids(labels, "labels", n, features.device)
    else:
        positions = _check_positions(positions, n, features.device)
        if window is None:
            raise ValueError("window is required with positions (e.g. 0.1 for PCL)")
        window = check_float(window, "window", positive=True)
    if groups is not None:
        groups, _ = as_tensor(groups, "groups")
        _check_ids(groups, "groups", n, features.device)
    temperature = check_float(temperature, "temperature", positive=True)
    base_temperature = temperature if base_temperature is None else check_float(
        base_temperature, "base_temperature", positive=True
    )
    normalize = check_bool(normalize, "normalize")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if backend in ("triton", "cuda") and features.dtype == torch.float64:  # any device
        raise TypeError("backend='triton' takes float32, float16 or bfloat16 features, not float64")
    chosen = resolve_triton_backend("supcon_loss", backend, features.device)
    if chosen == "triton" and features.dtype == torch.float64:
        raise TypeError("backend='triton' takes float32, float16 or bfloat16 features, not float64")
    eager = not torch.compiler.is_compiling()
    # On CPU tensors only: on a GPU, bool() would make the host wait for the GPU at every call
    # (a host-bound loss); there, non-finite features give a NaN loss instead of this error.
    if eager and features.device.type == "cpu" and not bool(torch.isfinite(features).all()):
        raise ValueError("features contains NaN or inf values")

    # The 6-kernel normalisation backward only where launches cost (the Triton path); the
    # torch path keeps autograd's, so that CPU training runs give the same numbers as before
    # to the last bit (the README's demo and ablations were computed with it).
    if not normalize:
        z = features
    elif chosen == "triton":
        z = _normalize_rows(features)
    else:
        z = torch.nn.functional.normalize(features, dim=1, eps=1e-12)
    work = torch.float64 if features.dtype == torch.float64 else torch.float32
    scale = temperature / base_temperature
    # Unit-norm rows bound every score by 1 / temperature: the kernels may then use it as a
    # fixed maximum instead of an online one (0 = no bound known).
    bound = 1.0 / temperature if normalize else 0.0
    if chosen == "triton" and labels is not None:
        # The whole loss per anchor in one custom op: one forward kernel (LSE, positive sum
        # and count from the same score tiles) and one backward kernel.
        from supercl.kernels.triton import supcon_loss as kernels

        tiles = kernels._table(groups, n, z.device)
        per_anchor, _, n_pos = _supcon_anchor_loss(
            z, labels, groups if groups is not None else labels.new_empty(0), tiles,
            1.0 / temperature, scale, bound)
    else:
        grp = groups.to(torch.int64) if groups is not None else None
        lse = _supcon_lse(z, grp if grp is not None else z.new_zeros(0, dtype=torch.int64),
                          1.0 / temperature, bound, chosen)
        if labels is not None:
            pos_sum, n_pos = _positive_sums(z.to(work), labels, grp)
        else:
            pos_sum, n_pos = _window_positive_sums(z, positions, window, grp)
            pos_sum = pos_sum.to(work)
        per_anchor = torch.where(
            n_pos > 0,
            scale * (lse.to(work) - pos_sum / (temperature * n_pos.clamp(min=1).to(work))),
            torch.zeros((), dtype=work, device=z.device),
        )
    valid = n_pos > 0
    if reduction == "none":
        loss = per_anchor
    elif reduction == "sum":
        loss = per_anchor.sum()
    else:
        loss = per_anchor.sum() / valid.sum().clamp(min=1)
    if eager:
        _warn_if_no_positive(valid)
    return loss.detach().numpy() if as_numpy else loss


class _NormalizeRows(torch.autograd.Function):
    """torch.nn.functional.normalize(x, dim=1, eps=1e-12), with a backward of 6 kernels
    instead of autograd's ~14 through norm, clamp_min and div (the loss is host-bound
    on a GPU: every launch costs ~10 us of host time).  With r = max(||x||, eps), z = x / r:
    dx = (dz - [||x|| >= eps] z (z . dz)) / r."""

    @staticmethod
    def forward(x):
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        denominator = norm.clamp_min(1e-12)
        return x / denominator, norm, denominator

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, norm, denominator = output
        ctx.save_for_backward(z, norm, denominator)
        ctx.mark_non_differentiable(norm, denominator)
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, dz, _dnorm, _ddenominator):
        if dz is None:
            return None
        z, norm, denominator = ctx.saved_tensors
        # rows shorter than eps are divided by the constant eps: no projection there
        along = (z * dz).sum(1, keepdim=True).masked_fill_(norm < 1e-12, 0)
        return torch.addcmul(dz, z, along, value=-1) / denominator



def _normalize_rows(x: torch.Tensor) -> torch.Tensor:
    return _NormalizeRows.apply(x)[0]


def _check_ids(ids: torch.Tensor, name: str, n: int, device: torch.device) -> None:
    check_tensor(ids, name, dtype="integer", dims=f"({n},) like features", shape=(n,),
                 device=device, device_of="features")


def _check_positions(positions: Any, n: int, device: torch.device) -> torch.Tensor:
    positions, _ = as_tensor(positions, "positions")
    check_tensor(positions, "positions", dtype="floating", dims=f"({n},) like features",
                 shape=(n,), device=device, device_of="features")
    if not torch.compiler.is_compiling() and not bool(torch.isfinite(positions).all()):
        raise ValueError("positions contains NaN or inf values")
    return positions


def _first_true(predicate, low: torch.Tensor, high: torch.Tensor, n: int) -> torch.Tensor:
    """Per element, the smallest k in [low, high) with predicate(k) true, else high; the
    predicate must be monotone (false ... false true ... true) on each range.  A binary search
    with a fixed number of rounds: no data-dependent control flow, no host synchronisation."""
    lo, hi = low.clone(), high.clone()
    for _ in range(max(1, n).bit_length() + 1):
        open_ = lo < hi
        mid = torch.where(open_, (lo + hi) // 2, lo).clamp(max=max(n - 1, 0))
        take = open_ & predicate(mid)
        hi = torch.where(take, mid, hi)
        lo = torch.where(open_ & ~take, mid + 1, lo)
    return lo


def _window_positive_sums(z: torch.Tensor, positions: torch.Tensor, window: float,
                          groups: torch.Tensor | None):
    """sum_{p in P(i)} z_i . z_p and |P(i)| for P(i) = {j != i in i's group : |p_i - p_j| <
    window}, in O(N D + N log N): sorted by (group, position), each P(i) + {i} is a contiguous
    run (the float64 predicate is monotone along the sorted positions), so its embedding sum is
    a difference of float64 prefix sums.  Returns float64 sums and int64 counts."""
    n = z.shape[0]
    p = positions.to(torch.float64)
    order = torch.argsort(p, stable=True)
    if groups is not None:
        order = order[torch.argsort(groups[order], stable=True)]
        g = groups[order]
        start = torch.searchsorted(g, g, right=False)
        end = torch.searchsorted(g, g, right=True)
    else:
        start = torch.zeros(n, dtype=torch.int64, device=z.device)
        end = torch.full((n,), n, dtype=torch.int64, device=z.device)
    ps = p[order]
    idx = torch.arange(n, device=z.device)
    # first sample of i's run: the first k in [start, i] with p_i - p_k < window (k = i holds)
    first = _first_true(lambda k: (ps - ps[k]) < window, start, idx, n)
    # one past its last: the first k in (i, end) with p_k - p_i >= window, else end
    stop = _first_true(lambda k: (ps[k] - ps) >= window, idx + 1, end, n)
    zs = z[order].to(torch.float64)
    prefix = torch.cat([zs.new_zeros(1, zs.shape[1]), zs.cumsum(0)])
    window_sum = prefix[stop] - prefix[first] - zs
    pos_sorted = (zs * window_sum).sum(1)
    count_sorted = stop - first - 1
    pos_sum = torch.empty_like(pos_sorted).scatter(0, order, pos_sorted)
    n_pos = torch.empty_like(count_sorted).scatter(0, order, count_sorted)
    return pos_sum, n_pos


def _warn_if_no_positive(valid: torch.Tensor) -> None:
    global _warned_no_positive
    if _warned_no_positive:
        return
    if valid.device.type == "cuda":
        # bool() makes the host wait for the GPU (in a training step, for the network's forward
        # to finish). A label set in which no anchor has a positive is a property of the set-up
        # (every label alone in its group, a window too narrow), seen at the first call: on CUDA
        # only that call pays for the check.
        _warned_no_positive = True
    if not bool(valid.any()):
        _warned_no_positive = True
        warnings.warn(
            "supcon_loss: no anchor has a positive (every label is alone in its group, or no "
            "other position lies within the window); the loss is 0 with a zero gradient. This "
            "warning is shown once.",
            RuntimeWarning,
            stacklevel=3,
        )


def _positive_sums(z: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor | None):
    """sum_{p in P(i)} z_i . z_p and |P(i)| for every anchor, through per-(group, label) sums
    of z: O(N D), no N x N.  A sort keeps every shape static (torch.compile-friendly)."""
    n = z.shape[0]
    labels = labels.to(torch.int64)
    if groups is None:
        order = torch.argsort(labels, stable=True)
        key_changes = labels[order][1:] != labels[order][:-1]
    else:
        # Sort by label, then stably by group: equal (group, label) pairs end up adjacent.
        by_label = torch.argsort(labels, stable=True)
        order = by_label[torch.argsort(groups[by_label], stable=True)]
        key_changes = (labels[order][1:] != labels[order][:-1]) | (
            groups[order][1:] != groups[order][:-1]
        )
    segment_sorted = torch.cat([key_changes.new_zeros(1), key_changes]).to(torch.int64).cumsum(0)
    segment = torch.empty_like(segment_sorted).scatter_(0, order, segment_sorted)
    sums = z.new_zeros(z.shape).index_add(0, segment, z)
    counts = torch.zeros(n, dtype=torch.int64, device=z.device).index_add(
        0, segment, torch.ones_like(segment)
    )
    pos_sum = (z * (sums[segment] - z)).sum(1)
    return pos_sum, counts[segment] - 1


# ---- the N x N part: LSE_i = log sum_{j != i, same group} exp(z_i . z_j * scale) -------------


@torch.library.custom_op("supercl::supcon_lse", mutates_args=())
def _supcon_lse(z: torch.Tensor, groups: torch.Tensor, scale: float, bound: float,
                backend: str) -> torch.Tensor:
    """(N,) log-sum-exp over each anchor's group (groups of length 0 = one group); float32, or
    float64 for float64 z on the torch backend; -inf for an anchor alone in its group.
    ``bound``: a guaranteed bound on |z_i . z_j| * scale (0: none), which the Triton forward
    may use as a fixed maximum."""
    grp = groups if groups.numel() else None
    if backend == "triton":
        from supercl.kernels.triton import supcon_loss as kernels

        return kernels.supcon_lse(z, grp, scale, bound)
    return _lse_torch(z, grp, scale)


@_supcon_lse.register_fake
def _(z, groups, scale, bound, backend):
    dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
    return z.new_empty(z.shape[0], dtype=dtype)


@torch.library.custom_op("supercl::supcon_lse_backward", mutates_args=())
def _supcon_lse_backward(z: torch.Tensor, groups: torch.Tensor, lse: torch.Tensor,
                         coef: torch.Tensor, scale: float, backend: str) -> torch.Tensor:
    """dZ = (P + P^T) Z * scale, P_ij = coef_i exp(s_ij - lse_i) on the LSE support."""
    grp = groups if groups.numel() else None
    if backend == "triton":  # the kernel maps lse = -inf to 0 itself
        from supercl.kernels.triton import supcon_loss as kernels

        return kernels.supcon_lse_backward(z, grp, lse, coef.float(), scale)
    # Anchors alone in their group have lse = -inf and no term; 0 keeps exp() finite.
    lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    return _lse_backward_torch(z, grp, lse, coef, scale).to(z.dtype)


@_supcon_lse_backward.register_fake
def _(z, groups, lse, coef, scale, backend):
    return torch.empty_like(z)


def _setup_context(ctx, inputs, output):
    z, groups, scale, _bound, backend = inputs
    ctx.save_for_backward(z, groups, output)
    ctx.scale, ctx.backend = scale, backend


def _backward(ctx, grad):
    z, groups, lse = ctx.saved_tensors
    dz = _supcon_lse_backward(z, groups, lse, grad.to(lse.dtype), ctx.scale, ctx.backend)
    return dz, None, None, None, None


_supcon_lse.register_autograd(_backward, setup_context=_setup_context)


# ---- the whole loss per anchor on the Triton backend (labels): one kernel each way -------------


@torch.library.custom_op("supercl::supcon_anchor_loss", mutates_args=())
def _supcon_anchor_loss(z: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor,
                        tiles: torch.Tensor, scale: float, ratio: float,
                        bound: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, lse, count), each (N,): loss_i = ratio * (LSE_i - mean_{p in P(i)} s_ip) (0
    without a positive) float32, LSE float32 (-inf for an anchor alone in its group), count
    = |P(i)| int32.  groups of length 0 = one group; tiles: the kernels' tile-range table for
    groups (kernels._table).  Only loss is differentiable; lse and count are saved for the
    backward.  Triton only (CUDA, or the interpreter)."""
    from supercl.kernels.triton import supcon_loss as kernels

    grp = groups if groups.numel() else None
    lse, loss, count = kernels.supcon_forward(z, labels, grp, tiles, scale, ratio, bound)
    return loss, lse, count


@_supcon_anchor_loss.register_fake
def _(z, labels, groups, tiles, scale, ratio, bound):
    n = z.shape[0]
    return (z.new_empty(n, dtype=torch.float32), z.new_empty(n, dtype=torch.float32),
            z.new_empty(n, dtype=torch.int32))


@torch.library.custom_op("supercl::supcon_anchor_loss_backward", mutates_args=())
def _supcon_anchor_loss_backward(z: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor,
                                 tiles: torch.Tensor, lse: torch.Tensor, count: torch.Tensor,
                                 grad: torch.Tensor, scale: float, ratio: float) -> torch.Tensor:
    """dL/dz for upstream gradient ``grad`` of the per-anchor losses, in z's dtype."""
    from supercl.kernels.triton import supcon_loss as kernels

    grp = groups if groups.numel() else None
    return kernels.supcon_backward(z, labels, grp, tiles, lse, count, grad, scale, ratio)


@_supcon_anchor_loss_backward.register_fake
def _(z, labels, groups, tiles, lse, count, grad, scale, ratio):
    return torch.empty_like(z)


def _anchor_setup_context(ctx, inputs, output):
    z, labels, groups, tiles, scale, ratio, _bound = inputs
    _, lse, count = output
    ctx.save_for_backward(z, labels, groups, tiles, lse, count)
    ctx.scale, ctx.ratio = scale, ratio
    ctx.mark_non_differentiable(lse, count)
    ctx.set_materialize_grads(False)  # no zero tensors for lse's and count's gradients


def _anchor_backward(ctx, grad, _grad_lse, _grad_count):
    z, labels, groups, tiles, lse, count = ctx.saved_tensors
    dz = None
    if grad is not None:
        dz = _supcon_anchor_loss_backward(z, labels, groups, tiles, lse, count,
                                          grad.to(torch.float32), ctx.scale, ctx.ratio)
    return dz, None, None, None, None, None, None


_supcon_anchor_loss.register_autograd(_anchor_backward, setup_context=_anchor_setup_context)


def _chunks(n: int):
    rows = max(1, min(n, _CHUNK_ELEMENTS // max(n, 1)))
    for start in range(0, n, rows):
        yield start, min(n, start + rows)


def _group_spans(groups):
    """For groups sorted in non-decreasing order on the CPU: (first, end) column of every row's
    group, so that a row chunk only meets the columns of its own groups. None otherwise (the
    check would cost a host synchronisation on a GPU, where the Triton path skips tiles)."""
    if groups is None or groups.device.type != "cpu" or groups.numel() < 2:
        return None
    if not bool((groups[1:] >= groups[:-1]).all()):
        return None
    return (torch.searchsorted(groups, groups, right=False),
            torch.searchsorted(groups, groups, right=True))


def _equal_group_size(spans, n):
    """The common size g of sorted, contiguous groups that all have g members (ILCP's images),
    else None: such groups are scored as a batch of (g, g) blocks, with no wasted work."""
    if spans is None:
        return None
    g = int(spans[1][0] - spans[0][0])
    if g < 1 or n % g or not bool(((spans[1] - spans[0]) == g).all()):
        return None
    return g


def _group_blocks(n_groups: int, g: int):
    per = max(1, min(n_groups, _CHUNK_ELEMENTS // (g * g)))
    for a in range(0, n_groups, per):
        yield a, min(n_groups, a + per)


def _block_scores(zb, scale):
    """(G, g, g) scores of a batch of groups, -inf on the diagonals."""
    s = torch.bmm(zb, zb.transpose(1, 2)) * scale
    s.diagonal(dim1=1, dim2=2).fill_(-math.inf)
    return s


def _column_window(spans, n, start, stop):
    if spans is None:
        return 0, n
    return int(spans[0][start]), int(spans[1][stop - 1])


def _masked_scores(z, groups, start, stop, scale, c0=0, c1=None):
    """Rows start..stop, columns c0..c1 of s = z z^T * scale, -inf off the support (self,
    other groups). Columns outside c0..c1 must be off the support of these rows."""
    c1 = z.shape[0] if c1 is None else c1
    s = (z[start:stop] @ z[c0:c1].T) * scale
    rows = torch.arange(max(start, c0), min(stop, c1), device=z.device)
    s[rows - start, rows - c0] = -math.inf
    if groups is not None:
        s.masked_fill_(groups[start:stop, None] != groups[None, c0:c1], -math.inf)
    return s


def _lse_torch(z, groups, scale):
    # With sorted groups (e.g. ILCP's pixels, image by image) a chunk of rows is only scored
    # against its own images' columns: B times less work for B equal groups (16x at 16 images).
    work = torch.float64 if z.dtype == torch.float64 else torch.float32
    zw = z.to(work)
    n = z.shape[0]
    spans = _group_spans(groups)
    out = torch.empty(n, dtype=work, device=z.device)
    g = _equal_group_size(spans, n)
    if g is not None:
        zg = zw.view(n // g, g, -1)
        og = out.view(n // g, g)
        for a, b in _group_blocks(n // g, g):
            og[a:b] = torch.logsumexp(_block_scores(zg[a:b], scale), dim=2)
        return out
    for start, stop in _chunks(n):
        c0, c1 = _column_window(spans, n, start, stop)
        out[start:stop] = torch.logsumexp(_masked_scores(zw, groups, start, stop, scale, c0, c1), dim=1)
    return out


def _lse_backward_torch(z, groups, lse, coef, scale):
    work = torch.float64 if z.dtype == torch.float64 else torch.float32
    zw = z.to(work)
    n = z.shape[0]
    spans = _group_spans(groups)
    dz = torch.zeros_like(zw)
    lse, coef = lse.to(work), coef.to(work)
    g = _equal_group_size(spans, n)
    if g is not None:
        zg, dg = zw.view(n // g, g, -1), dz.view(n // g, g, -1)
        lg, cg = lse.view(n // g, g, 1), coef.view(n // g, g, 1)
        for a, b in _group_blocks(n // g, g):
            p = torch.exp(_block_scores(zg[a:b], scale) - lg[a:b]) * cg[a:b]
            dg[a:b] = (torch.bmm(p, zg[a:b]) + torch.bmm(p.transpose(1, 2), zg[a:b])) * scale
        return dz
    for start, stop in _chunks(n):
        c0, c1 = _column_window(spans, n, start, stop)
        p = torch.exp(_masked_scores(zw, groups, start, stop, scale, c0, c1) - lse[start:stop, None])
        p *= coef[start:stop, None]
        dz[start:stop] += (p @ zw[c0:c1]) * scale
        dz[c0:c1] += (p.T @ zw[start:stop]) * scale
    return dz
