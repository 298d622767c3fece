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

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

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


# ---- the learning ops: superpixel pooling, downsample_segments, SupCon, graph components ----


def superpixel_pool_reference(features: torch.Tensor, segments: torch.Tensor,
                              num_segments: int | None = None):
    """The oracle of :func:`superpixel_pool`: ``index_add`` of the pixels' feature rows into
    per-(image, segment) rows, in float32 (float64 for float64 features), divided by
    ``bincount``; differentiable through torch's own autograd. Returns (means in the dtype of
    ``features``, counts int64)."""
    sums, counts = _reference_sums(features, segments, num_segments)
    means = sums / counts.clamp_min(1).unsqueeze(-1)
    return means.to(features.dtype), counts


def _reference_sums(features, segments, num_segments):
    batch, channels, height, width = features.shape
    k = int(segments.max()) + 1 if num_segments is None else num_segments
    acc = torch.float64 if features.dtype == torch.float64 else torch.float32
    flat = (segments.long() + torch.arange(batch, device=segments.device).view(-1, 1, 1) * k)
    flat = flat.reshape(-1)
    rows = features.to(acc).permute(0, 2, 3, 1).reshape(-1, channels)
    sums = torch.zeros(batch * k, channels, dtype=acc, device=features.device)
    sums = sums.index_add(0, flat, rows)
    counts = torch.bincount(flat, minlength=batch * k)
    return sums.view(batch, k, channels), counts.view(batch, k)


