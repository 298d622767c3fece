"""The SuperCL objective, composed from :mod:`supercl.ops`.

``L = l1 * L_ins + l2 * L_intra + l3 * L_inter`` (reference weights 1, 1, 0.5, temperature
0.1), for a batch of B slices seen as four views (see :mod:`supercl.train.views`):

- :func:`ilcp_loss` (L_intra): every pixel of a feature map of v1 and v2 is an embedding
  labelled by its superpixel (the SLIC map of v1 down-sampled to that map, nearest). The map
  is the bottleneck unless ``forward`` gets ``g1, g2``: pre-training passes the encoder level
  that :func:`supercl.train.pretraining.resolve_ilcp_level` picks, where a superpixel covers at
  least 4 pixels;
  :func:`~supercl.ops.supcon_loss` within each image (``groups`` = the image), so positives
  are pixels of the same superpixel in either view. All pixels by default;
  ``pixel_stride=16`` keeps every 16th as the reference code does.
- :func:`igcp_loss` (L_inter): ASP (:func:`~supercl.ops.superpixel_mean_map` of the
  channel-averaged bottleneck) of v1 and v2, flattened to one vector per view. The weak
  labels are the connected components of a cosine 1-NN graph
  (:func:`~supercl.ops.knn_weak_labels`, self excluded, made undirected). Its nodes
  (``LossConfig.inter_graph``) are by default the B *images*, each the mean of its two
  views' ASP vectors, as in WCL, whose graph joins the images of one view: every edge then
  joins two different images, and each component's label goes to both views of its images.
  The mean rather than v1's vector, because v1 and v2 are photometric twins of one crop that
  share one SLIC map: the mean averages out the photometric draw and privileges neither
  view. ``inter_graph="views"`` is the reference code's graph over the 2B views, where each
  view's nearest neighbour is mostly its own partner (78-98 % measured), so that L_inter
  becomes SimCLR. :func:`~supercl.ops.supcon_loss` on the instance embeddings of v3 and v4
  with those labels.
- :func:`instance_loss` (L_ins): PCL on the embeddings of v3 and v4 when the slices'
  relative positions are known, SimCLR NT-Xent otherwise; both through ``supcon_loss``.

PCL, as published, calls slices i and j positive when ``|p_i - p_j| < 0.1``. That relation is
not transitive, so it is not a labelling. Two forms (``LossConfig.pcl_relation``):

- ``"threshold"``: the published relation itself, through ``supcon_loss(positions=...,
  window=threshold)`` (prefix sums over the sorted positions, no N x N mask);
- ``"bins"`` (the default so far): the positions binned into ``ceil(1 / threshold)`` equal bins,
  the bin used as a label: every pair it calls positive is positive for PCL too (same bin =>
  distance < threshold), but pairs straddling a bin edge are negatives here.

In both, the two views of a slice are always positive.

The reference code's choices are options of :class:`LossConfig`: ``base_temperature=0.07``
(every term scaled by t / 0.07), ``asp_segments="own"`` (each view's ASP with its own SLIC
map), ``inter_positives="pair_edge"`` (L_inter's positives are the k-NN graph's components
plus the partner view, without merging the two components: a relation, computed with a dense
2B x 2B mask by :func:`supcon_masked`), ``pcl_relation="threshold"``, ``pixel_stride=16`` and
``asp_normalize="area"``; ``supercl.train.recipe_config("reference")`` sets them all.

Distributed runs pass ``gather`` (see :func:`supercl.train.distributed.gather_with_grad`):
the embeddings of L_ins and L_inter and the ASP vectors are all-gathered, so the weak-label
graph spans the global batch; L_intra is per image and stays local.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from supercl._validate import (check_bool, check_choice, check_float, check_int, check_setting,
                               check_tensor)
from supercl.ops import downsample_segments, knn_weak_labels, superpixel_mean_map, supcon_loss

__all__ = ["LossConfig", "ilcp_loss", "igcp_loss", "instance_loss", "position_labels",
           "SuperCLLoss", "supcon_masked", "ilcp_positives_per_anchor", "pcl_positives_per_anchor",
           "weak_label_quality"]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _check_maps(f1: torch.Tensor, f2: torch.Tensor, segments: torch.Tensor) -> None:
    for name, f in (("f1", f1), ("f2", f2)):
        check_tensor(f, name, dims="(B, C, h, w)", arrays=False)
    if f1.shape != f2.shape:
        raise ValueError(f"f1 and f2 must have the same shape, got {tuple(f1.shape)} and "
                         f"{tuple(f2.shape)}")
    check_tensor(segments, "segments", dims=f"(B, H, W) with B = {f1.shape[0]}",
                 shape=(f1.shape[0], None, None), arrays=False)


def _at(segments: torch.Tensor, size) -> torch.Tensor:
    """Superpixel maps at the feature map's resolution (nearest), unless they already are."""
    size = tuple(size)
    return segments if tuple(segments.shape[-2:]) == size else downsample_segments(segments, size)


