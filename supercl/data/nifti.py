"""NIfTI and Medical Segmentation Decathlon loading for the SuperCL trainer.

The trainer works on 2D axial slices of 3D volumes. This module finds the
volumes of a dataset, reads them with nibabel, preprocesses them and cuts
them into slices of a fixed patch size, and splits a dataset *by volume*
into pre-training, fine-tuning, validation and test sets:

* :func:`scan_dataset` -- the cases of a Medical Segmentation Decathlon (MSD)
  folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``, ``imagesTs/``) or of
  a plain folder of ``.nii`` / ``.nii.gz`` images with an optional folder of
  label maps of the same names.
* :func:`load_case` -- one volume as ``(D, P, P)`` preprocessed slices, its
  labels and the relative position of every slice in the volume.
* :func:`load_slices` -- many volumes concatenated into torch tensors
  (a :class:`SliceSet`).
* :func:`split_cases` / :func:`write_split` -- a seeded split by volume with
  nested label fractions (the 10 % fine-tuning set is contained in the 25 %
  one), recorded as JSON.

Axes: NIfTI / MSD files store the data array as ``(X, Y, Z) = (W, H, D)``
with the axial slices along the last axis (see
:func:`supercl.data.phantom.write_msd`); this module returns ``(D, H, W)``
arrays, i.e. the stored array transposed with ``.transpose(2, 1, 0)``. The
voxel-to-world affine is not used (volumes are not reoriented or resampled).

Errors name the file or folder and the problem: :class:`ValueError` for bad
content, :class:`FileNotFoundError` for missing paths (the latter is raised as
:class:`DatasetFileNotFoundError`, which is also a :class:`ValueError`, so
``except ValueError`` catches every data error of this module).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import pathlib
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import numpy as np

if TYPE_CHECKING:  # torch is imported lazily: ``import supercl.data`` stays light
    import torch

__all__ = [
    "Case",
    "DatasetInfo",
    "SliceSet",
    "DatasetFileNotFoundError",
    "scan_dataset",
    "load_case",
    "load_slices",
    "split_cases",
    "write_split",
    "check_pairs",
]

PathLike = Union[str, os.PathLike]

#: How :func:`load_case` brings slices to the patch size: ``"pad"`` keeps the aspect ratio
#: (scale the longer side to P, pad the shorter), ``"resize"`` stretches, ``"crop"`` does not
#: scale.
RESIZE_MODES = ("pad", "resize", "crop")

_NIFTI_SUFFIXES = (".nii.gz", ".nii")
# Modality names (upper-cased) that are magnetic resonance sequences.
_MRI_NAMES = frozenset({
    "MR", "MRI", "T1", "T2", "T1W", "T2W", "T1GD", "T1C", "T1CE", "T1CONTRAST", "T2*",
    "T2STAR", "FLAIR", "ADC", "DWI", "PD", "PDW", "CINE", "BOLD", "SWI", "MRA", "DIXON",
    "NONCT"})


class DatasetFileNotFoundError(FileNotFoundError, ValueError):
    """A dataset path (folder, image or label file) does not exist.

    Both a :class:`FileNotFoundError` and a :class:`ValueError`, so callers may
    catch either.
    """


# ----------------------------------------------------------------------------
# data classes
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One volume of a dataset.

    Attributes
    ----------
    name : str
        Case name: the image file name without ``.nii`` / ``.nii.gz``
        (e.g. ``"phantom_000"``).
    image : pathlib.Path
        The image file.
    label : pathlib.Path or None
        The label map file, or ``None`` for an unlabeled case (usable for
        pre-training only).
    """

    name: str
    image: pathlib.Path
    label: Optional[pathlib.Path] = None

    def __post_init__(self):
        object.__setattr__(self, "name", str(self.name))
        object.__setattr__(self, "image", pathlib.Path(self.image))
        if self.label is not None:
            object.__setattr__(self, "label", pathlib.Path(self.label))


