"""Loading: one volume as preprocessed 2D slices at the patch size (:func:`load_case`),
many volumes as one :class:`SliceSet` (:func:`load_slices`), and the voxel size of those
slices (:func:`slice_spacing`). Part of :mod:`supercl.data.nifti`."""

from __future__ import annotations

import math
import numbers
import pathlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import numpy as np

from .scanning import (RESIZE_MODES, Case, _label_values, _normalise_modality, _read_array,
                       _squeeze3)

if TYPE_CHECKING:  # torch is imported lazily: ``import supercl.data`` stays light
    import torch

__all__ = ["SliceSet", "load_case", "load_slices", "slice_spacing", "slice_names"]


@dataclass
class SliceSet:
    """2D slices of several volumes, as returned by :func:`load_slices`.

    Attributes
    ----------
    images : torch.Tensor, float32, shape (N, 1, P, P)
        Preprocessed slices (``(N, 1, Ph, Pw)`` for a rectangular patch size).
    labels : torch.Tensor, int64, shape (N, P, P), or None
        Label maps; ``None`` if no case of the set is labeled. Slices of the
        unlabeled cases of a partly labeled set are filled with ``-1`` (use
        ``ignore_index=-1``).
    positions : torch.Tensor, float32, shape (N,)
        Relative position of each slice in its volume, in [0, 1].
    volume : torch.Tensor, int64, shape (N,)
        Index of each slice's volume into ``names``.
    names : list of str
        Case names, one per volume, in loading order.
    """

    images: "torch.Tensor"
    labels: Optional["torch.Tensor"]
    positions: "torch.Tensor"
    volume: "torch.Tensor"
    names: List[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])



def _check_window(window: Any) -> Tuple[float, float]:
    try:
        lo, hi = (float(w) for w in window)
    except (TypeError, ValueError):
        raise ValueError(f"window must be (low, high) in HU, got {window!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"window must be (low, high) in HU with low < high, got {window!r}")
    return lo, hi


def _check_patch_size(patch_size: Any) -> Tuple[int, int]:
    def ok(v):
        return (isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))
                and int(v) >= 1)

    if ok(patch_size):
        return int(patch_size), int(patch_size)
    if isinstance(patch_size, (tuple, list)) and len(patch_size) == 2 and all(map(ok, patch_size)):
        return int(patch_size[0]), int(patch_size[1])
    raise ValueError(
        f"patch_size must be a positive integer or (height, width), got {patch_size!r}")


def _check_options(modality, window, patch_size, resize):
    modality = _normalise_modality(modality)
    win = _check_window(window) if modality == "CT" else None
    size = _check_patch_size(patch_size)
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    return modality, win, size


def _positions(depth: int) -> np.ndarray:
    if depth <= 1:
        return np.zeros(depth, dtype=np.float32)
    return (np.arange(depth, dtype=np.float64) / (depth - 1)).astype(np.float32)


def _crop_spans(n: int, p: int) -> Tuple[slice, slice]:
    """(source, destination) slices of a center crop / zero pad of ``n`` to ``p``."""
    if n >= p:
        start = (n - p) // 2
        return slice(start, start + p), slice(0, p)
    off = (p - n) // 2
    return slice(0, n), slice(off, off + n)


