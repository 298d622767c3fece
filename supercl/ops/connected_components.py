"""Connected-component labeling of multi-label 2D images and 3D volumes."""

from __future__ import annotations

import math
from typing import Any

import torch

from supercl.kernels import CC_DTYPES

from ._common import (
    as_tensor,
    check_int,
    cuda_device,
    extension,
    num_threads,
    resolve_backend,
    to_output,
)

__all__ = ["connected_components"]

_INT32_MAX = 2**31 - 1
# dtypes the kernels of both backends take as they are (supercl.kernels.CC_DTYPES); others are
# widened once (see _kernel_input).
_NATIVE = tuple(getattr(torch, name) for name, _ in CC_DTYPES)


def connected_components(
    labels: Any,
    connectivity: int = 2,
    background: int | None = None,
    return_num: bool = False,
    backend: str | None = None,
    spatial_dims: int = 2,
):
    """Label the connected regions of equal value in a batch of 2D images or 3D volumes.

    Each image is labeled independently. Neighbouring pixels (4-neighbourhood for
    ``connectivity=1``, 8-neighbourhood for ``connectivity=2``) with equal values belong to the
    same region. The output equals ``skimage.measure.label(image, background=background,
    connectivity=connectivity)`` exactly, including its numbering: regions are numbered
    1, 2, ... in the raster order of their first pixel, background pixels get 0.

    Parameters
    ----------
    labels : torch.Tensor or numpy.ndarray, (H, W) or (B, H, W); with ``spatial_dims=3``
        (D, H, W) or (B, D, H, W)
        Integer (or bool) values; any strides. Every int dtype is accepted, values up to the
        full int64 range.
    connectivity : {1, 2} in 2D, {1, 2, 3} in 3D
        The maximum number of coordinates in which two neighbours may differ by 1, as in
        scikit-image: in 2D 1 for 4-connectivity, 2 for 8-connectivity (the default); in 3D 1,
        2 or 3 for the 6-, 18- or 26-neighbourhood (``connectivity=2`` is 18 there, not
        scikit-image's default of 3).
    background : int or None
        Pixels with this value are background and get label 0. ``None`` means 0, as in
        scikit-image. Use a value that does not occur to label every pixel.
    return_num : bool
        Also return the number of regions of each image.
    backend : {None, "cpu", "cuda", "torch", "triton"}
        ("torch" is an alias of "cpu", "triton" of "cuda", the names of the learning ops.)
        ``None`` chooses by the input's device (or the ``SUPERCL_BACKEND`` variable): CUDA
        tensors run on the GPU (CuPy: ``pip install 'supercl[cuda12]'`` or ``[cuda13]``),
        everything else on the C++ backend (OpenMP, ``torch.get_num_threads()`` threads). A
        forced backend computes
        there and returns the result on the input's device. Both give identical labels.
    spatial_dims : {2, 3}
        2 (default): the last two axes are an image, a leading axis is the batch. 3: the last
        three axes are a volume (D, H, W), so that a (D, H, W) volume is never taken for a batch
        of slices; a 4-D input is a batch of volumes. Each volume holds at most 2^31 - 1 voxels.
        Like scikit-image, a (D, H, 1) volume is numbered in the raster order of its (H, D)
        transpose (scikit-image moves the size-1 axis to the front by a swap).
    -------
    components : same kind as ``labels`` (tensor on its device, or numpy array), int32
        Shape of ``labels``.
    num : int64 tensor or array, shape (B,); for a single image or volume a 0-d int64 tensor,
        or a Python ``int`` for a numpy input (as scikit-image's ``label`` returns).
        Only with ``return_num=True``.

    Raises
    ------
    TypeError
        ``labels`` is not a tensor/array or not of an integer dtype; ``background`` is not an
        int.
    ValueError
        Wrong number of dimensions, an empty batch or image, an image of more than 2^31 - 1
        pixels, ``connectivity`` not in {1, 2} (2D) or {1, 2, 3} (3D), ``spatial_dims`` not 2
        or 3, uint64 values beyond the int64 range.

    Examples
    --------
    >>> import torch
    >>> from supercl.ops import connected_components
    >>> x = torch.tensor([[1, 1, 0, 2],
    ...                   [0, 1, 0, 2],
    ...                   [3, 0, 1, 1]])
    >>> connected_components(x, connectivity=1)
    tensor([[1, 1, 0, 2],
            [0, 1, 0, 2],
            [3, 0, 4, 4]], dtype=torch.int32)
    >>> connected_components(x, connectivity=2, return_num=True)[1]
    tensor(3)
    >>> v = torch.zeros(3, 4, 5, dtype=torch.uint8)   # a (D, H, W) volume
    >>> v[0, 0, 0] = v[1, 1, 1] = v[2, 3, 4] = 1
    >>> connected_components(v, connectivity=3, spatial_dims=3, return_num=True)[1]
    tensor(2)
    >>> connected_components(v, connectivity=2, spatial_dims=3, return_num=True)[1]
    tensor(3)
    """
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    volumes = spatial_dims == 3
    x, as_numpy = as_tensor(labels, "labels")
    if x.dtype.is_floating_point or x.dtype.is_complex:
        raise TypeError(f"labels must have an integer or bool dtype, got {x.dtype}")
    if x.ndim not in (spatial_dims, spatial_dims + 1):
        shapes = ("(D, H, W) or (B, D, H, W) with spatial_dims=3" if volumes
                  else "(H, W) or (B, H, W)")
        raise ValueError(f"labels must have shape {shapes}, got {tuple(x.shape)}")
    single = x.ndim == spatial_dims
    if single:
        x = x.unsqueeze(0)
    batch, *spatial = x.shape
    what, unit = ("volume", "voxels") if volumes else ("image", "pixels")
    if batch == 0:
        raise ValueError("labels is an empty batch (B = 0)")
    if 0 in spatial:
        raise ValueError(f"labels has an empty {what} of shape {tuple(spatial)}")
    if math.prod(spatial) > _INT32_MAX:
        raise ValueError(f"labels {what}s have {math.prod(spatial)} {unit}; at most 2**31 - 1 "
                         f"per {what} are supported")
    allowed = (1, 2, 3) if volumes else (1, 2)
    if connectivity not in allowed or isinstance(connectivity, bool):
        raise ValueError("connectivity must be " + ("1, 2 or 3 with spatial_dims=3" if volumes
                                                    else "1 or 2") + f", got {connectivity!r}")
    background = check_int(0 if background is None else background, "background")
    if not isinstance(return_num, bool):
        raise TypeError(f"return_num must be a bool, got {type(return_num).__name__}")

    # skimage.measure.label swaps a trailing size-1 axis to the front before labeling (its
    # reshape_array), so it numbers a (D, H, 1) volume in the raster order of (1, H, D): the
    # same view here (the kernels take strides), transposed back afterwards.
    swapped = volumes and spatial[2] == 1 and spatial[0] > 1 and spatial[1] > 1
    if swapped:
        x = x.transpose(1, 3)
    chosen = resolve_backend("connected_components", backend, x.device)
    kernel_input, has_background, bg = _kernel_input(x, background)
    if _eager(kernel_input):
        result, num = _connected_components_impl(kernel_input, connectivity, has_background, bg,
                                                 chosen)
    else:
        result, num = _connected_components_op(kernel_input, connectivity, has_background, bg,
                                               chosen)
    if swapped:
        result = result.transpose(1, 3).contiguous()
    if single:
        result, num = result[0], num[0]
    result = to_output(result, as_numpy)
    if return_num:
        num = to_output(num, as_numpy)
        if as_numpy and single:
            num = int(num)  # scikit-image's label(..., return_num=True) gives a Python int
        return result, num
    return result