@dataclass(frozen=True)
class DatasetInfo:
    """What :func:`scan_dataset` found.

    Attributes
    ----------
    root : pathlib.Path
        The dataset folder.
    cases : tuple of Case
        Every case, sorted by name (labeled and unlabeled).
    modality : str
        ``"CT"``, ``"MRI"`` (any MR sequence name such as ``"MR"``, ``"T1"``,
        ``"T2"``, ``"ADC"``) or any other name, upper-cased.
    class_names : dict of int to str
        Class index to name, including ``0`` (background). From the
        ``"labels"`` of dataset.json; for a plain folder with labels,
        ``{0: "background", 1: "class1", ..., K: "classK"}`` with ``K`` the
        largest label value found in the label files; without labels
        ``{0: "background"}``.
    layout : str
        ``"msd"`` or ``"folder"``.
    """

    root: pathlib.Path
    cases: Tuple[Case, ...]
    modality: str
    class_names: Dict[int, str]
    layout: str

    @property
    def labeled(self) -> Tuple[Case, ...]:
        """The cases with a label map."""
        return tuple(c for c in self.cases if c.label is not None)

    @property
    def unlabeled(self) -> Tuple[Case, ...]:
        """The cases without a label map."""
        return tuple(c for c in self.cases if c.label is None)


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


# ----------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------

def _nifti_stem(name: str) -> Optional[str]:
    """``name`` without its ``.nii`` / ``.nii.gz`` suffix, or None if not NIfTI."""
    low = name.lower()
    for suffix in _NIFTI_SUFFIXES:
        if low.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _nifti_files(folder: pathlib.Path) -> List[pathlib.Path]:
    """The visible ``.nii`` / ``.nii.gz`` files directly inside ``folder``, sorted."""
    return sorted(p for p in folder.iterdir()
                  if not p.name.startswith(".") and _nifti_stem(p.name) is not None
                  and p.is_file())


def _by_name(files: Iterable[pathlib.Path]) -> Dict[str, pathlib.Path]:
    """Map case name -> file, raising on two files with one case name."""
    out: Dict[str, pathlib.Path] = {}
    for p in files:
        name = _nifti_stem(p.name)
        if name in out:
            raise ValueError(f"{p}: duplicate case name {name!r} (also {out[name]})")
        out[name] = p
    return out


def _normalise_modality(modality: Any) -> str:
    """``"CT"``, ``"MRI"`` for any MR sequence name, else the name upper-cased."""
    if not isinstance(modality, str) or not modality.strip():
        raise ValueError(f"modality must be a non-empty string, got {modality!r}")
    name = modality.strip().upper()
    if name == "CT":
        return "CT"
    if name in _MRI_NAMES or name.startswith("MR"):
        return "MRI"
    return name


def _fmt_names(class_names: Mapping[int, str]) -> str:
    items = sorted(class_names.items())
    if len(items) <= 12:
        return repr(dict(items))
    head = ", ".join(f"{k}: {v!r}" for k, v in items[:10])
    return f"{{{head}, ... ({len(items)} classes, largest {items[-1][0]})}}"


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


# ----------------------------------------------------------------------------
# scanning
# ----------------------------------------------------------------------------

def _parse_labels(obj: Any, meta_path: pathlib.Path) -> Dict[int, str]:
    """dataset.json ``"labels"`` -> {index: name}; accepts nnU-Net v2's name -> index."""
    bad = ValueError(f'{meta_path}: malformed dataset.json: "labels" must map class indices to '
                     f'names, like {{"0": "background", "1": "spleen"}}, got {obj!r}')
    if not isinstance(obj, dict) or not obj:
        raise bad
    try:
        names = {int(k): str(v) for k, v in obj.items()}
    except (TypeError, ValueError):
        # nnU-Net v2 style {"background": 0, "spleen": 1}
        values = list(obj.values())
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values) \
                or len(set(values)) != len(values):
            raise bad from None
        names = {int(v): str(k) for k, v in obj.items()}
    if any(k < 0 for k in names):
        raise bad
    names.setdefault(0, "background")
    return dict(sorted(names.items()))