def _dense_ids(segments: torch.Tensor) -> torch.Tensor:
    """(B, h, w) superpixel ids -> the same partition of every image with ids in [0, h*w): the
    rank of each id among the image's distinct ids. A stable per-image sort, a flag where the
    sorted id changes and a prefix sum; fixed shapes, so no host synchronisation on a GPU
    (``torch.unique`` or ``max() + 1`` would size their output from the data). ASP and the
    diagnostics depend only on the partition, never on the ids' values, so they can then size
    their tables with the static bound h*w."""
    flat = segments.reshape(segments.shape[0], -1)
    ordered, order = torch.sort(flat, dim=1, stable=True)
    new = torch.ones_like(ordered, dtype=torch.int64)
    new[:, 0] = 0
    new[:, 1:] = (ordered[:, 1:] != ordered[:, :-1]).to(torch.int64)
    ranks = torch.cumsum(new, dim=1)
    return torch.empty_like(ranks).scatter_(1, order, ranks).view(segments.shape)


def ilcp_loss(f1: torch.Tensor, f2: torch.Tensor, segments: torch.Tensor, *,
              temperature: float = 0.1, pixel_stride: int = 1, backend: str | None = None,
              base_temperature: float | None = None) -> torch.Tensor:
    """L_intra: supervised contrast of bottleneck pixels, labelled by superpixel, per image.

    Parameters
    ----------
    f1, f2 : (B, C, h, w) float tensors
        Bottleneck maps of the pixel-aligned views v1 and v2.
    segments : (B, H, W) integer tensor
        Superpixel ids of v1 at the input resolution, down-sampled to (h, w) (nearest), or
        already at (h, w).
    pixel_stride : int
        Keep every ``pixel_stride``-th pixel of each image (1 = all, 16 = the reference).

    Returns
    -------
    0-d float32 tensor.

    Example
    -------
    >>> import torch
    >>> f = torch.randn(2, 8, 4, 4)
    >>> s = torch.arange(64).view(8, 8).div(16, rounding_mode="floor").expand(2, 8, 8)
    >>> ilcp_loss(f, f + 0.1, s).shape
    torch.Size([])
    """
    _check_maps(f1, f2, segments)
    if isinstance(pixel_stride, bool) or not isinstance(pixel_stride, int) or pixel_stride < 1:
        raise ValueError(f"pixel_stride must be an int >= 1, got {pixel_stride!r}")
    batch, channels, h, w = f1.shape
    labels = _at(segments, (h, w)).reshape(batch, 1, h * w).expand(batch, 2, h * w)
    # (B, 2, h*w, C): both views of an image next to each other, so that every group (image)
    # is one contiguous run of rows, which the Triton kernels use to skip tiles.
    pixels = torch.stack([f1, f2], dim=1).flatten(3).transpose(2, 3)
    if pixel_stride > 1:
        pixels = pixels[:, :, ::pixel_stride]
        labels = labels[:, :, ::pixel_stride]
    n_per_image = 2 * pixels.shape[2]
    groups = torch.arange(batch, device=f1.device).repeat_interleave(n_per_image)
    return supcon_loss(pixels.reshape(-1, channels), labels.reshape(-1), temperature,
                       base_temperature, groups=groups, backend=backend)


