"""Superpixel pooling: the mean of a feature map over each superpixel, the paint-back, and both
fused (SuperCL's ASP). Bringing superpixel maps to the feature resolution is
:mod:`supercl.ops.downsample`.

Layers: Triton kernels and their launchers in ``kernels/triton/superpixel_pool.py``
and a torch implementation here -> ``torch.library`` custom ops with fake (meta) kernels and
autograd -> the public functions, which validate their input once and call the custom ops.
The custom ops are visible to ``torch.compile`` (no graph break) and to autograd:

- ``supercl::superpixel_pool`` -- segment means and counts; backward paints grad / count
  (``supercl::superpixel_unpool_mean``, internal: the division fused into the paint).
- ``supercl::superpixel_unpool`` -- paint; backward is the segment sum of the gradient.
- ``supercl::superpixel_mean_map`` -- segment mean painted back, a symmetric projection, so its
  backward is the same op applied to the gradient.
- ``supercl::superpixel_segment_sum`` -- internal: the segment sum, backward of unpool.

Each op has a plain-torch reference (``<op>_reference`` in :mod:`supercl.testing`): the tests'
oracle and the benchmarks' baseline.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from supercl._validate import check_tensor

from ._common import (FEATURE_DTYPES, ID_CHECK, as_tensor, check_bool, check_int,
                      resolve_triton_backend, to_output)

__all__ = ["superpixel_mean_map", "superpixel_pool", "superpixel_unpool"]

_NORMALIZE = ("mean", "area")


# ---- public functions ----------------------------------------------------------------------


def superpixel_pool(
    features: torch.Tensor,
    segments: torch.Tensor,
    num_segments: int | None = None,
    *,
    deterministic: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean feature vector of every superpixel (segment mean, "superpixel pooling").

    ``means[b, k, c]`` is the mean of ``features[b, c, h, w]`` over the pixels with
    ``segments[b, h, w] == k``, and ``counts[b, k]`` their number. Sums accumulate in float32
    (float64 for float64 features) and the means are cast to the dtype of ``features``. A
    segment without pixels (count 0) has mean 0.

    Differentiable with respect to ``features``: the gradient of a pixel is the upstream
    gradient of its segment's mean divided by the segment's count.

    Parameters
    ----------
    features : torch.Tensor or numpy.ndarray
        (B, C, H, W) float32, float16 or bfloat16 (float64 is accepted too, e.g. for
        ``gradcheck``). Any strides (channels_last, transposed views).
    segments : torch.Tensor or numpy.ndarray
        (B, H, W) int32 or int64 superpixel ids in [0, K), on the device of ``features``, e.g.
        :func:`supercl.ops.slic` labels brought to the feature resolution with
        :func:`downsample_segments`.
    num_segments : int, optional
        K, the number of segments per image (>= 1). ``None`` takes ``segments.max() + 1``,
        which costs one host synchronisation (the output shape depends on a value on the
        device) and cannot be traced by ``torch.compile(fullgraph=True)``. With
        ``num_segments`` given, the CUDA path never synchronises.
    deterministic : bool
        Triton backend: ``False`` (default) adds per-block partial sums with float atomics, so
        the last bits may vary between runs; ``True`` uses no float atomics (a fixed summation
        order, bitwise reproducible, slower). The torch backend is deterministic on the CPU;
        on CUDA tensors it uses ``index_put_(accumulate=True)`` (sorted, deterministic) when
        ``True`` and ``scatter_add_`` (atomics) otherwise.
    backend : {None, "torch", "triton", "cpu", "cuda"}
        ``None`` chooses by device (or ``SUPERCL_BACKEND``): Triton for CUDA tensors, torch
        for CPU tensors. ``"cpu"`` is an alias of ``"torch"`` and ``"cuda"`` of ``"triton"``.
        ``"triton"`` on CPU tensors runs the kernels in Triton's interpreter and needs
        ``TRITON_INTERPRET=1``. The Triton kernels sum with one-hot products, so a NaN or
        infinite feature makes NaN the means of the segments that share its block of pixels
        too, not only its own segment's.

    Returns
    -------
    means : torch.Tensor or numpy.ndarray
        (B, K, C), dtype of ``features``, contiguous.
    counts : torch.Tensor or numpy.ndarray
        (B, K) int64. Both come back as numpy arrays when ``features`` is one (then
        ``segments`` may be either kind).

    Raises
    ------
    TypeError
        ``features`` not a floating tensor of a supported dtype; ``segments`` not int32/int64
        (float ids included); arguments of the wrong type.
    ValueError
        Wrong shapes (``segments`` must be (B, H, W) like ``features``), an empty batch or
        image, tensors on different devices, ids negative or >= ``num_segments``,
        ``num_segments < 1``, an unknown backend.
    RuntimeError
        Ids out of range on CUDA tensors with ``num_segments`` given, or under
        ``torch.compile``: the range check is then an asynchronous device assertion
        (``torch._assert_async``), to keep the op free of host synchronisations. On CPU tensors
        in eager mode the check is synchronous and raises ``ValueError``.

    Examples
    --------
    >>> import torch
    >>> from supercl.ops import superpixel_pool
    >>> features = torch.arange(6.0).reshape(1, 1, 2, 3)   # [[0, 1, 2], [3, 4, 5]]
    >>> segments = torch.tensor([[[0, 0, 1], [0, 0, 1]]])
    >>> means, counts = superpixel_pool(features, segments, num_segments=3)
    >>> means[0, :, 0].tolist(), counts[0].tolist()          # segment 2 is empty
    ([2.0, 3.5, 0.0], [4, 2, 0])
    """
    features, as_numpy = _as_input(features, "features")
    segments, _ = _as_input(segments, "segments")
    _check_features(features, "features")
    _check_segments(segments, features, "features")
    num_segments = _resolve_num_segments(segments, num_segments)
    deterministic = check_bool(deterministic, "deterministic")
    chosen = resolve_triton_backend("superpixel_pool", backend, features.device)
    means, counts = _pool_op(features, segments, num_segments, deterministic, chosen)
    return to_output(means, as_numpy), to_output(counts, as_numpy)


