"""Every picture of supercl: overlays, training charts and the run folder's figures.

``overlay`` draws label boundaries over CT-like slices; ``segmentation_tile`` paints a class
map over a slice; ``grey_levels`` brings slices of any intensity scale to uint8 grey. These
need numpy only.

``plot_loss_curves`` and ``plot_dsc_bars`` draw charts with matplotlib, imported inside the
functions and used through its object interface (``Figure`` and the Agg canvas): no pyplot,
no global backend choice, safe in threads and on machines without a display.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "prediction_slices",
    "grey_levels",
    "zoom_factor",
    "upsample",
    "boundary_mask",
    "overlay",
    "PALETTE",
    "NAMES",
    "display_name",
    "BOUNDARY",
    "segmentation_tile",
    "plot_image_grid",
    "plot_loss_curves",
    "plot_diagnostics",
    "plot_dsc_bars",
    "plot_superpixels",
    "plot_predictions",
    "plot_arm_comparison",
    "disagreement_slices",
]

#: Class colours (RGB) of the segmentation pictures: class c >= 1 gets
#: ``PALETTE[(c - 1) % 7]``; class 0 (background) is left transparent. The colour-blind-safe
#: palette of Okabe and Ito (2008) without its black: the colours stay distinct under the
#: common colour-vision deficiencies, and none is white or grey like the CT slice below.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0),    # orange
    (86, 180, 233),   # sky blue
    (0, 158, 115),    # bluish green
    (240, 228, 66),   # yellow
    (204, 121, 167),  # reddish purple: class 5, away from class 2's sky blue (the phantom's
                      # spleen and gallbladder were two similar blues)
    (213, 94, 0),     # vermillion
    (0, 114, 178),    # blue
)

#: Line colours of the charts: blue, vermillion, reddish purple, orange, sky blue, bluish
#: green, yellow (the darker ones first: lines are thin).
_LINES = tuple(PALETTE[i] for i in (6, 5, 4, 0, 1, 2, 3))

#: What the charts' legends call the logged values (the code names are in metrics.jsonl).
NAMES: dict[str, str] = {
    "loss": "total loss",
    "l_ins": "L_ins: instance / slice-position term (PCL)",
    "l_intra": "L_intra: superpixels within a slice (ILCP)",
    "l_inter": "L_inter: superpixels across slices (IGCP)",
    "ce": "cross-entropy",
    "dice": "soft Dice loss",
    "val_dsc": "validation mean DSC",
    "val_jc": "validation mean Jaccard",
    "ilcp_pos_per_anchor": "ILCP: positives per pixel",
    "pcl_pos_per_anchor": "PCL: positives per slice",
    "inter_edge_position_agreement": "graph edges joining nearby slices",
    "inter_edge_position_chance": "nearby slices by chance",
    "inter_edge_organ_agreement": "organ overlap of joined slices",
    "inter_edge_organ_chance": "organ overlap by chance",
    "inter_partner_edge_share": "graph edges to the slice's own other view",
    "scratch": "from scratch",
    "supercl": "SuperCL encoder",
}


def display_name(key: str) -> str:
    """The legend name of a logged value: :data:`NAMES`, else the key with spaces."""
    return NAMES.get(key, key.replace("_", " "))


#: Colour of superpixel boundaries over grey slices: Okabe-Ito yellow, visible on dark and
#: bright tissue alike and to colour-blind readers.
BOUNDARY: tuple[int, int, int] = (240, 228, 66)


def grey_levels(image: Any) -> np.ndarray:
    """An image (or a stack of them) of any intensity scale as uint8 grey levels: its 1st to
    99th percentile stretched to 0 .. 255 (CT slices are in [0, 1], z-scored MRI is not)."""
    image = _as_numpy(image).astype(np.float64, copy=False)
    lo, hi = np.percentile(image, [1, 99])
    return (np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def zoom_factor(shape: tuple[int, ...], target: int = 192) -> int:
    """Integer zoom that brings small slices to about ``target`` pixels for the figures."""
    return max(1, -(-target // max(shape)))


def upsample(a: np.ndarray, k: int) -> np.ndarray:
    """``a`` (H, W) repeated ``k`` times along both axes (nearest neighbour)."""
    return a if k == 1 else a.repeat(k, 0).repeat(k, 1)


def boundary_mask(labels: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose right or lower neighbour carries another label."""
    labels = np.asarray(labels)
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge


def overlay(grey: np.ndarray, labels: np.ndarray, colour=(255, 40, 40)) -> np.ndarray:
    """(H, W, 3) uint8: the grey uint8 image with the boundaries of ``labels`` in ``colour``."""
    rgb = np.repeat(np.asarray(grey, dtype=np.uint8)[..., None], 3, axis=2)
    rgb[boundary_mask(labels)] = colour
    return rgb


# ----------------------------------------------------------------- segmentation overlay


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, on any device
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _inner_boundary(labels: np.ndarray) -> np.ndarray:
    """(H, W) bool: foreground pixels with a 4-neighbour of another label (or on the edge of
    the picture), i.e. the outline of every class region, drawn inside the region."""
    pad = np.pad(labels, 1, mode="edge")
    centre = pad[1:-1, 1:-1]
    edge = ((pad[:-2, 1:-1] != centre) | (pad[2:, 1:-1] != centre)
            | (pad[1:-1, :-2] != centre) | (pad[1:-1, 2:] != centre))
    return edge & (labels > 0)


def segmentation_tile(grey: np.ndarray, labels: np.ndarray, num_classes: int, *,
                      alpha: float = 0.35) -> np.ndarray:
    """A class map over a slice: each class c >= 1 filled with ``PALETTE[(c - 1) % 7]`` at
    opacity ``alpha`` and outlined in the same colour, fully opaque.

    ``grey`` is (H, W) uint8, ``labels`` an (H, W) integer map (numpy or torch) with values in
    ``[0, num_classes)``; returns (H, W, 3) uint8. Put the truth's tile and the prediction's
    side by side (as ``predictions.png`` does) rather than drawing one's contours over the
    other's colours: nothing is lost on bright organs and no colour must stand for "truth".
    """
    grey, labels = _as_numpy(grey), _as_numpy(labels)
    if grey.dtype != np.uint8 or grey.ndim != 2:
        raise TypeError(f"grey must be an (H, W) uint8 picture, got {grey.dtype} {grey.shape}")
    if labels.shape != grey.shape or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer map of shape {grey.shape}, got "
                         f"{labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got {labels.min()} .. "
                         f"{labels.max()}")
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float64)
    palette = np.asarray(PALETTE, dtype=np.float64)
    fg = labels > 0
    colours = palette[(labels[fg].astype(np.int64) - 1) % len(PALETTE)]
    rgb[fg] = (1.0 - alpha) * rgb[fg] + alpha * colours
    edge = _inner_boundary(labels)
    rgb[edge] = palette[(labels[edge].astype(np.int64) - 1) % len(PALETTE)]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------- charts


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _number(v: Any) -> float | None:
    """``v`` as a finite float, or None for anything else (bool, str, None, NaN, inf)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


_AXIS_KEYS = {"epoch", "step", "global_step", "iter", "iteration", "lr", "learning_rate"}
_TIME_WORDS = ("time", "elapsed", "second", "duration", "wall", "throughput", "per_s")


def _default_key(key: str) -> bool:
    k = key.lower()
    if k in _AXIS_KEYS or any(w in k for w in _TIME_WORDS):
        return False
    return not (k.endswith("_s") or k.endswith("_sec") or k.endswith("_ms"))


def plot_image_grid(images: list[np.ndarray], titles: list[str], path: str | Path, *,
                    columns: int = 4, legend: Mapping[str, tuple[int, int, int]] | None = None,
                    title: str = "", tile_inches: float = 2.4) -> Path:
    """Pictures in a grid, each with its caption (case, slice, ...), an optional colour legend
    below, as a PNG.

    Parameters
    ----------
    images : list of numpy.ndarray
        (H, W, 3) uint8 (or (H, W) uint8 grey) pictures, drawn pixel for pixel.
    titles : list of str
        One caption per picture, e.g. ``"phantom_003, slice 12 of 24"``.
    path : str or Path
        The PNG to write; parent folders are created.
    columns : int
        Pictures per row.
    legend : dict, optional
        ``{label: (r, g, b)}`` drawn as coloured patches under the grid, e.g. the class names
        with their :data:`PALETTE` colours.
    title : str, optional
        Figure title.
    """
    if not images:
        raise ValueError("plot_image_grid needs at least one picture")
    if len(titles) != len(images):
        raise ValueError(f"{len(images)} pictures but {len(titles)} titles")
    from matplotlib.patches import Patch

    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    extra = (0.5 if title else 0.0) + (0.5 if legend else 0.0)
    fig = _new_figure(columns * tile_inches, rows * (tile_inches + 0.3) + extra)
    for i, (image, caption) in enumerate(zip(images, titles)):
        ax = fig.add_subplot(rows, columns, i + 1)
        image = np.asarray(image)
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_title(caption, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    bottom = 0.0
    if legend:
        handles = [Patch(facecolor=[c / 255 for c in rgb], edgecolor="black", linewidth=0.5,
                         label=str(name)) for name, rgb in legend.items()]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7),
                   fontsize=8, frameon=False)
        bottom = 0.45 / fig.get_figheight()
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return _save(fig, path)


def plot_loss_curves(records: list[dict], path: str | Path, *, keys: list[str] | None = None,
                     title: str = "") -> Path:
    """Line chart of training losses and validation metrics over epochs, as a PNG.

    Parameters
    ----------
    records : list of dict
        One dict per logged point, as read from a ``metrics.jsonl``: ``"epoch"`` and numeric
        entries such as ``"loss"``, ``"l_ins"``, ``"l_intra"``, ``"l_inter"``, ``"val_dsc"``.
        Entries that are missing, non-numeric (str, bool, None, lists) or not finite are
        skipped. The x value is ``"epoch"``; records without a numeric epoch are skipped,
        unless no record has one, then the record's position (0, 1, ...) is used.
    path : str or Path
        The PNG to write; parent folders are created.
    keys : list of str, optional
        The entries to draw. Default: every key with a numeric value in some record except
        the axis and bookkeeping ones (``epoch``, ``step``, ``iter``, ``lr``, and keys
        naming a time or a rate: ``time``, ``elapsed``, ``seconds``, ``*_s``, ...). Keys
        without any numeric value are left out.
    title : str, optional
        Figure title.

    Returns
    -------
    Path
        ``path``.

    Notes
    -----
    Keys starting with ``val_`` are drawn in a second panel on the right, in percent (0-100,
    as every table of supercl reports DSC and JC); the left panel has the others. A panel
    with no key is not drawn. Legends sit under their panel, never over a curve.

    Raises
    ------
    ValueError
        ``records`` is empty, or no requested key has a numeric value.
    TypeError
        A record is not a dict.

    Examples
    --------
    >>> import os, tempfile
    >>> records = [{"epoch": e, "loss": 2.0 / (e + 1), "val_dsc": 0.5 + 0.1 * e, "time": 3.2}
    ...            for e in range(4)]
    >>> p = plot_loss_curves(records, os.path.join(tempfile.mkdtemp(), "loss.png"))
    >>> p.read_bytes()[:4] == b"\\x89PNG"
    True
    """
    records = list(records)
    if not records:
        raise ValueError("plot_loss_curves needs at least one record")
    for r in records:
        if not isinstance(r, Mapping):
            raise TypeError(f"each record must be a dict, got {type(r).__name__}")
    epochs = [_number(r.get("epoch")) for r in records]
    if all(e is None for e in epochs):
        xs = [float(i) for i in range(len(records))]
        xlabel = "record"
    else:
        xs = epochs
        xlabel = "epoch"
    if keys is None:
        keys = []
        for r in records:
            for k, v in r.items():
                if k not in keys and isinstance(k, str) and _default_key(k) and _number(v) is not None:
                    keys.append(k)
    series: dict[str, tuple[list[float], list[float]]] = {}
    for k in keys:
        pts = [(x, _number(r.get(k))) for x, r in zip(xs, records) if x is not None]
        pts = [(x, y) for x, y in pts if y is not None]
        if pts:
            series[k] = ([x for x, _ in pts], [y for _, y in pts])
    if not series:
        raise ValueError(f"no numeric values to plot for keys {list(keys)}")
    groups = [
        ("loss", [k for k in series if not k.startswith("val_")]),
        ("validation", [k for k in series if k.startswith("val_")]),
    ]
    groups = [(label, ks) for label, ks in groups if ks]
    fig = _loss_figure(series, groups, xlabel, title)
    return _save(fig, path)


def _loss_figure(series, groups, xlabel: str, title: str):
    fig = _new_figure(6.0 * len(groups), 4.6)
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    colours = [tuple(c / 255 for c in rgb) for rgb in _LINES]
    n = 0
    for ax, (label, ks) in zip(axes, groups):
        percent = label == "validation"
        for k in ks:
            x, y = series[k]
            if percent:
                y = [100.0 * v for v in y]
            ax.plot(x, y, marker="o" if len(x) <= 50 else None, markersize=3, linewidth=1.5,
                    label=display_name(k), color=colours[n % len(colours)])
            n += 1
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation score (%)" if percent else label)
        if percent:
            ax.set_ylim(0.0, 100.0)
        ax.grid(True, alpha=0.3)
        # under the panel, outside the data area: a legend inside covers curves
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16),
                  ncol=min(len(ks), 4), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_dsc_bars(results: dict[str, dict[str, float]], path: str | Path, *, metric: str = "DSC",
                  title: str = "") -> Path:
    """Grouped bar chart of a per-class score for several runs, in percent, as a PNG.

    Parameters
    ----------
    results : dict
        ``{run name: {class name: value}}`` with values in [0, 1], e.g.
        ``{"scratch": {"liver": 0.71, "spleen": 0.64}, "supercl": {...}}``. One group of bars
        per class (in order of first appearance), one bar per run, each labelled with its
        value in percent. A NaN, None or missing value draws no bar and the label ``n/a``.
    path : str or Path
        The PNG to write; parent folders are created.
    metric : str, optional
        Name of the score, for the y axis. Default ``"DSC"``.
    title : str, optional
        Figure title.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        No run or no class, or a value outside [0, 1] (percentages must be divided by 100).
    TypeError
        A run's entry is not a dict, or a value is not a number.

    Examples
    --------
    >>> import os, tempfile
    >>> results = {"scratch": {"liver": 0.71, "spleen": 0.64},
    ...            "supercl": {"liver": 0.78, "spleen": float("nan")}}
    >>> p = plot_dsc_bars(results, os.path.join(tempfile.mkdtemp(), "dsc.png"))
    >>> p.read_bytes()[:4] == b"\\x89PNG"
    True
    """
    if not isinstance(results, Mapping) or not results:
        raise ValueError("plot_dsc_bars needs a non-empty dict {run: {class: value}}")
    classes: list[str] = []
    for run, scores in results.items():
        if not isinstance(scores, Mapping):
            raise TypeError(f"results[{run!r}] must be a dict {{class: value}}, got {type(scores).__name__}")
        for c, v in scores.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
                raise TypeError(f"results[{run!r}][{c!r}] must be a number, got {v!r}")
            if v is not None and not math.isnan(v) and not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"results[{run!r}][{c!r}] = {v} is outside [0, 1]")
            if c not in classes:
                classes.append(c)
    if not classes:
        raise ValueError("plot_dsc_bars needs at least one class")
    runs = list(results)
    n_runs = len(runs)
    width = 0.8 / n_runs
    fig = _new_figure(min(max(5.0, 1.5 + 0.45 * len(classes) * n_runs), 24.0), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    label_size = 8 if n_runs <= 3 else 6
    rotation = 0 if n_runs <= 2 else 90
    for i, run in enumerate(runs):
        offsets = np.arange(len(classes)) + (i - (n_runs - 1) / 2) * width
        values = []
        for c in classes:
            v = results[run].get(c)
            values.append(float("nan") if v is None else 100.0 * float(v))
        colour = PALETTE[i % len(PALETTE)]
        ax.bar(offsets, values, width * 0.95, label=display_name(str(run)),
               color=[ch / 255 for ch in colour])
        for x, v in zip(offsets, values):
            text, y = ("n/a", 1.0) if math.isnan(v) else (f"{v:.1f}", v + 1.0)
            ax.text(x, y, text, ha="center", va="bottom", fontsize=label_size, rotation=rotation,
                    color="grey" if text == "n/a" else "black")
    ax.set_xticks(np.arange(len(classes)))
    ax.set_xticklabels([str(c) for c in classes], rotation=0 if len(classes) <= 8 else 45)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_ylim(0.0, 115.0 if rotation == 0 else 125.0)
    ax.set_yticks(np.arange(0, 101, 20))
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper right", ncol=min(n_runs, 4))
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_diagnostics(records: list[dict], path: str | Path, *, title: str = "") -> Path:
    """The pre-training diagnostics of a ``metrics.jsonl`` over epochs, as a PNG.

    Left panel: ``ilcp_pos_per_anchor`` and ``pcl_pos_per_anchor``, the mean number of
    positives of an anchor, with a dashed line at 1 (only the same location or slice in the
    other view). Right panel, in %, the quality of L_inter's weak-label graph
    (:func:`supercl.losses.weak_label_quality`): ``inter_edge_position_agreement`` (edges
    between slices less than 0.1 apart in relative position) and
    ``inter_edge_organ_agreement`` (Jaccard index of the joined slices' organ sets), each with
    its chance level dashed in the same colour, and ``inter_partner_edge_share`` (edges that
    join a view to its own partner: where it is 100 %, L_inter is SimCLR). Missing or
    non-finite values are skipped.

    Raises ValueError when no record has a numeric diagnostic or an epoch.

    >>> import os, tempfile
    >>> rows = [{"epoch": e, "ilcp_pos_per_anchor": 1.8, "pcl_pos_per_anchor": 4.0,
    ...          "inter_edge_position_agreement": 0.3 * e, "inter_edge_position_chance": 0.2}
    ...         for e in (1, 2, 3)]
    >>> plot_diagnostics(rows, os.path.join(tempfile.mkdtemp(), "d.png")).suffix
    '.png'
    """
    panels = [("positives per anchor", ("ilcp_pos_per_anchor", "pcl_pos_per_anchor"), 1.0),
              ("weak-label graph edges (%)", ("inter_edge_position_agreement",
                                              "inter_edge_position_chance",
                                              "inter_edge_organ_agreement",
                                              "inter_edge_organ_chance",
                                              "inter_partner_edge_share"), 100.0)]
    series = {}
    for _, keys, scale in panels:
        for k in keys:
            pts = [(_number(r.get("epoch")), _number(r.get(k))) for r in records
                   if isinstance(r, Mapping)]
            pts = [(x, y * scale) for x, y in pts if x is not None and y is not None]
            if pts:
                series[k] = ([x for x, _ in pts], [y for _, y in pts])
    if not series:
        raise ValueError("plot_diagnostics: no record has an epoch and a numeric diagnostic")
    fig = _new_figure(11.0, 4.8)
    axes = fig.subplots(1, 2, squeeze=False)[0]
    # orange, blue, bluish green, vermillion, reddish purple: distinct for colour-blind
    # readers, none pale
    colour = {k: tuple(c / 255 for c in PALETTE[i]) for k, i in (
        ("ilcp_pos_per_anchor", 0), ("pcl_pos_per_anchor", 6), ("inter_edge_position", 2),
        ("inter_edge_organ", 5), ("inter_partner_edge_share", 4))}
    for ax, (label, keys, scale) in zip(axes, panels):
        for k in keys:
            if k in series:
                chance = k.endswith("_chance")
                stem = k.rsplit("_", 1)[0] if k.startswith("inter_edge") else k
                # zorder and clip_on: a share of 0 % (the image graph has no partner edges)
                # lay hidden under the x-axis; it is drawn over the axes and off the clip
                ax.plot(*series[k], marker=None if chance else "o", markersize=3,
                        linewidth=1.5, label=display_name(k), color=colour[stem],
                        linestyle="--" if chance else "-", zorder=3, clip_on=False)
        if scale == 1.0:
            ax.axhline(1.0, color="0.4", linestyle="--", linewidth=1,
                       label="1 = only the other view")
            ax.set_ylim(bottom=0.0)
        else:
            ax.set_ylim(-2.0, 102.0)  # lines at 0 % and 100 % stay off the frame
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1,
                  frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_ablation(summary: dict, path: str | Path, *, title: str = "") -> Path:
    """The figure of ``supercl ablate``: per label fraction, each arm's test DSC runs (dots),
    mean and 95 % CI (bar), and the paired difference to scratch with its CI.

    ``summary``: ``{fraction: {arm: {"runs": [DSC %, ...], "test_dsc": mean_ci dict,
    "vs_scratch": paired_difference dict (not for scratch)}}}``, as
    :func:`supercl.ablate.summarize` gives. Returns ``path``.

    >>> import os, tempfile
    >>> from supercl.eval import mean_ci, paired_difference
    >>> s = {"10%": {"scratch": {"runs": [50., 52.], "test_dsc": mean_ci([50., 52.])},
    ...              "supercl": {"runs": [55., 53.], "test_dsc": mean_ci([55., 53.]),
    ...                          "vs_scratch": paired_difference([55., 53.], [50., 52.])}}}
    >>> plot_ablation(s, os.path.join(tempfile.mkdtemp(), "a.png")).read_bytes()[:4] == b"\\x89PNG"
    True
    """
    if not isinstance(summary, Mapping) or not summary:
        raise ValueError("plot_ablation needs a non-empty {fraction: {arm: ...}} dict")
    fractions = list(summary)
    fig = _new_figure(5.0 + 1.2 * max(len(a) for a in summary.values()), 3.6 * len(fractions))
    for row, fraction in enumerate(fractions):
        arms = summary[fraction]
        names = list(arms)
        left = fig.add_subplot(len(fractions), 2, 2 * row + 1)
        right = fig.add_subplot(len(fractions), 2, 2 * row + 2)
        for i, arm in enumerate(names):
            e = arms[arm]
            colour = [ch / 255 for ch in PALETTE[i % len(PALETTE)]]
            runs = np.asarray(e["runs"], dtype=float)
            jitter = np.linspace(-0.15, 0.15, len(runs)) if len(runs) > 1 else np.zeros(1)
            left.scatter(i + jitter, runs, s=12, color=colour, alpha=0.6)
            ci = e["test_dsc"]
            if ci["n"] > 1:
                left.errorbar(i, ci["mean"], yerr=ci["half_width"], fmt="s", color="black",
                              capsize=4, markersize=5)
            d = e.get("vs_scratch")
            if d is not None:
                right.errorbar(i, d["mean"], yerr=d["half_width"] if d["n"] > 1 else 0,
                               fmt="o", color=colour, capsize=4)
        for ax in (left, right):
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
            ax.grid(True, axis="y", alpha=0.3)
        right.axhline(0.0, color="grey", linewidth=1)
        left.set_ylabel("test mean DSC (%)")
        right.set_ylabel("minus scratch, paired (DSC points)")
        left.set_title(f"{fraction} labels: runs, mean and 95 % CI", fontsize=9)
        right.set_title(f"{fraction} labels: paired difference to scratch, 95 % CI", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)

# ----------------------------------------------------------------- the run folder's figures


def plot_superpixels(images: Any, segments: Any, captions: list[str], path: str | Path, *,
                     shown: int = 8, title: str = "") -> Path:
    """SLIC boundaries over the first ``shown`` of (B, H, W) ``images`` (any scale) with their
    (B, H, W) ``segments``, one captioned tile each, 4 per row."""
    images, segments = _as_numpy(images), _as_numpy(segments)
    shown = min(images.shape[0], shown)
    tiles = []
    for b in range(shown):
        grey = grey_levels(images[b])
        k = zoom_factor(grey.shape)
        tiles.append(overlay(upsample(grey, k), upsample(segments[b], k), colour=BOUNDARY))
    titles = [f"{captions[b]}: {int(segments[b].max()) + 1} superpixels" for b in range(shown)]
    return plot_image_grid(tiles, titles, path, columns=4, title=title)


def plot_predictions(images: Any, labels: Any, pred: Any, volume: Any, captions: list[str],
                     num_classes: int, path: str | Path, *,
                     class_names: Mapping[int, str] | None = None, shown: int = 6,
                     run: str | None = None) -> Path:
    """Ground truth and prediction side by side on test slices that together show every class
    of the ground truth: (N, 1, H, W) ``images``, (N, H, W) ``labels`` and ``pred``, (N,)
    ``volume`` index of each slice, a caption per slice. ``run`` names the run in the title.

    The slices are :func:`prediction_slices`: a greedy cover of the classes first (more
    slices than ``shown`` if the classes need them), then the slices with the most foreground,
    each volume's first."""
    images, labels, pred = _as_numpy(images), _as_numpy(labels), _as_numpy(pred)
    picks = prediction_slices(labels, _as_numpy(volume), num_classes, shown)
    tiles, titles = [], []
    for i in picks:
        grey = grey_levels(images[i, 0])
        k = zoom_factor(grey.shape)
        tiles += [segmentation_tile(upsample(grey, k), upsample(labels[i], k), num_classes),
                  segmentation_tile(upsample(grey, k), upsample(pred[i], k), num_classes)]
        titles += [f"{captions[i]}: truth", f"{captions[i]}: prediction"]
    class_names = class_names or {c: f"class {c}" for c in range(num_classes)}
    legend = {class_names.get(c, f"class {c}"): PALETTE[(c - 1) % len(PALETTE)]
              for c in range(1, num_classes)}
    return plot_image_grid(tiles, titles, path, columns=4, legend=legend,
                           title=(f"{display_name(run)}: " if run else "")
                           + "test slices showing every class: "
                             "ground truth (left of each pair) and prediction (right)")


def plot_arm_comparison(images: Any, labels: Any, preds: Mapping[str, Any], captions: list[str],
                        num_classes: int, path: str | Path, *,
                        class_names: Mapping[int, str] | None = None, shown: int = 4,
                        title: str = "") -> Path:
    """Two or more runs' predictions side by side with the ground truth, on the test slices
    where the runs disagree most: (N, 1, H, W) ``images``, (N, H, W) ``labels``, ``preds``
    ``{run: (N, H, W) prediction}`` (in the order of the columns), a caption per slice. One
    row per slice: truth, then each run. The slices are :func:`disagreement_slices`."""
    images, labels = _as_numpy(images), _as_numpy(labels)
    preds = {name: _as_numpy(p) for name, p in preds.items()}
    picks = disagreement_slices(list(preds.values()), shown)
    tiles, titles = [], []
    for i in picks:
        grey = grey_levels(images[i, 0])
        k = zoom_factor(grey.shape)
        tiles.append(segmentation_tile(upsample(grey, k), upsample(labels[i], k), num_classes))
        titles.append(f"{captions[i]}: ground truth")
        for name, p in preds.items():
            tiles.append(segmentation_tile(upsample(grey, k), upsample(p[i], k), num_classes))
            titles.append(f"{captions[i]}: {name}")
    class_names = class_names or {c: f"class {c}" for c in range(num_classes)}
    legend = {class_names.get(c, f"class {c}"): PALETTE[(c - 1) % len(PALETTE)]
              for c in range(1, num_classes)}
    return plot_image_grid(tiles, titles, path, columns=1 + len(preds), legend=legend,
                           title=title or ("the test slices where " + " and ".join(preds)
                                           + " disagree most"))


def disagreement_slices(preds: list[np.ndarray], shown: int = 4) -> list[int]:
    """Indices (sorted) of the ``shown`` slices where the (N, H, W) predictions ``preds``
    differ on the most pixels (ties: the first); slices where they agree everywhere are left
    out, and the first slice is shown when they agree on every slice."""
    first = np.asarray(preds[0])
    n = first.shape[0]
    differ = np.zeros(n, np.int64)
    for other in preds[1:]:
        differ += (np.asarray(other) != first).reshape(n, -1).sum(1)
    order = np.lexsort((np.arange(n), -differ))
    picks = [int(i) for i in order[:shown] if differ[i] > 0]
    return sorted(picks) or [0]


def prediction_slices(labels: np.ndarray, volume: np.ndarray, num_classes: int,
                      shown: int = 6) -> list[int]:
    """Indices (sorted) of the slices :func:`plot_predictions` shows, of (N, H, W) ``labels``
    with (N,) ``volume`` indices: first a greedy cover of the foreground classes present, each
    time the slice that shows the most classes not yet shown (ties: the most foreground, then
    the first), so that a class present in a single small slice is shown too; then, up to
    ``shown`` slices, those with the most foreground, each volume's first."""
    n = labels.shape[0]
    flat = labels.reshape(n, -1)
    present = np.stack([(flat == c).any(1) for c in range(1, num_classes)], 1) \
        if num_classes > 1 else np.zeros((n, 0), bool)
    area = (flat > 0).sum(1)
    picks: list[int] = []
    missing = present.any(0)
    while missing.any():
        gain = (present & missing).sum(1)
        best = int(np.lexsort((np.arange(n), -area, -gain))[0])
        picks.append(best)
        missing &= ~present[best]
    order = np.argsort(-area, kind="stable").tolist()
    seen, firsts, rest = set(), [], []
    for i in order:
        v = int(volume[i])
        (rest if v in seen else firsts).append(i)
        seen.add(v)
    for i in firsts + rest:
        if len(picks) >= shown:
            break
        if i not in picks:
            picks.append(i)
    return sorted(picks)