def asp_vectors(f: torch.Tensor, segments_small: torch.Tensor, normalize: str = "mean",
                num_segments: int | None = None) -> torch.Tensor:
    """ASP, the average superpixel feature map, flattened: (B, C, h, w) + (B, h, w) -> (B, h*w)."""
    mean = f.mean(dim=1, keepdim=True)
    if num_segments is None:
        # Without a bound the op would read max id + 1 back from the device (a host
        # synchronisation every step); the dense ids of the same partition have h*w as one.
        segments_small = _dense_ids(segments_small)
        num_segments = segments_small[0].numel()
    return superpixel_mean_map(mean, segments_small, normalize, num_segments).flatten(1)


def igcp_loss(f1: torch.Tensor, f2: torch.Tensor, segments: torch.Tensor, e3: torch.Tensor,
              e4: torch.Tensor, *, temperature: float = 0.1, asp_normalize: str = "mean",
              k: int = 1, gather: Callable[[torch.Tensor], torch.Tensor] = _identity,
              backend: str | None = None, graph: str = "images") -> tuple[torch.Tensor, torch.Tensor]:
    """L_inter: weak labels from the superpixel-averaged bottlenecks of v1, v2, contrast of
    the instance embeddings of v3, v4.

    Parameters
    ----------
    f1, f2 : (B, C, h, w) bottleneck maps of v1, v2; segments : (B, H, W) superpixels of v1
        (or already at (h, w)).
    e3, e4 : (B, D) instance embeddings of v3, v4.
    asp_normalize : "mean" (default) or "area" (the reference code's division by h*w).
    k : neighbours of the k-NN graph (reference 1).
    graph : "images" (default): the graph's nodes are the B images (the mean of each image's
        two ASP vectors), so every edge joins two different images, as in WCL; "views": the
        2B views with the view-pair edges, as in the reference code (where each view's nearest
        neighbour is mostly its own partner).
    gather : all-gather across processes (identity when not distributed).

    Returns
    -------
    (loss, weak_labels): 0-d float32 tensor, and (2 * global B,) int64 component labels of
    the rows ``[v1 of every image, v2 of every image]``.
    """
    loss, weak, _ = _igcp(f1, f2, segments, e3, e4, temperature, asp_normalize, k, gather,
                          backend, graph=graph)
    return loss, weak


INTER_POSITIVES = ("components", "pair_edge")
INTER_GRAPHS = ("images", "views")