def _dataset_modality(meta: Mapping[str, Any]) -> str:
    m = meta.get("modality", meta.get("channel_names"))
    if isinstance(m, dict) and m:
        m = m.get("0", next(iter(m.values())))
    if isinstance(m, str) and m.strip():
        return _normalise_modality(m)
    return "CT"


def _infer_class_names(label_files: Iterable[pathlib.Path]) -> Dict[int, str]:
    largest = 0
    for path in label_files:
        data = _squeeze3(_read_array(path, "label"), path, "label")
        values = _label_values(data, path, None)
        if values.size:
            largest = max(largest, int(values[-1]))
    return {0: "background", **{k: f"class{k}" for k in range(1, largest + 1)}}


def _scan_msd(root: pathlib.Path, modality: Optional[str]) -> DatasetInfo:
    meta_path = root / "dataset.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{meta_path}: cannot read dataset.json ({err})") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: malformed dataset.json: expected a JSON object, "
                         f"got {type(meta).__name__}")
    training = meta.get("training")
    if not isinstance(training, list):
        hint = (" (an nnU-Net v2 dataset.json lists no files; pass the imagesTr folder with "
                "labels=<labelsTr folder> instead)" if "channel_names" in meta else "")
        raise ValueError(f'{meta_path}: malformed dataset.json: no "training" list{hint}')
    test = meta.get("test") or []
    if not isinstance(test, list):
        raise ValueError(f'{meta_path}: malformed dataset.json: "test" must be a list')

    def listed(rel: Any, where: str) -> pathlib.Path:
        if not isinstance(rel, str) or not rel.strip():
            raise ValueError(f"{meta_path}: malformed dataset.json: {where} must be a file path, "
                             f"got {rel!r}")
        p = root / rel.strip()
        if _nifti_stem(p.name) is None:
            raise ValueError(f"{p}: listed in {meta_path} ({where}) but not a .nii/.nii.gz file")
        if not p.is_file():
            raise DatasetFileNotFoundError(
                f"{p}: listed in {meta_path} ({where}) but the file does not exist")
        return p

    cases: Dict[str, Case] = {}

    def add(case: Case) -> None:
        if case.name in cases:
            raise ValueError(f"{case.image}: duplicate case name {case.name!r} in {meta_path} "
                             f"(also {cases[case.name].image})")
        cases[case.name] = case

    for i, item in enumerate(training):
        if not isinstance(item, dict):
            raise ValueError(f'{meta_path}: malformed dataset.json: training[{i}] must be an '
                             f'object {{"image": ..., "label": ...}}, got {item!r}')
        image = listed(item.get("image"), f"training[{i}].image")
        label = item.get("label")
        label = None if label is None else listed(label, f"training[{i}].label")
        add(Case(_nifti_stem(image.name), image, label))
    for i, item in enumerate(test):
        rel = item.get("image") if isinstance(item, dict) else item
        image = listed(rel, f"test[{i}]")
        add(Case(_nifti_stem(image.name), image, None))
    if not cases:
        raise ValueError(f'{meta_path}: lists no cases (empty "training" and "test")')

    ordered = tuple(cases[n] for n in sorted(cases))
    if "labels" in meta:
        class_names = _parse_labels(meta["labels"], meta_path)
    else:
        class_names = _infer_class_names(c.label for c in ordered if c.label is not None)
    mod = _normalise_modality(modality) if modality is not None else _dataset_modality(meta)
    return DatasetInfo(root, ordered, mod, class_names, "msd")


