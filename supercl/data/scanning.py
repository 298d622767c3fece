"""Scanning a dataset: the cases of a Medical Segmentation Decathlon folder or of a plain
folder of NIfTI volumes, their modality and class names, and the header checks of image/label
pairs. Part of :mod:`supercl.data.nifti`, which describes the axes and the errors."""

from __future__ import annotations

import json
import os
import pathlib
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import numpy as np

__all__ = ["Case", "DatasetInfo", "DatasetFileNotFoundError", "RESIZE_MODES", "scan_dataset",
           "check_pairs"]

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
        ``"msd"``, ``"nnunet"`` or ``"folder"``.
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
        raise ValueError(f'{meta_path}: malformed dataset.json: no "training" list (nor the '
                         '"channel_names" of an nnU-Net v2 dataset.json)')
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

    Two layouts are recognised here; :func:`supercl.data.nifti.scan_dataset` (what
    ``supercl.data`` exports and the trainer uses) adds a third, the nnU-Net v2 raw dataset
    (``dataset.json`` with ``channel_names``, ``imagesTr/<case>_0000.nii.gz``: read by
    :func:`supercl.data.nnunet.scan_nnunet`):

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
    {0: 'background', 1: 'liver', 2: 'spleen'}
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
    """Check every case (of ``names``, default all) before a run uses any of them: its image
    is a 3-D volume (from the header), and a labeled case's label map has the image's shape
    and only values declared in ``info.class_names`` (dataset.json's labels). The headers are
    read for every case and the label maps' voxels for the labeled ones, so that a bad volume
    anywhere in the split (a test volume too) is found when the split is made, before a run
    writes anything, rather than when the volume is first loaded.

    Raises
    ------
    ValueError
        The message starts with the offending file: not 3-D, label shape differs from the
        image's (both shapes, x, y, z), label values not declared, or unreadable.
    FileNotFoundError
        (:class:`DatasetFileNotFoundError`) an image or label file is missing.
    """
    wanted = None if names is None else set(names)
    for case in info.cases:
        if wanted is not None and case.name not in wanted:
            continue
        image = pathlib.Path(case.image)
        shape_i = _header_shape(image, "image")
        _check_3d(shape_i, image, "image")
        if case.label is None:
            continue
        label = pathlib.Path(case.label)
        shape_l = _header_shape(label, "label")
        if shape_i != shape_l:
            raise ValueError(f"{label}: label shape {shape_l} differs from image shape "
                             f"{shape_i} of {image} (x, y, z)")
        _label_values(_read_array(label, "label"), label, info.class_names)


def _check_3d(shape: Tuple[int, ...], path: pathlib.Path, kind: str) -> None:
    """The checks of :func:`_squeeze3` on a header shape (trailing singletons dropped)."""
    if len(shape) == 4:
        raise ValueError(f"{path}: 4-D {kind} with {shape[3]} channels/time points is not "
                         f"supported; pass one channel (shape {shape})")
    if len(shape) != 3:
        raise ValueError(f"{path}: {kind} is not 3-D (shape {shape}); expected a volume "
                         f"(x, y, z)")


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