def _igcp(f1, f2, segments, e3, e4, temperature, asp_normalize, k, gather, backend,
          segments2=None, positives="components", base_temperature=None, graph="images"):
    """igcp_loss, also returning the gathered ASP vectors (for the diagnostics).

    ``segments2``: v2's own superpixels for its ASP (default: v1's, the views being
    pixel-aligned). ``positives``: "components", the components of the k-NN graph with the
    view-pair edges (a labelling); "pair_edge", the components of the k-NN graph alone, and
    each view's partner view positive too, without merging the two components (not a
    labelling: a dense 2B x 2B mask, which is small). ``graph``: "images" or "views" (see
    :func:`igcp_loss`); the third value returned is the graph's nodes."""
    _check_maps(f1, f2, segments)
    if e3.shape != e4.shape or e3.dim() != 2 or e3.shape[0] != f1.shape[0]:
        raise ValueError(f"e3 and e4 must both be (B, D) with B = {f1.shape[0]}, got "
                         f"{tuple(e3.shape)} and {tuple(e4.shape)}")
    if positives not in INTER_POSITIVES:
        raise ValueError(f"positives must be one of {INTER_POSITIVES}, got {positives!r}")
    if graph not in INTER_GRAPHS:
        raise ValueError(f"graph must be one of {INTER_GRAPHS}, got {graph!r}")
    small = _at(segments, f1.shape[-2:])
    small2 = small if segments2 is None else _at(segments2, f1.shape[-2:])
    asp, weak = _weak_labels(f1, f2, small, asp_normalize, k, gather, small2,
                             pair_views=positives == "components", graph=graph)
    z = torch.cat([gather(e3), gather(e4)])
    if positives == "components":
        return supcon_loss(z, weak, temperature, base_temperature, backend=backend), weak, asp
    n = z.shape[0]
    partner = (torch.arange(n, device=z.device) + n // 2) % n
    # The partner pairs added with scatter_ and a Python scalar: `positive[i, j] = True` copies
    # a host tensor to the GPU, which makes the host wait (seen on an H200).
    positive = (weak[:, None] == weak[None, :]).scatter_(1, partner[:, None], True)
    return supcon_masked(z, positive, temperature, base_temperature), weak, asp


def supcon_masked(z: torch.Tensor, positive: torch.Tensor, temperature: float = 0.1,
                  base_temperature: float | None = None) -> torch.Tensor:
    """SupCon (the "out" form, as :func:`~supercl.ops.supcon_loss`) with an explicit (N, N)
    boolean positive mask, for relations that are no labelling and small N (L_inter's 2B
    views). The diagonal is ignored; anchors without a positive are left out of the mean.

    z (N, D) float, positive (N, N) bool -> 0-d tensor.

    >>> z = torch.eye(4)
    >>> mask = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]]).bool()
    >>> round(float(supcon_masked(z, mask)), 4)
    1.0986
    """
    base = temperature if base_temperature is None else base_temperature
    zn = torch.nn.functional.normalize(z if z.dtype == torch.float64 else z.float(), dim=1)
    n = zn.shape[0]
    logits = zn @ zn.T / temperature
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    positive = positive & ~eye
    log_prob = logits - torch.logsumexp(logits.masked_fill(eye, -math.inf), 1, keepdim=True)
    n_pos = positive.sum(1)
    mean_pos = (log_prob * positive).sum(1) / n_pos.clamp(min=1)
    has = n_pos > 0
    return -(temperature / base) * (mean_pos * has).sum() / has.sum().clamp(min=1)


@torch.no_grad()  # the weak labels are targets: no gradient through ASP
def _weak_labels(f1, f2, small, asp_normalize, k, gather, small2=None, pair_views=True,
                 graph="views"):
    """The k-NN graph's nodes and the weak labels of the 2 * global B views (rows: v1 of every
    image, then v2). ``small2``: v2's superpixels (default v1's).

    - ``graph="images"``: one node per image, the mean of its two views' ASP vectors
      ((global B, h*w)); the components of their k-NN graph (self excluded) label both views.
    - ``graph="views"``: one node per view ((2 * global B, h*w)), the reference code's graph,
      with the view-pair edges when ``pair_views``.
    """
    small2 = small if small2 is None else small2
    asp = asp_vectors(torch.cat([f1, f2]).float(), torch.cat([small, small2]), asp_normalize)
    n = f1.shape[0]
    v1, v2 = gather(asp[:n]), gather(asp[n:])
    if graph == "images":
        nodes = 0.5 * (v1 + v2)
        weak = knn_weak_labels(nodes, k=min(k, nodes.shape[0] - 1) or 1)
        return nodes, torch.cat([weak, weak])
    nodes = torch.cat([v1, v2])
    return nodes, knn_weak_labels(nodes, k=min(k, nodes.shape[0] - 1) or 1, pair_views=pair_views)


def position_labels(positions: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """PCL's positions as labels: bins of width ``1 / ceil(1 / threshold)`` over [0, 1].

    >>> position_labels(torch.tensor([0.0, 0.05, 0.12, 0.99, 1.0]))
    tensor([0, 0, 1, 9, 9])
    """
    bins = math.ceil(1.0 / threshold)
    return (positions.float().clamp(0, 1) * bins).floor().long().clamp_max(bins - 1)


def instance_loss(e3: torch.Tensor, e4: torch.Tensor, positions: torch.Tensor | None = None, *,
                  temperature: float = 0.1, threshold: float = 0.1,
                  gather: Callable[[torch.Tensor], torch.Tensor] = _identity,
                  backend: str | None = None, relation: str = "bins",
                  base_temperature: float | None = None) -> torch.Tensor:
    """L_ins: PCL with ``positions`` ((B,) relative slice positions in [0, 1]), else NT-Xent.

    NT-Xent is ``supcon_loss`` with one label per slice: each view's only positive is the
    other view of the same slice, and the loss is SimCLR's (temperature / base temperature
    = 1). With positions, ``relation="threshold"`` takes PCL's positives as published
    (``|p_i - p_j| < threshold`` over the 2B views); ``relation="bins"`` uses the labels
    :func:`position_labels`.
    """
    if relation not in ("bins", "threshold"):
        raise ValueError(f"relation must be 'bins' or 'threshold', got {relation!r}")
    if e3.shape != e4.shape or e3.dim() != 2:
        raise ValueError(f"e3 and e4 must both be (B, D), got {tuple(e3.shape)} and {tuple(e4.shape)}")
    z = torch.cat([gather(e3), gather(e4)])
    n = z.shape[0] // 2
    if positions is None:
        labels = torch.arange(n, device=z.device)
    else:
        check_tensor(positions, "positions", dims=f"({e3.shape[0]},)", shape=(e3.shape[0],),
                     arrays=False)
        if relation == "threshold":
            p = gather(positions.to(z.device))
            return supcon_loss(z, temperature=temperature, base_temperature=base_temperature,
                               positions=torch.cat([p, p]), window=threshold, backend=backend)
        labels = position_labels(gather(positions.to(z.device)), threshold)
    return supcon_loss(z, torch.cat([labels, labels]), temperature, base_temperature,
                       backend=backend)


# ---- diagnostics: does each term have something to learn from? ------------------------------


def ilcp_positives_per_anchor(segments_small: torch.Tensor, pixel_stride: int = 1) -> torch.Tensor:
    """Mean number of positives per ILCP anchor: the other pixels of its superpixel in either
    view (itself in the other view included), at the bottleneck resolution.

    A superpixel that covers m kept pixels of an image has 2m anchors over the two views, each
    with 2m - 1 positives, so the mean is ``sum 2m (2m - 1) / sum 2m``.  1.0 means every
    superpixel covers one bottleneck pixel: ILCP then only matches each location across the
    two views.

    segments_small : (B, h, w) integer ids at the bottleneck.  Returns a 0-d float64 tensor.

    >>> ilcp_positives_per_anchor(torch.zeros(1, 2, 2, dtype=torch.long))  # one superpixel
    tensor(7., dtype=torch.float64)
    """
    labels = _dense_ids(segments_small.flatten(1)[:, ::pixel_stride].to(torch.int64))
    # The sum over superpixels of 2m (2m - 1) is the sum over anchors of 2m - 1: every anchor
    # has 2m - 1 positives. m per pixel by a scatter into fixed-size per-image tables, so
    # nothing is sized from the data (no host synchronisation); integer sums, exact in float64.
    counts = torch.zeros_like(labels).scatter_add_(1, labels, torch.ones_like(labels))
    m = torch.gather(counts, 1, labels)
    return (2 * m - 1).sum().to(torch.float64) / labels.numel()


def pcl_positives_per_anchor(positions: torch.Tensor, threshold: float = 0.1,
                             relation: str = "bins") -> torch.Tensor:
    """Mean number of L_ins positives per anchor over the 2B views of (B,) slice positions,
    for PCL's ``relation`` ("bins" or "threshold", see :func:`instance_loss`): 1.0 means only
    the other view of the same slice.  Returns a 0-d float64 tensor."""
    p = torch.cat([positions, positions]).to(torch.float64)
    if relation == "threshold":
        related = (p[:, None] - p[None, :]).abs() < threshold
    else:
        bins = position_labels(p, threshold)
        related = bins[:, None] == bins[None, :]
    return (related.sum(1) - 1).to(torch.float64).mean()


@torch.no_grad()
def weak_label_quality(nodes: torch.Tensor, weak: torch.Tensor, k: int = 1,
                       positions: torch.Tensor | None = None, organs: torch.Tensor | None = None,
                       threshold: float = 0.1) -> dict[str, torch.Tensor]:
    """Whether L_inter's k-NN graph joins slices that belong together, for B images.

    ``nodes``: the graph's nodes as :func:`igcp_loss` builds them, (B, d) for the image graph
    or (2B, d) for the view graph (v1 of every image, then v2); ``weak``: the (2B,) weak
    labels; ``positions``: (B,) relative slice positions; ``organs``: (B, K) bool, the classes
    each slice shows (from label maps that pre-training does not otherwise use). Edges are
    the graph's own: every node to its ``k`` nearest others (cosine, ties to the smaller
    index). Returns 0-d float64 tensors (NaN where undefined):

    - ``inter_partner_edge_share``: edges that join the two views of one image (0 for the
      image graph; where it is 1, L_inter is SimCLR);
    - ``inter_images_per_component``: distinct images per weak-label component;
    - ``inter_edge_position_agreement``: among edges between different images, the share
      whose slices' positions differ by less than ``threshold``, and
      ``inter_edge_position_chance``, that share over all pairs of different images;
    - ``inter_edge_organ_agreement``: the mean Jaccard index of the organ sets of the slices
      an edge joins (1 for two empty sets), and ``inter_edge_organ_chance`` over all pairs.
    """
    from supercl.ops.graph_components import _knn  # the graph's own neighbours and ties

    b = weak.shape[0] // 2
    n = nodes.shape[0]
    # torch.full, not torch.tensor: a tensor made from a Python value on the host and copied
    # to the GPU makes the host wait for the stream.
    nan = torch.full((), math.nan, dtype=torch.float64, device=nodes.device)
    out = {}
    image = torch.arange(n, device=nodes.device) % b
    if n > 1:
        nbr = _knn(nodes, min(k, n - 1))
        src, dst = image[:, None].expand_as(nbr).reshape(-1), image[nbr].reshape(-1)
    else:
        src = dst = image[:0]
    # Everything below has shapes fixed by B and k, never by the data: masks and sums instead
    # of boolean indexing and unique(), so that no value is read back to the host on a GPU.
    cross = src != dst
    out["inter_partner_edge_share"] = ((~cross).to(torch.float64).mean() if src.numel() else nan)
    views_image = torch.arange(2 * b, device=weak.device) % b
    # (component, image) membership table: the weak labels are consecutive ids < 2B
    # (scatter_ with a Python scalar, not `member[i, j] = True`: that copies a host tensor
    # holding True to the GPU, and the host waits for the stream; seen on an H200.)
    width = max(b, 1)
    member = torch.zeros(2 * b * width, dtype=torch.bool, device=weak.device)
    member = member.scatter_(0, weak.to(torch.int64) * width + views_image, True).view(2 * b, width)
    n_components = member.any(1).sum().clamp(min=1)
    out["inter_images_per_component"] = (member.sum().to(torch.float64)
                                         / n_components.to(torch.float64)).to(nodes.device)
    n_cross = cross.sum()
    off_diagonal = ~torch.eye(b, dtype=torch.bool, device=nodes.device)

    def agreement(value, key):
        value = value.to(torch.float64)
        on_edges = (value[src, dst] * cross).sum()
        edges = torch.where(n_cross > 0, on_edges / n_cross.clamp(min=1), nan)
        chance = (value * off_diagonal).sum() / (b * (b - 1)) if b > 1 else nan
        out[f"inter_edge_{key}_agreement"], out[f"inter_edge_{key}_chance"] = edges, chance

    if positions is not None:
        p = positions.to(nodes.device, torch.float64)
        agreement((p[:, None] - p[None, :]).abs() < threshold, "position")
    else:
        out["inter_edge_position_agreement"] = out["inter_edge_position_chance"] = nan
    if organs is not None:
        o = organs.to(nodes.device, torch.float64)
        inter = o @ o.T
        union = o.sum(1)[:, None] + o.sum(1)[None, :] - inter
        agreement(torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter)),
                  "organ")
    else:
        out["inter_edge_organ_agreement"] = out["inter_edge_organ_chance"] = nan
    return out