def _scan_folder(root: pathlib.Path, labels: Optional[PathLike],
                 modality: Optional[str]) -> DatasetInfo:
    images = _by_name(_nifti_files(root))
    if not images:
        hint = ""
        if (root / "imagesTr").is_dir():
            hint = (f"; for an MSD folder without dataset.json pass {root / 'imagesTr'} "
                    f"with labels={root / 'labelsTr'}")
        raise ValueError(f"{root}: empty folder: no .nii/.nii.gz files and no dataset.json{hint}")
    label_map: Dict[str, pathlib.Path] = {}
    if labels is not None:
        lroot = pathlib.Path(labels).expanduser()
        if not lroot.exists():
            raise DatasetFileNotFoundError(f"{lroot}: labels folder does not exist")
        if not lroot.is_dir():
            raise ValueError(f"{lroot}: labels must be a folder of .nii/.nii.gz label maps")
        if lroot.resolve() == root.resolve():
            raise ValueError(f"{lroot}: the labels folder is the image folder")
        label_map = _by_name(_nifti_files(lroot))
        if not label_map:
            raise ValueError(f"{lroot}: empty labels folder: no .nii/.nii.gz files")
        orphans = sorted(set(label_map) - set(images))
        if orphans:
            more = f" (and {len(orphans) - 1} more: {orphans[1:6]})" if len(orphans) > 1 else ""
            raise ValueError(f"{label_map[orphans[0]]}: label file without an image: no "
                             f"{orphans[0]}.nii or {orphans[0]}.nii.gz in {root}{more}")
    cases = tuple(Case(n, images[n], label_map.get(n)) for n in sorted(images))
    class_names = (_infer_class_names(label_map[n] for n in sorted(label_map))
                   if label_map else {0: "background"})
    mod = _normalise_modality(modality) if modality is not None else "CT"
    return DatasetInfo(root, cases, mod, class_names, "folder")


def scan_dataset(path: PathLike, labels: Optional[PathLike] = None,
                 modality: Optional[str] = None) -> DatasetInfo:
    """Find the cases of a dataset folder.

    Two layouts are recognised:

    * **MSD** -- ``path`` contains ``dataset.json``: its ``"training"`` list
      of ``{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}``
      gives the labeled cases, its ``"test"`` list (image paths in
      ``imagesTs/``) unlabeled ones; ``"modality"`` (``{"0": "CT"}``) and
      ``"labels"`` (``{"0": "background", "1": "spleen"}``) give the modality
      and the class names.
    * **folder** -- ``path`` is a folder of ``.nii`` / ``.nii.gz`` images;
      ``labels`` optionally names a folder of label maps matched to the
      images by case name (an image without a label map is unlabeled). The
      class names are ``{0: "background", k: "class<k>"}`` up to the largest
      label value found (the label files are read for that).

    Parameters
    ----------
    path : str or os.PathLike
        The dataset folder (or its ``dataset.json``).
    labels : str or os.PathLike, optional
        Folder of label maps, for the folder layout only.
    modality : str, optional
        Overrides the dataset's modality (default for a plain folder:
        ``"CT"``). MR sequence names (``"MR"``, ``"T1"``, ``"T2"``, ``"ADC"``,
        ...) become ``"MRI"``.

    Returns
    -------
    DatasetInfo
        Cases sorted by name, modality, class names and layout.

    Raises
    ------
    FileNotFoundError
        (:class:`DatasetFileNotFoundError`) ``path``, ``labels`` or a file
        listed in dataset.json does not exist.
    ValueError
        Empty folder, unreadable or malformed dataset.json, duplicate case
        names, a label file without an image, bad label values (folder
        layout). The message names the file or folder.

    Examples
    --------
    >>> import tempfile
    >>> from supercl.data import write_msd
    >>> root = write_msd(tempfile.mkdtemp() + "/msd", n_volumes=3, shape=(4, 24, 20),
    ...                  n_organs=2)
    >>> info = scan_dataset(root)
    >>> info.layout, info.modality, [c.name for c in info.cases]
    ('msd', 'CT', ['phantom_000', 'phantom_001', 'phantom_002'])
    >>> info.class_names
    {0: 'background', 1: 'organ1', 2: 'organ2'}
    >>> scan_dataset(root / "imagesTr", labels=root / "labelsTr", modality="T2").modality
    'MRI'
    """
    root = pathlib.Path(path).expanduser()
    if not root.exists():
        raise DatasetFileNotFoundError(f"{root}: dataset path does not exist")
    if root.is_file() and root.name == "dataset.json":
        root = root.parent
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder (expected an MSD folder with dataset.json or a "
                         f"folder of .nii/.nii.gz images)")
    if (root / "dataset.json").is_file():
        if labels is not None:
            raise ValueError(f"{root}: labels= is for plain folders; this MSD folder's "
                             f"dataset.json lists the label files")
        return _scan_msd(root, modality)
    return _scan_folder(root, labels, modality)


