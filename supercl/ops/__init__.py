"""supercl's functional ops on torch tensors (numpy arrays accepted where it makes sense).

Each op validates its input once, here at the boundary, then dispatches on the input's device:
CPU tensors and arrays to the C++ backend (``supercl._C``), CUDA tensors to the GPU backend.
``backend=`` or the ``SUPERCL_BACKEND`` environment variable forces one; an unavailable backend
raises rather than silently running elsewhere.

- :func:`slic` -- SLIC superpixels of a batch of 2D images.
- :func:`connected_components` -- labels of connected regions of equal value.
- :func:`supcon_loss` -- supervised contrastive loss without an N x N matrix (Triton / torch).
- :func:`superpixel_pool`, :func:`superpixel_unpool`, :func:`superpixel_mean_map` -- segment
  means of feature maps over superpixels, the paint-back, and both fused (ASP), with backward;
  :func:`downsample_segments` brings SLIC maps to the feature resolution.
- :func:`graph_components`, :func:`knn_weak_labels` -- connected components of a k-NN graph,
  numbered like scipy; the CCL weak labels of SuperCL's inter-image loss.

Each op has a reference (``<op>_reference``) in plain scikit-image that the tests use as the
oracle and the benchmarks as the baseline.
"""

from .connected_components import connected_components, connected_components_reference
from .graph_components import (
    graph_components,
    graph_components_reference,
    knn_weak_labels,
    knn_weak_labels_reference,
)
from .slic import slic, slic_reference
from .superpixel_pool import (
    downsample_segments,
    downsample_segments_reference,
    superpixel_mean_map,
    superpixel_mean_map_reference,
    superpixel_pool,
    superpixel_pool_reference,
    superpixel_unpool,
    superpixel_unpool_reference,
)
from .supcon_loss import supcon_loss, supcon_loss_reference

__all__ = [
    "connected_components",
    "connected_components_reference",
    "slic",
    "slic_reference",
    "supcon_loss",
    "supcon_loss_reference",
    "superpixel_pool",
    "superpixel_pool_reference",
    "superpixel_unpool",
    "superpixel_unpool_reference",
    "superpixel_mean_map",
    "superpixel_mean_map_reference",
    "downsample_segments",
    "downsample_segments_reference",
    "graph_components",
    "graph_components_reference",
    "knn_weak_labels",
    "knn_weak_labels_reference",
]
