"""Segmentation metrics: the SuperCL reference DSC/JC, and per-volume DSC and HD95.

Two ways of scoring a segmentation are in use, and they give different numbers:

* **Accumulated over the test set** (:class:`SegmentationMetrics`, the SuperCL reference
  metric): for every foreground class, the intersection ``|P_c & G_c|`` and the sizes
  ``|P_c|``, ``|G_c|`` are summed over every slice of every test volume, and Dice and
  Jaccard are computed once from those totals. Large organs and large volumes weigh more;
  slices where an organ is absent contribute nothing rather than a 0 or a 1.
* **Per volume, then averaged** (:func:`volume_metrics` and :func:`summarize_volumes`,
  the Medical Segmentation Decathlon / MONAI convention): Dice and the 95th percentile
  Hausdorff distance of each 3-D volume, then mean and standard deviation over volumes.

**Which library each metric matches** (``tests/test_metrics.py`` checks each against that
library where it is installed, and against references written in the test otherwise):

============================  ===================================================  ============
metric                        matches                                              differs on
============================  ===================================================  ============
:func:`dice_score`            MONAI ``DiceMetric`` (and medpy ``dc``)              empty masks
:func:`jaccard_score`         MONAI ``MeanIoU`` (and medpy ``jc``)                 empty masks
:func:`hd95`                  medpy ``hd95``, exactly (same surfaces, distances,   empty masks
                              spacing and pooling)
:func:`hd95` vs MONAI         ``compute_hausdorff_distance(percentile=95)``:       the pooling
                              same surfaces and distances, another last step
:class:`SegmentationMetrics`  the SuperCL reference code (no library: MONAI and     (by design)
                              torchmetrics average per image or per batch)
============================  ===================================================  ============

Where the definitions differ:

* **Empty masks.** A class absent from both the prediction and the ground truth has Dice and
  Jaccard NaN here and is left out of means; a class absent from the ground truth but
  predicted scores 0. MONAI differs in both corner cases: ``ignore_empty=True`` (its
  default) gives NaN whenever the ground truth is empty, so false positives on an absent
  organ go unpunished; ``ignore_empty=False`` gives 1 when both are empty. HD95 is NaN here
  when either mask is empty; medpy raises, MONAI returns NaN or inf with a warning.
* **Pooling of HD95.** medpy (and this module) take the 95th percentile of both directions'
  surface distances pooled; MONAI takes the larger of the two directed 95th percentiles.
  With numpy's linear interpolation neither bounds the other, and they differ by a fraction
  of a voxel on ordinary masks.
* **Spacing.** All three take the voxel size in the array's axis order (``(z, y, x)`` for a
  ``(D, H, W)`` array; nibabel's ``get_zooms()`` is in the file's ``(x, y, z)`` order) and
  measure Euclidean distances with it; a single number means the same size on every axis.
  Without spacing the unit is one voxel. MONAI computes the distances in float32 (relative
  differences of about 1e-7); here and in medpy they are float64.

Class maps are integer arrays (numpy or torch, any shape) with values in
``[0, num_classes)``; 0 is background and is never scored.

**Why not MONAI or torchmetrics.** Both were weighed (MONAI's ``DiceMetric`` and
``HausdorffDistanceMetric``, torchmetrics' segmentation metrics); this module keeps its own
code because neither computes what the project reports:

* the SuperCL reference metric accumulates intersections and sizes over the whole test set
  before dividing; MONAI and torchmetrics average per-image (or per-batch) scores;
* their empty-mask rules differ from the reference's (above): MONAI either ignores false
  positives on an absent organ or scores two empty masks 1;
* MONAI's HD95 is the larger of the two directed 95th percentiles, not medpy's pooled
  percentile that this project follows. Here it is exact and cropped: scipy's Euclidean
  distance transform with the voxel spacing, on the masks' bounding box.

The counting is a few numpy sums over CPU arrays that evaluation has already, so GPU
support would not change its speed. Besides the libraries (above), the tests check DSC/JC
against MONAI's rule written out and HD95 against a brute-force reference (all pairwise
surface distances, ``scipy.spatial``) that shares no code with this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from supercl._validate import check_spacing, check_tensor

__all__ = [
    "SegmentationMetrics",
    "dice_score",
    "jaccard_score",
    "hd95",
    "volume_metrics",
    "summarize_volumes",
]


# ----------------------------------------------------------------------------- helpers


def _is_torch(x: Any) -> bool:
    torch = _torch_if_loaded()
    return torch is not None and isinstance(x, torch.Tensor)


def _torch_if_loaded():
    import sys

    return sys.modules.get("torch")


def _check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background and one class), got {num_classes}")
    return int(num_classes)


def _class_names(num_classes: int, class_names: Mapping[int, str] | None) -> dict[int, str]:
    """Names of the foreground classes 1..num_classes-1: unnamed ones are ``"class_<c>"``, and
    a name used by an earlier class gets ``"_<c>"`` appended (results are keyed by name)."""
    given = {} if class_names is None else dict(class_names)
    for c in given:
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < num_classes:
            raise ValueError(f"class_names keys must be class ids in [0, {num_classes}), got {c!r}")
    names: dict[int, str] = {}
    for c in range(1, num_classes):
        name = str(given.get(c, f"class_{c}"))
        while name in names.values():
            name = f"{name}_{c}"
        names[c] = name
    return names


def _to_numpy(x: Any) -> np.ndarray:
    if _is_torch(x):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_pair(pred: np.ndarray, target: np.ndarray) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got pred {tuple(pred.shape)} "
            f"and target {tuple(target.shape)}"
        )


def _check_integer_numpy(x: np.ndarray, name: str) -> None:
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"{name} must be an integer class map, got dtype {x.dtype}")


def _check_range_numpy(x: np.ndarray, name: str, num_classes: int) -> None:
    if x.size and (x.min() < 0 or x.max() >= num_classes):
        raise ValueError(
            f"{name} values must lie in [0, {num_classes}), got min {x.min()} and max {x.max()}"
        )


def _masks(pred_mask: Any, gt_mask: Any) -> tuple[np.ndarray, np.ndarray]:
    pred_mask = _to_numpy(pred_mask).astype(bool)
    gt_mask = _to_numpy(gt_mask).astype(bool)
    if pred_mask.shape != gt_mask.shape:
        raise ValueError(
            f"pred_mask and gt_mask must have the same shape, got pred_mask "
            f"{pred_mask.shape} and gt_mask {gt_mask.shape}"
        )
    return pred_mask, gt_mask


def _nanmean(values: Sequence[float]) -> float:
    """Mean of the non-NaN values; NaN (without a warning) when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


