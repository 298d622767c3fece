"""The v1 phantom (formerly ``supercl.data.phantom``), kept outside the package for the tests
and benchmarks whose inputs it draws: their pinned numbers (SLIC and connected-components
quality, GPU/CPU equality cases, the benchmarks' inputs and labels) were set on these exact
volumes. The package's one phantom is :mod:`supercl.data.phantom_v2`, whose organ classes
differ by shape, position and texture rather than by intensity (issue 25, item 4). The
benchmarks import this module from here too (benchmarks/conftest.py puts tests/ on the path).

The generator draws axial "abdominal" slices and volumes in Hounsfield-like
units together with their organ label maps:

* air (about -1000 HU) outside the body;
* a body outline (a slightly deformed ellipse spanning about 60-90 % of the
  field of view along each axis) made of a thin subcutaneous fat shell
  (about -100 HU), a bright thin ring (a body-wall / rib-cage stand-in,
  150-300 HU), soft tissue (10-50 HU) and a bright spine-like blob
  (400-700 HU) at the posterior (bottom) side;
* ``n_organs`` organs of random smooth shape (ellipses, or ellipsoids in 3D,
  whose radius is perturbed by a low-order random Fourier series in polar
  coordinates), random position inside the body, random size and random mean
  intensity in [-100, 300] HU; all organ intensities differ pairwise by at
  least 30 HU and differ from the soft tissue by at least 30 HU (the pairwise
  gap shrinks when more than 12 organs do not fit in that range);
* a slight partial-volume blur, a smooth low-frequency texture of a few HU
  and Gaussian noise.

Organs are drawn in order, later ones occluding earlier ones, but a candidate
organ is re-drawn (and shrunk) when it would hide more than half of an
earlier organ, so every organ keeps pixels. On very small images some organs
may not fit and are then absent from the label map.

Label maps are ``uint8``: 0 is background (air and every non-organ body
tissue), ``1..n_organs`` are the organ classes.

Only numpy and nibabel (for :func:`write_msd`) are used. Everything is
deterministic given the seed.
"""

from __future__ import annotations

import math
import numbers
import os
import pathlib
from typing import Any, Callable, Sequence, Tuple, Union

import numpy as np

from supercl._validate import check_int, check_seed, check_spacing, child_seed

__all__ = ["phantom_slice", "phantom_batch", "phantom_volume", "write_msd"]

SeedLike = Union[int, np.integer, np.random.SeedSequence]

# Intensities (HU).
_AIR = -1000.0
_ORGAN_RANGE = (-100.0, 300.0)
_ORGAN_GAP = 30.0
_MAX_LABEL = 255

# Organ placement.
_MAX_TRIES = 12
_SHRINK = 0.85
_KEEP_FRACTION = 0.5      # an earlier organ must keep this share of its pixels
_INSIDE_FRACTION = 0.6    # a new organ must lie this much inside the allowed region
_FOURIER_ORDERS = np.array([2.0, 3.0, 4.0])


# ----------------------------------------------------------------------------
# argument validation
# ----------------------------------------------------------------------------

def _check_n_organs(n_organs: Any) -> int:
    n = check_int(n_organs, "n_organs", 0)
    if n > _MAX_LABEL:
        raise ValueError(f"n_organs must be <= {_MAX_LABEL} (uint8 labels), got {n}")
    return n


def _check_noise(noise: Any) -> float:
    if isinstance(noise, (bool, np.bool_)) or not isinstance(noise, numbers.Real):
        raise ValueError(f"noise must be a finite real number >= 0, got {noise!r}")
    noise = float(noise)
    if not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite real number >= 0, got {noise!r}")
    return noise


# ----------------------------------------------------------------------------
# geometry helpers
# ----------------------------------------------------------------------------