# ----------------------------------------------------------------------------
# reading one case
# ----------------------------------------------------------------------------

def _read_array(path: pathlib.Path, kind: str, dtype=None) -> np.ndarray:
    """The stored (scaled) data array of a NIfTI file; ``dtype`` float for images."""
    import nibabel as nib

    if not path.is_file():
        raise DatasetFileNotFoundError(f"{path}: {kind} file does not exist")
    try:
        img = nib.load(str(path))
        if dtype is not None:
            return img.get_fdata(dtype=dtype)
        return np.asarray(img.dataobj)
    except Exception as err:
        raise ValueError(f"{path}: nibabel cannot read this {kind} file "
                         f"({type(err).__name__}: {err})") from err


def _squeeze3(arr: np.ndarray, path: pathlib.Path, kind: str) -> np.ndarray:
    shape = arr.shape
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 4:
        raise ValueError(f"{path}: 4-D {kind} with {arr.shape[3]} channels/time points is not "
                         f"supported; pass one channel (shape {shape})")
    if arr.ndim != 3:
        raise ValueError(f"{path}: {kind} is not 3-D (shape {shape}); expected a volume "
                         f"(x, y, z)")
    return arr


def _header_shape(path: pathlib.Path, kind: str) -> Tuple[int, ...]:
    """The (x, y, z) shape of a NIfTI file from its header (no voxels read)."""
    import nibabel as nib

    if not path.is_file():
        raise DatasetFileNotFoundError(f"{path}: {kind} file does not exist")
    try:
        shape = tuple(int(n) for n in nib.load(str(path)).shape)
    except Exception as err:
        raise ValueError(f"{path}: nibabel cannot read this {kind} file "
                         f"({type(err).__name__}: {err})") from err
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def check_pairs(info: "DatasetInfo", names: Optional[Iterable[str]] = None) -> None:
    """Check that every labeled case (of ``names``, default all) has a label map of its
    image's shape, reading the NIfTI headers only, so that a mismatch is found when the split
    is made rather than when the labels are first needed.

    Raises
    ------
    ValueError
        The message starts with the label file and gives both shapes (x, y, z).
    FileNotFoundError
        (:class:`DatasetFileNotFoundError`) an image or label file is missing.
    """
    wanted = None if names is None else set(names)
    for case in info.cases:
        if case.label is None or (wanted is not None and case.name not in wanted):
            continue
        image, label = pathlib.Path(case.image), pathlib.Path(case.label)
        shape_i, shape_l = _header_shape(image, "image"), _header_shape(label, "label")
        if shape_i != shape_l:
            raise ValueError(f"{label}: label shape {shape_l} differs from image shape "
                             f"{shape_i} of {image} (x, y, z)")