# ----------------------------------------------------------------- accumulated DSC / JC


class SegmentationMetrics:
    """DSC and JC per foreground class, accumulated over a whole test set (SuperCL metric).

    ``update`` adds the confusion matrix of a batch of predicted and ground-truth class maps;
    ``compute`` turns the totals into, per foreground class ``c = 1 .. num_classes - 1``,

    * ``DSC_c = 2 |P_c & G_c| / (|P_c| + |G_c|)``
    * ``JC_c  = |P_c & G_c| / (|P_c| + |G_c| - |P_c & G_c|)``

    where the counts are summed over everything seen, **not** averaged per slice or per
    volume. A class absent from both prediction and ground truth (so far) gets NaN and is
    left out of ``mean_dsc`` / ``mean_jc``.

    Parameters
    ----------
    num_classes : int
        Number of classes including background 0; at least 2.
    class_names : dict[int, str], optional
        Names of the foreground classes, used as keys of the result; unnamed classes are
        called ``"class_<c>"``, and a repeated name gets ``"_<c>"`` appended. A name for
        class 0 is accepted and ignored (e.g. ``DatasetInfo.class_names``).

    Attributes
    ----------
    confusion : numpy.ndarray
        (num_classes, num_classes) int64 counts so far, rows ground truth, columns
        prediction (a copy).

    Notes
    -----
    Counts are int64 on the CPU. CUDA tensors are counted on their device (one
    ``bincount`` of ``target * num_classes + pred``); only the small confusion matrix is
    copied to the host. ``update`` checks the value range, which synchronises with the
    device once per call.

    Examples
    --------
    >>> import numpy as np
    >>> m = SegmentationMetrics(3, class_names={1: "liver", 2: "spleen"})
    >>> target = np.array([[0, 1, 1, 2]])
    >>> pred = np.array([[0, 1, 2, 2]])
    >>> m.update(pred, target)
    >>> r = m.compute()
    >>> r["dsc"]       # liver: 2*1/(1+2); spleen: 2*1/(2+1)
    {'liver': 0.6666666666666666, 'spleen': 0.6666666666666666}
    >>> r["jc"]["liver"]  # 1/(1+2-1)
    0.5
    >>> r["confusion"]
    [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    """

    def __init__(self, num_classes: int, class_names: dict[int, str] | None = None) -> None:
        self.num_classes = _check_num_classes(num_classes)
        self.class_names = _class_names(self.num_classes, class_names)
        self._confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._confusion[...] = 0

    @property
    def confusion(self) -> np.ndarray:
        return self._confusion.copy()

    def update(self, pred: Any, target: Any) -> None:
        """Add a batch of class maps.

        Parameters
        ----------
        pred, target : torch.Tensor or numpy.ndarray
            Integer class maps of identical shape, e.g. (B, H, W) or (D, H, W), values in
            ``[0, num_classes)``. Tensors may live on any device (both on the same one, or
            one of them a numpy array / CPU tensor, which is moved to the other's device).

        Raises
        ------
        ValueError
            Shapes differ, or a value lies outside ``[0, num_classes)``.
        TypeError
            A map is not of an integer dtype (bool and floating point are refused).

        Examples
        --------
        >>> import torch
        >>> m = SegmentationMetrics(2)
        >>> m.update(torch.tensor([[1, 1], [0, 0]]), torch.tensor([[1, 0], [0, 0]]))
        >>> m.compute()["dsc"]  # 2*1/(2+1)
        {'class_1': 0.6666666666666666}
        """
        if _is_torch(pred) or _is_torch(target):
            counts = self._counts_torch(pred, target)
        else:
            counts = self._counts_numpy(np.asarray(pred), np.asarray(target))
        self._confusion += counts.reshape(self.num_classes, self.num_classes)

    def _counts_numpy(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        _check_pair(pred, target)
        _check_integer_numpy(pred, "pred")
        _check_integer_numpy(target, "target")
        _check_range_numpy(pred, "pred", self.num_classes)
        _check_range_numpy(target, "target", self.num_classes)
        k = self.num_classes
        flat = target.reshape(-1).astype(np.int64) * k + pred.reshape(-1).astype(np.int64)
        return np.bincount(flat, minlength=k * k).astype(np.int64)

    def _counts_torch(self, pred: Any, target: Any) -> np.ndarray:
        import torch

        device = pred.device if isinstance(pred, torch.Tensor) else target.device
        pred = torch.as_tensor(pred, device=device)
        target = torch.as_tensor(target, device=device)
        _check_pair(pred, target)
        k = self.num_classes
        for name, x in (("pred", pred), ("target", target)):
            check_tensor(x, name, dtype="integer", dtype_text="be an integer class map")
        if pred.numel() == 0:
            return np.zeros(k * k, dtype=np.int64)
        pred = pred.reshape(-1).long()
        target = target.reshape(-1).long()
        # One host synchronisation for both range checks.
        bounds = torch.stack([pred.min(), pred.max(), target.min(), target.max()]).cpu().tolist()
        for name, lo, hi in (("pred", *bounds[:2]), ("target", *bounds[2:])):
            if lo < 0 or hi >= k:
                raise ValueError(f"{name} values must lie in [0, {k}), got min {lo} and max {hi}")
        counts = torch.bincount(target * k + pred, minlength=k * k)
        return counts.cpu().numpy().astype(np.int64)

    def compute(self) -> dict[str, Any]:
        """DSC and JC from the totals so far.

        Returns
        -------
        dict
            ``"dsc"`` and ``"jc"``: ``{class name: float}`` for every foreground class (NaN
            for a class absent from both prediction and ground truth); ``"mean_dsc"`` and
            ``"mean_jc"``: means over the classes that are not NaN (NaN if none);
            ``"confusion"``: the (num_classes, num_classes) counts as a nested list of ints,
            rows ground truth, columns prediction.

        Examples
        --------
        >>> m = SegmentationMetrics(3)
        >>> m.update([[1, 1]], [[1, 1]])
        >>> r = m.compute()
        >>> r["dsc"], r["mean_dsc"]  # class 2 never seen: NaN, left out of the mean
        ({'class_1': 1.0, 'class_2': nan}, 1.0)
        """
        conf = self._confusion
        inter = np.diag(conf)[1:].astype(np.float64)
        pred_size = conf.sum(axis=0)[1:].astype(np.float64)
        target_size = conf.sum(axis=1)[1:].astype(np.float64)
        total = pred_size + target_size
        with np.errstate(invalid="ignore", divide="ignore"):
            dsc = np.where(total > 0, 2.0 * inter / total, np.nan)
            jc = np.where(total > 0, inter / (total - inter), np.nan)
        names = [self.class_names[c] for c in range(1, self.num_classes)]
        return {
            "dsc": {n: float(v) for n, v in zip(names, dsc)},
            "jc": {n: float(v) for n, v in zip(names, jc)},
            "mean_dsc": _nanmean(dsc),
            "mean_jc": _nanmean(jc),
            "confusion": conf.tolist(),
        }

    def __repr__(self) -> str:
        return f"SegmentationMetrics(num_classes={self.num_classes}, seen={int(self._confusion.sum())})"


# ------------------------------------------------------------------------- binary masks


def dice_score(pred_mask: Any, gt_mask: Any) -> float:
    """Dice similarity coefficient ``2 |P & G| / (|P| + |G|)`` of two binary masks.

    Parameters
    ----------
    pred_mask, gt_mask : array_like or torch.Tensor
        Masks of identical shape (any number of dimensions); nonzero is foreground
        (like medpy, the masks are cast to bool).

    Returns
    -------
    float
        In [0, 1]; NaN when both masks are empty, so that a class absent from a volume drops
        out of a ``np.nanmean``. An empty ground truth with a non-empty prediction gives 0
        (MONAI's ``DiceMetric(ignore_empty=True)`` gives NaN there, and with
        ``ignore_empty=False`` it gives 1 when both are empty).

    Raises
    ------
    ValueError
        The shapes differ.

    Examples
    --------
    >>> import numpy as np
    >>> dice_score(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))  # 2*1/(2+1)
    0.6666666666666666
    >>> dice_score(np.zeros(3), np.zeros(3))
    nan
    """
    p, g = _masks(pred_mask, gt_mask)
    total = int(p.sum()) + int(g.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int(np.count_nonzero(p & g)) / total


def jaccard_score(pred_mask: Any, gt_mask: Any) -> float:
    """Jaccard index (IoU) ``|P & G| / |P | G|`` of two binary masks.

    Parameters
    ----------
    pred_mask, gt_mask : array_like or torch.Tensor
        Masks of identical shape (any number of dimensions); nonzero is foreground.

    Returns
    -------
    float
        In [0, 1]; NaN when both masks are empty (as :func:`dice_score`).

    Raises
    ------
    ValueError
        The shapes differ.

    Examples
    --------
    >>> import numpy as np
    >>> jaccard_score(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))  # 1/2
    0.5
    """
    p, g = _masks(pred_mask, gt_mask)
    union = int(np.count_nonzero(p | g))
    if union == 0:
        return float("nan")
    return int(np.count_nonzero(p & g)) / union


def _spacing(spacing: Any, ndim: int) -> np.ndarray | None:
    if spacing is None:
        return None
    if np.ndim(spacing) == 0 and not isinstance(spacing, (str, bytes)):
        spacing = [spacing] * ndim  # one number: the same size along every axis
    return np.asarray(check_spacing(spacing, ndim=ndim), dtype=np.float64)


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_erosion, generate_binary_structure

    structure = generate_binary_structure(mask.ndim, 1)
    return mask ^ binary_erosion(mask, structure=structure, iterations=1)


def hd95(pred_mask: Any, gt_mask: Any, spacing: Sequence[float] | float | None = None) -> float:
    """95th percentile of the symmetric Hausdorff distance between two binary masks.

    The definition is medpy's ``hd95``: the surface of a mask is the mask minus its
    erosion by the face-connected structuring element (``generate_binary_structure(ndim,
    1)``; voxels on the array border count as surface); for every surface voxel of each
    mask the Euclidean distance to the nearest surface voxel of the other is taken (in
    units of ``spacing``), and the result is the 95th percentile (numpy's linear
    interpolation) of both directions' distances together.

    Parameters
    ----------
    pred_mask, gt_mask : array_like or torch.Tensor
        Masks of identical shape, 2-D (H, W) or 3-D (D, H, W) (any ndim works); nonzero is
        foreground.
    spacing : sequence of float or float, optional
        Voxel size per array axis, in the array's axis order (e.g. (z, y, x) for a (D, H, W)
        array; nibabel's ``header.get_zooms()`` is in the file's (x, y, z) order). A single
        number is used for every axis. Default 1 per axis.

    Returns
    -------
    float
        The distance; NaN when either mask is empty (medpy raises in that case, MONAI
        returns NaN or inf).

    Raises
    ------
    ValueError
        The shapes differ, or ``spacing`` has the wrong length or a non-positive entry.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((5, 5), bool); a[1, 1] = True
    >>> b = np.zeros((5, 5), bool); b[1, 4] = True
    >>> hd95(a, b)
    3.0
    >>> hd95(a, b, spacing=(1.0, 0.5))
    1.5
    >>> hd95(a, np.zeros((5, 5)))
    nan
    """
    from scipy.ndimage import distance_transform_edt

    p, g = _masks(pred_mask, gt_mask)
    if p.ndim == 0:
        raise ValueError("hd95 needs masks with at least one dimension")
    sampling = _spacing(spacing, p.ndim)
    if not p.any() or not g.any():
        return float("nan")
    # Crop to the bounding box of both masks plus one voxel: exact, because every surface
    # voxel lies inside, the erosion sees the same (zero) neighbours at the crop border, and
    # the distance transform measures to surface voxels only.
    both = p | g
    box = []
    for axis in range(p.ndim):
        other = tuple(a for a in range(p.ndim) if a != axis)
        idx = np.flatnonzero(both.any(axis=other))
        box.append(slice(max(int(idx[0]) - 1, 0), int(idx[-1]) + 2))
    p, g = p[tuple(box)], g[tuple(box)]
    sp, sg = _surface(p), _surface(g)
    d_pg = distance_transform_edt(~sg, sampling=sampling)[sp]
    d_gp = distance_transform_edt(~sp, sampling=sampling)[sg]
    return float(np.percentile(np.hstack((d_pg, d_gp)), 95))


# ---------------------------------------------------------------------------- per volume


def volume_metrics(
    pred: Any,
    target: Any,
    num_classes: int,
    spacing: Sequence[float] | float | None = None,
    class_names: dict[int, str] | None = None,
) -> dict[str, dict[str, float]]:
    """Dice and HD95 of every foreground class in one volume.

    Parameters
    ----------
    pred, target : numpy.ndarray or torch.Tensor
        Integer class maps of one volume, (D, H, W) (a single (H, W) slice also works),
        values in ``[0, num_classes)``.
    num_classes : int
        Number of classes including background 0; at least 2.
    spacing : sequence of float or float, optional
        Voxel size per array axis, in the array's axis order (see :func:`hd95`); HD95 is in
        these units. Default 1 per axis (voxels).
    class_names : dict[int, str], optional
        Names of the foreground classes (keys of the result); default ``"class_<c>"``.

    Returns
    -------
    dict
        ``{class name: {"dsc": float, "hd95": float}}`` for c = 1 .. num_classes - 1, in
        class order. DSC is NaN when the class is absent from both maps; HD95 is NaN when it
        is absent from either (see :func:`dice_score`, :func:`hd95`).

    Raises
    ------
    ValueError
        Shapes differ, a value lies outside ``[0, num_classes)``, ``num_classes < 2``, or
        the maps are not 2-D or 3-D.
    TypeError
        A map is not of an integer dtype.

    Examples
    --------
    >>> import numpy as np
    >>> target = np.zeros((1, 4, 4), np.uint8); target[0, 1:3, 1:3] = 1
    >>> pred = np.zeros_like(target); pred[0, 1:3, 1:4] = 1
    >>> volume_metrics(pred, target, 2, spacing=(5.0, 1.0, 1.0))  # 2*4/(6+4); 1 mm off
    {'class_1': {'dsc': 0.8, 'hd95': 1.0}}
    """
    k = _check_num_classes(num_classes)
    names = _class_names(k, class_names)
    pred = _to_numpy(pred)
    target = _to_numpy(target)
    _check_pair(pred, target)
    _check_integer_numpy(pred, "pred")
    _check_integer_numpy(target, "target")
    if pred.ndim not in (2, 3):
        raise ValueError(f"pred and target must be (D, H, W) volumes or (H, W) slices, got {pred.shape}")
    _check_range_numpy(pred, "pred", k)
    _check_range_numpy(target, "target", k)
    sampling = _spacing(spacing, pred.ndim)
    out: dict[str, dict[str, float]] = {}
    for c in range(1, k):
        p, g = pred == c, target == c
        out[names[c]] = {"dsc": dice_score(p, g), "hd95": hd95(p, g, sampling)}
    return out


def summarize_volumes(per_volume: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Mean and standard deviation over volumes of per-volume metrics, ignoring NaN.

    Parameters
    ----------
    per_volume : list of dict
        One :func:`volume_metrics` result per volume: ``{class name: {metric: float}}``.
        Classes and metrics may differ between volumes; missing entries count as NaN.

    Returns
    -------
    dict
        ``"per_class"``: ``{class name: {metric: {"mean": float, "std": float, "n": int}}}``
        where ``n`` is the number of volumes with a non-NaN value, ``mean`` is
        ``np.nanmean`` and ``std`` the population standard deviation (``ddof=0``) of those
        values (both NaN when ``n == 0``); ``"mean"``: ``{metric: float}``, the mean over
        classes of the per-class means (classes with ``n == 0`` left out);
        ``"num_volumes"``: ``len(per_volume)``.

    Notes
    -----
    A volume where the prediction misses an organ has DSC 0 but HD95 NaN, so it lowers the
    mean DSC but is left out of the mean HD95; compare ``n`` of the two metrics.

    Raises
    ------
    ValueError
        ``per_volume`` is empty.

    Examples
    --------
    >>> s = summarize_volumes([{"liver": {"dsc": 0.75, "hd95": 2.0}},
    ...                        {"liver": {"dsc": 0.25, "hd95": float("nan")}}])
    >>> s["per_class"]["liver"]["dsc"]
    {'mean': 0.5, 'std': 0.25, 'n': 2}
    >>> s["per_class"]["liver"]["hd95"]
    {'mean': 2.0, 'std': 0.0, 'n': 1}
    >>> s["mean"], s["num_volumes"]
    ({'dsc': 0.5, 'hd95': 2.0}, 2)
    """
    if not per_volume:
        raise ValueError("summarize_volumes needs at least one volume")
    classes: list[str] = []
    metrics: list[str] = []
    for vol in per_volume:
        if not isinstance(vol, Mapping):
            raise TypeError(f"each volume's result must be a dict, got {type(vol).__name__}")
        for name, values in vol.items():
            if name not in classes:
                classes.append(name)
            for metric in values:
                if metric not in metrics:
                    metrics.append(metric)
    per_class: dict[str, dict[str, dict[str, float | int]]] = {}
    for name in classes:
        per_class[name] = {}
        for metric in metrics:
            v = np.array(
                [float(vol.get(name, {}).get(metric, np.nan)) for vol in per_volume], dtype=np.float64
            )
            v = v[~np.isnan(v)]
            n = int(v.size)
            mean = float(v.mean()) if n else float("nan")
            std = float(v.std()) if n else float("nan")
            per_class[name][metric] = {"mean": mean, "std": std, "n": n}
    overall = {m: _nanmean([per_class[c][m]["mean"] for c in classes]) for m in metrics}
    return {"per_class": per_class, "mean": overall, "num_volumes": len(per_volume)}
