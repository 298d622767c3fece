"""Superpixel pooling: the mean of a feature map over each superpixel, the paint-back, both
fused (SuperCL's ASP), and the down-sampling of superpixel maps to the feature resolution.

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

Each op has a plain-torch reference (``<op>_reference``, at the end of this module): the tests'
oracle and the benchmarks' baseline.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional

import numpy as np
import torch

from ._common import as_tensor, check_bool, check_int, resolve_triton_backend, to_output

__all__ = [
    "downsample_segments",
    "downsample_segments_reference",
    "superpixel_mean_map",
    "superpixel_mean_map_reference",
    "superpixel_pool",
    "superpixel_pool_reference",
    "superpixel_unpool",
    "superpixel_unpool_reference",
]

_FEATURE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_ID_DTYPES = (torch.int32, torch.int64)
_NORMALIZE = ("mean", "area")
_MODES = ("nearest", "majority")


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
    if not isinstance(means, torch.Tensor):
        raise TypeError(f"means must be a torch.Tensor or a numpy.ndarray, got {type(means).__name__}")
    if means.dtype not in _FEATURE_DTYPES:
        raise TypeError(
            f"means must have dtype float32, float16, bfloat16 or float64, got {means.dtype}"
        )
    if means.ndim != 3:
        raise ValueError(f"means must have shape (B, K, C), got {tuple(means.shape)}")
    batch, num_segments, channels = means.shape
    if batch == 0:
        raise ValueError("means is an empty batch (B = 0)")
    if num_segments == 0 or channels == 0:
        raise ValueError(f"means must have K >= 1 segments and C >= 1 channels, got "
                         f"{tuple(means.shape)}")
    _check_id_tensor(segments)
    if segments.ndim != 3 or segments.shape[0] != batch:
        raise ValueError(f"segments must have shape ({batch}, H, W) like means' batch, got "
                         f"{tuple(segments.shape)}")
    if segments.shape[1] == 0 or segments.shape[2] == 0:
        raise ValueError(f"segments has an empty image of shape {tuple(segments.shape[1:])}")
    if segments.device != means.device:
        raise ValueError(f"segments is on {segments.device} but means on {means.device}")
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


def downsample_segments(segments: Any, size: Any, mode: str = "nearest"):
    """Superpixel maps brought to another resolution, e.g. SLIC labels of the input slice to
    the resolution of a feature map.

    - ``"nearest"``: the source pixel that ``torch.nn.functional.interpolate(...,
      mode="nearest")`` picks, exactly: ``src = min(floor(dst * scale), in - 1)`` with
      ``scale = in / out`` and the product rounded to float32, as torch computes it for
      float32 input. (The exact rational ``floor(dst * in / out)`` differs from torch for some
      sizes, e.g. 2 -> 82, so torch's rounding is reproduced.)
    - ``"majority"``: the most frequent id among the source pixels of each target pixel, ties
      broken by the smallest id. Target row i covers source rows ``floor(i * H / h)`` to
      ``floor((i + 1) * H / h) - 1`` (at least one row; likewise for columns), so when
      down-sampling the windows tile the image.

    Works on any device, in torch (no Triton), without host synchronisation; no autograd
    (ids are integers).

    Parameters
    ----------
    segments : torch.Tensor or numpy.ndarray
        (B, H, W) int32 or int64 ids (any values, negative ones included).
    size : int or (int, int)
        Target (h, w), each >= 1; an int means (size, size).
    mode : {"nearest", "majority"}

    Returns
    -------
    (B, h, w) ids, same dtype and kind (tensor on its device, or numpy array) as ``segments``.

    Raises
    ------
    TypeError
        ``segments`` not int32/int64; ``size`` not an int or a pair of ints.
    ValueError
        Wrong shape, an empty batch or image, ``size`` < 1, an unknown ``mode``.

    Examples
    --------
    >>> import torch
    >>> from supercl.ops import downsample_segments
    >>> segments = torch.tensor([[[5, 0, 1, 1],
    ...                           [0, 0, 1, 1],
    ...                           [3, 3, 2, 2],
    ...                           [3, 3, 2, 1]]])
    >>> downsample_segments(segments, 2, mode="majority")[0].tolist()
    [[0, 1], [3, 2]]
    >>> downsample_segments(segments, (2, 2))[0].tolist()     # rows 0, 2 and columns 0, 2
    [[5, 1], [3, 2]]
    """
    seg, as_numpy = as_tensor(segments, "segments")
    _check_id_tensor(seg)
    if seg.ndim != 3:
        raise ValueError(f"segments must have shape (B, H, W), got {tuple(seg.shape)}")
    batch, height, width = seg.shape
    if batch == 0:
        raise ValueError("segments is an empty batch (B = 0)")
    if height == 0 or width == 0:
        raise ValueError(f"segments has an empty image of shape ({height}, {width})")
    out_h, out_w = _check_size(size)
    if not isinstance(mode, str) or mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if mode == "nearest":
        rows = _nearest_source_index(height, out_h, seg.device)
        cols = _nearest_source_index(width, out_w, seg.device)
        out = seg[:, rows[:, None], cols[None, :]]
    else:
        out = _majority(seg, out_h, out_w)
    return to_output(out, as_numpy)


# ---- validation ----------------------------------------------------------------------------


def _as_input(value: Any, name: str) -> tuple[Any, bool]:
    """A numpy array as a (shared) tensor, and whether it was one; anything else unchanged,
    for the checks below to name."""
    if isinstance(value, np.ndarray):
        return as_tensor(value, name)
    return value, False


def _check_features(features: Any, name: str) -> None:
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or a numpy.ndarray, got "
                        f"{type(features).__name__}")
    if features.dtype not in _FEATURE_DTYPES:
        raise TypeError(
            f"{name} must have dtype float32, float16, bfloat16 or float64, got {features.dtype}"
        )
    if features.ndim != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(features.shape)}")
    batch, channels, height, width = features.shape
    if batch == 0:
        raise ValueError(f"{name} is an empty batch (B = 0)")
    if channels == 0:
        raise ValueError(f"{name} has no channels (C = 0)")
    if height == 0 or width == 0:
        raise ValueError(f"{name} has an empty image of shape ({height}, {width})")


def _check_id_tensor(segments: Any) -> None:
    if not isinstance(segments, torch.Tensor):
        raise TypeError(f"segments must be a torch.Tensor or a numpy.ndarray, got "
                        f"{type(segments).__name__}")
    if segments.dtype not in _ID_DTYPES:
        raise TypeError(
            f"segments must hold integer ids of dtype int32 or int64, got {segments.dtype}"
            + (" (convert with .long() if the values are whole numbers)"
               if segments.dtype.is_floating_point else "")
        )


def _check_segments(segments: Any, features: torch.Tensor, name: str) -> None:
    _check_id_tensor(segments)
    batch, _, height, width = features.shape
    if tuple(segments.shape) != (batch, height, width):
        raise ValueError(
            f"segments must have shape (B, H, W) = {(batch, height, width)} like {name} "
            f"{tuple(features.shape)}, got {tuple(segments.shape)}"
        )
    if segments.device != features.device:
        raise ValueError(f"segments is on {segments.device} but {name} on {features.device}")


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


def _check_size(size: Any) -> tuple[int, int]:
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        pair = (size, size)
    elif isinstance(size, (tuple, list, torch.Size)):
        pair = tuple(size)
        if len(pair) != 2:
            raise ValueError(f"size must be an int or a pair (h, w), got {len(pair)} entries")
    else:
        raise TypeError(f"size must be an int or a pair of ints (h, w), got {type(size).__name__}")
    return (check_int(pair[0], "size[0]", minimum=1), check_int(pair[1], "size[1]", minimum=1))


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


# ---- downsample_segments helpers -----------------------------------------------------------


def _nearest_source_index(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """Source index of each output index for torch's legacy "nearest" (ATen UpSample.h,
    ``nearest_idx``): ``min(floor(dst * (float)n_in / n_out), n_in - 1)`` in float32."""
    dst = torch.arange(n_out, device=device)
    if n_out == n_in:
        return dst
    if n_out == 2 * n_in:
        return dst >> 1
    # The scale rounded to float32 as ATen computes it, made on the device: a CPU scalar
    # copied there would make the host wait for the stream (a blocking copy).
    scale = torch.full((), float(n_in), dtype=torch.float32, device=device) / n_out
    src = torch.floor(dst.to(torch.float32) * scale).to(torch.int64)
    return src.clamp_max(n_in - 1)


def _windows(n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Source indices (n_out, L) of each target's window and their validity (windows have
    1 to L entries: floor(i n_in / n_out) .. floor((i + 1) n_in / n_out) - 1, at least one)."""
    i = torch.arange(n_out, device=device)
    start = (i * n_in) // n_out
    stop = torch.maximum(((i + 1) * n_in) // n_out, start + 1)
    length = -(-n_in // n_out)  # ceil: the longest window
    offsets = torch.arange(length, device=device)
    index = start[:, None] + offsets[None, :]
    valid = index < stop[:, None]
    return index.clamp_max(n_in - 1), valid


def _majority(seg: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Mode of each window, ties to the smallest id, by sorting each window's ids and counting
    runs; memory O(B * max(H, h) * max(W, w)) int64."""
    batch = seg.shape[0]
    rows, row_ok = _windows(seg.shape[1], out_h, seg.device)       # (h, Lr)
    cols, col_ok = _windows(seg.shape[2], out_w, seg.device)       # (w, Lc)
    window = seg[:, rows[:, None, :, None], cols[None, :, None, :]].to(torch.int64)
    valid = row_ok[:, None, :, None] & col_ok[None, :, None, :]    # (h, w, Lr, Lc)
    length = rows.shape[1] * cols.shape[1]
    window = window.reshape(batch, out_h, out_w, length)
    valid = valid.reshape(1, out_h, out_w, length).expand_as(window)
    # Invalid entries sort last (int64 max) and are not counted.
    keyed = torch.where(valid, window, torch.iinfo(torch.int64).max)
    ordered, order = keyed.sort(dim=-1)
    counted = valid.gather(-1, order).to(torch.int64)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    run = starts.to(torch.int64).cumsum(-1) - 1                    # run index of each entry
    run_counts = torch.zeros_like(ordered).scatter_add_(-1, run, counted)
    best = run_counts.argmax(-1, keepdim=True)  # first maximum: runs are in ascending id order
    first = (run == best).to(torch.int8).argmax(-1, keepdim=True)  # first entry of that run
    return ordered.gather(-1, first).squeeze(-1).to(seg.dtype)


# ---- references (plain torch: the tests' oracle, the benchmarks' baseline) -----------------


def superpixel_pool_reference(features: torch.Tensor, segments: torch.Tensor,
                              num_segments: int | None = None):
    """The oracle of :func:`superpixel_pool`: ``index_add`` of the pixels' feature rows into
    per-(image, segment) rows, in float32 (float64 for float64 features), divided by
    ``bincount``; differentiable through torch's own autograd. Returns (means in the dtype of
    ``features``, counts int64)."""
    sums, counts = _reference_sums(features, segments, num_segments)
    means = sums / counts.clamp_min(1).unsqueeze(-1)
    return means.to(features.dtype), counts


def _reference_sums(features, segments, num_segments):
    batch, channels, height, width = features.shape
    k = int(segments.max()) + 1 if num_segments is None else num_segments
    acc = _acc_dtype(features.dtype)
    flat = (segments.long() + torch.arange(batch, device=segments.device).view(-1, 1, 1) * k)
    flat = flat.reshape(-1)
    rows = features.to(acc).permute(0, 2, 3, 1).reshape(-1, channels)
    sums = torch.zeros(batch * k, channels, dtype=acc, device=features.device)
    sums = sums.index_add(0, flat, rows)
    counts = torch.bincount(flat, minlength=batch * k)
    return sums.view(batch, k, channels), counts.view(batch, k)


def superpixel_unpool_reference(means: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """The oracle of :func:`superpixel_unpool`: per image, ``means[b][segments[b]]`` (advanced
    indexing), moved to (B, C, H, W)."""
    painted = torch.stack([means[b][segments[b].long()] for b in range(means.shape[0])])
    return painted.permute(0, 3, 1, 2).contiguous()


def superpixel_mean_map_reference(features: torch.Tensor, segments: torch.Tensor,
                                  normalize: str = "mean",
                                  num_segments: int | None = None) -> torch.Tensor:
    """The oracle of :func:`superpixel_mean_map`: segment sums by ``index_add`` (float32, or
    float64 for float64 features), divided by the count or by H * W, painted back by
    indexing."""
    height, width = features.shape[2:]
    sums, counts = _reference_sums(features, segments, num_segments)
    denominator = counts.clamp_min(1).unsqueeze(-1) if normalize == "mean" else height * width
    return superpixel_unpool_reference(sums / denominator, segments).to(features.dtype)


def downsample_segments_reference(segments: torch.Tensor, size, mode: str = "nearest"):
    """The oracle of :func:`downsample_segments`. "nearest": the row and column indices that
    ``F.interpolate(..., mode="nearest")`` picks on float32 index grids. "majority": a Python
    loop over the windows with ``unique(return_counts=True)`` (slow; small inputs)."""
    import torch.nn.functional as F

    out_h, out_w = (size, size) if isinstance(size, int) else size
    batch, height, width = segments.shape
    if mode == "nearest":
        grid_r = torch.arange(height, dtype=torch.float32).view(1, 1, height, 1)
        grid_c = torch.arange(width, dtype=torch.float32).view(1, 1, 1, width)
        rows = F.interpolate(grid_r, size=(out_h, 1), mode="nearest").view(-1).long()
        cols = F.interpolate(grid_c, size=(1, out_w), mode="nearest").view(-1).long()
        return segments[:, rows[:, None], cols[None, :]]
    out = torch.empty(batch, out_h, out_w, dtype=segments.dtype)
    for b in range(batch):
        for i in range(out_h):
            r0 = i * height // out_h
            r1 = max((i + 1) * height // out_h, r0 + 1)
            for j in range(out_w):
                c0 = j * width // out_w
                c1 = max((j + 1) * width // out_w, c0 + 1)
                values, counts = segments[b, r0:r1, c0:c1].unique(return_counts=True)
                out[b, i, j] = values[counts == counts.max()].min()
    return out.to(segments.device)
