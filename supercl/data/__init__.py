"""Data for supercl: the synthetic CT-like phantom generator.

The phantom is the embedded default data of the project (tests, benchmarks,
demo): axial slices and volumes in Hounsfield-like units with organ label
maps, and a writer for the Medical Segmentation Decathlon folder layout
(``dataset.json``, ``imagesTr/``, ``labelsTr/``) that real datasets use.

>>> from supercl.data import phantom_slice
>>> image, labels = phantom_slice(64, 64, n_organs=3, seed=0)
"""

from .phantom import phantom_batch, phantom_slice, phantom_volume, write_msd

__all__ = ["phantom_slice", "phantom_batch", "phantom_volume", "write_msd"]
