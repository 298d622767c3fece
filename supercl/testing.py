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

from supercl.ops.graph_components import graph_components_reference, knn_weak_labels_reference
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


# ---- the image ops: scikit-image, one image (or volume) at a time ----------------------------


def slic_reference(images, mask=None, spatial_dims: int = 2, **kwargs):
    """The oracle of :func:`supercl.ops.slic`: ``skimage.segmentation.slic`` on each image of a
    (B, H, W) or (B, C, H, W) array (each volume of a (B, D, H, W) or (B, C, D, H, W) array with
    ``spatial_dims=3``), with supercl's conventions (channels first, no Lab conversion, no
    smoothing); int32 labels."""
    import numpy as np
    from skimage.segmentation import slic as sk_slic

    images = np.asarray(images)
    if images.ndim == spatial_dims + 1:
        images = images[:, None]
    out = []
    for b in range(images.shape[0]):
        image = np.moveaxis(images[b], 0, -1)
        out.append(
            sk_slic(
                image,
                channel_axis=-1,
                convert2lab=False,
                mask=None if mask is None else np.asarray(mask[b], dtype=bool),
                **kwargs,
            )
        )
    return np.stack(out).astype(np.int32)


def connected_components_reference(labels, connectivity: int = 2, background=None,
                                   spatial_dims: int = 2):
    """The oracle of :func:`supercl.ops.connected_components`: ``skimage.measure.label`` applied
    to one (H, W) image or each image of a (B, H, W) array, or to (each) (D, H, W) volume with
    ``spatial_dims=3``; int32 labels."""
    import numpy as np
    from skimage.measure import label

    labels = np.asarray(labels)
    if labels.ndim == spatial_dims:
        return label(labels, background=background, connectivity=connectivity).astype(np.int32)
    return np.stack(
        [label(im, background=background, connectivity=connectivity) for im in labels]
    ).astype(np.int32)