def superpixel_unpool(
    means: torch.Tensor, segments: torch.Tensor, *, backend: str | None = None
) -> torch.Tensor:
    """Paint every pixel with its superpixel's value: ``out[b, c, h, w] = means[b, segments[b, h,
    w], c]`` (the inverse layout of :func:`superpixel_pool`).

    Differentiable with respect to ``means``: the gradient of ``means[b, k]`` is the sum of the
    upstream gradient over segment k. On the Triton backend that sum uses float atomics unless
    ``torch.use_deterministic_algorithms(True)`` is on, which selects the ordered kernel.

    Parameters
    ----------
    means : torch.Tensor or numpy.ndarray
        (B, K, C) float32, float16, bfloat16 (or float64), any strides.
    segments : torch.Tensor or numpy.ndarray
        (B, H, W) int32 or int64 ids in [0, K), on the device of ``means``.
    backend : {None, "torch", "triton", "cpu", "cuda"}
        As in :func:`superpixel_pool`.

    Returns
    -------
    torch.Tensor or numpy.ndarray
        (B, C, H, W), dtype of ``means``, contiguous. No host synchronisation on CUDA.

    Raises
    ------
    TypeError, ValueError, RuntimeError
        As in :func:`superpixel_pool` (ids must lie in [0, K) with K = ``means.shape[1]``).

    Examples
    --------
    >>> import torch
    >>> from supercl.ops import superpixel_unpool
    >>> means = torch.tensor([[[10.0], [20.0]]])             # (B=1, K=2, C=1)
    >>> segments = torch.tensor([[[0, 1, 1], [1, 0, 0]]])
    >>> superpixel_unpool(means, segments)[0, 0].tolist()
    [[10.0, 20.0, 20.0], [20.0, 10.0, 10.0]]
    """
    means, as_numpy = _as_input(means, "means")
    segments, _ = _as_input(segments, "segments")
    check_tensor(means, "means", dtype=FEATURE_DTYPES, dims="(B, K, C)", nonempty="BKC")
    batch, num_segments, _ = means.shape
    check_tensor(segments, "segments", **ID_CHECK, dims=f"({batch}, H, W) like means' batch",
                 shape=(batch, None, None), nonempty="HW", device=means.device,
                 device_of="means")
    _check_id_range(segments, num_segments)
    chosen = resolve_triton_backend("superpixel_unpool", backend, means.device)
    return to_output(_unpool_op(means, segments, chosen), as_numpy)


