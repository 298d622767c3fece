"""SLIC supervoxels of 3D volumes: ``supercl.ops.slic(..., spatial_dims=3)``.

Validation, planning (the grid of initial centres, the distance scalars, the minimum piece
size) and dispatch; the algorithm is in csrc/include/supercl/slic_3d.h, looped over on the CPU
(csrc/cpu/slic_3d.cpp) and launched on the GPU (kernels/cuda/slic_3d.cu).
"""

from __future__ import annotations

import math

import numpy as np
import torch

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
from .slic import _check_mask, _rescale_batch, _rescale_cpu, regular_grid

# Float coordinates are exact below 2**24 (csrc/include/supercl/slic.h).
_MAX_SIDE = 2**24
# Fixed-point scale of intensities (SUPERCL_SLIC_SCALE), squared for the weight.
_SCALE_SQ = float(2**32)


def slic_3d(images, n_segments, compactness, max_num_iter, spacing, mask, enforce_connectivity,
            min_size_factor, max_size_factor, start_label, backend):
    """:func:`supercl.ops.slic` with ``spatial_dims=3`` (see its docstring)."""
    x, as_numpy = as_tensor(images, "images")
    if x.dtype == torch.bool or x.dtype.is_complex:
        raise TypeError(f"images must have a real float or integer dtype, got {x.dtype}")
    if x.ndim not in (3, 4, 5):
        raise ValueError(
            "images must have shape (D, H, W), (B, D, H, W) or (B, C, D, H, W) with "
            f"spatial_dims=3, got {tuple(x.shape)}"
        )
    single = x.ndim == 3
    if x.ndim == 3:
        x = x[None, None]
    elif x.ndim == 4:
        x = x[:, None]
    batch, channels, depth, height, width = x.shape
    if batch == 0:
        raise ValueError("images is an empty batch (B = 0)")
    if channels == 0:
        raise ValueError("images has no channels (C = 0)")
    if depth == 0 or height == 0 or width == 0:
        raise ValueError(f"images has an empty volume of shape ({depth}, {height}, {width})")
    if max(depth, height, width) >= _MAX_SIDE:
        raise ValueError(f"images sides must be < 2**24, got ({depth}, {height}, {width})")
    if depth * height * width > 2**31 - 1:
        raise ValueError(
            f"images volumes have {depth * height * width} voxels; at most 2**31 - 1 per volume "
            "are supported"
        )

    n_segments = check_int(n_segments, "n_segments", minimum=1)
    compactness = check_float(compactness, "compactness", positive=True)
    max_num_iter = check_int(max_num_iter, "max_num_iter", minimum=1)
    spacing = _check_spacing(spacing)
    enforce_connectivity = check_bool(enforce_connectivity, "enforce_connectivity")
    min_size_factor = check_float(min_size_factor, "min_size_factor", nonnegative=True)
    check_float(max_size_factor, "max_size_factor", positive=True)
    start_label = check_int(start_label, "start_label", minimum=0)
    mask_t = _check_mask(mask, single, batch, (depth, height, width))

    chosen = resolve_backend("slic", backend, x.device)
    device = cuda_device(x.device) if chosen == "cuda" else torch.device("cpu")
    if mask_t is not None:
        mask_t = mask_t.to(device)

    # The [0, 1] rescaling of the 2D op, on the volumes seen as (B, C, D * H, W) images: it is
    # elementwise with per-image extrema, so the shape of an image does not matter.
    flat = x.reshape(batch, channels, depth * height, width)
    flat_mask = None if mask_t is None else mask_t.reshape(batch, depth * height, width)
    if device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        normalized = _rescale_cpu(flat, flat_mask, mask is not None)
    else:
        normalized = _rescale_batch(flat, flat_mask, mask is not None, device)
    normalized = normalized.reshape(batch, channels, depth, height, width)

    grid, params, min_size = _plan(mask_t, batch, depth, height, width, n_segments, compactness,
                                   spacing, min_size_factor)
    first_label = max(start_label, 1) if mask_t is not None else start_label
    mask_u8 = None if mask_t is None else mask_t.to(torch.uint8).contiguous()
    if chosen == "cuda":
        from supercl.kernels.cuda import launch as _cuda

        result = _cuda.slic_3d(normalized.contiguous(), mask_u8, grid, params, max_num_iter,
                               enforce_connectivity, min_size, first_label)
    else:
        result = torch.from_numpy(extension().slic_3d(
            normalized.numpy(), None if mask_u8 is None else mask_u8.numpy(), grid, params,
            max_num_iter, enforce_connectivity, min_size, first_label, num_threads(),
        ))
    result = result.to(x.device)
    if single:
        result = result[0]
    return to_output(result, as_numpy)