@dataclass
class LossConfig:
    """Weights and settings of the objective (reference values as defaults)."""

    l_ins: float = 1.0
    l_intra: float = 1.0
    l_inter: float = 0.5
    temperature: float = 0.1
    pixel_stride: int = 1
    asp_normalize: str = "mean"
    knn_k: int = 1
    pcl_threshold: float = 0.1
    use_positions: bool = True
    pcl_relation: str = "bins"  # "threshold": PCL's |p_i - p_j| < pcl_threshold as published
    #: Every term is scaled by temperature / base_temperature (None: by 1). The reference code
    #: keeps SupContrast's base temperature 0.07, so its terms are scaled by 0.1 / 0.07.
    base_temperature: float | None = None
    #: "shared": ASP of both views uses v1's superpixels (the views are pixel-aligned);
    #: "own": each view's ASP uses its own SLIC map, as the reference code does.
    asp_segments: str = "shared"
    #: L_inter's positives: "components" of the k-NN graph with the view-pair edges, or
    #: "pair_edge": the k-NN graph's components plus each view's partner, not merged (the
    #: reference code's relation).
    inter_positives: str = "components"
    #: The nodes of L_inter's k-NN graph: "images" (one per image, as in WCL: every edge joins
    #: two images) or "views" (the reference code's 2B views).
    inter_graph: str = "images"

    def __post_init__(self):
        for name in ("l_ins", "l_intra", "l_inter"):
            check_setting(self, name, check_float)
        check_setting(self, "temperature", check_float, positive=True)
        check_setting(self, "pcl_threshold", check_float, positive=True)
        check_setting(self, "pixel_stride", check_int, 1)
        check_setting(self, "knn_k", check_int, 1)
        check_setting(self, "asp_normalize", check_choice, ("mean", "area"))
        check_setting(self, "pcl_relation", check_choice, ("bins", "threshold"))
        check_setting(self, "use_positions", check_bool)
        if self.base_temperature is not None:
            check_setting(self, "base_temperature", check_float, positive=True)
        check_setting(self, "asp_segments", check_choice, ("shared", "own"))
        check_setting(self, "inter_positives", check_choice, INTER_POSITIVES)
        check_setting(self, "inter_graph", check_choice, INTER_GRAPHS)