def _blob_q(yy, xx, cy, cx, a, b, angle, coeffs):
    """Normalised radius of a Fourier-deformed ellipse (inside where ``q < 1``).

    ``yy``/``xx`` are pixel coordinates (broadcastable), ``cy``, ``cx``, ``a``,
    ``b``, ``angle`` scalars or arrays broadcastable against them, ``coeffs`` a
    sequence of ``(cos_k, sin_k)`` pairs for the orders in ``_FOURIER_ORDERS``
    (each entry a scalar or broadcastable array). ``q`` is the distance to the
    centre divided by the boundary radius in the same direction, so ``q`` in
    ``[1 - t, 1)`` is a shell of relative thickness ``t`` along the boundary.
    """
    f32 = np.float32
    cy, cx, a, b = (np.asarray(x, dtype=f32) for x in (cy, cx, a, b))
    angle = np.asarray(angle, dtype=np.float64)
    ca = np.cos(angle).astype(f32)
    sa = np.sin(angle).astype(f32)
    dy = yy - cy
    dx = xx - cx
    u = (dx * ca + dy * sa) / a
    v = (dy * ca - dx * sa) / b
    rho = np.sqrt(u * u + v * v)
    inv = f32(1.0) / np.maximum(rho, f32(1e-12))
    c1 = u * inv
    s1 = v * inv
    # cos(k theta), sin(k theta) for k = 2, 3, ... by angle addition (no atan2).
    ck, sk = c1 * c1 - s1 * s1, f32(2.0) * s1 * c1
    radius = None
    for (ak, bk) in coeffs:
        term = np.asarray(ak, dtype=f32) * ck + np.asarray(bk, dtype=f32) * sk
        radius = term + f32(1.0) if radius is None else radius + term
        ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
    if radius is None:
        return rho
    radius = np.maximum(radius, f32(0.4))
    return rho / radius