def _check_spacing(spacing) -> tuple[float, float, float]:
    if spacing is None:
        return 1.0, 1.0, 1.0
    if isinstance(spacing, (str, bytes)) or not hasattr(spacing, "__len__"):
        raise TypeError(
            f"spacing must be a sequence of 3 floats (dz, dy, dx) or None, got "
            f"{type(spacing).__name__}"
        )
    values = [float(v) for v in (spacing.tolist() if hasattr(spacing, "tolist") else spacing)]
    if len(values) != 3:
        raise ValueError(f"spacing must have 3 entries (dz, dy, dx) with spatial_dims=3, got "
                         f"{len(values)}")
    for v in values:
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"spacing entries must be finite and > 0, got {values}")
    return values[0], values[1], values[2]


def _plan(mask, batch, depth, height, width, n_segments, compactness, spacing, min_size_factor):
    """Per volume: the grid {z0, y0, x0, nz, ny, nx, sz, sy, sx}, the distance scalars
    {spz^2/S^2, spy^2/S^2, spx^2/S^2, colour weight, 2S} and the minimum piece size."""
    grid = np.zeros((batch, 9), dtype=np.int64)
    params = np.zeros((batch, 5), dtype=np.float64)
    min_size = np.zeros(batch, dtype=np.int64)
    boxes = _bounding_boxes(mask, batch, depth, height, width)
    for b, box in enumerate(boxes):
        if box is None:  # empty mask: nothing to segment, everything gets label 0
            grid[b] = (0, 0, 0, 1, 1, 1, 1, 1, 1)
            params[b] = (1.0, 1.0, 1.0, 0.0, 2.0)
            continue
        origin, size, volume = box
        # Over a mask's bounding box, as many centres as make ~n_segments inside the mask.
        n = n_segments if mask is None else max(1, round(n_segments * math.prod(size) / volume))
        starts, steps = regular_grid(size, n)
        counts = [-(-(s - a) // st) for s, a, st in zip(size, starts, steps)]
        grid[b] = [o + a for o, a in zip(origin, starts)] + counts + steps
        step = float(max(max(steps), 1))
        spatial = 1.0 / (step * step)
        params[b] = (
            spacing[0] * spacing[0] * spatial,
            spacing[1] * spacing[1] * spatial,
            spacing[2] * spacing[2] * spatial,
            1.0 / (_SCALE_SQ * compactness * compactness),
            2.0 * step,
        )
        min_size[b] = int(min_size_factor * (math.prod(size) / math.prod(counts)))
    return grid, params, min_size


def _bounding_boxes(mask, batch, depth, height, width):
    """((z0, y0, x0), (d, h, w), voxels) of each volume's mask (the whole volume without one);
    None for an empty mask."""
    if mask is None:
        return [((0, 0, 0), (depth, height, width), depth * height * width)] * batch
    boxes = []
    m = mask.cpu()
    volumes = m.flatten(1).sum(1).tolist()
    for b in range(batch):
        spans = []
        for axis in range(3):
            others = tuple(a for a in range(3) if a != axis)
            hit = torch.nonzero(m[b].any(dim=others[1]).any(dim=others[0])).flatten()
            spans.append(hit)
        if spans[0].numel() == 0:
            boxes.append(None)
            continue
        origin = tuple(int(s[0]) for s in spans)
        size = tuple(int(s[-1]) - int(s[0]) + 1 for s in spans)
        boxes.append((origin, size, int(volumes[b])))
    return boxes