class SuperCLLoss(torch.nn.Module):
    """The total objective; returns every term separately for logging.

    ``forward(f1, f2, e3, e4, segments, positions=None, diagnostics=False)`` -> dict with
    ``loss`` (weighted sum, differentiable), ``l_ins``, ``l_intra``, ``l_inter`` (0-d tensors)
    and ``weak_labels`` ((2 * global B,) int64); with ``diagnostics``, also
    ``ilcp_pos_per_anchor``, ``pcl_pos_per_anchor`` (NaN without positions) and the
    weak-label quality of :func:`weak_label_quality` (``inter_*``; the organ agreement needs
    ``organs``) (0-d float64, no gradient; see :func:`ilcp_positives_per_anchor`,
    :func:`pcl_positives_per_anchor`).
    """

    def __init__(self, config: LossConfig | None = None,
                 gather: Callable[[torch.Tensor], torch.Tensor] = _identity,
                 backend: str | None = None):
        super().__init__()
        self.config = config or LossConfig()  # validated when it was made
        self.gather = gather
        self.backend = backend

    def forward(self, f1, f2, e3, e4, segments, positions=None, diagnostics: bool = False, *,
                segments2=None, g1=None, g2=None, organs=None) -> dict[str, torch.Tensor]:
        """``segments2``: v2's own SLIC map (B, H, W), needed when ``asp_segments="own"``;
        ``g1, g2``: the feature maps of v1, v2 that ILCP contrasts (default: f1, f2, the
        bottleneck), e.g. a higher-resolution encoder level; ``organs``: (B, K) bool, the
        classes each slice shows, for the diagnostics only."""
        c = self.config
        t, bt = c.temperature, c.base_temperature
        # The contrastive terms are computed in float32 whatever the autocast dtype: the
        # similarities are divided by t = 0.1 and exponentiated.
        f1, f2, e3, e4 = (x.float() for x in (f1, f2, e3, e4))
        g1, g2 = (f1, f2) if g1 is None else (g1.float(), g2.float())
        _check_maps(f1, f2, segments)
        _check_maps(g1, g2, segments)
        if c.asp_segments == "own":
            if segments2 is None:
                raise ValueError("asp_segments='own' needs segments2, the SLIC map of v2")
            _check_maps(f1, f2, segments2)
            segments2 = _at(segments2, f1.shape[-2:])
        else:
            segments2 = None
        small = _at(segments, f1.shape[-2:])  # once, for ASP (and ILCP at the bottleneck)
        ilcp_segments = small if g1.shape[-2:] == f1.shape[-2:] else _at(segments, g1.shape[-2:])
        zero = f1.new_zeros(())
        terms = {}
        terms["l_intra"] = (ilcp_loss(g1, g2, ilcp_segments, temperature=t,
                                      pixel_stride=c.pixel_stride, backend=self.backend,
                                      base_temperature=bt) if c.l_intra else zero)
        if c.l_inter:
            terms["l_inter"], weak, asp = _igcp(f1, f2, small, e3, e4, t, c.asp_normalize,
                                                c.knn_k, self.gather, self.backend, segments2,
                                                c.inter_positives, bt, c.inter_graph)
        else:
            terms["l_inter"], weak, asp = zero, None, None
        terms["l_ins"] = (instance_loss(e3, e4, positions if c.use_positions else None,
                                        temperature=t, threshold=c.pcl_threshold,
                                        gather=self.gather, backend=self.backend,
                                        relation=c.pcl_relation, base_temperature=bt)
                          if c.l_ins else zero)
        terms["loss"] = c.l_ins * terms["l_ins"] + c.l_intra * terms["l_intra"] + c.l_inter * terms["l_inter"]
        terms["weak_labels"] = weak
        if diagnostics:
            terms.update(self._diagnostics(f1, f2, small, ilcp_segments, positions, weak, asp,
                                           segments2, organs))
        return terms

    @torch.no_grad()
    def _diagnostics(self, f1, f2, segments, ilcp_segments, positions, weak, asp,
                     segments2=None, organs=None) -> dict[str, torch.Tensor]:
        c = self.config
        out = {"ilcp_pos_per_anchor": ilcp_positives_per_anchor(ilcp_segments, c.pixel_stride)}
        nan = torch.full((), math.nan, dtype=torch.float64, device=f1.device)  # no host copy
        gathered = self.gather(positions.to(f1.device)) if positions is not None else None
        out["pcl_pos_per_anchor"] = (
            pcl_positives_per_anchor(gathered, c.pcl_threshold, c.pcl_relation)
            if gathered is not None and c.use_positions else nan)
        if asp is None:  # L_inter is off: the weak labels it would use
            asp, weak = _weak_labels(f1, f2, segments, c.asp_normalize, c.knn_k, self.gather,
                                     segments2, pair_views=c.inter_positives == "components",
                                     graph=c.inter_graph)
        if organs is not None:
            organs = self.gather(organs.to(f1.device, torch.float32)) > 0.5
        out.update(weak_label_quality(asp, weak, c.knn_k, gathered, organs, c.pcl_threshold))
        return out
