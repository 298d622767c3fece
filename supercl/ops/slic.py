"""SLIC superpixels of a batch of 2D images, or supervoxels of 3D volumes (scikit-image semantics,
C++ and CUDA backends).

One path for both: :func:`slic` validates its input (:func:`_check_images`, :func:`_check_mask`)
and calls the ``supercl::slic`` custom op, which rescales to [0, 1], plans the grid of centres
(:func:`_plan`: scikit-image's ``regular_grid``, on the mask's device when there is a mask) and
runs a backend; the backends take 2-D and 3-D batches alike. Only the algorithms differ, in
csrc/include/supercl/slic.h and slic_3d.h.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import torch

from supercl._runtime import to_device_async
from supercl._validate import check_spacing

from ._common import (
    as_tensor,
    check_bool,
    check_float,
    check_int,
    cuda_device,
    extension,
    num_threads,
    resolve_backend,
    to_output,
)

__all__ = ["slic"]

# Float coordinates are exact below 2**24 (csrc/include/supercl/slic.h).
_MAX_SIDE = 2**24
# Fixed-point scale of intensities (SUPERCL_SLIC_SCALE in slic.h), squared for the weight.
_SCALE_SQ = float(2**32)


def slic(
    images: Any,
    n_segments: int = 100,
    compactness: float = 10.0,
    max_num_iter: int = 10,
    spacing: Sequence[float] | None = None,
    mask: Any = None,
    enforce_connectivity: bool = True,
    min_size_factor: float = 0.5,
    max_size_factor: float = 3.0,
    start_label: int = 0,
    backend: str | None = None,
    spatial_dims: int = 2,
):
    """SLIC superpixels of a batch of grey or multi-channel 2D images (or supervoxels of 3D
    volumes with ``spatial_dims=3``).

    The semantics are those of ``skimage.segmentation.slic`` (k-means in intensity + (y, x)
    space, Achanta et al. 2012): centres start on a regular grid of step
    ``S = sqrt(H * W / n_segments)`` (scikit-image's ``regular_grid``), every pixel takes the
    centre that minimises ``sqrt(d_intensity^2 + (compactness / S)^2 * d_xy^2)``, centres move
    to the mean of their pixels, ``max_num_iter`` times. Each image is first rescaled to
    [0, 1] over all its channels (over the pixels in ``mask``), as scikit-image does, so the
    same image as uint8, int16 or float of any scale gives the same labels.

    **Compactness and the SuperCL setting.** Because of that rescaling, ``compactness`` is
    relative to an intensity range of 1. The SuperCL reference (grey slices taken to Lab
    lightness 0..100 with ``compactness=10``) corresponds to ``compactness=0.1`` here.

    Differences from scikit-image, all deliberate (GPU form, determinism):

    - Assignment is pixel-centric: a pixel compares the centres of the 3x3 grid cells around
      its own (scikit-image scans a 2S window around every centre). Results agree except where
      a centre drifts more than a cell, which the tests bound by quality metrics.
    - Centre sums are int64 fixed point (intensity resolved to 2^-16 of the image range), so the
      CPU and GPU backends give bit-identical labels whatever the thread count.
    - With ``mask``, centres start on a grid over the mask's bounding box (scikit-image seeds
      them by k-means with a fixed random state) and first run spatial-only iterations to
      spread inside the mask, as scikit-image does. The grid is scikit-image's
      ``regular_grid`` of the box for ``round(n_segments * box_area / mask_area)`` centres,
      the density of ``n_segments`` centres over the mask; a centre whose cell holds no mask
      pixel takes none and leaves no label. So the count inside the mask lies between about
      ``n_segments`` and ``n_segments * box_area / mask_area``, where scikit-image gives
      ``n_segments`` or a few fewer. Measured with ``n_segments=100`` on 256 x 256 slices
      with ellipse masks (78 % of their box; 17 %, 42 %, 57 % and 72 % of the slice): 99,
      101, 124 and 105 superpixels here, 100, 100, 100 and 97 from scikit-image.
    - Connectivity enforcement merges a 4-connected piece smaller than
      ``min_size_factor * S^2`` into the piece above (else left of) its first pixel, and
      numbers the result in raster order. ``max_size_factor`` is validated but unused:
      scikit-image splits pieces larger than ``max_size_factor * S^2`` at an arbitrary BFS
      cut-off that has no order-independent parallel form; supercl never splits.
    - No colour-space conversion (scikit-image converts 3-channel input to Lab by default;
      pass ``convert2lab=False`` there to compare) and no Gaussian pre-smoothing (``sigma``).

    **Volumes** (``spatial_dims=3``): the same algorithm one dimension up, as scikit-image
    runs it on (D, H, W) input (``channel_axis=None`` there for grey volumes): a 3-D grid of
    centres (``regular_grid`` of the volume's shape), voxels compare the centres of the
    3x3x3 cells around their own, the spatial distance is weighted by ``spacing=(dz, dy,
    dx)`` (the voxel size from the NIfTI header, e.g. ``(2.5, 0.7, 0.7)`` for CT), and
    connectivity enforcement makes every supervoxel one 6-connected region, merging a small
    piece into the piece in front of (z - 1), else above, else left of its first voxel.

    Parameters
    ----------
    images : torch.Tensor or numpy.ndarray
        (H, W) one grey image, (B, H, W) grey images or (B, C, H, W) multi-channel images,
        channels first. With ``spatial_dims=3``: (D, H, W) one grey volume, (B, D, H, W) grey
        volumes or (B, C, D, H, W). Float or integer dtype, finite values (within ``mask``).
    n_segments : int
        Approximate number of superpixels per image (>= 1).
    compactness : float
        Weight of space against intensity (> 0); higher gives squarer superpixels.
    max_num_iter : int
        Number of k-means iterations (>= 1). Stops earlier once no label changes, which never
        alters the result.
    spacing : sequence of 2 floats (y, x), or of 3 (z, y, x) with ``spatial_dims=3``, optional
        Pixel spacing weighting the spatial distance, e.g. anisotropic voxels.
    mask : bool tensor or array, (H, W) or (B, H, W) (or (D, H, W), (B, D, H, W)), optional
        Only pixels where ``mask`` is True are segmented; the others get label 0 and the
        superpixels are numbered from 1. Useful to keep superpixels inside the body.
    enforce_connectivity : bool
        Make every label exactly one 4-connected region (6-connected in 3D; default True).
    min_size_factor : float
        Pieces smaller than ``min_size_factor * H * W / K`` (``D * H * W / K`` in 3D; K the
        number of grid centres) are merged into a neighbour (>= 0).
    max_size_factor : float
        Accepted for compatibility with scikit-image (> 0); unused, see above.
    start_label : int
        First label (>= 0). With ``mask`` the first label is ``max(start_label, 1)``.
    backend : {None, "cpu", "cuda", "torch", "triton"}
        ("torch" is an alias of "cpu", "triton" of "cuda", the names of the learning ops.)
        ``None`` chooses by the input's device (or ``SUPERCL_BACKEND``): CUDA tensors run on the
        GPU (CuPy: ``pip install 'supercl[cuda12]'`` or ``[cuda13]``; the whole batch in one
        set of launches; no host synchronisation, with or without a mask, except one for the
        NaN/inf check of float images), everything else on the C++ backend with
        ``torch.get_num_threads()`` threads. A forced backend computes there and returns the
        result on the input's device. Both backends give bit-identical labels.
    spatial_dims : {2, 3}
        2 (default): images; 3: volumes, so that a (D, H, W) volume is never taken for a batch
        of slices.

    Returns
    -------
    labels : int32, same kind as ``images`` (tensor on its device, or numpy array)
        (B, H, W), or (H, W) for a single image; (B, D, H, W) or (D, H, W) in 3D. Consecutive
        from the first label.

    Raises
    ------
    TypeError
        ``images`` not a tensor/array or of bool/complex dtype; a non-bool/int ``mask``;
        arguments of the wrong type.
    ValueError
        Wrong shapes, an empty batch or image, NaN or inf in ``images``, ``n_segments < 1``,
        ``compactness <= 0``, ``max_num_iter < 1``, a bad ``spacing`` or negative factors.

    Examples
    --------
    >>> import torch
    >>> from supercl.ops import slic
    >>> images = torch.zeros(2, 32, 48)
    >>> images[:, :, 24:] = 1.0                      # two halves of different intensity
    >>> labels = slic(images, n_segments=6, compactness=0.1)
    >>> labels.shape, labels.dtype
    (torch.Size([2, 32, 48]), torch.int32)
    >>> left, right = labels[0, :, :24].unique(), labels[0, :, 24:].unique()
    >>> bool(torch.isin(left, right).any())  # no superpixel crosses the intensity edge
    False
    >>> volume = torch.zeros(20, 32, 48)               # a (D, H, W) volume, 2.5 mm slices
    >>> volume[:, :, 24:] = 1.0
    >>> supervoxels = slic(volume, n_segments=24, compactness=0.1, spacing=(2.5, 1.0, 1.0),
    ...                    spatial_dims=3)
    >>> supervoxels.shape
    torch.Size([20, 32, 48])
    >>> left, right = supervoxels[:, :, :24].unique(), supervoxels[:, :, 24:].unique()
    >>> bool(torch.isin(left, right).any())
    False
    """
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    spatial_dims = 3 if spatial_dims == 3 else 2  # an int from here (3.0 was accepted before)
    x, single, as_numpy = _check_images(images, spatial_dims)
    batch, _, *spatial = x.shape
    n_segments = check_int(n_segments, "n_segments", minimum=1)
    compactness = check_float(compactness, "compactness", positive=True)
    max_num_iter = check_int(max_num_iter, "max_num_iter", minimum=1)
    if spacing is None:
        spacing = (1.0,) * spatial_dims
    else:
        spacing = check_spacing(spacing, ndim=spatial_dims,
                                axes="(y, x)" if spatial_dims == 2 else "(dz, dy, dx)")
    enforce_connectivity = check_bool(enforce_connectivity, "enforce_connectivity")
    min_size_factor = check_float(min_size_factor, "min_size_factor", nonnegative=True)
    check_float(max_size_factor, "max_size_factor", positive=True)
    start_label = check_int(start_label, "start_label", minimum=0)
    mask_t = _check_mask(mask, single, batch, spatial)

    chosen = resolve_backend("slic", backend, x.device)
    result = _slic_op(x, mask_t, n_segments, compactness, max_num_iter,
                      list(spacing), enforce_connectivity, min_size_factor, start_label,
                      chosen)
    if single:
        result = result[0]
    return to_output(result, as_numpy)


def _check_images(images: Any, spatial_dims: int) -> tuple[torch.Tensor, bool, bool]:
    """``images`` as a (B, C, *spatial) tensor with ``spatial_dims`` spatial axes, whether it
    was a single image (volume), and whether it came as a numpy array."""
    x, as_numpy = as_tensor(images, "images")
    if x.dtype == torch.bool or x.dtype.is_complex:
        raise TypeError(f"images must have a real float or integer dtype, got {x.dtype}")
    volumes = spatial_dims == 3
    if x.ndim not in (spatial_dims, spatial_dims + 1, spatial_dims + 2):
        shapes = ("(D, H, W), (B, D, H, W) or (B, C, D, H, W) with spatial_dims=3" if volumes
                  else "(H, W), (B, H, W) or (B, C, H, W)")
        raise ValueError(f"images must have shape {shapes}, got {tuple(x.shape)}")
    single = x.ndim == spatial_dims
    if x.ndim == spatial_dims:
        x = x[None, None]
    elif x.ndim == spatial_dims + 1:
        x = x[:, None]
    batch, channels, *spatial = x.shape
    what, unit = ("volume", "voxels") if volumes else ("image", "pixels")
    if batch == 0:
        raise ValueError("images is an empty batch (B = 0)")
    if channels == 0:
        raise ValueError("images has no channels (C = 0)")
    if 0 in spatial:
        raise ValueError(f"images has an empty {what} of shape {tuple(spatial)}")
    if max(spatial) >= _MAX_SIDE:
        raise ValueError(f"images sides must be < 2**24, got {tuple(spatial)}")
    if math.prod(spatial) > 2**31 - 1:
        # labels, component ids and pixel indices within an image are int32 (both backends);
        # batches are indexed in int64, so only the size of one image is limited.
        raise ValueError(
            f"images have {math.prod(spatial)} {unit} each; at most 2**31 - 1 per {what} are "
            "supported"
        )
    return x, single, as_numpy


# ---- the custom op (torch.compile sees one opaque node of known output shape) --------------


@torch.library.custom_op("supercl::slic", mutates_args=())
def _slic_op(images: torch.Tensor, mask: Optional[torch.Tensor], n_segments: int,
             compactness: float, max_num_iter: int, spacing: list[float],
             enforce_connectivity: bool, min_size_factor: float, start_label: int,
             backend: str) -> torch.Tensor:
    """SLIC of validated (B, C, H, W) images or (B, C, D, H, W) volumes with an optional
    (B, H, W) or (B, D, H, W) bool ``mask`` and one spacing per spatial axis, on ``backend``
    ("cpu" or "cuda"); (B, H, W) or (B, D, H, W) int32 on the images' device."""
    device = cuda_device(images.device) if backend == "cuda" else torch.device("cpu")
    batch, channels, *spatial = images.shape
    has_mask = mask is not None
    # A mask given on the host is planned there (exact centre counts, nothing to wait for);
    # one on the GPU is planned on the GPU, with the arrays sized by a bound (_plan_masked).
    plan_mask = mask
    if has_mask:
        mask = mask.to(device)
    # Rescaling in float64 on the computing device; every step is exactly rounded, so both
    # backends see the same float32 input. For float input on the CPU, in C++ (the same
    # operations, one pass per image): in torch it cost 184 ms of a 32 x 512^2 call on one
    # thread, as much as a third of the whole op. Otherwise in torch, one image at a time on
    # the CPU (the float64 temporaries stay in cache), the whole batch at once on a GPU (one
    # sync for the check). Volumes are rescaled as (B, C, D * H, W) images: the rescaling is
    # elementwise with per-image extrema, so the shape of an image does not matter.
    rows = (batch, channels, math.prod(spatial[:-1]), spatial[-1])
    flat = images.reshape(rows)
    flat_mask = None if mask is None else mask.reshape((batch,) + rows[2:])
    if device.type == "cpu" and images.dtype in (torch.float32, torch.float64):
        normalized = _rescale_cpu(flat, flat_mask, has_mask)
    else:
        normalized = _rescale_batch(flat, flat_mask, has_mask, device)
    normalized = normalized.reshape(images.shape)
    grid, params, min_size = _plan(plan_mask, batch, spatial, n_segments, compactness, spacing,
                                   min_size_factor)
    first_label = max(start_label, 1) if has_mask else start_label
    mask_u8 = None if mask is None else mask.to(torch.uint8).contiguous()
    if backend == "cuda":
        from supercl.kernels.cuda import launch as _cuda

        # With a mask planned on the GPU the centre count per image is only known there: size
        # the arrays by its bound, the pixels of an image (see _plan_masked).
        k_max = _centre_bound(grid, math.prod(spatial))
        result = _cuda.slic(normalized.contiguous(), mask_u8, grid, params, max_num_iter,
                            enforce_connectivity, min_size, first_label, k_max=k_max)
    else:
        result = torch.from_numpy(extension().slic(
            normalized.numpy(), None if mask_u8 is None else mask_u8.numpy(), grid.numpy(),
            params.numpy(), max_num_iter, enforce_connectivity, min_size.numpy(), first_label,
            num_threads()))
    return result.to(images.device)


@_slic_op.register_fake
def _(images, mask, n_segments, compactness, max_num_iter, spacing, enforce_connectivity,
      min_size_factor, start_label, backend):
    batch, _, *spatial = images.shape
    return images.new_empty((batch, *spatial), dtype=torch.int32)


def _centre_bound(grid: torch.Tensor, pixels: int) -> int | None:
    """The launcher's k_max: None (read it from the grid) for a plan on the host, ``pixels``
    -- a grid never has more centres than its box has pixels -- for a plan on the GPU, whose
    counts the host does not know."""
    return None if grid.device.type == "cpu" else pixels


def _check_mask(mask, single, batch, spatial) -> torch.Tensor | None:
    """``mask`` as a (B, *spatial) bool tensor, for images or volumes of shape ``spatial``."""
    if mask is None:
        return None
    m, _ = as_tensor(mask, "mask")
    if m.dtype.is_floating_point or m.dtype.is_complex:
        raise TypeError(f"mask must have a bool (or integer 0/1) dtype, got {m.dtype}")
    spatial = tuple(spatial)
    expected = spatial if single else (batch,) + spatial
    if tuple(m.shape) != expected and not (single and tuple(m.shape) == (1,) + spatial):
        raise ValueError(f"mask must have shape {expected} like images, got {tuple(m.shape)}")
    return (m != 0).reshape((batch,) + spatial)


def _non_finite(has_mask: bool) -> ValueError:
    return ValueError("images contains NaN or inf values" + (" inside mask" if has_mask else ""))


def _rescale_cpu(x: torch.Tensor, mask_t: torch.Tensor | None, has_mask: bool) -> torch.Tensor:
    """:func:`_rescale_batch` for float32/float64 images on the CPU, in C++ (bit for bit)."""
    mask_np = None if mask_t is None else mask_t.to(torch.uint8).numpy()
    try:
        images = x.detach().cpu().contiguous().numpy()
        out = extension().slic_rescale(images, mask_np, num_threads())
    except ValueError:
        raise _non_finite(has_mask) from None
    return torch.from_numpy(out)


def _rescale_batch(x, mask_t, has_mask, device) -> torch.Tensor:
    """Each image to [0, 1] as float32, in torch on ``device``, with the finiteness check.
    On the CPU one image at a time, so that the float64 temporaries stay in cache (44 instead
    of 184 ms for 32 x 512^2 on one thread)."""
    batch = x.shape[0]
    # On a GPU as many images at a time as keep the float64 temporaries near 2 GiB (the whole
    # batch in one set of launches up to that; a batch of 2**31 pixels would need ~50 GiB).
    per_image = max(1, x[0].numel())
    chunk = max(1, min(batch, 2**28 // per_image)) if device.type == "cuda" else 1
    # Integer images are finite: no check, and so no host synchronisation for them on a GPU.
    # Float images on a GPU cost one synchronisation per chunk here (the ValueError needs the
    # answer on the host).
    check = x.dtype.is_floating_point
    normalized = torch.empty(x.shape, dtype=torch.float32, device=device)
    for b0 in range(0, batch, chunk):
        xf = x[b0 : b0 + chunk].detach().to(device, torch.float64)
        valid = None if mask_t is None else mask_t[b0 : b0 + chunk, None].expand_as(xf)
        if check:
            inside = xf if valid is None else torch.where(valid, xf, 0.0)
            if not bool(torch.isfinite(inside).all()):
                raise _non_finite(has_mask)
        normalized[b0 : b0 + chunk] = _rescale(xf, valid)
    return normalized


def _rescale(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Each image to [0, 1] over all its channels (and the pixels of the mask), in float64 so
    that the same image at any scale or dtype rescales to the same float32 values."""
    flat = x.flatten(1)
    if valid is None:
        lo, hi = flat.amin(1), flat.amax(1)
    else:
        v = valid.flatten(1)
        lo = torch.where(v, flat, math.inf).amin(1)
        hi = torch.where(v, flat, -math.inf).amax(1)
        empty = ~v.any(1)
        lo = torch.where(empty, 0.0, lo)
        hi = torch.where(empty, 1.0, hi)
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    shape = (-1,) + (1,) * (x.ndim - 1)
    return ((x - lo.view(shape)) / span.view(shape)).clamp_(0.0, 1.0)


def regular_grid(shape: tuple[int, int, int], n_points: int) -> tuple[list[int], list[int]]:
    """Starts and steps of the initial centres along the three axes of ``shape``:
    ``skimage.util.regular_grid`` as scikit-image's SLIC calls it (2D images as (1, H, W))."""
    shape_a = np.array(shape)
    unsort = np.argsort(np.argsort(shape_a, kind="stable"), kind="stable")
    dims = np.sort(shape_a, kind="stable")
    size = float(np.prod(shape_a))
    if size <= n_points:
        return [0, 0, 0], [1, 1, 1]
    steps = np.full(3, (size / n_points) ** (1.0 / 3), dtype=np.float64)
    if (dims < steps).any():
        for dim in range(3):
            steps[dim] = dims[dim]
            rest = float(np.prod(dims[dim + 1 :]))
            steps[dim + 1 :] = (rest / n_points) ** (1.0 / (3 - dim - 1))
            if (dims >= steps).all():
                break
    starts = (steps // 2).astype(int)[unsort]
    steps = np.round(steps).astype(int)[unsort]
    return [int(v) for v in starts], [int(v) for v in steps]


def _plan(mask, batch, spatial, n_segments, compactness, spacing, min_size_factor):
    """Per image (volume): the grid of centres, the distance scalars and the minimum piece size
    of connectivity enforcement, as int64 / float64 tensors:

    - volumes: grid (B, 9) {z0, y0, x0, nz, ny, nx, sz, sy, sx}, params (B, 5) {spz^2/S^2,
      spy^2/S^2, spx^2/S^2, colour weight, 2S} (Slic3Params), min_size (B,);
    - images: the plan of (1, H, W) volumes (scikit-image's 2-D SLIC is its 3-D one on such
      volumes) in the 2-D kernels' layout: grid (B, 6) {y0, x0, ny, nx, sy, sx}, params (B, 5)
      {1/S^2, colour weight, spy^2, spx^2, 2S} (SlicParams).

    Without a mask, planned on the host (the plan depends on the shape only); with one, planned
    where the mask is (:func:`_plan_masked`), so that the GPU path never waits for the mask's
    bounding boxes."""
    volume = (1,) * (3 - len(spatial)) + tuple(spatial)
    spacing3 = (1.0,) * (3 - len(spatial)) + tuple(spacing)
    if mask is not None:
        grid, params, min_size = _plan_masked(mask.reshape((batch,) + volume), n_segments,
                                              compactness, spacing3, min_size_factor)
    else:
        starts, steps = regular_grid(volume, n_segments)
        counts = [-(-(s - a) // st) for s, a, st in zip(volume, starts, steps)]
        step = float(max(max(steps), 1))
        spatial_weight = 1.0 / (step * step)
        grid = torch.tensor(starts + counts + steps, dtype=torch.int64).repeat(batch, 1)
        params = torch.tensor(
            [sp * sp * spatial_weight for sp in spacing3]
            + [1.0 / (_SCALE_SQ * compactness * compactness), 2.0 * step],
            dtype=torch.float64).repeat(batch, 1)
        min_size = torch.full(
            (batch,), int(min_size_factor * (math.prod(volume) / math.prod(counts))),
            dtype=torch.int64)
    if len(spatial) == 3:
        return grid, params, min_size
    # (1, H, W) volumes: drop the z entries {z0, nz, sz}; params {spatial, colour, spy^2,
    # spx^2, window} from the 3-D {wz, wy, wx, colour, window} with spacing 1 along z, i.e.
    # wz = 1 / S^2 exactly.  (The z step of such a volume is 1, so S is the 2-D step.)
    # (slices, not a list index: indexing a CUDA tensor by a Python list copies the list to
    # the device, a synchronising copy)
    grid = torch.cat([grid[:, 1:3], grid[:, 4:6], grid[:, 7:9]], 1)
    weight = params[:, 0]
    params = torch.stack([weight, params[:, 3], torch.full_like(weight, spacing[0] * spacing[0]),
                          torch.full_like(weight, spacing[1] * spacing[1]), params[:, 4]], 1)
    return grid, params, min_size


# ---- masked planning, on the mask's device -----------------------------------------------
#
# With a mask the grid depends on the mask's bounding box and area.  Reading those back to the
# host to plan would make the GPU path wait for the device (one synchronisation per call), so
# the plan is computed here in torch where the mask is: regular_grid vectorised over the batch,
# with the same IEEE operations on either device (sqrt, division, floor, round-half-even and
# comparisons are exactly rounded in torch on the CPU and on CUDA), so both backends plan the
# same grids bit for bit.  The one non-exact operation of regular_grid, the cube root
# x ** (1/3) of the first step, only ever enters through integer decisions (floor(s / 2),
# round(s), d < s); those are read from tables of the exact thresholds of the host's own pow
# (:func:`_cbrt_thresholds`), so the result is regular_grid's, not another libm's.  The launcher
# sizes its arrays by an upper bound of the number of centres known on the host: a grid never
# has more centres than its box has pixels, so H * W (D * H * W) per image.

# Cube roots the tables cover: in the branch that uses them, s <= the box's smallest side, and
# D * H * W < 2**31 puts that side below 1291.
_CBRT_MAX = 1300


def _from_bits(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<q", bits))[0]


@functools.lru_cache(maxsize=None)
def _cbrt_tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_cbrt_thresholds` as float64 tensors on ``device``, copied once: from pinned
    memory without blocking, so that no call waits for the GPU (not even the first)."""
    return tuple(to_device_async(torch.from_numpy(a), device) for a in _cbrt_thresholds())


@functools.lru_cache(maxsize=None)
def _cbrt_thresholds() -> tuple[np.ndarray, np.ndarray]:
    """ge[j], gt[j] for j = 0 .. 2 * _CBRT_MAX: the smallest positive doubles q with
    ``q ** (1.0 / 3) >= j / 2`` and ``> j / 2`` (Python's pow, which regular_grid calls), found
    by bisection over the bit patterns of doubles (pow is monotone in q)."""
    def smallest(value: float, strict: bool) -> float:
        def hit(bits: int) -> bool:
            r = _from_bits(bits) ** (1.0 / 3)
            return r > value if strict else r >= value

        if value == 0.0:
            return _from_bits(1) if strict else 0.0
        centre = struct.unpack("<q", struct.pack("<d", value**3))[0]
        lo, hi = centre - 4096, centre + 4096  # hit(lo) is False, hit(hi) True: checked
        if hit(lo) or not hit(hi):
            raise AssertionError(f"cube-root threshold of {value} outside its bracket")
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if hit(mid) else (mid, hi)
        return _from_bits(hi)

    values = [j / 2 for j in range(2 * _CBRT_MAX + 1)]
    ge = np.array([smallest(v, False) for v in values], dtype=np.float64)
    gt = np.array([smallest(v, True) for v in values], dtype=np.float64)
    return ge, gt


def _cbrt_decisions(q: torch.Tensor, smallest_side: torch.Tensor):
    """For s = q ** (1/3) as regular_grid computes it: floor(s / 2), round(s) (half to even,
    numpy's rule) and whether smallest_side < s, from the threshold tables (exact comparisons).
    Meaningful where s <= _CBRT_MAX."""
    ge, gt = _cbrt_tables(q.device)
    last = ge.numel() - 1
    # floor(s / 2) = #{a >= 1 : s >= 2a}; the thresholds of the values 2a are ge[4a].
    half = torch.searchsorted(ge[4::4].contiguous(), q, right=True)
    # round(s) = #{k >= 0 : s > k + 1/2}, + 1 on an exact tie s = r + 1/2 with r odd.
    rounded = torch.searchsorted(gt[1::2].contiguous(), q, right=True)
    at = (2 * rounded + 1).clamp(max=last)
    tie = (q >= ge[at]) & (q < gt[at])
    rounded = rounded + (tie & (rounded % 2 == 1)).to(rounded.dtype)
    below = q >= gt[(2 * smallest_side).clamp(max=last)]
    return half, rounded, below


def _bounding_boxes_device(mask: torch.Tensor):
    """origin (B, 3), size (B, 3) and voxel count (B,) of each (D, H, W) mask of a (B, D, H, W)
    bool tensor, int64 on its device; an empty mask gets origin 0, size 1 (its plan is
    replaced anyway) and count 0."""
    batch = mask.shape[0]
    origin, size = [], []
    for axis in range(3):
        others = tuple(a for a in (1, 2, 3) if a != axis + 1)
        hits = mask.any(dim=others[1]).any(dim=others[0])  # (B, n_axis)
        n = hits.shape[1]
        index = torch.arange(n, device=mask.device)
        first = torch.where(hits, index, n).amin(1)
        last = torch.where(hits, index, -1).amax(1)
        empty = last < 0
        origin.append(torch.where(empty, 0, first))
        size.append(torch.where(empty, 1, last - first + 1))
    count = mask.reshape(batch, -1).sum(1)
    return torch.stack(origin, 1), torch.stack(size, 1), count


def _regular_grid_device(shape: torch.Tensor, n_points: torch.Tensor):
    """regular_grid for each row of shape (B, 3) int64 and n_points (B,) float64 (integers):
    starts and steps (B, 3) int64, the branches of :func:`regular_grid` evaluated for every row
    and selected with torch.where."""
    dims, order = torch.sort(shape, dim=1, stable=True)
    f = dims.to(torch.float64)
    size = shape.prod(1).to(torch.float64)
    n = n_points
    q = size / n
    d0, d1, d2 = dims.unbind(1)
    # 1: all steps s = (size / n) ** (1/3), unless the smallest side is below s.
    half, rounded, d0_below = _cbrt_decisions(q, d0)
    starts1 = half[:, None].expand(-1, 3)
    steps1 = rounded[:, None].expand(-1, 3)
    # 2: the smallest side, then t = (d1 d2 / n) ** (1/2) twice, unless d1 < t.
    t = torch.sqrt((d1 * d2).to(torch.float64) / n)
    starts2 = torch.stack([d0 // 2, torch.floor(t / 2).long(), torch.floor(t / 2).long()], 1)
    steps2 = torch.stack([d0, torch.round(t).long(), torch.round(t).long()], 1)
    d1_below = f[:, 1] < t
    # 3: the two smallest sides, then d2 / n.
    u = f[:, 2] / n
    starts3 = torch.stack([d0 // 2, d1 // 2, torch.floor(u / 2).long()], 1)
    steps3 = torch.stack([d0, d1, torch.round(u).long()], 1)
    starts = torch.where(d0_below[:, None], torch.where(d1_below[:, None], starts3, starts2),
                         starts1)
    steps = torch.where(d0_below[:, None], torch.where(d1_below[:, None], steps3, steps2),
                        steps1)
    small = (size <= n)[:, None]
    starts = torch.where(small, 0, starts)
    steps = torch.where(small, 1, steps)
    # back to the axes' own order: sorted position j holds axis order[j]
    return (torch.empty_like(starts).scatter_(1, order, starts),
            torch.empty_like(steps).scatter_(1, order, steps))


def _plan_masked(mask, n_segments, compactness, spacing, min_size_factor):
    """:func:`_plan` of (B, D, H, W) volumes for the bool ``mask`` on its device, without reading
    anything back: grid (B, 9) int64, params (B, 5) float64, min_size (B,) int64 tensors."""
    batch, depth, height, width = mask.shape
    if n_segments * depth * height * width >= 2**53:
        # the centre count below is computed in float64 from this product
        raise ValueError(
            f"n_segments * pixels per image must be < 2**53 with a mask, got {n_segments} * "
            f"{depth * height * width}"
        )
    origin, size, count = _bounding_boxes_device(mask)
    box = size.prod(1)
    # As many centres over the box as make ~n_segments inside the mask: Python's
    # max(1, round(n_segments * box / count)), round half to even.
    n = torch.round((n_segments * box).to(torch.float64) / count.clamp(min=1).to(torch.float64))
    n = n.clamp(min=1.0)
    starts, steps = _regular_grid_device(size, n)
    counts = torch.div(size - starts + steps - 1, steps, rounding_mode="floor")
    grid = torch.cat([origin + starts, counts, steps], 1)
    step = steps.amax(1).clamp(min=1).to(torch.float64)
    spatial = 1.0 / (step * step)
    colour = 1.0 / (_SCALE_SQ * compactness * compactness)
    params = torch.stack([
        (spacing[0] * spacing[0]) * spatial,
        (spacing[1] * spacing[1]) * spatial,
        (spacing[2] * spacing[2]) * spatial,
        torch.full_like(spatial, colour),
        2.0 * step,
    ], 1)
    min_size = torch.trunc(
        min_size_factor * (box.to(torch.float64) / counts.prod(1).to(torch.float64))
    ).long()
    # an empty mask: nothing to segment, everything gets label 0
    # (constants built on the device: a tensor from a Python list would be a blocking copy)
    empty = (count == 0)[:, None]
    empty_grid = torch.ones_like(grid)
    empty_grid[:, :3] = 0  # {0, 0, 0, 1, 1, 1, 1, 1, 1}
    empty_params = torch.ones_like(params)
    empty_params[:, 3] = 0.0
    empty_params[:, 4] = 2.0  # {1, 1, 1, 0, 2}
    grid = torch.where(empty, empty_grid, grid)
    params = torch.where(empty, empty_params, params)
    min_size = torch.where(empty[:, 0], 0, min_size)
    return grid, params, min_size