def _fourier_coeffs(rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """Random ``(len(_FOURIER_ORDERS), 2)`` cos/sin coefficients decaying as 1/k."""
    return rng.normal(0.0, 1.0, (len(_FOURIER_ORDERS), 2)) * (amplitude / _FOURIER_ORDERS)[:, None]


def _ellipse_radius(iny: float, inx: float, phi):
    """Radius (pixels) of the axis-aligned ellipse (iny, inx) along direction ``phi``."""
    return 1.0 / np.sqrt((np.cos(phi) / inx) ** 2 + (np.sin(phi) / iny) ** 2)


def _span(lo: float, hi: float, size: int) -> slice:
    start = max(0, int(math.floor(lo)))
    stop = min(size, int(math.ceil(hi)) + 1)
    return slice(start, max(start, stop))


def _interp_matrix(n: int, m: int) -> np.ndarray:
    """(n, m) linear interpolation matrix from ``m`` knots spanning ``n`` samples."""
    w = np.zeros((n, m), dtype=np.float32)
    if m == 1 or n == 1:
        w[:, 0] = 1.0
        return w
    pos = np.arange(n, dtype=np.float64) * (m - 1) / (n - 1)
    i0 = np.minimum(np.floor(pos).astype(np.int64), m - 2)
    frac = (pos - i0).astype(np.float32)
    rows = np.arange(n)
    w[rows, i0] = 1.0 - frac
    w[rows, i0 + 1] += frac
    return w


def _smooth_field(rng: np.random.Generator, shape: Tuple[int, ...],
                  knots: Tuple[int, ...], std: float) -> np.ndarray:
    """Separable (bi/tri)linear upsampling of a coarse Gaussian grid, float32."""
    grid = (rng.standard_normal(knots) * std).astype(np.float32)
    for axis, (n, m) in enumerate(zip(shape, knots)):
        grid = np.moveaxis(np.tensordot(_interp_matrix(n, m), np.moveaxis(grid, axis, 0),
                                        axes=(1, 0)), 0, axis)
    return np.ascontiguousarray(grid, dtype=np.float32)


def _blur_inplane(img: np.ndarray) -> np.ndarray:
    """[1, 2, 1] / 4 separable blur along the last two axes (edge padding)."""
    out = img.copy()
    for axis in (-2, -1):
        n = out.shape[axis]
        if n < 2:
            continue
        src = out.copy()
        lo = [slice(None)] * out.ndim
        hi = [slice(None)] * out.ndim
        mid = [slice(None)] * out.ndim
        lo[axis], mid[axis], hi[axis] = slice(0, n - 2), slice(1, n - 1), slice(2, n)
        mid_t, lo_t, hi_t = tuple(mid), tuple(lo), tuple(hi)
        out[mid_t] = 0.5 * src[mid_t] + 0.25 * (src[lo_t] + src[hi_t])
        first = [slice(None)] * out.ndim
        second = [slice(None)] * out.ndim
        last = [slice(None)] * out.ndim
        before = [slice(None)] * out.ndim
        first[axis], second[axis] = 0, 1
        last[axis], before[axis] = n - 1, n - 2
        out[tuple(first)] = 0.75 * src[tuple(first)] + 0.25 * src[tuple(second)]
        out[tuple(last)] = 0.75 * src[tuple(last)] + 0.25 * src[tuple(before)]
    return out


def _organ_intensities(rng: np.random.Generator, k: int, body: float) -> np.ndarray:
    """``k`` intensities in ``_ORGAN_RANGE``, pairwise >= gap apart, >= 30 HU from ``body``."""
    if k == 0:
        return np.zeros(0)
    lo, hi = _ORGAN_RANGE
    excluded = 2.0 * _ORGAN_GAP               # window (body - gap, body + gap)
    total = (hi - lo) - excluded
    gap = _ORGAN_GAP if k == 1 else min(_ORGAN_GAP, total / (k - 1))
    free = max(total - (k - 1) * gap, 0.0)
    t = np.sort(rng.uniform(0.0, free, size=k)) + gap * np.arange(k)
    vals = lo + t
    vals = np.where(vals >= body - _ORGAN_GAP, vals + excluded, vals)
    rng.shuffle(vals)
    return vals


# Class-consistent mode: organ classes keep one intensity band in every volume, clear of the
# soft-tissue window (soft tissue is drawn in [10, 50] HU, so organs avoid [-25, 85]).
_SOFT_WINDOW = (-25.0, 85.0)
_CLASS_JITTER = 5.0
# The top class stays 50 HU under the trainer's default CT window top (300 HU), where the
# clipped bright ring and spine would otherwise look the same.
_CLASS_TOP = 250.0


def _class_intensities(random_hu: np.ndarray) -> np.ndarray:
    """Organ class c (1..k) at a fixed nominal intensity, evenly spread over ``_ORGAN_RANGE``
    outside ``_SOFT_WINDOW``, plus a per-volume jitter of at most 5 HU that keeps the pairwise
    gap >= 30 HU where the nominal spacing allows it. The jitter is taken from the per-volume
    random intensities ``random_hu`` (so that both modes draw the same random numbers and
    give the same shapes for a seed)."""
    k = len(random_hu)
    if k == 0:
        return np.zeros(0)
    lo, hi = _ORGAN_RANGE[0], _CLASS_TOP
    w_lo, w_hi = _SOFT_WINDOW
    total = (hi - lo) - (w_hi - w_lo)
    gap = total / (k - 1) if k > 1 else total
    vals = lo + gap * np.arange(k) if k > 1 else np.array([lo + 0.5 * total])
    vals = np.where(vals > w_lo, vals + (w_hi - w_lo), vals)
    jitter = max(0.0, min(_CLASS_JITTER, (gap - _ORGAN_GAP) / 2.0)) if k > 1 else _CLASS_JITTER
    unit = (np.asarray(random_hu) - _ORGAN_RANGE[0]) / (_ORGAN_RANGE[1] - _ORGAN_RANGE[0]) * 2.0 - 1.0
    return vals + jitter * unit


def _paint_organs(rng: np.random.Generator, label: np.ndarray, n_organs: int,
                  sample: Callable, min_px: int) -> None:
    """Draw organs 1..n into ``label`` (in place), re-drawing occluding candidates.

    ``sample(rng, scale)`` returns ``(box, inside, allowed_inside)``: a tuple of
    slices into ``label``, the organ's own mask in that box and the same mask
    restricted to where organs may go.
    """
    areas = np.zeros(n_organs + 1, dtype=np.int64)
    for j in range(1, n_organs + 1):
        scale = 1.0
        chosen = None
        fallback = None
        for _ in range(_MAX_TRIES):
            box, inside, mask = sample(rng, scale)
            scale *= _SHRINK
            own = int(np.count_nonzero(mask))
            if own == 0:
                continue
            lost = np.bincount(label[box][mask], minlength=n_organs + 1)[:j]
            remaining = areas[:j] - lost
            earlier = areas[1:j] > 0
            if np.all(remaining[1:j][earlier] >= 1):
                if fallback is None:
                    fallback = (box, mask, lost)
                ok_occlusion = np.all(
                    remaining[1:j][earlier] >= np.ceil(_KEEP_FRACTION * areas[1:j][earlier]))
                ideal = int(np.count_nonzero(inside))
                if ok_occlusion and own >= max(min_px, _INSIDE_FRACTION * ideal):
                    chosen = (box, mask, lost)
                    break
        if chosen is None:
            chosen = fallback
        if chosen is None:
            continue  # organ does not fit (tiny image): absent
        box, mask, lost = chosen
        label[box][mask] = j
        areas[:j] -= lost
        areas[j] = int(np.count_nonzero(mask))


# ----------------------------------------------------------------------------
# the image of a slice or a volume, from its geometry
# ----------------------------------------------------------------------------
# A slice and a volume are drawn alike: tissue intensities, then the body (soft tissue, a fat
# layer and a bright ring), the spine and the organs, then partial volume, texture and noise.
# Only the geometry (2-D outlines or their drift along z) differs.

def _tissue_intensities(rng: np.random.Generator) -> Tuple[float, float, float, float]:
    """Soft tissue, fat, the body's ring and the spine (HU)."""
    soft = rng.uniform(10.0, 50.0)
    fat_hu = rng.uniform(-120.0, -80.0)
    ring_hu = rng.uniform(150.0, 300.0)
    spine_hu = rng.uniform(400.0, 700.0)
    return soft, fat_hu, ring_hu, spine_hu


def _paint(image: np.ndarray, labels: np.ndarray, body: np.ndarray, q_body: np.ndarray,
           fat: float, inner_q: float, soft: float, fat_hu: float, ring_hu: float,
           spine: np.ndarray, spine_hu: Any, organ_hu: np.ndarray) -> None:
    """The piecewise-constant image, in place: air, the body's layers, the spine (``spine_hu``
    broadcast over ``image``) and the organs of ``labels``."""
    image.fill(_AIR)
    image[body] = soft
    image[body & (q_body >= 1.0 - fat)] = fat_hu
    image[(q_body >= inner_q) & (q_body < 1.0 - fat)] = ring_hu
    image[spine] = np.broadcast_to(spine_hu, image.shape)[spine]
    if organ_hu.size:
        lut = np.concatenate([[0.0], organ_hu]).astype(np.float32)
        organ = labels > 0
        image[organ] = lut[labels[organ]]


def _finish(image: np.ndarray, body: np.ndarray, rng: np.random.Generator, texture: bool,
            noise: float, fields: Sequence[Tuple[Tuple[int, ...], float]]) -> np.ndarray:
    """Partial volume (an in-plane blur), a smooth texture inside the body (the sum of
    ``_smooth_field(rng, shape, cells, amplitude)`` over ``fields``) and Gaussian noise."""
    out = _blur_inplane(image)
    if texture:
        field = None
        for cells, amplitude in fields:
            f = _smooth_field(rng, out.shape, cells, amplitude)
            field = f if field is None else field + f
        out += np.where(body, field, np.float32(0.0))
    if noise > 0:
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(noise)
    return out


# ----------------------------------------------------------------------------
# 2D slices
# ----------------------------------------------------------------------------

def _slice_into(image: np.ndarray, labels: np.ndarray, ss: np.random.SeedSequence,
                n_organs: int, noise: float, texture: bool) -> None:
    """Draw one phantom slice into preallocated float32 / uint8 (H, W) arrays."""
    rng = np.random.default_rng(ss)
    h, w = image.shape
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]

    # Body outline.
    by = rng.uniform(0.30, 0.45) * h
    bx = rng.uniform(0.30, 0.45) * w
    cy = (h - 1) / 2.0 + rng.uniform(-0.03, 0.03) * h
    cx = (w - 1) / 2.0 + rng.uniform(-0.03, 0.03) * w
    b_angle = rng.uniform(-0.08, 0.08)
    b_coeffs = _fourier_coeffs(rng, 0.04)
    fat = rng.uniform(0.03, 0.08)
    ring = rng.uniform(0.02, 0.035)
    inner_q = 1.0 - fat - ring
    iny, inx = by * inner_q, bx * inner_q

    # Spine-like blob at the posterior side (bottom of the image).
    sy = cy + 0.70 * iny
    sx = cx + rng.uniform(-0.05, 0.05) * inx
    s_ay = rng.uniform(0.10, 0.14) * iny
    s_ax = rng.uniform(0.10, 0.14) * inx
    s_coeffs = _fourier_coeffs(rng, 0.05)

    soft, fat_hu, ring_hu, spine_hu = _tissue_intensities(rng)
    organ_hu = _organ_intensities(rng, n_organs, soft)

    q_body = _blob_q(yy, xx, cy, cx, bx, by, b_angle, b_coeffs)
    body = q_body < 1.0
    allowed = q_body < inner_q - 0.02
    s_ext = 1.25 * max(s_ay, s_ax) * (1.0 + float(np.abs(s_coeffs).sum())) + 1.0
    sbox = (_span(sy - s_ext, sy + s_ext, h), _span(sx - s_ext, sx + s_ext, w))
    q_spine = _blob_q(yy[sbox[0]], xx[:, sbox[1]], sy, sx, s_ax, s_ay, 0.0, s_coeffs)
    allowed[sbox] &= q_spine >= 1.25

    labels[...] = 0

    def sample(rng, scale):
        r = 0.65 * math.sqrt(rng.uniform())
        phi = rng.uniform(0.0, 2.0 * math.pi)
        oy = cy + r * math.sin(phi) * iny
        ox = cx + r * math.cos(phi) * inx
        angle = rng.uniform(0.0, math.pi)
        f1, f2 = rng.uniform(0.18, 0.45, size=2) * scale
        a = f1 * float(_ellipse_radius(iny, inx, angle))
        b = f2 * float(_ellipse_radius(iny, inx, angle + math.pi / 2))
        coeffs = _fourier_coeffs(rng, 0.12)
        ext = max(a, b) * (1.0 + float(np.abs(coeffs).sum())) + 1.0
        box = (_span(oy - ext, oy + ext, h), _span(ox - ext, ox + ext, w))
        inside = _blob_q(yy[box[0]], xx[:, box[1]], oy, ox, a, b, angle, coeffs) < 1.0
        return box, inside, inside & allowed[box]

    _paint_organs(rng, labels, n_organs, sample, max(1, int(2e-4 * h * w)))

    spine = np.zeros((h, w), dtype=bool)
    spine[sbox] = body[sbox] & (q_spine < 1.0)
    _paint(image, labels, body, q_body, fat, inner_q, soft, fat_hu, ring_hu, spine, spine_hu,
           organ_hu)
    image[...] = _finish(image, body, rng, texture, noise, [((5, 5), 6.0), ((14, 14), 3.0)])


