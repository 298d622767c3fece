"""Data for supercl: NIfTI / MSD loading and the synthetic phantom generator.

The phantom is the embedded default data of the project (trainer, demo, ablation):
:mod:`supercl.data.phantom_v2` draws abdominal CT or MR volumes and slices whose organ
classes differ by shape, position and texture, with overlapping intensity bands, and
:func:`write_msd` (:mod:`supercl.data.msd`) writes them in the Medical Segmentation Decathlon
folder layout (``dataset.json``, ``imagesTr/``, ``labelsTr/``) that real datasets use.

:mod:`supercl.data.nifti` reads such datasets (or plain folders of NIfTI
volumes) for the trainer: :func:`scan_dataset` finds the cases,
:func:`load_case` / :func:`load_slices` give preprocessed 2D slices with
their labels and relative slice positions, :func:`split_cases` /
:func:`write_split` split by volume with nested label fractions.

>>> from supercl.data import phantom_v2_slice
>>> image, labels = phantom_v2_slice(64, 64, n_organs=3, seed=0)
"""

from .nifti import (Case, DatasetInfo, SliceSet, load_case, load_slices, scan_dataset,
                    split_cases, write_split)
from .msd import write_msd
from .phantom_v2 import phantom_v2_slice, phantom_v2_volume

__all__ = [
    "phantom_v2_volume", "phantom_v2_slice", "write_msd",
    "Case", "DatasetInfo", "SliceSet", "scan_dataset", "load_case", "load_slices",
    "split_cases", "write_split",
]
