"""NIfTI and Medical Segmentation Decathlon loading for the SuperCL trainer.

The trainer works on 2D axial slices of 3D volumes. This module finds the
volumes of a dataset, reads them with nibabel, preprocesses them and cuts
them into slices of a fixed patch size, and splits a dataset *by volume*
into pre-training, fine-tuning, validation and test sets:

* :func:`scan_dataset` -- the cases of a Medical Segmentation Decathlon (MSD)
  folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``, ``imagesTs/``), of an
  nnU-Net v2 raw dataset (:mod:`.nnunet`) or of a plain folder of ``.nii`` /
  ``.nii.gz`` images with an optional folder of label maps of the same names.
* :func:`load_case` -- one volume as ``(D, P, P)`` preprocessed slices, its
  labels and the relative position of every slice in the volume.
* :func:`load_slices` -- many volumes concatenated into torch tensors
  (a :class:`SliceSet`).
* :func:`split_cases` / :func:`write_split` -- a seeded split by volume with
  nested label fractions (the 10 % fine-tuning set is contained in the 25 %
  one), recorded as JSON.

Axes: NIfTI / MSD files store the data array as ``(X, Y, Z) = (W, H, D)``
with the axial slices along the last axis (see
:func:`supercl.data.msd.write_msd`); this module returns ``(D, H, W)``
arrays, i.e. the stored array transposed with ``.transpose(2, 1, 0)``. The
voxel-to-world affine is not used (volumes are not reoriented or resampled).

Errors name the file or folder and the problem: :class:`ValueError` for bad
content, :class:`FileNotFoundError` for missing paths (the latter is raised as
:class:`DatasetFileNotFoundError`, which is also a :class:`ValueError`, so
``except ValueError`` catches every data error of this module).

The code lives in three modules, re-exported here: :mod:`.scanning` (finding the cases),
:mod:`.loading` (slices) and :mod:`.splitting` (the split by volume).
"""

import json
import pathlib

from . import scanning
from .loading import SliceSet, load_case, load_slices, slice_names, slice_spacing
from .nnunet import is_nnunet_dataset_json, scan_nnunet
from .scanning import (RESIZE_MODES, Case, DatasetFileNotFoundError, DatasetInfo, check_pairs)
from .splitting import split_cases, write_split


def scan_dataset(path, labels=None, modality=None) -> DatasetInfo:
    # The nnU-Net v2 layout is told apart here, above both readers (supercl.data.nnunet
    # builds on supercl.data.scanning's Case and DatasetInfo).
    root = pathlib.Path(path).expanduser()
    meta = root if root.name == "dataset.json" else root / "dataset.json"
    if labels is None and meta.is_file():
        try:
            nnunet = is_nnunet_dataset_json(json.loads(meta.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            nnunet = False  # the MSD reader reports what is wrong with it
        if nnunet:
            return scan_nnunet(meta.parent, modality)
    return scanning.scan_dataset(path, labels=labels, modality=modality)


scan_dataset.__doc__ = (
    "Find the cases of a dataset folder: an nnU-Net v2 raw dataset (``dataset.json`` with\n"
    "    ``channel_names``: :func:`supercl.data.nnunet.scan_nnunet`), else as\n"
    "    :func:`supercl.data.scanning.scan_dataset`, whose text follows.\n\n    "
    + scanning.scan_dataset.__doc__)

__all__ = [
    "Case",
    "DatasetInfo",
    "SliceSet",
    "DatasetFileNotFoundError",
    "RESIZE_MODES",
    "scan_dataset",
    "load_case",
    "load_slices",
    "slice_spacing",
    "slice_names",
    "split_cases",
    "write_split",
    "check_pairs",
]
