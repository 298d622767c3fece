"""Superpixel maps brought to another resolution (SLIC labels of the input slice to the
resolution of a feature map): :func:`downsample_segments`, plain torch on any device, no
autograd (ids are integers) and no host synchronisation. Its oracle is
:func:`supercl.testing.downsample_segments_reference`."""

from __future__ import annotations

import numbers
from typing import Any

import torch

from supercl._validate import check_tensor

from ._common import ID_CHECK, as_tensor, check_int, to_output

__all__ = ["downsample_segments"]

_MODES = ("nearest", "majority")


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
    check_tensor(seg, "segments", **ID_CHECK, dims="(B, H, W)", nonempty="BHW")
    _, height, width = seg.shape
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