def phantom_slice(height: int = 256, width: int = 256, *, n_organs: int = 5,
                  seed: SeedLike = 0, noise: float = 20.0,
                  texture: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic CT-like axial slice and its organ label map.

    Parameters
    ----------
    height, width : int
        Image size in pixels, each >= 1 (odd and tiny sizes are fine).
    n_organs : int
        Number of organ classes, 0 <= n_organs <= 255. On very small images
        some organs may not fit and are then absent from ``labels``.
    seed : int or numpy.random.SeedSequence
        Non-negative integer seed (or a SeedSequence). The same seed always
        gives the same slice.
    noise : float
        Standard deviation (HU) of the additive Gaussian noise, >= 0.
    texture : bool
        Add a smooth low-frequency texture of a few HU inside the body.

    Returns
    -------
    image : numpy.ndarray, float32, shape (height, width)
        Hounsfield-like intensities: about -1000 in the air outside the body,
        10-50 in soft tissue, -100 in the fat shell, a bright ring, a bright
        spine blob and organs in [-100, 300].
    labels : numpy.ndarray, uint8, shape (height, width)
        0 for background (air and non-organ body tissue), ``k`` for organ ``k``
        (1..n_organs).

    Raises
    ------
    ValueError
        If a size is not a positive integer, ``n_organs`` is out of range,
        ``noise`` is negative or not finite, or ``seed`` is invalid; the
        message names the argument.

    Examples
    --------
    >>> img, lab = phantom_slice(128, 96, n_organs=3, seed=7)
    >>> img.shape, img.dtype, lab.dtype
    ((128, 96), dtype('float32'), dtype('uint8'))
    >>> sorted(set(lab.ravel().tolist()))
    [0, 1, 2, 3]
    """
    height = check_int(height, "height", 1)
    width = check_int(width, "width", 1)
    n_organs = _check_n_organs(n_organs)
    noise = _check_noise(noise)
    ss = check_seed(seed)
    image = np.empty((height, width), dtype=np.float32)
    labels = np.empty((height, width), dtype=np.uint8)
    _slice_into(image, labels, ss, n_organs, noise, bool(texture))
    return image, labels


def phantom_batch(batch: int, height: int = 256, width: int = 256, *,
                  n_organs: int = 5, seed: SeedLike = 0,
                  **kwargs: Any) -> Tuple[np.ndarray, np.ndarray]:
    """Draw a batch of independent phantom slices.

    Slice ``i`` is ``phantom_slice(height, width, n_organs=n_organs,
    seed=SeedSequence(seed, spawn_key=(i,)), **kwargs)``, i.e. the ``i``-th
    child of ``SeedSequence(seed).spawn(...)``, so each slice depends only on
    ``(seed, i)`` and not on ``batch``.

    Parameters
    ----------
    batch : int
        Number of slices, >= 0 (0 gives empty arrays of shape (0, H, W)).
    height, width : int
        Slice size in pixels, each >= 1.
    n_organs : int
        Number of organ classes per slice, 0..255.
    seed : int or numpy.random.SeedSequence
        Seed of the batch.
    **kwargs
        ``noise`` and ``texture``, passed on to :func:`phantom_slice`.

    Returns
    -------
    images : numpy.ndarray, float32, shape (batch, height, width)
    labels : numpy.ndarray, uint8, shape (batch, height, width)

    Raises
    ------
    ValueError
        On invalid arguments (the message names the argument).
    TypeError
        On an unknown keyword argument.

    Examples
    --------
    >>> imgs, labs = phantom_batch(4, 64, 64, n_organs=2, seed=1)
    >>> imgs.shape, labs.shape
    ((4, 64, 64), (4, 64, 64))
    >>> bool((imgs[0] != imgs[1]).any())
    True
    """
    unknown = set(kwargs) - {"noise", "texture"}
    if unknown:
        raise TypeError(f"phantom_batch() got unexpected keyword argument(s) {sorted(unknown)}")
    batch = check_int(batch, "batch", 0)
    height = check_int(height, "height", 1)
    width = check_int(width, "width", 1)
    n_organs = _check_n_organs(n_organs)
    noise = _check_noise(kwargs.get("noise", 20.0))
    texture = bool(kwargs.get("texture", True))
    parent = check_seed(seed)
    images = np.empty((batch, height, width), dtype=np.float32)
    labels = np.empty((batch, height, width), dtype=np.uint8)
    for i in range(batch):
        _slice_into(images[i], labels[i], child_seed(parent, i), n_organs, noise, texture)
    return images, labels


# ----------------------------------------------------------------------------
# 3D volumes
# ----------------------------------------------------------------------------

def _profile(t: np.ndarray) -> np.ndarray:
    """Cross-section scale of a blunt ellipsoid at relative height ``t`` (|t| < 1)."""
    p = 2.5
    return np.clip(1.0 - np.abs(t) ** p, 0.0, 1.0) ** (1.0 / p)


def phantom_volume(depth: int = 32, height: int = 128, width: int = 128, *,
                   n_organs: int = 5, seed: SeedLike = 0, noise: float = 20.0,
                   texture: bool = True, consistent_classes: bool = False
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """Draw a synthetic CT-like volume (a stack of axial slices) and its labels.

    The body is an elliptic cylinder whose cross-section varies slowly along
    z, with a spine whose intensity alternates between vertebrae and discs.
    Organs are blunt ellipsoids with a Fourier-deformed cross-section whose
    centre, orientation and shape drift smoothly along z; each covers only
    part of the z range, so organs appear and disappear from slice to slice
    and consecutive slices are consistent.

    Parameters
    ----------
    depth, height, width : int
        Volume size in voxels (slices, rows, columns), each >= 1.
    n_organs : int
        Number of organ classes, 0..255. Organs that do not fit a very small
        volume are absent.
    seed : int or numpy.random.SeedSequence
        Non-negative integer seed (or SeedSequence); same seed, same volume.
    noise : float
        Standard deviation (HU) of the additive Gaussian noise, >= 0.
    texture : bool
        Add a smooth low-frequency 3D texture of a few HU inside the body.
    consistent_classes : bool
        False (default): organ intensities are drawn anew for every volume, so a
        class number says nothing about its organ's intensity. True: class c
        has the same nominal intensity in every volume (evenly spread over
        -100..250 HU outside the soft-tissue window, c = 1 darkest) within
        +-5 HU, so that a segmentation model can learn the classes across
        volumes. :func:`write_msd` uses True.

    Returns
    -------
    volume : numpy.ndarray, float32, shape (depth, height, width)
        Hounsfield-like intensities, ``volume[z]`` is an axial slice.
    labels : numpy.ndarray, uint8, shape (depth, height, width)
        0 for background, ``k`` for organ ``k`` (1..n_organs).

    Raises
    ------
    ValueError
        On invalid arguments (the message names the argument).

    Examples
    --------
    >>> vol, lab = phantom_volume(16, 64, 64, n_organs=3, seed=2)
    >>> vol.shape, vol.dtype, lab.dtype
    ((16, 64, 64), dtype('float32'), dtype('uint8'))
    >>> int(lab.max()) <= 3
    True
    """
    depth = check_int(depth, "depth", 1)
    height = check_int(height, "height", 1)
    width = check_int(width, "width", 1)
    n_organs = _check_n_organs(n_organs)
    noise = _check_noise(noise)
    rng = np.random.default_rng(check_seed(seed))
    d, h, w = depth, height, width

    zn = ((np.arange(d, dtype=np.float32) + 0.5) / d * 2.0 - 1.0)  # slice position in [-1, 1]
    z3 = zn[:, None, None]
    yy = np.arange(h, dtype=np.float32)[None, :, None]
    xx = np.arange(w, dtype=np.float32)[None, None, :]

    # Body: semi-axes and centre vary slowly along z.
    by0 = rng.uniform(0.30, 0.42) * h
    bx0 = rng.uniform(0.30, 0.42) * w
    freq, phase = rng.uniform(0.5, 1.2), rng.uniform(0.0, 2.0 * math.pi)
    amp_y, amp_x = rng.uniform(0.03, 0.08, size=2)
    wave = np.sin(math.pi * freq * z3 + phase)
    by = by0 * (1.0 + amp_y * wave)
    bx = bx0 * (1.0 + amp_x * wave)
    cy = (h - 1) / 2.0 + rng.uniform(-0.03, 0.03) * h + rng.normal(0, 0.01) * h * z3
    cx = (w - 1) / 2.0 + rng.uniform(-0.03, 0.03) * w + rng.normal(0, 0.01) * w * z3
    b_angle = rng.uniform(-0.08, 0.08)
    bc0, bc1 = _fourier_coeffs(rng, 0.04), _fourier_coeffs(rng, 0.04)
    wz = (z3 + 1.0) / 2.0
    b_coeffs = [(bc0[k, 0] * (1 - wz) + bc1[k, 0] * wz, bc0[k, 1] * (1 - wz) + bc1[k, 1] * wz)
                for k in range(len(_FOURIER_ORDERS))]
    fat = rng.uniform(0.03, 0.08)
    ring = rng.uniform(0.02, 0.035)
    inner_q = 1.0 - fat - ring
    iny0, inx0 = by0 * inner_q, bx0 * inner_q

    # Spine: cylinder along z at the posterior side, vertebrae and discs.
    sy = cy + 0.70 * by * inner_q
    sx = cx + rng.uniform(-0.05, 0.05) * inx0
    s_ay = rng.uniform(0.10, 0.14) * iny0
    s_ax = rng.uniform(0.10, 0.14) * inx0
    s_coeffs = _fourier_coeffs(rng, 0.05)
    vert_period = rng.uniform(0.35, 0.6)            # in normalised z units
    vert_phase = rng.uniform(0.0, 1.0)
    disc = ((zn / vert_period + vert_phase) % 1.0) < 0.2

    soft, fat_hu, ring_hu, spine_hu = _tissue_intensities(rng)
    disc_hu = rng.uniform(60.0, 100.0)
    organ_hu = _organ_intensities(rng, n_organs, soft)
    if consistent_classes:
        organ_hu = _class_intensities(organ_hu)

    q_body = _blob_q(yy, xx, cy, cx, bx, by, b_angle, b_coeffs)
    q_spine = _blob_q(yy, xx, sy, sx, s_ax, s_ay, 0.0, s_coeffs)
    body = q_body < 1.0
    allowed = (q_body < inner_q - 0.02) & (q_spine >= 1.25)

    labels = np.zeros((d, h, w), dtype=np.uint8)
    body_cy0 = float(np.mean(cy))
    body_cx0 = float(np.mean(cx))

    def sample(rng, scale):
        r = 0.65 * math.sqrt(rng.uniform())
        phi = rng.uniform(0.0, 2.0 * math.pi)
        oy = body_cy0 + r * math.sin(phi) * iny0
        ox = body_cx0 + r * math.cos(phi) * inx0
        cz = rng.uniform(-0.85, 0.85)
        az = rng.uniform(0.30, 0.70) * max(scale, 0.5)
        angle = rng.uniform(0.0, math.pi)
        f1, f2 = rng.uniform(0.18, 0.45, size=2) * scale
        a0 = f1 * float(_ellipse_radius(iny0, inx0, angle))
        b0 = f2 * float(_ellipse_radius(iny0, inx0, angle + math.pi / 2))
        drift_y, drift_x = rng.normal(0.0, 0.08, size=2)
        twist = rng.normal(0.0, 0.2)
        c_lo, c_hi = _fourier_coeffs(rng, 0.12), _fourier_coeffs(rng, 0.12)

        zs = np.nonzero(np.abs(zn - cz) < az)[0]
        if zs.size == 0:
            empty = np.zeros((0, 0, 0), dtype=bool)
            return (slice(0, 0), slice(0, 0), slice(0, 0)), empty, empty
        zsl = slice(int(zs[0]), int(zs[-1]) + 1)
        t = ((zn[zsl] - cz) / az)[:, None, None]
        prof = _profile(t)
        oyz = oy + drift_y * iny0 * t
        oxz = ox + drift_x * inx0 * t
        wt = (t + 1.0) / 2.0
        coeffs = [(c_lo[k, 0] * (1 - wt) + c_hi[k, 0] * wt,
                   c_lo[k, 1] * (1 - wt) + c_hi[k, 1] * wt)
                  for k in range(len(_FOURIER_ORDERS))]
        coef_sum = float(np.abs(c_lo).sum() + np.abs(c_hi).sum())
        ext = max(a0, b0) * (1.0 + coef_sum) + 1.0
        ysl = _span(float(oyz.min()) - ext, float(oyz.max()) + ext, h)
        xsl = _span(float(oxz.min()) - ext, float(oxz.max()) + ext, w)
        box = (zsl, ysl, xsl)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = _blob_q(yy[:, ysl], xx[:, :, xsl], oyz, oxz,
                        np.maximum(a0 * prof, 1e-6), np.maximum(b0 * prof, 1e-6),
                        angle + twist * t, coeffs)
        inside = (q < 1.0) & (prof > 0)
        return box, inside, inside & allowed[box]

    _paint_organs(rng, labels, n_organs, sample, max(1, int(2e-4 * d * h * w)))

    volume = np.empty((d, h, w), dtype=np.float32)
    spine_z = np.where(disc, disc_hu, spine_hu).astype(np.float32)[:, None, None]
    _paint(volume, labels, body, q_body, fat, inner_q, soft, fat_hu, ring_hu,
           body & (q_spine < 1.0), spine_z, organ_hu)
    kz = max(2, min(5, d))
    volume = _finish(volume, body, rng, texture, noise,
                     [((kz, 5, 5), 6.0), ((max(2, min(10, d)), 14, 14), 3.0)])
    return volume, labels


# ----------------------------------------------------------------------------
# Medical Segmentation Decathlon layout
# ----------------------------------------------------------------------------


def write_msd(root: Union[str, os.PathLike], n_volumes: int = 4,
              shape: Sequence[int] = (32, 128, 128), *, n_organs: int = 5,
              seed: SeedLike = 0, modality: str = "CT", overwrite: bool = False,
              spacing: Sequence[float] = (0.8, 0.8, 2.5),
              consistent_classes: bool = True) -> pathlib.Path:
    """A v1 phantom dataset in the MSD layout of :func:`supercl.data.msd.write_msd` (the
    package's writer, :func:`supercl.data.msd.write_cases`, does the writing).

    Case ``i`` is ``phantom_volume(*shape, n_organs=n_organs, seed=SeedSequence(seed,
    spawn_key=(i,)), consistent_classes=consistent_classes)``, rounded to int16 HU and clipped
    to [-1024, 3071]; labels are named ``"organ1"`` ...; ``modality`` is only recorded (v1
    always draws CT). ``consistent_classes``: organ class c keeps its intensity band in every
    volume (default True), which makes the labels learnable across volumes; see
    :func:`phantom_volume`.

    >>> import json, tempfile
    >>> root = write_msd(tempfile.mkdtemp() + "/phantom", n_volumes=2,
    ...                  shape=(8, 32, 32), n_organs=2)
    >>> json.loads((root / "dataset.json").read_text())["labels"]["2"]
    'organ2'
    """
    from supercl.data.msd import check_shape, write_cases

    n_volumes = check_int(n_volumes, "n_volumes", 1)
    shape = check_shape(shape)
    n_organs = _check_n_organs(n_organs)
    parent = check_seed(seed)

    def case(i, shape, spacing):
        vol, lab = phantom_volume(*shape, n_organs=n_organs, seed=child_seed(parent, i),
                                  consistent_classes=consistent_classes)
        return np.clip(np.rint(vol), -1024, 3071).astype(np.int16), lab

    return write_cases(
        root, n_volumes, shape, case, name="SuperCLPhantom",
        description="Synthetic CT-like phantom generated by supercl.data.phantom "
                    "(bodies with random organs; labels are organ classes)",
        labels={"0": "background", **{str(k): f"organ{k}" for k in range(1, n_organs + 1)}},
        modality=modality, spacing=spacing, overwrite=overwrite)