def superpixel_unpool_reference(means: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """The oracle of :func:`superpixel_unpool`: per image, ``means[b][segments[b]]`` (advanced
    indexing), moved to (B, C, H, W)."""
    painted = torch.stack([means[b][segments[b].long()] for b in range(means.shape[0])])
    return painted.permute(0, 3, 1, 2).contiguous()


def superpixel_mean_map_reference(features: torch.Tensor, segments: torch.Tensor,
                                  normalize: str = "mean",
                                  num_segments: int | None = None) -> torch.Tensor:
    """The oracle of :func:`superpixel_mean_map`: segment sums by ``index_add`` (float32, or
    float64 for float64 features), divided by the count or by H * W, painted back by
    indexing."""
    height, width = features.shape[2:]
    sums, counts = _reference_sums(features, segments, num_segments)
    denominator = counts.clamp_min(1).unsqueeze(-1) if normalize == "mean" else height * width
    return superpixel_unpool_reference(sums / denominator, segments).to(features.dtype)


def downsample_segments_reference(segments: torch.Tensor, size, mode: str = "nearest"):
    """The oracle of :func:`downsample_segments`. "nearest": the row and column indices that
    ``F.interpolate(..., mode="nearest")`` picks on float32 index grids. "majority": a Python
    loop over the windows with ``unique(return_counts=True)`` (slow; small inputs)."""
    out_h, out_w = (size, size) if isinstance(size, int) else size
    batch, height, width = segments.shape
    if mode == "nearest":
        grid_r = torch.arange(height, dtype=torch.float32).view(1, 1, height, 1)
        grid_c = torch.arange(width, dtype=torch.float32).view(1, 1, 1, width)
        rows = F.interpolate(grid_r, size=(out_h, 1), mode="nearest").view(-1).long()
        cols = F.interpolate(grid_c, size=(1, out_w), mode="nearest").view(-1).long()
        return segments[:, rows[:, None], cols[None, :]]
    out = torch.empty(batch, out_h, out_w, dtype=segments.dtype)
    for b in range(batch):
        for i in range(out_h):
            r0 = i * height // out_h
            r1 = max((i + 1) * height // out_h, r0 + 1)
            for j in range(out_w):
                c0 = j * width // out_w
                c1 = max((j + 1) * width // out_w, c0 + 1)
                values, counts = segments[b, r0:r1, c0:c1].unique(return_counts=True)
                out[b, i, j] = values[counts == counts.max()].min()
    return out.to(segments.device)


def supcon_loss_reference(features, labels=None, temperature=0.1, base_temperature=None,
                          groups=None, normalize=True, reduction="mean", *, positions=None,
                          window=None):
    """The oracle: the dense textbook form with N x N masks (SupContrast's losses.py, with
    anchors without a positive left out of the mean). Plain torch, autograd through it.
    With ``positions`` and ``window`` instead of ``labels``, the positive mask is
    ``|p_i - p_j| < window`` in float64 (PCL's threshold relation)."""
    base_temperature = temperature if base_temperature is None else base_temperature
    z = torch.nn.functional.normalize(features, dim=1) if normalize else features
    n = z.shape[0]
    logits = z @ z.T / temperature
    not_self = ~torch.eye(n, dtype=torch.bool, device=z.device)
    same_group = (
        torch.ones_like(not_self) if groups is None else groups[:, None] == groups[None, :]
    )
    denominator = not_self & same_group
    if positions is None:
        related = labels[:, None] == labels[None, :]
    else:
        p = positions.to(torch.float64)
        related = (p[:, None] - p[None, :]).abs() < window
    positive = denominator & related
    lse = torch.logsumexp(logits.masked_fill(~denominator, -math.inf), 1, keepdim=True)
    log_prob = logits - torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    n_pos = positive.sum(1)
    mean_log_prob_pos = (log_prob * positive).sum(1) / n_pos.clamp(min=1)
    per_anchor = torch.where(n_pos > 0, -(temperature / base_temperature) * mean_log_prob_pos,
                             torch.zeros((), dtype=z.dtype, device=z.device))
    if reduction == "none":
        return per_anchor
    if reduction == "sum":
        return per_anchor.sum()
    return per_anchor.sum() / (n_pos > 0).sum().clamp(min=1)


def graph_components_reference(neighbors: Any):
    """The oracle: ``scipy.sparse.csgraph.connected_components(directed=False)`` on a
    ``scipy.sparse.coo_matrix`` with an entry for every edge ``(i, neighbors[i, j])``.

    (N, K) integer tensor or array -> (N,) int64 numpy array. scipy is a test/bench
    dependency, imported here on use.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if isinstance(neighbors, torch.Tensor):
        neighbors = neighbors.cpu().numpy()
    table = np.asarray(neighbors)
    n, k = table.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    rows = np.repeat(np.arange(n), k)
    graph = coo_matrix((np.ones(n * k), (rows, table.reshape(-1).astype(np.int64))), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def knn_weak_labels_reference(embeddings: Any, k: int = 1, pair_views: bool = False):
    """The oracle of :func:`knn_weak_labels`, in numpy float64 and scipy: normalise the rows
    (eps 1e-12), cosine similarities with the diagonal at -inf, the first ``k`` of a stable
    sort by decreasing similarity, the pair edges ``(i, (i + N/2) mod N)`` if asked, then
    :func:`graph_components_reference`. (N, D) -> (N,) int64 numpy array."""
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().cpu().double().numpy()
    x = np.asarray(embeddings, dtype=np.float64)
    n = x.shape[0]
    if n <= 1:
        return np.zeros(n, dtype=np.int64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    similarity = x @ x.T
    np.fill_diagonal(similarity, -np.inf)
    neighbors = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    if pair_views:
        partner = (np.arange(n) + n // 2) % n
        neighbors = np.concatenate([neighbors, partner[:, None]], axis=1)
    return graph_components_reference(neighbors)


# ---- the image ops: scikit-image, one image (or volume) at a time ----------------------------


def slic_reference(images: np.ndarray, mask: np.ndarray | None = None, spatial_dims: int = 2,
                   **kwargs) -> np.ndarray:
    """The oracle of :func:`supercl.ops.slic`: ``skimage.segmentation.slic`` on each image of a
    (B, H, W) or (B, C, H, W) array (each volume of a (B, D, H, W) or (B, C, D, H, W) array with
    ``spatial_dims=3``), with supercl's conventions (channels first, no Lab conversion, no
    smoothing); int32 labels."""
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


def connected_components_reference(labels: np.ndarray, connectivity: int = 2, background=None,
                                   spatial_dims: int = 2) -> np.ndarray:
    """The oracle of :func:`supercl.ops.connected_components`: ``skimage.measure.label`` applied
    to one (H, W) image or each image of a (B, H, W) array, or to (each) (D, H, W) volume with
    ``spatial_dims=3``; int32 labels."""
    from skimage.measure import label

    labels = np.asarray(labels)
    if labels.ndim == spatial_dims:
        return label(labels, background=background, connectivity=connectivity).astype(np.int32)
    return np.stack(
        [label(im, background=background, connectivity=connectivity) for im in labels]
    ).astype(np.int32)
