"""nnU-Net v2 raw datasets: ``nnUNet_raw/DatasetXXX_Name`` as supercl reads it.

The layout (nnU-Net's ``documentation/dataset_format.md``)::

    dataset.json      {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1},
                       "numTraining": 20, "file_ending": ".nii.gz"}
    imagesTr/         <case>_0000.nii.gz (one file per channel: _0000, _0001, ...)
    labelsTr/         <case>.nii.gz
    imagesTs/         <case>_0000.nii.gz (optional; unlabeled)

Unlike an MSD ``dataset.json`` it lists no files: the cases are the ``imagesTr`` files of
channel ``0000``. supercl trains on one channel, so it reads channel 0 (the first of
``channel_names``) and says so when there are more. It reads NIfTI (``file_ending``
``.nii.gz`` or ``.nii``); nnU-Net's other formats (``.nrrd``, ``.mha``, ``.png``, ``.tif``)
are refused with a message naming the file and the key. Region-based labels (a list of
values under one name) are refused the same way: supercl's classes are label values.
An optional ``"dataset"`` entry (nnU-Net's explicit case list, ``{"case": {"images": [...],
"label": ...}}``) is honoured.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any, Dict, Optional

from .scanning import Case, DatasetFileNotFoundError, DatasetInfo, _normalise_modality

__all__ = ["read_nnunet_dataset_json", "scan_nnunet", "is_nnunet_dataset_json", "write_nnunet_raw"]

_READABLE = (".nii.gz", ".nii")


def is_nnunet_dataset_json(meta: Any) -> bool:
    """Whether a parsed dataset.json is nnU-Net v2's (``channel_names``, no MSD
    ``training`` list)."""
    return isinstance(meta, dict) and "channel_names" in meta and "training" not in meta


def read_nnunet_dataset_json(path: pathlib.Path) -> Dict[str, Any]:
    """The parts of an nnU-Net v2 ``dataset.json`` supercl uses, checked:
    ``{"channel_names": {int: str}, "labels": {name: int}, "file_ending": str,
    "numTraining": int or None, "dataset": dict or None}``. ``ValueError`` naming the file and
    the key for anything it cannot use."""
    path = pathlib.Path(path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read dataset.json ({err})") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: malformed dataset.json: expected a JSON object")

    def bad(key: str, why: str) -> ValueError:
        return ValueError(f'{path}: nnU-Net dataset.json key "{key}": {why}')

    for key in ("channel_names", "labels", "file_ending"):
        if key not in meta:
            raise bad(key, "missing (nnU-Net v2 needs channel_names, labels and file_ending)")
    channels = meta["channel_names"]
    if not isinstance(channels, dict) or not channels:
        raise bad("channel_names", f'must map channel indices to names, like {{"0": "CT"}}, '
                                   f"got {channels!r}")
    try:
        channels = {int(k): str(v) for k, v in channels.items()}
    except (TypeError, ValueError):
        raise bad("channel_names", f"keys must be channel indices 0, 1, ..., got "
                                   f"{list(meta['channel_names'])}") from None
    if sorted(channels) != list(range(len(channels))):
        raise bad("channel_names", f"keys must be 0 ... {len(channels) - 1}, got "
                                   f"{sorted(channels)}")
    labels = meta["labels"]
    if not isinstance(labels, dict) or not labels:
        raise bad("labels", f'must map names to values, like {{"background": 0, "liver": 1}}, '
                            f"got {labels!r}")
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            raise bad(f"labels.{name}", f"region-based labels ({value!r}) are not supported; "
                                        "supercl's classes are single label values")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad(f"labels.{name}", f"must be a non-negative integer, got {value!r}")
    if len(set(labels.values())) != len(labels):
        raise bad("labels", f"two names share a value: {labels!r}")
    if 0 not in labels.values():
        raise bad("labels", 'needs the background at 0 (e.g. "background": 0)')
    ending = meta["file_ending"]
    if not isinstance(ending, str) or ending.lower() not in _READABLE:
        raise bad("file_ending", f"{ending!r}: supercl reads NIfTI (.nii.gz, .nii) with "
                                 "nibabel; convert the images, or use nnU-Net's own reader")
    n = meta.get("numTraining")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise bad("numTraining", f"must be a non-negative integer, got {n!r}")
    listed = meta.get("dataset")
    if listed is not None and not isinstance(listed, dict):
        raise bad("dataset", f"must map case names to {{'images': [...], 'label': ...}}, got "
                             f"{type(listed).__name__}")
    return {"channel_names": channels, "labels": dict(labels), "file_ending": ending,
            "numTraining": n, "dataset": listed}


def _case_files(folder: pathlib.Path, ending: str) -> Dict[str, pathlib.Path]:
    """{case: channel-0 file} of an imagesTr / imagesTs folder."""
    suffix = "_0000" + ending
    out: Dict[str, pathlib.Path] = {}
    if not folder.is_dir():
        return out
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        if p.name.endswith(suffix) and len(p.name) > len(suffix):
            out[p.name[: -len(suffix)]] = p
    return out


def scan_nnunet(root: pathlib.Path, modality: Optional[str] = None) -> DatasetInfo:
    """The cases of an nnU-Net v2 raw dataset folder (see the module docstring); layout
    ``"nnunet"``. Labeled cases: ``imagesTr/<case>_0000<file_ending>`` with
    ``labelsTr/<case><file_ending>``; unlabeled: ``imagesTs``. The modality is channel 0's
    name; the class names are ``labels`` inverted.

    Raises ``ValueError`` (missing label file, an image without channel 0000, a count that
    contradicts ``numTraining``, a bad key: the message names the file and the key) and
    :class:`~supercl.data.nifti.DatasetFileNotFoundError`."""
    root = pathlib.Path(root)
    meta_path = root / "dataset.json"
    meta = read_nnunet_dataset_json(meta_path)
    ending = meta["file_ending"]
    cases: Dict[str, Case] = {}
    if meta["dataset"] is not None:  # an explicit case list instead of the folders
        for name, entry in sorted(meta["dataset"].items()):
            key = f"dataset.{name}"
            images = entry.get("images") if isinstance(entry, dict) else None
            if not isinstance(images, list) or not images or not isinstance(images[0], str):
                raise ValueError(f'{meta_path}: nnU-Net dataset.json key "{key}.images" must '
                                 f"list the channel files, got {images!r}")
            image = root / images[0]
            label = entry.get("label")
            label = None if label is None else root / str(label)
            for p, what in ((image, "images[0]"), (label, "label")):
                if p is not None and not p.is_file():
                    raise DatasetFileNotFoundError(f'{p}: listed in {meta_path} ("{key}.{what}") '
                                                   "but the file does not exist")
            cases[name] = Case(name, image, label)
    else:
        train = _case_files(root / "imagesTr", ending)
        if not train and not (root / "imagesTs").is_dir():
            raise ValueError(f"{root / 'imagesTr'}: no <case>_0000{ending} images (file_ending "
                             f"{ending!r} in {meta_path})")
        for name, image in train.items():
            label = root / "labelsTr" / (name + ending)
            if not label.is_file():
                raise DatasetFileNotFoundError(
                    f"{label}: the label map of {image.name} does not exist (nnU-Net "
                    f"expects labelsTr/<case>{ending}; file_ending in {meta_path})")
            cases[name] = Case(name, image, label)
        n = meta["numTraining"]
        if n is not None and n != len(train):
            raise ValueError(f'{meta_path}: nnU-Net dataset.json key "numTraining" is {n}, but '
                             f"{root / 'imagesTr'} has {len(train)} cases (<case>_0000{ending})")
        for name, image in _case_files(root / "imagesTs", ending).items():
            if name in cases:
                raise ValueError(f"{image}: case {name!r} is in both imagesTr and imagesTs")
            cases[name] = Case(name, image, None)
    if not cases:
        raise ValueError(f"{meta_path}: no cases (imagesTr and imagesTs hold no "
                         f"<case>_0000{ending} files)")
    channels = meta["channel_names"]
    if len(channels) > 1:
        print(f"{meta_path}: {len(channels)} channels {channels}; supercl reads channel 0 "
              f"({channels[0]}) only", file=sys.stderr)
    mod = _normalise_modality(modality if modality is not None else channels[0])
    class_names = {int(v): str(k) for k, v in sorted(meta["labels"].items(), key=lambda kv: kv[1])}
    ordered = tuple(cases[n] for n in sorted(cases))
    return DatasetInfo(root, ordered, mod, class_names, "nnunet")


def write_nnunet_raw(root, n_volumes: int = 4, shape=(32, 128, 128), *, n_organs: int = 5,
                     seed: int = 0, overwrite: bool = False, **phantom) -> pathlib.Path:
    """Write the phantom dataset (:func:`supercl.data.write_msd`, same arguments) in the
    nnU-Net v2 raw layout: ``dataset.json`` (``channel_names``, ``labels`` name -> value,
    ``numTraining``, ``file_ending``), ``imagesTr/<case>_0000.nii.gz``,
    ``labelsTr/<case>.nii.gz``. For trying the nnU-Net workflow without data
    (docs/nnunet.md) and for the tests; returns ``root``."""
    import shutil
    import tempfile

    from supercl.data import write_msd  # the package's phantom writer, wherever it lives

    root = pathlib.Path(root)
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise FileExistsError(f"{root}: not empty (pass overwrite=True to replace it)")
    with tempfile.TemporaryDirectory() as tmp:
        msd = write_msd(pathlib.Path(tmp) / "msd", n_volumes, shape, n_organs=n_organs,
                        seed=seed, **phantom)
        meta = json.loads((msd / "dataset.json").read_text())
        if root.exists():
            shutil.rmtree(root)
        (root / "imagesTr").mkdir(parents=True)
        (root / "labelsTr").mkdir()
        for item in meta["training"]:
            name = pathlib.Path(item["image"]).name[: -len(".nii.gz")]
            shutil.copyfile(msd / item["image"], root / "imagesTr" / f"{name}_0000.nii.gz")
            shutil.copyfile(msd / item["label"], root / "labelsTr" / f"{name}.nii.gz")
    modality = next(iter(meta["modality"].values()))
    labels = {str(v): int(k) for k, v in meta["labels"].items()}
    (root / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": modality}, "labels": labels,
         "numTraining": len(meta["training"]), "file_ending": ".nii.gz"}, indent=2))
    return root