# ---- the custom op (torch.compile sees one opaque node of known output shapes) -------------


def _eager(x: torch.Tensor) -> bool:
    """Whether a call may run the op's body directly instead of through the custom op: a plain
    tensor, no torch.compile/export tracing and no dispatch mode (FakeTensor, make_fx, ...)
    active.  The custom op's dispatch (argument binding to the schema, the autograd and
    ADInplaceOrView keys, the Python kernel) cost ~10 us per call here (15 us through the op,
    5 us direct, a tiny input on the CPU backend), part of the fixed cost of labeling a
    training batch on the GPU; its outputs are integer tensors without gradients, so a direct
    call gives the same tensors.  Anything that traces still sees the one opaque node."""
    if type(x) is not torch.Tensor or torch.compiler.is_compiling():
        return False
    stack = getattr(torch._C, "_len_torch_dispatch_stack", None)
    return stack is not None and stack() == 0


def _connected_components_impl(x: torch.Tensor, connectivity: int, has_background: bool,
                               background: int, backend: str) -> tuple[torch.Tensor,
                                                                        torch.Tensor]:
    """Labels int32 of the shape of ``x`` and counts (B,) int64 of a validated (B, H, W) or
    (B, D, H, W) uint8, int32 or int64 tensor (any strides) on ``backend`` ("cpu" or
    "cuda"), on the input's device."""
    if backend == "cuda":
        from supercl.kernels.cuda import launch as _cuda

        result, num = _cuda.connected_components(x.to(cuda_device(x.device)), connectivity,
                                                 has_background, background)
    else:
        out, counts = extension().connected_components(x.cpu().numpy(), connectivity,
                                                       has_background, background, num_threads())
        result, num = torch.from_numpy(out), torch.from_numpy(counts)
    return result.to(x.device), num.to(x.device)


_connected_components_op = torch.library.custom_op(
    "supercl::connected_components", _connected_components_impl, mutates_args=())


@_connected_components_op.register_fake
def _(x, connectivity, has_background, background, backend):
    return (x.new_empty(x.shape, dtype=torch.int32), x.new_empty((x.shape[0],), dtype=torch.int64))


def _kernel_input(x: torch.Tensor, background: int) -> tuple[torch.Tensor, bool, int]:
    """The tensor in a dtype the kernels take, whether a background exists, and its value.

    bool is viewed as uint8; other narrow ints are widened to int32, uint32 to int64; uint64
    is viewed as int64 after checking its range. A background value that the input's dtype
    cannot hold matches no pixel, so it is dropped rather than wrapped around.
    """
    if x.dtype == torch.bool:
        info_min, info_max = 0, 1
        x = x.view(torch.uint8)
    else:
        info = torch.iinfo(x.dtype)
        info_min, info_max = info.min, info.max
    has_background = info_min <= background <= info_max
    if x.dtype in _NATIVE:
        pass
    elif x.dtype in (torch.int8, torch.int16, torch.uint16):
        x = x.to(torch.int32)
    elif x.dtype == torch.uint32:
        x = x.to(torch.int64)
    elif x.dtype == torch.uint64:
        x = x.view(torch.int64)  # same bits; values of 2**63 and above turn negative
        if torch.compiler.is_compiling():  # no host synchronisation in a compiled graph
            torch._assert_async((x >= 0).all(), "supercl: labels holds uint64 values above "
                                                "2**63 - 1, which are not supported")
        elif bool((x < 0).any()):
            raise ValueError("labels holds uint64 values above 2**63 - 1, which are not supported")
    else:  # pragma: no cover - every integer dtype is listed above
        raise TypeError(f"labels has an unsupported dtype {x.dtype}")
    if not has_background:
        background = 0
    return x, has_background, background

