"""supercl's functional ops on torch tensors (numpy arrays accepted where it makes sense).

Each op validates its input once, here at the boundary, then dispatches on the input's device:
CPU tensors and arrays to the C++ backend (``supercl._C``), CUDA tensors to the GPU backend.
``backend=`` or the ``SUPERCL_BACKEND`` environment variable forces one; an unavailable backend
raises rather than silently running elsewhere. Behind each public function is a
``torch.library`` custom op with a fake (meta) kernel (``downsample_segments`` is plain
torch), so ``torch.compile(fullgraph=True)`` traces through them; the learning ops also
register their backward.

- :func:`slic` -- SLIC superpixels of a batch of 2D images.
- :func:`connected_components` -- labels of connected regions of equal value.
- :func:`supcon_loss` -- supervised contrastive loss without an N x N matrix (Triton / torch).
- :func:`superpixel_pool`, :func:`superpixel_unpool`, :func:`superpixel_mean_map` -- segment
  means of feature maps over superpixels, the paint-back, and both fused (ASP), with backward;
  :func:`downsample_segments` brings SLIC maps to the feature resolution.
- :func:`graph_components`, :func:`knn_weak_labels` -- connected components of a k-NN graph,
  numbered like scipy; the CCL weak labels of SuperCL's inter-image loss.

Each op has a reference implementation, its test oracle, in :mod:`supercl.testing`:
scikit-image or scipy where they compute the same thing (SLIC, connected components, graph
components), otherwise the plain dense form in torch or numpy.
"""

from .connected_components import connected_components
from .graph_components import graph_components, knn_weak_labels
from .downsample import downsample_segments
from .slic import slic
from .superpixel_pool import superpixel_mean_map, superpixel_pool, superpixel_unpool
from .supcon_loss import supcon_loss

__all__ = [
    "connected_components",
    "slic",
    "supcon_loss",
    "superpixel_pool",
    "superpixel_unpool",
    "superpixel_mean_map",
    "downsample_segments",
    "graph_components",
    "knn_weak_labels",
]
