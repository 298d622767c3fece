"""A small real-MRI segmentation task built on the fly from the MNI152 template in nilearn.

nilearn's wheel ships the ICBM 2009a nonlinear symmetric MNI152 template (Fonov et al. 2009,
2011): a 1 mm T1-weighted MRI of 197 x 233 x 189 voxels with grey- and white-matter
probability maps made by others. This module turns it into a three-class task (background,
grey matter, white matter: the argmax of 1 - GM - WM, GM, WM) and writes it in the Medical
Segmentation Decathlon layout that :func:`supercl.data.scan_dataset` reads, so the normal
loading path (``--data DIR --modality MRI``) trains and evaluates on it.

There is one volume, and supercl splits by volume. The axial slices that hold brain are cut
into ``n_blocks`` contiguous z-blocks; ``gap`` slices between neighbouring blocks are left
out, so that no training slice is the immediate neighbour of a held-out slice. Each block is
written as thin cases ("z-units") of ``unit`` slices (the last unit of a block takes the
remainder), and dataset.json declares them (``"supercl_units"``: each case's block and z
range), so that :func:`supercl.data.split_cases` splits this dataset in two tiers:

- **held out by block.** The test and validation fractions apply to the blocks (the same
  seeded permutation as for volumes): with the default 10 blocks and 20 % / 20 %, 2 blocks
  are tested, 2 validate, the other 6 form the training pool. With split seed 0 the test
  blocks are z 66-78 and z 96-107 and the validation blocks z 37-49 and z 110-122, the same
  blocks as when every block was one case;
- **labeled draw stratified over z.** The pool's units, sorted by z, are cut into
  ``max(1, round(label_fraction * pool units))`` strata of consecutive units and each label
  draw picks one unit in each. At 10 % labels the pool's 36 two- or three-slice units (75
  slices, z 8-151) give 4 strata (z 8-28, 29-63, 81-130 and 131-151 for split seed 0), so
  every draw labels 4 units, 8 or 9 slices (10.7 % or 12.0 % of the pool's 75 slices; the
  split states ``finetune_slices`` and ``pool_slices``), one in each stratum, and every draw
  spans the test blocks' z range 66-107: its lowest labeled slice is at most z 28 and its
  highest at least z 131 (no tolerance needed), and consecutive labeled slices are at most
  two strata apart.

Why: with one block per case, 10 % labels was 1 of 6 blocks, and the draw decided the result
(test DSC 0 % when the bottom block z 8-20, cerebellum and brain stem, was drawn, about 95 %
for a middle one; SD 35 points over 15 runs). A stratified draw of thin units labels the
same share of slices but spread over the whole brain.

Costs of thin cases: MRI volumes are z-scored per case, so every case (training, validation
and test alike) is normalised over its own 2-3 slices; and PCL's relative slice positions
(``k / (depth - 1)`` within a case) take only the values 0, 0.5 and 1, which carry no anatomy
(neither did positions within 12-slice blocks, whose z differs from block to block).
``unit`` larger than a block gives the old one-case-per-block layout.

Nothing is downloaded: the files are read from the installed nilearn package (``pip install
'supercl[mni]'``); without nilearn, :func:`write_mni152_msd` raises ImportError saying so.

Example
-------
>>> from supercl.data.mni152 import write_mni152_msd   # doctest: +SKIP
>>> root = write_mni152_msd("runs/mni152")              # doctest: +SKIP
>>> # supercl finetune --data runs/mni152 --modality MRI --out runs/mni-scratch
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
from typing import Union

import numpy as np

__all__ = ["template_paths", "mni152_task", "write_mni152_msd", "CLASSES"]

CLASSES = ("background", "gray_matter", "white_matter")
_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


def template_paths() -> dict[str, pathlib.Path]:
    """The T1, GM and WM files of the template inside the installed nilearn package (found
    without importing nilearn, which is slow to import).

    Raises ImportError when nilearn is not installed, FileNotFoundError when its package
    lacks the files.
    """
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the MNI152 task needs nilearn, whose wheel ships the template: "
                          "pip install 'supercl[mni]' (or pip install nilearn)")
    data = pathlib.Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    paths = {key: data / name for key, name in _FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"this nilearn has no MNI152 2009 template files: {missing}")
    return paths


def mni152_task(min_brain_fraction: float = 0.01):
    """The template as arrays in its own (X, Y, Z) voxel order, axial slices along Z.

    Returns ``(t1, labels, affine, z_range)``: t1 (197, 233, 189) float32 (the template's
    0..255 intensities), labels of the same shape uint8 (0 background, 1 grey matter, 2 white
    matter: the argmax of ``1 - GM - WM``, ``GM``, ``WM``, ties to the lower class), the 4 x 4
    affine, and ``(z0, z1)``: the axial slices ``z0 <= z < z1`` in which at least
    ``min_brain_fraction`` of the voxels are grey or white matter.
    """
    import nibabel as nib

    if not 0 <= min_brain_fraction < 1:
        raise ValueError(f"min_brain_fraction must be in [0, 1), got {min_brain_fraction}")
    paths = template_paths()
    t1_img = nib.load(paths["t1"])
    t1 = np.asarray(t1_img.dataobj, dtype=np.float32)
    gm = np.asarray(nib.load(paths["gm"]).dataobj, dtype=np.float32) / 255.0
    wm = np.asarray(nib.load(paths["wm"]).dataobj, dtype=np.float32) / 255.0
    background = np.clip(1.0 - gm - wm, 0.0, 1.0)
    labels = np.argmax(np.stack([background, gm, wm]), axis=0).astype(np.uint8)
    brain = (labels > 0).mean(axis=(0, 1))
    rows = np.flatnonzero(brain >= min_brain_fraction)
    if rows.size == 0:
        raise ValueError(f"no axial slice has {min_brain_fraction:.0%} brain voxels")
    return t1, labels, t1_img.affine.copy(), (int(rows[0]), int(rows[-1]) + 1)


def _blocks(z0: int, z1: int, n_blocks: int, gap: int) -> list[tuple[int, int]]:
    """n_blocks contiguous [start, stop) ranges covering z0..z1 with `gap` slices left out
    between neighbours, as equal as integer sizes allow."""
    usable = (z1 - z0) - gap * (n_blocks - 1)
    if usable < n_blocks:
        raise ValueError(f"{z1 - z0} brain slices cannot make {n_blocks} blocks with gaps of "
                         f"{gap}")
    edges = np.linspace(0, usable, n_blocks + 1).round().astype(int)
    return [(z0 + int(edges[i]) + gap * i, z0 + int(edges[i + 1]) + gap * i)
            for i in range(n_blocks)]


def _units(start: int, stop: int, unit: int) -> list[tuple[int, int]]:
    """[start, stop) cut into max(1, (stop - start) // unit) consecutive units of ``unit``
    slices, the last one taking the remainder."""
    n = max(1, (stop - start) // unit)
    edges = [start + unit * i for i in range(n)] + [stop]
    return list(zip(edges[:-1], edges[1:]))


def write_mni152_msd(root: Union[str, os.PathLike], *, n_blocks: int = 10, gap: int = 2,
                     unit: int = 2, overwrite: bool = False) -> pathlib.Path:
    """Write the MNI152 grey/white-matter task in the MSD layout; returns ``root``.

    Creates ``root/dataset.json`` (modality MRI, labels background / gray_matter /
    white_matter) and one case per z-unit (``unit`` slices of a z-block, the module
    docstring), ``imagesTr/mni152_zAAA-BBB.nii.gz`` (float32 T1, slices AAA..BBB) and
    ``labelsTr/mni152_zAAA-BBB.nii.gz`` (uint8), each with the template's affine shifted to
    its first slice; dataset.json's ``"supercl_units"`` gives each case's block and
    ``[start, stop)``. Read the cases with ``supercl ... --data root --modality MRI``.

    Parameters
    ----------
    root : folder to create; it must be empty or missing unless ``overwrite``.
    n_blocks : int >= 3, the number of z-blocks (cases).
    gap : int >= 0, axial slices left out between neighbouring blocks.
    unit : int >= 1, slices per case (a block of b slices makes max(1, b // unit) cases); a
        value above the block size writes one case per block.
    overwrite : replace the files this function writes in an existing folder.

    Raises
    ------
    ImportError without nilearn; TypeError / ValueError for bad arguments; FileExistsError for
    a non-empty ``root`` without ``overwrite``.
    """
    import nibabel as nib

    for name, value, minimum in (("n_blocks", n_blocks, 3), ("gap", gap, 0), ("unit", unit, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")
    root = pathlib.Path(root)
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise FileExistsError(f"{root} exists and is not empty; pass overwrite=True")
    t1, labels, affine, (z0, z1) = mni152_task()
    blocks = _blocks(z0, z1, int(n_blocks), int(gap))
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    if overwrite:
        for folder in ("imagesTr", "labelsTr"):
            for old in (root / folder).glob("mni152_z*.nii.gz"):
                old.unlink()
    training, declared = [], {}
    for block_start, block_stop in blocks:
        block = f"z{block_start:03d}-{block_stop - 1:03d}"
        for start, stop in _units(block_start, block_stop, int(unit)):
            name = f"mni152_z{start:03d}-{stop - 1:03d}.nii.gz"
            declared[name[:-len(".nii.gz")]] = {"block": block, "z": [start, stop]}
            block_affine = affine.copy()
            block_affine[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, start]) + affine[:3, 3]
            for folder, array in (("imagesTr", t1[:, :, start:stop]),
                                  ("labelsTr", labels[:, :, start:stop])):
                image = nib.Nifti1Image(np.ascontiguousarray(array), block_affine)
                image.header.set_xyzt_units("mm")
                nib.save(image, root / folder / name)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    dataset = {
        "name": "MNI152-GM-WM",
        "description": ("ICBM 2009a nonlinear symmetric MNI152 T1 template (1 mm) from nilearn's "
                        "package; labels: argmax of (1 - GM - WM, GM, WM) probability maps; "
                        f"axial z-blocks {blocks} with {gap}-slice gaps, each cut into "
                        f"cases of {unit} slices (supercl_units)"),
        "reference": "Fonov et al., NeuroImage 2011; Fonov et al., NeuroImage 2009",
        "tensorImageSize": "3D",
        "modality": {"0": "MRI"},
        "labels": {str(i): name for i, name in enumerate(CLASSES)},
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
        # read by supercl.data.split_cases: hold out whole blocks, draw labels over z
        "supercl_units": declared,
    }
    (root / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")
    return root


if __name__ == "__main__":  # python -m supercl.data.mni152 OUT
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m supercl.data.mni152 OUT_FOLDER")
    print(write_mni152_msd(sys.argv[1]))
