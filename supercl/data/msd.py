"""The embedded phantom dataset, written in the Medical Segmentation Decathlon layout.

:func:`write_msd` draws the volumes with :mod:`supercl.data.phantom_v2` (abdominal CT or MR
whose organ classes differ by shape, position and texture) and stores them as real datasets
are stored (``dataset.json``, ``imagesTr/``, ``labelsTr/``), for the trainer, the demo, the
ablation and the tests. :func:`write_cases` is the layout itself, for any generator of cases
(the tests' copy of the earlier v1 phantom, ``tests/phantom_v1.py``, writes its datasets
with it).

Only numpy, nibabel and the phantom's scipy are used. Everything is deterministic given the
seed.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any, Callable, Dict, Sequence, Tuple, Union

import numpy as np

from supercl._validate import check_int, check_seed, check_spacing, child_seed

from . import phantom_v2

__all__ = ["write_msd", "write_cases"]

SeedLike = Union[int, np.integer, np.random.SeedSequence]
#: ``case(i, shape, spacing)``: volume ``i`` of a dataset as stored, ``(int16 image, uint8
#: labels)``, both ``(D, H, W)`` of ``shape``; ``spacing`` is the voxel size (x, y, z) in mm.
CaseFn = Callable[[int, Tuple[int, int, int], Tuple[float, float, float]],
                  Tuple[np.ndarray, np.ndarray]]

_CASE_RE = re.compile(r"^phantom_\d+\.nii\.gz$")


def write_msd(root: Union[str, os.PathLike], n_volumes: int = 4,
              shape: Sequence[int] = (32, 128, 128), *, n_organs: int = 5,
              seed: SeedLike = 0, modality: str = "CT", overwrite: bool = False,
              spacing: Sequence[float] = (0.8, 0.8, 2.5)) -> pathlib.Path:
    """Write a phantom dataset in the Medical Segmentation Decathlon layout.

    Creates::

        root/dataset.json
        root/imagesTr/phantom_000.nii.gz ...   (int16: CT in HU, clipped to [-1024, 3071];
                                                MR in arbitrary units >= 0)
        root/labelsTr/phantom_000.nii.gz ...   (uint8, 0..n_organs)

    Case ``i`` is :func:`supercl.data.phantom_v2.phantom_v2_volume` of ``shape`` with
    ``seed=SeedSequence(seed, spawn_key=(i,))``, the modality and the voxel size. Following
    the usual MSD / NIfTI convention the stored data array has shape ``(X, Y, Z) = (W, H,
    D)``, i.e. it is the ``(D, H, W)`` volume transposed with ``.transpose(2, 1, 0)`` and the
    axial slices lie along the last axis; read a case back as a ``(D, H, W)`` array with
    ``np.asarray(nib.load(p).dataobj).transpose(2, 1, 0)``. The affine is diagonal with the
    voxel ``spacing`` (mm) and centres the volume on the origin; the header units are mm.

    Parameters
    ----------
    root : str or os.PathLike
        Dataset folder; created (with parents) if missing.
    n_volumes : int
        Number of training cases, >= 1.
    shape : sequence of 3 int
        ``(depth, height, width)`` of each volume, each >= 1.
    n_organs : int
        Number of organ classes, 0..7: labels named liver, spleen, kidneys, aorta,
        gallbladder, pancreas, psoas, in that order.
    seed : int or numpy.random.SeedSequence
        Dataset seed; the same seed writes the same voxels.
    modality : str
        ``"CT"`` or an MR name (``"MR"``, ``"MRI"``, ``"T1"``, ``"T2"``; anything else is a
        ValueError), stored as ``{"0": modality}`` in dataset.json.
    overwrite : bool
        If ``root`` exists and is not empty, raise :class:`FileExistsError` unless
        ``overwrite`` is true; with ``overwrite=True`` dataset.json and the
        ``phantom_*.nii.gz`` files of ``imagesTr``/``labelsTr`` are replaced (stale ones
        removed); other files are left alone.
    spacing : sequence of 3 float
        Voxel size in mm along (x, y, z).

    Returns
    -------
    pathlib.Path
        ``root``.

    Raises
    ------
    FileExistsError
        If ``root`` is not empty and ``overwrite`` is false, or is a file.
    ValueError, TypeError
        On invalid arguments (the message names the argument).

    Examples
    --------
    >>> import json, tempfile, nibabel as nib
    >>> root = write_msd(tempfile.mkdtemp() + "/phantom", n_volumes=2,
    ...                  shape=(8, 32, 32), n_organs=2)
    >>> meta = json.loads((root / "dataset.json").read_text())
    >>> meta["numTraining"], meta["labels"]["2"]
    (2, 'spleen')
    >>> nib.load(root / meta["training"][0]["image"]).shape
    (32, 32, 8)
    """
    n_volumes = check_int(n_volumes, "n_volumes", 1)
    shape_t = check_shape(shape)
    parent = check_seed(seed)
    meta = phantom_v2.msd_meta(n_organs, modality)   # validates n_organs and modality

    def case(i, shape_t, spacing_t):
        return phantom_v2.msd_case(shape_t, n_organs=n_organs, seed=child_seed(parent, i),
                                   modality=modality, spacing_xyz=spacing_t)  # int16 already

    return write_cases(root, n_volumes, shape_t, case, name=meta["name"],
                       description=meta["description"], labels=meta["labels"],
                       modality=modality, spacing=spacing, overwrite=overwrite)


def check_shape(shape: Any) -> Tuple[int, int, int]:
    """``shape`` as ``(depth, height, width)``, each an int >= 1."""
    try:
        shape_t = tuple(shape)
    except TypeError:
        raise ValueError(f"shape must be a sequence of 3 positive integers, got {shape!r}") \
            from None
    if len(shape_t) != 3:
        raise ValueError(f"shape must be a sequence of 3 positive integers, got {shape!r}")
    return tuple(check_int(s, f"shape[{i}]", 1) for i, s in enumerate(shape_t))


def write_cases(root: Union[str, os.PathLike], n_volumes: int, shape: Sequence[int],
                case: CaseFn, *, name: str, description: str, labels: Dict[str, str],
                modality: str = "CT", spacing: Sequence[float] = (0.8, 0.8, 2.5),
                overwrite: bool = False) -> pathlib.Path:
    """Write ``n_volumes`` cases drawn by ``case`` (see :data:`CaseFn`) in the MSD layout
    described in :func:`write_msd`, with ``name``, ``description`` and ``labels`` (``{"0":
    "background", "1": ...}``) in dataset.json. Checks every argument and the folder before
    it writes anything."""
    import nibabel as nib

    n_volumes = check_int(n_volumes, "n_volumes", 1)
    depth, height, width = check_shape(shape)
    if not isinstance(modality, str) or not modality:
        raise ValueError(f"modality must be a non-empty string, got {modality!r}")
    spacing_t = check_spacing(spacing, ndim=3)

    root = pathlib.Path(root)
    if root.exists():
        if not root.is_dir():
            raise FileExistsError(f"write_msd: {root} exists and is not a directory")
        if any(root.iterdir()) and not overwrite:
            raise FileExistsError(
                f"write_msd: {root} exists and is not empty; refusing to overwrite it "
                f"(pass overwrite=True to replace the phantom dataset)")
    images_dir = root / "imagesTr"
    labels_dir = root / "labelsTr"
    images_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    for folder in (images_dir, labels_dir):
        for p in folder.iterdir():
            if p.is_file() and _CASE_RE.match(p.name):
                p.unlink()

    width_digits = max(3, len(str(n_volumes - 1)))
    affine = np.diag([spacing_t[0], spacing_t[1], spacing_t[2], 1.0])
    affine[:3, 3] = -0.5 * (np.array([width, height, depth]) - 1) * np.array(spacing_t)
    training = []
    for i in range(n_volumes):
        file_name = f"phantom_{i:0{width_digits}d}.nii.gz"
        stored, lab = case(i, (depth, height, width), spacing_t)
        for data, dtype, folder in ((stored.transpose(2, 1, 0), np.int16, images_dir),
                                    (lab.transpose(2, 1, 0), np.uint8, labels_dir)):
            img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
            img.header.set_data_dtype(dtype)
            img.header.set_xyzt_units("mm", "sec")
            img.set_qform(affine, code=1)
            img.set_sform(affine, code=1)
            nib.save(img, str(folder / file_name))
        training.append({"image": f"./imagesTr/{file_name}",
                         "label": f"./labelsTr/{file_name}"})

    meta = {
        "name": name,
        "description": description,
        "reference": "supercl synthetic phantom",
        "licence": "CC0",
        "release": "1.0",
        "tensorImageSize": "3D",
        "modality": {"0": modality},
        "labels": labels,
        "numTraining": n_volumes,
        "numTest": 0,
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=4) + "\n")
    return root