def _to_patch(images: np.ndarray, labels: Optional[np.ndarray], size: Tuple[int, int],
              mode: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    d, h, w = images.shape
    ph, pw = size
    if (h, w) == (ph, pw):
        return images, labels
    if mode == "crop":
        (sy, dy), (sx, dx) = _crop_spans(h, ph), _crop_spans(w, pw)
        out = np.zeros((d, ph, pw), dtype=np.float32)
        out[:, dy, dx] = images[:, sy, sx]
        lab = None
        if labels is not None:
            lab = np.zeros((d, ph, pw), dtype=np.int64)
            lab[:, dy, dx] = labels[:, sy, sx]
        return out, lab

    if mode == "pad":
        scale = min(ph / h, pw / w)
        nh, nw = min(ph, max(1, round(h * scale))), min(pw, max(1, round(w * scale)))
        if (nh, nw) != (ph, pw):
            fill = float(images.min()) if images.size else 0.0  # the background (air)
            small, lab_small = _resample(images, labels, nh, nw)
            (_, dy), (_, dx) = _crop_spans(nh, ph), _crop_spans(nw, pw)
            out = np.full((d, ph, pw), fill, dtype=np.float32)
            out[:, dy, dx] = small
            lab = None
            if lab_small is not None:
                lab = np.zeros((d, ph, pw), dtype=np.int64)
                lab[:, dy, dx] = lab_small
            return out, lab
    return _resample(images, labels, ph, pw)


def _resample(images: np.ndarray, labels: Optional[np.ndarray], ph: int, pw: int
              ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Slices resampled to (ph, pw): bilinear (antialiased when shrinking); labels nearest."""
    import torch
    import torch.nn.functional as F

    h, w = images.shape[1:]
    down = ph < h or pw < w
    t = torch.from_numpy(np.ascontiguousarray(images))[:, None]
    out = F.interpolate(t, size=(ph, pw), mode="bilinear", align_corners=False,
                        antialias=down)[:, 0].numpy()
    lab = None
    if labels is not None:
        big = labels.size and (labels.min() < -(1 << 24) or labels.max() > (1 << 24))
        lt = torch.from_numpy(labels.astype(np.float64 if big else np.float32))[:, None]
        lab = F.interpolate(lt, size=(ph, pw), mode="nearest-exact")[:, 0].numpy()
        lab = lab.astype(np.int64)
    return np.ascontiguousarray(out, dtype=np.float32), lab


def load_case(case: Case, *, modality: str = "CT",
              window: Tuple[float, float] = (-200.0, 300.0),
              patch_size: Union[int, Tuple[int, int]] = 128, resize: str = "pad",
              class_names: Optional[Mapping[int, str]] = None,
              ) -> Tuple[np.ndarray, Optional[np.ndarray], np.ndarray]:
    """Read one case as preprocessed axial slices of the patch size.

    The stored ``(X, Y, Z)`` array is read with nibabel (scaling applied; a
    singleton 4th axis is dropped) and transposed to ``(D, H, W)``. Then:

    * ``modality="CT"``: intensities are clipped to ``window`` (HU) and
      scaled to [0, 1];
    * any other modality (``"MRI"``, ...): per-volume z-score, ``(x - mean) /
      std`` over all voxels (all zeros for a constant volume);
    * every slice is brought to ``(P, P)``: ``resize="pad"`` (the default)
      resamples it so that it fits into ``P x P`` with its aspect ratio kept
      (an 80 x 72 slice becomes 128 x 115 for P = 128) and pads the shorter
      side, centred, with the volume's minimum (label 0); ``resize="resize"``
      resamples it to ``P x P`` whatever its aspect ratio; both resample with
      ``torch.nn.functional.interpolate`` (bilinear, ``align_corners=
      False``, antialiased when down-sampling; labels ``"nearest-exact"``, so
      only existing label values appear); ``resize="crop"`` takes the center
      ``P`` rows/columns (from ``(H - P) // 2``), zero-padding (image 0,
      label 0) centred (at ``(P - H) // 2``) where the slice is smaller.

    Parameters
    ----------
    case : Case
        The case to read (``case.label`` may be None).
    modality : str
        ``"CT"`` or another modality (MR names are normalised to ``"MRI"``).
    window : (float, float)
        CT intensity window ``(low, high)`` in HU, ``low < high``.
    patch_size : int or (int, int)
        Output slice size ``P`` (or ``(Ph, Pw)``).
    resize : {"pad", "resize", "crop"}
        How slices are brought to the patch size (default ``"pad"``).
    class_names : dict of int to str, optional
        Declared classes (e.g. :attr:`DatasetInfo.class_names`); label values
        outside it are an error. ``None``: any non-negative integer.

    Returns
    -------
    images : numpy.ndarray, float32, shape (D, P, P)
        Preprocessed slices.
    labels : numpy.ndarray, int64, shape (D, P, P), or None
        Label maps, None for an unlabeled case.
    positions : numpy.ndarray, float32, shape (D,)
        Relative slice position ``k / (D - 1)`` in [0, 1] (0 when D == 1).

    Raises
    ------
    ValueError
        The message starts with the offending file: nibabel cannot read it,
        image not 3-D (or 4-D with several channels), NaN/inf in the image,
        image and label shapes differ, non-integer or undeclared label
        values; or invalid arguments.
    FileNotFoundError
        (:class:`DatasetFileNotFoundError`) the image or label file is missing.

    Examples
    --------
    >>> import tempfile
    >>> from supercl.data import scan_dataset, write_msd
    >>> info = scan_dataset(write_msd(tempfile.mkdtemp() + "/msd", n_volumes=1,
    ...                               shape=(5, 24, 20), n_organs=2))
    >>> images, labels, positions = load_case(info.cases[0], patch_size=16,
    ...                                       class_names=info.class_names)
    >>> images.shape, images.dtype, labels.shape, labels.dtype
    ((5, 16, 16), dtype('float32'), (5, 16, 16), dtype('int64'))
    >>> bool(images.min() >= 0.0 and images.max() <= 1.0), positions.tolist()
    (True, [0.0, 0.25, 0.5, 0.75, 1.0])
    """
    modality, win, size = _check_options(modality, window, patch_size, resize)
    image_path = pathlib.Path(case.image)
    label_path = None if case.label is None else pathlib.Path(case.label)

    vol = _squeeze3(_read_array(image_path, "image", np.float32), image_path, "image")
    finite = np.isfinite(vol)
    if not finite.all():
        raise ValueError(f"{image_path}: image contains {int(vol.size - finite.sum())} NaN/inf "
                         f"voxels")
    del finite
    lab = None
    if label_path is not None:
        lab = _squeeze3(_read_array(label_path, "label"), label_path, "label")
        if lab.shape != vol.shape:
            raise ValueError(f"{label_path}: label shape {lab.shape} differs from image shape "
                             f"{vol.shape} of {image_path} (x, y, z)")
        _label_values(lab, label_path, class_names)

    if modality == "CT":
        lo, hi = win
        vol = np.clip(vol, lo, hi)
        vol -= np.float32(lo)
        vol /= np.float32(hi - lo)
    else:
        if vol.size == 0 or vol.max() == vol.min():
            vol = np.zeros_like(vol)
        else:
            mean = vol.mean(dtype=np.float64)
            std = vol.std(dtype=np.float64)
            vol = ((vol - mean) / std).astype(np.float32) if std > 0 else np.zeros_like(vol)

    images = np.ascontiguousarray(vol.transpose(2, 1, 0), dtype=np.float32)
    labels = None
    if lab is not None:
        labels = np.ascontiguousarray(lab.transpose(2, 1, 0), dtype=np.int64)
    images, labels = _to_patch(images, labels, size, resize)
    return images, labels, _positions(images.shape[0])


# ----------------------------------------------------------------------------
# many cases
# ----------------------------------------------------------------------------

def load_slices(cases: Iterable[Case], *, modality: str = "CT",
                window: Tuple[float, float] = (-200.0, 300.0),
                patch_size: Union[int, Tuple[int, int]] = 128, resize: str = "pad",
                class_names: Optional[Mapping[int, str]] = None,
                require_labels: bool = False, progress: bool = True) -> SliceSet:
    """Load every case with :func:`load_case` and concatenate the slices.

    Slices are concatenated volume by volume, in the given order.

    Parameters
    ----------
    cases : iterable of Case
        The volumes to load (at least one).
    modality, window, patch_size, resize, class_names
        As for :func:`load_case`.
    require_labels : bool
        If true, an unlabeled case is an error (raised before anything is read).
    progress : bool
        Show a tqdm progress bar (on stderr).

    Returns
    -------
    SliceSet
        ``images`` (N, 1, P, P) float32, ``labels`` (N, P, P) int64 or None
        (slices of unlabeled cases are -1 when other cases are labeled),
        ``positions`` (N,) float32, ``volume`` (N,) int64 and ``names``.

    Raises
    ------
    ValueError
        No cases; an unlabeled case with ``require_labels=True`` (naming it);
        anything :func:`load_case` raises.

    Examples
    --------
    >>> import tempfile
    >>> from supercl.data import scan_dataset, write_msd
    >>> info = scan_dataset(write_msd(tempfile.mkdtemp() + "/msd", n_volumes=2,
    ...                               shape=(3, 24, 20), n_organs=2))
    >>> s = load_slices(info.cases, patch_size=16, class_names=info.class_names,
    ...                 progress=False)
    >>> len(s), tuple(s.images.shape), tuple(s.labels.shape), s.volume.tolist()
    (6, (6, 1, 16, 16), (6, 16, 16), [0, 0, 0, 1, 1, 1])
    >>> s.names, s.positions.tolist()
    (['phantom_000', 'phantom_001'], [0.0, 0.5, 1.0, 0.0, 0.5, 1.0])
    """
    import torch
    from tqdm import tqdm

    _check_options(modality, window, patch_size, resize)
    cases = list(cases)
    if not cases:
        raise ValueError("load_slices: no cases given (empty case list)")
    unlabeled = [c for c in cases if c.label is None]
    if require_labels and unlabeled:
        more = (f" ({len(unlabeled) - 1} other unlabeled cases: "
                f"{[c.name for c in unlabeled[1:6]]})" if len(unlabeled) > 1 else "")
        raise ValueError(f"{unlabeled[0].image}: case {unlabeled[0].name!r} has no label file, "
                         f"but labels are required (require_labels=True){more}")
    any_labeled = len(unlabeled) < len(cases)

    images, labels, positions, volume = [], [], [], []
    for i, case in enumerate(tqdm(cases, desc="loading volumes", unit="vol",
                                  disable=not progress)):
        im, lab, pos = load_case(case, modality=modality, window=window,
                                 patch_size=patch_size, resize=resize, class_names=class_names)
        images.append(im)
        positions.append(pos)
        volume.append(np.full(im.shape[0], i, dtype=np.int64))
        if any_labeled:
            labels.append(lab if lab is not None else np.full(im.shape, -1, dtype=np.int64))
    out_images = torch.from_numpy(np.concatenate(images)).unsqueeze(1)
    del images
    out_labels = torch.from_numpy(np.concatenate(labels)) if any_labeled else None
    return SliceSet(images=out_images, labels=out_labels,
                    positions=torch.from_numpy(np.concatenate(positions)),
                    volume=torch.from_numpy(np.concatenate(volume)),
                    names=[c.name for c in cases])




def slice_spacing(case: Case, patch_size: int, resize: str = "pad") -> Tuple[float, float, float]:
    """Voxel size (z, y, x) in mm of the slices of ``case`` as :func:`load_case` returns them
    at ``patch_size`` with ``resize`` (from the NIfTI header; 1 mm where it gives none)."""
    import nibabel as nib

    img = nib.load(str(case.image))
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    sx, sy, sz = (zooms + [1.0, 1.0, 1.0])[:3]
    width, height = img.shape[0], img.shape[1]
    if resize == "resize":
        sy, sx = sy * height / patch_size, sx * width / patch_size
    elif resize == "pad":  # one scale for both axes, the one that fits the longer side
        scale = min(patch_size / height, patch_size / width)
        sy, sx = sy / scale, sx / scale
    return sz, sy, sx


def slice_names(slices: SliceSet) -> List[str]:
    """A caption per slice of ``slices``: "case, slice k of D" (k counted from 0 along the
    volume's last axis, as in the NIfTI file)."""
    volume = slices.volume.tolist()
    first: Dict[int, int] = {}
    depth: Dict[int, int] = {}
    for i, v in enumerate(volume):
        first.setdefault(v, i)
        depth[v] = depth.get(v, 0) + 1
    return [f"{slices.names[v]}, slice {i - first[v]} of {depth[v]}" for i, v in enumerate(volume)]