def superpixel_mean_map(
    features: torch.Tensor,
    segments: torch.Tensor,
    normalize: str = "mean",
    num_segments: int | None = None,
    *,
    deterministic: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """Every pixel replaced by its superpixel's mean: :func:`superpixel_pool` and
    :func:`superpixel_unpool` fused. With C = 1 (features averaged over channels) this is
    SuperCL's ASP, the average superpixel feature map.

    ``normalize="mean"`` divides each segment's sum by its pixel count. ``"area"`` divides it
    by H * W instead, which is what the SuperCL reference code does (its ASP equals the true
    mean map scaled per segment by size / (H * W)).

    Differentiable with respect to ``features``. The map is a symmetric linear projection
    (``P[p, q] = [s_p = s_q] / n_{s_p}``, or ``/ (H * W)`` for "area"), so the backward is the
    same op applied to the upstream gradient.

    Parameters
    ----------
    features : torch.Tensor or numpy.ndarray
        (B, C, H, W) float32, float16 or bfloat16 (or float64), any strides.
    segments : torch.Tensor or numpy.ndarray
        (B, H, W) int32 or int64 ids in [0, K), on the device of ``features``.
    normalize : {"mean", "area"}
        Divide by the segment's size (default) or by the image area H * W.
    num_segments : int, optional
        K; ``None`` costs one host synchronisation, as in :func:`superpixel_pool`.
    deterministic : bool
        As in :func:`superpixel_pool` (also used by the backward).
    backend : {None, "torch", "triton", "cpu", "cuda"}
        As in :func:`superpixel_pool`.

    Returns
    -------
    torch.Tensor or numpy.ndarray
        (B, C, H, W), dtype of ``features``, contiguous; sums accumulate in float32 (float64).

    Raises
    ------
    TypeError, ValueError, RuntimeError
        As in :func:`superpixel_pool`; ``ValueError`` for an unknown ``normalize``.

    Examples
    --------
    >>> import torch
    >>> from supercl.ops import superpixel_mean_map
    >>> features = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]]]])  # (1, 1, 2, 2)
    >>> segments = torch.tensor([[[0, 0], [1, 1]]])
    >>> superpixel_mean_map(features, segments)[0, 0].tolist()
    [[2.0, 2.0], [6.0, 6.0]]
    >>> superpixel_mean_map(features, segments, normalize="area")[0, 0].tolist()
    [[1.0, 1.0], [3.0, 3.0]]
    """
    features, as_numpy = _as_input(features, "features")
    segments, _ = _as_input(segments, "segments")
    _check_features(features, "features")
    _check_segments(segments, features, "features")
    if not isinstance(normalize, str) or normalize not in _NORMALIZE:
        raise ValueError(f"normalize must be one of {_NORMALIZE}, got {normalize!r}")
    # The output's shape does not depend on K: without num_segments the op finds it itself
    # (max id + 1, one host synchronisation, inside the op), which torch.compile need not see.
    if num_segments is not None:
        num_segments = _resolve_num_segments(segments, num_segments)
    deterministic = check_bool(deterministic, "deterministic")
    chosen = resolve_triton_backend("superpixel_mean_map", backend, features.device)
    return to_output(_mean_map_op(features, segments, normalize, num_segments, deterministic,
                                  chosen), as_numpy)


# ---- validation ----------------------------------------------------------------------------


def _as_input(value: Any, name: str) -> tuple[Any, bool]:
    """A numpy array as a (shared) tensor, and whether it was one; anything else unchanged,
    for the checks below to name."""
    if isinstance(value, np.ndarray):
        return as_tensor(value, name)
    return value, False


def _check_features(features: Any, name: str) -> None:
    check_tensor(features, name, dtype=FEATURE_DTYPES, dims="(B, C, H, W)", nonempty="BCHW")


def _check_segments(segments: Any, features: torch.Tensor, name: str) -> None:
    batch, _, height, width = features.shape
    check_tensor(segments, "segments", **ID_CHECK,
                 dims=f"(B, H, W) = {(batch, height, width)} like {name} "
                      f"{tuple(features.shape)}",
                 shape=(batch, height, width), device=features.device, device_of=name)


def _resolve_num_segments(segments: torch.Tensor, num_segments: Any) -> int:
    """K: given (then checked against the ids), or max id + 1 (one host synchronisation)."""
    if num_segments is None:
        lo, hi = torch.stack(torch.aminmax(segments)).tolist()  # the one synchronisation
        if lo < 0:
            raise ValueError(f"segments must hold ids >= 0, got {lo}")
        return hi + 1
    num_segments = check_int(num_segments, "num_segments", minimum=1)
    _check_id_range(segments, num_segments)
    return num_segments


def _check_id_range(segments: torch.Tensor, num_segments: int) -> None:
    """Ids in [0, K): a synchronous ValueError on CPU tensors in eager mode; an asynchronous
    device assertion on CUDA tensors and under torch.compile (no host synchronisation)."""
    if segments.device.type == "cpu" and not torch.compiler.is_compiling():
        lo, hi = torch.stack(torch.aminmax(segments)).tolist()
        if lo < 0 or hi >= num_segments:
            raise ValueError(
                f"segments must hold ids in [0, num_segments) = [0, {num_segments}), got ids "
                f"from {lo} to {hi}"
            )
        return
    # One reduction over the ids (aminmax), not two comparisons writing (B, H, W) masks and a
    # third pass over them: 8 MB read instead of ~30 MB moved at 32 x 256^2 int32 ids.
    lo, hi = torch.aminmax(segments)
    torch._assert_async((lo >= 0) & (hi < num_segments),
                        f"supercl: segments must hold ids in [0, {num_segments})")


# ---- custom ops (torch.compile and autograd see these) -------------------------------------


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.library.custom_op("supercl::superpixel_pool", mutates_args=())
def _pool_op(features: torch.Tensor, segments: torch.Tensor, num_segments: int,
             deterministic: bool, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    sums, counts = _segment_sum(features, segments, num_segments, deterministic, backend)
    # int64 counts promote to the sums' float dtype inside the division (no conversion kernel).
    means = (sums / counts.clamp_min(1).unsqueeze(-1)).to(features.dtype)
    return means, counts


@_pool_op.register_fake
def _(features, segments, num_segments, deterministic, backend):
    batch, channels = features.shape[:2]
    return (features.new_empty(batch, num_segments, channels),
            features.new_empty(batch, num_segments, dtype=torch.int64))


def _pool_setup(ctx, inputs, output):
    features, segments, _, deterministic, backend = inputs
    ctx.save_for_backward(segments, output[1])
    ctx.dtype, ctx.backend = features.dtype, backend


def _pool_backward(ctx, grad_means, grad_counts):
    segments, counts = ctx.saved_tensors
    if grad_means is None:
        return None, None, None, None, None
    # grad / count painted in one pass (the Triton paint divides as it gathers).
    grad = _unpool_mean_op(grad_means.to(ctx.dtype), segments, counts, ctx.backend)
    return grad, None, None, None, None


_pool_op.register_autograd(_pool_backward, setup_context=_pool_setup)


@torch.library.custom_op("supercl::superpixel_unpool", mutates_args=())
def _unpool_op(means: torch.Tensor, segments: torch.Tensor, backend: str) -> torch.Tensor:
    return _paint(means, segments, means.dtype, backend)


@_unpool_op.register_fake
def _(means, segments, backend):
    batch, _, channels = means.shape
    return means.new_empty(batch, channels, segments.shape[1], segments.shape[2])


def _unpool_setup(ctx, inputs, output):
    means, segments, backend = inputs
    ctx.save_for_backward(segments)
    ctx.num_segments, ctx.dtype, ctx.backend = means.shape[1], means.dtype, backend


def _unpool_backward(ctx, grad):
    (segments,) = ctx.saved_tensors
    deterministic = torch.are_deterministic_algorithms_enabled()
    sums = _segment_sum_op(grad, segments, ctx.num_segments, deterministic, ctx.backend)
    return sums.to(ctx.dtype), None, None


_unpool_op.register_autograd(_unpool_backward, setup_context=_unpool_setup)


@torch.library.custom_op("supercl::superpixel_unpool_mean", mutates_args=())
def _unpool_mean_op(sums: torch.Tensor, segments: torch.Tensor, counts: torch.Tensor,
                    backend: str) -> torch.Tensor:
    """Internal: ``sums[b, s, c] / max(counts[b, s], 1)`` painted, (B, C, H, W) in the dtype of
    ``sums``; the division in float32 (float64) as in ``superpixel_pool``. The backward of
    ``superpixel_pool`` with the division fused into the paint."""
    return _paint(sums, segments, sums.dtype, backend, counts)


@_unpool_mean_op.register_fake
def _(sums, segments, counts, backend):
    batch, _, channels = sums.shape
    return sums.new_empty(batch, channels, segments.shape[1], segments.shape[2])


def _unpool_mean_setup(ctx, inputs, output):
    sums, segments, counts, backend = inputs
    ctx.save_for_backward(segments, counts)
    ctx.dtype, ctx.backend = sums.dtype, backend


def _unpool_mean_backward(ctx, grad):
    segments, counts = ctx.saved_tensors
    deterministic = torch.are_deterministic_algorithms_enabled()
    sums = _segment_sum_op(grad, segments, counts.shape[1], deterministic, ctx.backend)
    per_segment = sums / counts.clamp_min(1).unsqueeze(-1).to(sums.dtype)
    return per_segment.to(ctx.dtype), None, None, None


_unpool_mean_op.register_autograd(_unpool_mean_backward, setup_context=_unpool_mean_setup)


@torch.library.custom_op("supercl::superpixel_segment_sum", mutates_args=())
def _segment_sum_op(x: torch.Tensor, segments: torch.Tensor, num_segments: int,
                    deterministic: bool, backend: str) -> torch.Tensor:
    """(B, K, C) sums of x (B, C, H, W) per segment, float32 (float64 for float64 x)."""
    return _segment_sum(x, segments, num_segments, deterministic, backend)[0]


@_segment_sum_op.register_fake
def _(x, segments, num_segments, deterministic, backend):
    return x.new_empty(x.shape[0], num_segments, x.shape[1], dtype=_acc_dtype(x.dtype))


def _segment_sum_setup(ctx, inputs, output):
    x, segments, _, _, backend = inputs
    ctx.save_for_backward(segments)
    ctx.dtype, ctx.backend = x.dtype, backend


def _segment_sum_backward(ctx, grad):
    (segments,) = ctx.saved_tensors
    return _unpool_op(grad.to(ctx.dtype), segments, ctx.backend), None, None, None, None


_segment_sum_op.register_autograd(_segment_sum_backward, setup_context=_segment_sum_setup)


@torch.library.custom_op("supercl::superpixel_mean_map", mutates_args=())
def _mean_map_op(features: torch.Tensor, segments: torch.Tensor, normalize: str,
                 num_segments: Optional[int], deterministic: bool, backend: str) -> torch.Tensor:
    if num_segments is None:
        num_segments = _resolve_num_segments(segments, None)
    sums, counts = _segment_sum(features, segments, num_segments, deterministic, backend)
    if normalize == "area":
        values = sums / float(features.shape[2] * features.shape[3])
        return _paint(values.to(features.dtype), segments, features.dtype, backend)
    # sums / count, cast, painted: one pass (the Triton paint divides as it gathers).
    return _paint(sums, segments, features.dtype, backend, counts)


@_mean_map_op.register_fake
def _(features, segments, normalize, num_segments, deterministic, backend):
    return features.new_empty(features.shape)


def _mean_map_setup(ctx, inputs, output):
    _, segments, normalize, num_segments, deterministic, backend = inputs
    ctx.save_for_backward(segments)
    ctx.args = (normalize, num_segments, deterministic, backend)


def _mean_map_backward(ctx, grad):
    (segments,) = ctx.saved_tensors
    # P is symmetric (P[p, q] depends on s_p = s_q only), so grad_x = P^T grad = P grad.
    return _mean_map_op(grad, segments, *ctx.args), None, None, None, None, None


_mean_map_op.register_autograd(_mean_map_backward, setup_context=_mean_map_setup)


# ---- backends: one visible dispatch --------------------------------------------------------


def _segment_sum(x, segments, num_segments, deterministic, backend):
    """(sums (B, K, C) float32/float64 contiguous, counts (B, K) int64)."""
    if backend == "triton":
        from supercl.kernels.triton import superpixel_pool as kernels

        return kernels.segment_sum(x, segments, num_segments, deterministic)
    return _segment_sum_torch(x, segments, num_segments, deterministic)


def _paint(values, segments, dtype, backend, counts=None):
    """(B, C, H, W) ``dtype`` contiguous, ``values[b, segments[b, h, w], c]``, divided by
    ``max(counts[b, segments[b, h, w]], 1)`` in float32 (float64) when ``counts`` is given."""
    if backend == "triton":
        from supercl.kernels.triton import superpixel_pool as kernels

        return kernels.paint(values, segments, dtype,
                             None if counts is None else counts.contiguous())
    if counts is not None:
        acc = _acc_dtype(values.dtype)
        values = values.to(acc) / counts.clamp_min(1).unsqueeze(-1).to(acc)
    return _paint_torch(values, segments, dtype)


def _segment_sum_torch(x, segments, num_segments, deterministic):
    batch, channels, height, width = x.shape
    n = height * width
    acc = _acc_dtype(x.dtype)
    ids = segments.reshape(batch, n).to(torch.int64)
    counts = torch.zeros(batch, num_segments, dtype=torch.int64, device=x.device)
    counts.scatter_add_(1, ids, torch.ones_like(ids))  # integer adds: exact in any order
    src = x.reshape(batch, channels, n).to(acc)
    if deterministic and x.device.type == "cuda":
        # CUDA scatter_add_ uses float atomics; index_put_(accumulate=True) sorts the indices
        # and adds each segment's values in a fixed order.
        flat = (ids + torch.arange(batch, device=x.device).unsqueeze(1) * num_segments)
        sums = torch.zeros(batch * num_segments, channels, dtype=acc, device=x.device)
        sums.index_put_((flat.reshape(-1),), src.transpose(1, 2).reshape(batch * n, channels),
                        accumulate=True)
        return sums.view(batch, num_segments, channels), counts
    # Scatter along the last dimension of (B, C, K): 3.6x faster than index_add_ over (B*K, C)
    # rows on 8x64x256x256 on the CPU (52 vs 189 ms, 2 cores), which needs a transposed copy.
    sums = torch.zeros(batch, channels, num_segments, dtype=acc, device=x.device)
    sums.scatter_add_(2, ids.unsqueeze(1).expand(batch, channels, n), src)
    return sums.transpose(1, 2).contiguous(), counts


def _paint_torch(values, segments, dtype):
    batch, num_segments, channels = values.shape
    _, height, width = segments.shape
    ids = segments.reshape(batch, 1, height * width).to(torch.int64)
    # gather from a contiguous (B, C, K): 2x faster than from the (B, K, C) view, 6x faster
    # than index_select of rows followed by a permute (8x64x256x256, CPU).
    table = values.to(dtype).transpose(1, 2).contiguous()
    out = table.gather(2, ids.expand(batch, channels, height * width))
    return out.view(batch, channels, height, width)