def _label_values(arr: np.ndarray, path: pathlib.Path,
                  class_names: Optional[Mapping[int, str]]) -> np.ndarray:
    """Sorted distinct values of a label map, after checking they are valid classes."""
    kind = arr.dtype.kind
    if kind == "b":
        arr = arr.astype(np.uint8)
    elif kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            raise ValueError(f"{path}: label map contains {int(arr.size - finite.sum())} "
                             f"NaN/inf values")
        frac = arr != np.round(arr)
        if frac.any():
            bad = np.unique(arr[frac])[:5].tolist()
            raise ValueError(f"{path}: non-integer label values {bad} (labels must be integer "
                             f"class indices)")
    elif kind not in "iu":
        raise ValueError(f"{path}: unsupported label data type {arr.dtype}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = arr.min(), arr.max()
    if lo >= 0 and hi < (1 << 20):
        values = np.flatnonzero(np.bincount(arr.ravel().astype(np.intp, copy=False)))
    else:
        values = np.unique(arr).astype(np.int64)
    if class_names is None:
        neg = values[values < 0]
        if neg.size:
            raise ValueError(f"{path}: negative label values {neg[:10].tolist()} are not class "
                             f"indices")
    else:
        undeclared = [int(v) for v in values if int(v) not in class_names]
        if undeclared:
            shown = undeclared[:10] + (["..."] if len(undeclared) > 10 else [])
            raise ValueError(f"{path}: label values {shown} are not declared in dataset.json "
                             f"labels {_fmt_names(class_names)}")
    return values.astype(np.int64)


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
    >>> from supercl.data import write_msd
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
    >>> from supercl.data import write_msd
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


# ----------------------------------------------------------------------------
# splits
# ----------------------------------------------------------------------------

def _check_fraction(name: str, value: Any, *, zero_ok: bool, one_ok: bool) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    v = float(value) if ok else float("nan")
    if not (math.isfinite(v) and (v >= 0 if zero_ok else v > 0) and (v <= 1 if one_ok else v < 1)):
        interval = ("[0" if zero_ok else "(0") + ", 1" + ("]" if one_ok else ")")
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return v


def split_cases(info: DatasetInfo, *, label_fraction: float = 0.1, val_fraction: float = 0.2,
                test_fraction: float = 0.2, seed: int = 0,
                label_seed: Optional[int] = None) -> Dict[str, Any]:
    """Split a dataset by volume into pre-training, fine-tuning, validation and test.

    The labeled cases are shuffled with ``numpy.random.default_rng(seed)``;
    the first ``max(1, round(test_fraction * n))`` are the test set, the next
    ``max(1, round(val_fraction * n))`` the validation set, the rest is the
    labeled training pool. The fine-tuning set is the first
    ``max(1, round(label_fraction * n_pool))`` of a second seeded permutation
    of the pool, so with one seed (and the same val/test fractions) the
    10 % set is contained in the 25 % set, which is contained in the 100 %
    set. The pre-training set is the whole pool (its labels unused) plus every
    unlabeled case. Validation and test volumes appear in neither.
    (``round`` is Python's, rounding halves to even.)

    Parameters
    ----------
    info : DatasetInfo
        From :func:`scan_dataset`; needs at least 3 labeled cases.
    label_fraction : float
        Share of the labeled training pool used for fine-tuning, in (0, 1].
    val_fraction, test_fraction : float
        Shares of the labeled cases held out, in [0, 1) (at least one volume
        each).
    seed : int
        Non-negative seed.
    label_seed : int, optional
        Seed of the second permutation alone (which pool volumes are labeled), so that
        several label draws share one test, validation and pre-training set (``supercl
        ablate``'s split seeds). None: the permutation continues ``seed``'s generator.

    Returns
    -------
    dict
        ``"pretrain"``, ``"finetune"``, ``"val"``, ``"test"``: sorted lists
        of case names; ``"label_fraction"`` (float) and ``"seed"`` (int).

    Raises
    ------
    ValueError
        A fraction out of range, a bad seed, or fewer than 3 labeled cases /
        fractions leaving no training volume (the message gives the numbers).

    Examples
    --------
    >>> import tempfile
    >>> from supercl.data import write_msd
    >>> info = scan_dataset(write_msd(tempfile.mkdtemp() + "/msd", n_volumes=10,
    ...                               shape=(2, 8, 8), n_organs=1))
    >>> split = split_cases(info, label_fraction=0.25, seed=0)
    >>> [len(split[k]) for k in ("pretrain", "finetune", "val", "test")]
    [6, 2, 2, 2]
    >>> set(split["finetune"]) <= set(split["pretrain"])
    True
    >>> set(split["test"]) & set(split["pretrain"] + split["val"])
    set()
    """
    lf = _check_fraction("label_fraction", label_fraction, zero_ok=False, one_ok=True)
    vf = _check_fraction("val_fraction", val_fraction, zero_ok=True, one_ok=False)
    tf = _check_fraction("test_fraction", test_fraction, zero_ok=True, one_ok=False)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)

    labeled = [c.name for c in info.cases if c.label is not None]
    unlabeled = [c.name for c in info.cases if c.label is None]
    n = len(labeled)
    n_test = max(1, round(tf * n))
    n_val = max(1, round(vf * n))
    if n < 3 or n_test + n_val >= n:
        hint = ""
        if info.layout == "folder" and n == 0:
            hint = ("; the images of a plain folder are unlabeled unless the label maps are "
                    "given: pass --labels DIR (labels= in scan_dataset), a folder of label "
                    "maps named like the images")
        raise ValueError(
            f"split_cases: {info.root} has {n} labeled volumes; test_fraction={tf:g} "
            f"({n_test} test) and val_fraction={vf:g} ({n_val} val) leave "
            f"{max(0, n - n_test - n_val)} training volumes (need at least 1, so at least 3 "
            f"labeled volumes){hint}")
    rng = np.random.default_rng(seed)
    order = [labeled[i] for i in rng.permutation(n)]
    test = order[:n_test]
    val = order[n_test:n_test + n_val]
    pool = order[n_test + n_val:]
    if label_seed is not None:
        if isinstance(label_seed, (bool, np.bool_)) or not isinstance(label_seed, numbers.Integral) \
                or label_seed < 0:
            raise ValueError(f"label_seed must be a non-negative integer or None, got {label_seed!r}")
        rng = np.random.default_rng([int(label_seed), 1])
    pool_order = [pool[i] for i in rng.permutation(len(pool))]
    finetune = pool_order[:max(1, round(lf * len(pool)))]
    return {
        "pretrain": sorted(pool + unlabeled),
        "finetune": sorted(finetune),
        "val": sorted(val),
        "test": sorted(test),
        "label_fraction": lf,
        "seed": seed,
        **({} if label_seed is None else {"label_seed": int(label_seed)}),
    }


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, (np.ndarray, tuple, set, frozenset)):
        return sorted(obj) if isinstance(obj, (set, frozenset)) else list(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def write_split(split: Mapping[str, Any], path: PathLike) -> pathlib.Path:
    """Write a split (from :func:`split_cases`) as JSON, atomically.

    The JSON is written to a temporary file next to ``path`` and moved over
    it with :func:`os.replace`, so a reader never sees a partial file. Parent
    folders are created.

    Parameters
    ----------
    split : mapping
        JSON-serialisable (numpy scalars and arrays are converted).
    path : str or os.PathLike
        Destination file.

    Returns
    -------
    pathlib.Path
        ``path``.

    Examples
    --------
    >>> import json, tempfile
    >>> p = write_split({"val": ["a"], "seed": 0}, tempfile.mkdtemp() + "/split.json")
    >>> json.loads(p.read_text())
    {'val': ['a'], 'seed': 0}
    """
    path = pathlib.Path(path)
    if not isinstance(split, Mapping):
        raise ValueError(f"{path}: split must be a mapping, got {type(split).__name__}")
    try:
        text = json.dumps(dict(split), indent=2, default=_json_default) + "\n"
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: split is not JSON-serialisable ({err})") from err
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0o022)  # mkstemp makes 0600: follow the umask like every other file
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
