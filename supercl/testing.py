"""Test oracles: one reference implementation per op of :mod:`supercl.ops`.

They are the specification that the tests check the ops against and the baseline that the
benchmarks time; they are slow and not meant for training code. Where a trusted library
computes the same thing, the oracle is that library; otherwise it is the plain, dense form
of the computation in torch or numpy:

- :func:`slic_reference` -- ``skimage.segmentation.slic`` per image (scikit-image);
- :func:`connected_components_reference` -- ``skimage.measure.label`` per image;
- :func:`graph_components_reference` -- ``scipy.sparse.csgraph.connected_components``;
- :func:`knn_weak_labels_reference` -- numpy float64 cosine k-NN, then scipy's components;
- :func:`supcon_loss_reference` -- the dense N x N form of SupContrast's ``losses.py``;
- :func:`superpixel_pool_reference`, :func:`superpixel_unpool_reference`,
  :func:`superpixel_mean_map_reference` -- ``index_add`` and advanced indexing in torch;
- :func:`downsample_segments_reference` -- the indices that ``F.interpolate`` picks, or a
  window-by-window vote.

scikit-image and scipy are test dependencies (``pip install 'supercl[test]'``), imported by
the oracles that use them when they are called.
"""

from supercl.ops.connected_components import connected_components_reference
from supercl.ops.graph_components import graph_components_reference, knn_weak_labels_reference
from supercl.ops.slic import slic_reference
from supercl.ops.superpixel_pool import (downsample_segments_reference,
                                         superpixel_mean_map_reference, superpixel_pool_reference,
                                         superpixel_unpool_reference)
from supercl.ops.supcon_loss import supcon_loss_reference

__all__ = [
    "slic_reference",
    "connected_components_reference",
    "graph_components_reference",
    "knn_weak_labels_reference",
    "supcon_loss_reference",
    "superpixel_pool_reference",
    "superpixel_unpool_reference",
    "superpixel_mean_map_reference",
    "downsample_segments_reference",
]
