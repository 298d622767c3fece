"""supercl.eval.metrics against hand-computed values and independent implementations.

References written here, sharing no code with the module:
- ``brute_hd95``: medpy's HD95 definition with an explicit surface (a mask voxel with a
  face neighbour outside the mask or outside the array) and all pairwise distances between
  surface-voxel coordinates (``scipy.spatial.distance.cdist``);
- ``monai_dice``: MONAI's ``DiceMetric`` rule on one-hot (B, C, ...) tensors.
"""

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from scipy.spatial.distance import cdist

from supercl.eval.metrics import (
    SegmentationMetrics,
    dice_score,
    hd95,
    jaccard_score,
    summarize_volumes,
    volume_metrics,
)

# ------------------------------------------------------------------------- references


def brute_surface(mask):
    """Mask voxels with at least one face neighbour outside the mask (or the array)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    surface = np.zeros_like(mask)
    for axis in range(mask.ndim):
        for step in (-1, 1):
            neighbour = np.roll(padded, step, axis=axis)[inner]
            surface |= mask & ~neighbour
    return surface


def brute_hd95(a, b, spacing=None):
    spacing = np.ones(a.ndim) if spacing is None else np.asarray(spacing, dtype=float)
    pa = np.argwhere(brute_surface(a)) * spacing
    pb = np.argwhere(brute_surface(b)) * spacing
    d = cdist(pa, pb)
    return float(np.percentile(np.hstack((d.min(axis=1), d.min(axis=0))), 95))


def monai_dice(pred, target, num_classes):
    """MONAI DiceMetric(include_background=False, reduction='none', ignore_empty=True) on
    one-hot (B, C, H, W) tensors: (B, C-1), NaN where the ground truth is empty."""
    p = torch.nn.functional.one_hot(torch.as_tensor(pred).long(), num_classes).movedim(-1, 1).bool()
    y = torch.nn.functional.one_hot(torch.as_tensor(target).long(), num_classes).movedim(-1, 1).bool()
    out = torch.full((p.shape[0], num_classes - 1), float("nan"), dtype=torch.float64)
    for b in range(p.shape[0]):
        for c in range(1, num_classes):
            y_o = y[b, c].sum()
            if y_o > 0:
                inter = torch.masked_select(y[b, c], p[b, c]).sum().double()
                out[b, c - 1] = 2.0 * inter / (y_o + p[b, c].sum()).double()
    return out.numpy()


def random_blobs(rng, shape, fill=0.5, smooth=1.5):
    """Smooth random regions (with interiors) that also touch the array border."""
    field = gaussian_filter(rng.standard_normal(shape), smooth)
    return field > np.quantile(field, 1.0 - fill)


def random_labels(rng, shape, num_classes):
    field = gaussian_filter(rng.standard_normal((num_classes,) + shape), (0,) + (2.0,) * len(shape))
    return field.argmax(axis=0)


# ------------------------------------------------------------------ SegmentationMetrics


def test_hand_computed_three_classes():
    # rows: target, pred over 8 pixels
    target = np.array([[0, 0, 1, 1, 1, 2, 2, 0]])
    pred = np.array([[0, 1, 1, 1, 2, 2, 0, 0]])
    # confusion (rows target, cols pred):
    #   t0: p0 at cols 0,7; p1 at col 1           -> [2, 1, 0]
    #   t1: p1 at cols 2,3; p2 at col 4           -> [0, 2, 1]
    #   t2: p2 at col 5; p0 at col 6              -> [1, 0, 1]
    # class 1: I=2, |P|=3, |G|=3 -> DSC 4/6, JC 2/4
    # class 2: I=1, |P|=2, |G|=2 -> DSC 2/4, JC 1/3
    m = SegmentationMetrics(3, class_names={1: "liver", 2: "spleen"})
    m.update(pred, target)
    r = m.compute()
    assert r["confusion"] == [[2, 1, 0], [0, 2, 1], [1, 0, 1]]
    assert all(type(v) is int for row in r["confusion"] for v in row)
    assert r["dsc"] == pytest.approx({"liver": 4 / 6, "spleen": 2 / 4})
    assert r["jc"] == pytest.approx({"liver": 2 / 4, "spleen": 1 / 3})
    assert r["mean_dsc"] == pytest.approx((4 / 6 + 2 / 4) / 2)
    assert r["mean_jc"] == pytest.approx((2 / 4 + 1 / 3) / 2)
    assert list(r["dsc"]) == ["liver", "spleen"]
    assert m.confusion.dtype == np.int64


def test_set_dsc_is_not_mean_of_slice_dsc():
    # slice A: organ of 4 px predicted exactly         -> I=4, P=4, G=4, slice DSC 1
    # slice B: organ of 1 px, 3 px predicted elsewhere -> I=0, P=3, G=1, slice DSC 0
    # set: DSC = 2*(4+0) / ((4+3) + (4+1)) = 8/12;  JC = 4 / (12 - 4) = 1/2
    a_t = np.zeros((4, 4), np.int64)
    a_t[:2, :2] = 1
    a_p = a_t.copy()
    b_t = np.zeros((4, 4), np.int64)
    b_t[3, 3] = 1
    b_p = np.zeros((4, 4), np.int64)
    b_p[0, :3] = 1
    m = SegmentationMetrics(2)
    m.update(a_p[None], a_t[None])
    m.update(torch.from_numpy(b_p[None]), torch.from_numpy(b_t[None]))
    r = m.compute()
    per_slice = [dice_score(a_p, a_t), dice_score(b_p, b_t)]
    assert per_slice == [1.0, 0.0]
    assert r["dsc"]["class_1"] == pytest.approx(8 / 12)
    assert r["jc"]["class_1"] == pytest.approx(1 / 2)
    assert r["dsc"]["class_1"] != pytest.approx(np.mean(per_slice))
    # one update with both slices as a batch gives the same totals
    m2 = SegmentationMetrics(2)
    m2.update(np.stack([a_p, b_p]), np.stack([a_t, b_t]))
    assert m2.compute()["confusion"] == r["confusion"]


def test_against_onehot_sums_and_monai_per_image():
    rng = np.random.default_rng(0)
    k = 4
    target = np.stack([random_labels(rng, (33, 29), k) for _ in range(5)])
    pred = np.where(rng.random(target.shape) < 0.15, rng.integers(0, k, target.shape), target)
    target[1][target[1] == 3] = 0  # class 3 absent from one ground-truth slice
    m = SegmentationMetrics(k)
    for b in range(5):
        m.update(torch.from_numpy(pred[b]), torch.from_numpy(target[b]))
    r = m.compute()
    # global one-hot sums
    p = torch.nn.functional.one_hot(torch.from_numpy(pred), k).sum(dim=(0, 1, 2)).double()
    y = torch.nn.functional.one_hot(torch.from_numpy(target), k).sum(dim=(0, 1, 2)).double()
    inter = torch.nn.functional.one_hot(torch.from_numpy(np.where(pred == target, pred, -1) + 1), k + 1)
    inter = inter.sum(dim=(0, 1, 2))[1:].double()
    for c in range(1, k):
        assert r["dsc"][f"class_{c}"] == pytest.approx(float(2 * inter[c] / (p[c] + y[c])), abs=1e-12)
        assert r["jc"][f"class_{c}"] == pytest.approx(float(inter[c] / (p[c] + y[c] - inter[c])), abs=1e-12)
        d = r["dsc"][f"class_{c}"]
        assert r["jc"][f"class_{c}"] == pytest.approx(d / (2 - d))
    # per-image dice_score equals MONAI's wherever the ground truth is present
    ref = monai_dice(pred, target, k)
    ours = np.array([[dice_score(pred[b] == c, target[b] == c) for c in range(1, k)] for b in range(5)])
    present = ~np.isnan(ref)
    assert not present.all()
    np.testing.assert_allclose(ours[present], ref[present], rtol=0, atol=1e-12)
    # the documented difference: GT empty but predicted -> 0 here, NaN in MONAI
    assert ours[1, 2] == 0.0 and math.isnan(ref[1, 2])


@pytest.mark.parametrize("np_dtype", [np.uint8, np.int16, np.int32, np.int64, np.uint16])
def test_dtypes_and_input_kinds_agree(np_dtype):
    rng = np.random.default_rng(1)
    target = rng.integers(0, 3, (2, 9, 7)).astype(np_dtype)
    pred = rng.integers(0, 3, (2, 9, 7)).astype(np_dtype)
    results = []
    for p, t in [
        (pred, target),
        (torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(target.astype(np.int64))),
        (torch.from_numpy(pred.astype(np.int64)), target),  # mixed: numpy moved to the tensor's device
        (pred.tolist(), target.tolist()),
    ]:
        m = SegmentationMetrics(3)
        m.update(p, t)
        results.append(m.compute()["confusion"])
    assert all(r == results[0] for r in results)
    assert sum(map(sum, results[0])) == pred.size


def test_absent_class_is_nan_and_left_out_of_mean():
    m = SegmentationMetrics(4)
    m.update(np.array([1, 1, 2, 0]), np.array([1, 0, 2, 2]))
    r = m.compute()
    # class 1: I=1, P=2, G=1 -> 2/3; class 2: I=1, P=1, G=2 -> 2/3; class 3 absent -> NaN
    assert math.isnan(r["dsc"]["class_3"]) and math.isnan(r["jc"]["class_3"])
    assert r["mean_dsc"] == pytest.approx(2 / 3)
    # absent in GT but predicted: 0, counted in the mean
    m.update(np.array([3]), np.array([0]))
    r = m.compute()
    assert r["dsc"]["class_3"] == 0.0
    assert r["mean_dsc"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_nothing_seen_gives_nan_without_warnings():
    m = SegmentationMetrics(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.update(np.zeros((0, 4), np.int64), np.zeros((0, 4), np.int64))
        m.update(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
        r = m.compute()
    assert math.isnan(r["mean_dsc"]) and math.isnan(r["mean_jc"])
    assert all(math.isnan(v) for v in r["dsc"].values())
    m.update(np.ones(3, np.int64), np.ones(3, np.int64))
    assert m.compute()["dsc"]["class_1"] == 1.0
    m.reset()
    assert m.compute()["confusion"] == [[0] * 3] * 3


def test_class_names():
    m = SegmentationMetrics(3, class_names={0: "background", 2: "spleen"})
    assert list(m.compute()["dsc"]) == ["class_1", "spleen"]
    with pytest.raises(ValueError, match="class_names"):
        SegmentationMetrics(3, class_names={3: "x"})
    # repeated names are made unique (results are keyed by name)
    m = SegmentationMetrics(4, class_names={1: "a", 2: "a", 3: "a_2"})
    assert list(m.compute()["dsc"]) == ["a", "a_2", "a_2_3"]


def test_errors():
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationMetrics(1)
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationMetrics(0)
    with pytest.raises(TypeError, match="num_classes"):
        SegmentationMetrics(2.0)
    m = SegmentationMetrics(3)
    with pytest.raises(ValueError, match=r"pred \(2, 3\) and target \(3, 2\)"):
        m.update(np.zeros((2, 3), np.int64), np.zeros((3, 2), np.int64))
    with pytest.raises(ValueError, match=r"pred \(2, 3\) and target \(3, 2\)"):
        m.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    for bad in (np.zeros(4, np.float32), np.zeros(4, bool)):
        with pytest.raises(TypeError, match="pred"):
            m.update(bad, np.zeros(4, np.int64))
        with pytest.raises(TypeError, match="target"):
            m.update(np.zeros(4, np.int64), bad)
    for bad in (torch.zeros(4), torch.zeros(4, dtype=torch.bool)):
        with pytest.raises(TypeError, match="pred"):
            m.update(bad, torch.zeros(4, dtype=torch.long))
        with pytest.raises(TypeError, match="target"):
            m.update(torch.zeros(4, dtype=torch.long), bad)
    for value in (-1, 3):
        with pytest.raises(ValueError, match=r"pred values must lie in \[0, 3\)"):
            m.update(np.array([0, value]), np.array([0, 0]))
        with pytest.raises(ValueError, match=r"target values must lie in \[0, 3\)"):
            m.update(torch.tensor([0, 0]), torch.tensor([0, value]))
    # nothing was added by the failed updates
    assert m.compute()["confusion"] == [[0] * 3] * 3


# ------------------------------------------------------------------ dice / jaccard


def test_dice_and_jaccard_hand_values():
    p = np.array([[1, 1, 1], [0, 0, 0]], bool)
    g = np.array([[0, 1, 1], [1, 0, 0]], bool)
    # I = 2, |P| = 3, |G| = 3, union 4
    assert dice_score(p, g) == pytest.approx(4 / 6)
    assert jaccard_score(p, g) == pytest.approx(2 / 4)
    assert dice_score(torch.from_numpy(p), torch.from_numpy(g)) == pytest.approx(4 / 6)
    assert dice_score(p.astype(np.uint8) * 7, g) == pytest.approx(4 / 6)  # nonzero is foreground
    assert dice_score(p, p) == 1.0 and jaccard_score(p, p) == 1.0
    assert dice_score(p, ~p) == 0.0 and jaccard_score(p, ~p) == 0.0


def test_dice_and_jaccard_empty_conventions():
    empty = np.zeros((3, 3), bool)
    some = empty.copy()
    some[1, 1] = True
    assert math.isnan(dice_score(empty, empty)) and math.isnan(jaccard_score(empty, empty))
    assert dice_score(some, empty) == 0.0 and dice_score(empty, some) == 0.0
    assert jaccard_score(some, empty) == 0.0


def test_dice_shape_mismatch():
    with pytest.raises(ValueError, match="pred_mask and gt_mask"):
        dice_score(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="pred_mask and gt_mask"):
        jaccard_score(np.zeros(3), np.zeros(4))


# -------------------------------------------------------------------------------- hd95


def test_hd95_hand_values():
    a = np.zeros((1, 5), bool)
    a[0, 0] = True
    b = np.zeros((1, 5), bool)
    b[0, 0] = b[0, 3] = True
    # every voxel is surface. a->b: [0]; b->a: [0, 3]. Pooled [0, 0, 3]:
    # 95th percentile at rank 0.95 * 2 = 1.9 -> 0 + 0.9 * (3 - 0) = 2.7
    assert hd95(a, b) == pytest.approx(2.7)
    assert hd95(b, a) == pytest.approx(2.7)
    assert hd95(a, b, spacing=(1.0, 2.0)) == pytest.approx(5.4)
    assert hd95(a, b, spacing=3.0) == pytest.approx(8.1)  # one number for every axis


def test_hd95_cube_shift_3d():
    # 5x5x5 cube (surface: its 98 outer voxels) vs the same cube shifted by 2 along axis 0.
    a = np.zeros((12, 9, 9), bool)
    a[2:7, 2:7, 2:7] = True
    b = np.roll(a, 2, axis=0)
    # Every voxel of a's face z=2 (25 voxels) is 2 slices from b's surface (b's face z=4 or its
    # side walls from z=4 on), as is every voxel of b's face z=8; nothing is farther. Those are
    # 50 of the 98 + 98 pooled distances (> 5 %), so HD95 = 2 voxels = 2 * spacing[0].
    assert hd95(a, b) == pytest.approx(2.0)
    assert hd95(a, b, spacing=(1.5, 0.5, 0.5)) == pytest.approx(3.0)
    assert hd95(a, a) == 0.0


def test_hd95_empty_is_nan():
    a = np.zeros((4, 4), bool)
    b = a.copy()
    b[1, 1] = True
    assert math.isnan(hd95(a, b)) and math.isnan(hd95(b, a)) and math.isnan(hd95(a, a))


@pytest.mark.parametrize("seed", range(6))
def test_hd95_matches_brute_force_2d(seed):
    rng = np.random.default_rng(seed)
    shape = (17 + seed, 23 - seed)
    if seed % 3 == 0:  # salt-and-pepper masks: many isolated voxels, border contact
        a, b = rng.random(shape) < 0.2, rng.random(shape) < 0.1
    else:
        a, b = random_blobs(rng, shape, 0.3), random_blobs(rng, shape, 0.25, smooth=2.5)
    spacing = (0.7, 1.9) if seed % 2 else None
    assert hd95(a, b, spacing) == pytest.approx(brute_hd95(a, b, spacing), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_hd95_matches_brute_force_3d(seed):
    rng = np.random.default_rng(100 + seed)
    shape = (7, 11 + seed, 13)
    a = random_blobs(rng, shape, 0.2)
    b = random_blobs(rng, shape, 0.3) if seed != 3 else a.copy()
    if seed == 3:  # a local change: most pooled distances 0, the tail from the changed box
        b[1:4, 3:10, 2:11] ^= True
    spacing = (2.5, 0.8, 1.1)
    assert hd95(a, b, spacing) == pytest.approx(brute_hd95(a, b, spacing), rel=1e-12, abs=1e-12)


def test_hd95_small_objects_in_large_volume_use_crop_correctly():
    a = np.zeros((40, 64, 64), bool)
    b = np.zeros((40, 64, 64), bool)
    a[10:13, 20:26, 30:33] = True
    b[11:15, 22:27, 29:31] = True
    b[0, 0, 0] = True  # a far outlier in a corner
    spacing = (3.0, 0.9, 0.9)
    assert hd95(a, b, spacing) == pytest.approx(brute_hd95(a, b, spacing), rel=1e-12)
    assert hd95(torch.from_numpy(a), torch.from_numpy(b), spacing) == hd95(a, b, spacing)


def test_hd95_errors():
    a = np.ones((3, 3), bool)
    with pytest.raises(ValueError, match="pred_mask and gt_mask"):
        hd95(a, np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="spacing"):
        hd95(a, a, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        hd95(a, a, spacing=(1.0, 0.0))
    with pytest.raises(ValueError, match="spacing"):
        hd95(a, a, spacing=(1.0, float("nan")))


# ------------------------------------------------------------------ per volume, summary


def test_volume_metrics_hand_and_reference():
    target = np.zeros((3, 6, 6), np.uint8)
    target[1, 1:4, 1:4] = 1  # 9 voxels
    target[0:2, 4:6, 4:6] = 2  # 8 voxels
    pred = np.zeros_like(target)
    pred[1, 1:4, 1:5] = 1  # 12 voxels, 9 shared; class 2 missed, class 3 absent in both
    r = volume_metrics(pred, target, 4, spacing=(4.0, 1.0, 1.0), class_names={1: "liver"})
    assert list(r) == ["liver", "class_2", "class_3"]
    assert r["liver"]["dsc"] == pytest.approx(2 * 9 / (12 + 9))
    assert r["liver"]["hd95"] == pytest.approx(brute_hd95(pred == 1, target == 1, (4.0, 1.0, 1.0)))
    assert r["class_2"]["dsc"] == 0.0 and math.isnan(r["class_2"]["hd95"])
    assert math.isnan(r["class_3"]["dsc"]) and math.isnan(r["class_3"]["hd95"])
    rng = np.random.default_rng(5)
    t = random_labels(rng, (5, 12, 10), 3)
    p = np.where(rng.random(t.shape) < 0.1, 0, t)
    r = volume_metrics(torch.from_numpy(p), torch.from_numpy(t), 3, spacing=(2.0, 0.5, 0.5))
    for c in (1, 2):
        assert r[f"class_{c}"]["dsc"] == dice_score(p == c, t == c)
        assert r[f"class_{c}"]["hd95"] == pytest.approx(brute_hd95(p == c, t == c, (2.0, 0.5, 0.5)))


def test_volume_metrics_errors():
    v = np.zeros((2, 3, 4), np.int64)
    with pytest.raises(ValueError, match="pred"):
        volume_metrics(v, np.zeros((2, 4, 3), np.int64), 2)
    with pytest.raises(TypeError, match="pred"):
        volume_metrics(v.astype(float), v, 2)
    with pytest.raises(ValueError, match="target values"):
        volume_metrics(v, v + 2, 2)
    with pytest.raises(ValueError, match="num_classes"):
        volume_metrics(v, v, 1)
    with pytest.raises(ValueError, match="volumes"):
        volume_metrics(v[None], v[None], 2)
    with pytest.raises(ValueError, match="spacing"):
        volume_metrics(v, v, 2, spacing=(1.0, 1.0))


def test_summarize_volumes():
    vols = [
        {"liver": {"dsc": 0.8, "hd95": 2.0}, "spleen": {"dsc": 0.5, "hd95": 4.0}},
        {"liver": {"dsc": 0.6, "hd95": float("nan")}, "spleen": {"dsc": float("nan"), "hd95": float("nan")}},
        {"liver": {"dsc": 0.4, "hd95": 6.0}},  # spleen missing: counts as NaN
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = summarize_volumes(vols)
    liver, spleen = s["per_class"]["liver"], s["per_class"]["spleen"]
    assert liver["dsc"]["mean"] == pytest.approx(0.6)
    assert liver["dsc"]["std"] == pytest.approx(np.std([0.8, 0.6, 0.4]))
    assert liver["dsc"]["n"] == 3
    assert liver["hd95"] == pytest.approx({"mean": 4.0, "std": 2.0, "n": 2})
    assert spleen["dsc"] == {"mean": 0.5, "std": 0.0, "n": 1}
    assert s["mean"] == pytest.approx({"dsc": 0.55, "hd95": 4.0})
    assert s["num_volumes"] == 3
    s = summarize_volumes([{"x": {"dsc": float("nan"), "hd95": float("nan")}}])
    assert s["per_class"]["x"]["dsc"]["n"] == 0 and math.isnan(s["per_class"]["x"]["dsc"]["mean"])
    assert math.isnan(s["mean"]["dsc"])
    with pytest.raises(ValueError):
        summarize_volumes([])
    with pytest.raises(TypeError):
        summarize_volumes([[0.5]])


def test_summarize_real_volume_metrics():
    rng = np.random.default_rng(7)
    per_volume = []
    for _ in range(3):
        t = random_labels(rng, (4, 10, 10), 3)
        p = np.where(rng.random(t.shape) < 0.2, 0, t)
        per_volume.append(volume_metrics(p, t, 3, class_names={1: "a", 2: "b"}))
    s = summarize_volumes(per_volume)
    assert s["per_class"]["a"]["dsc"]["mean"] == pytest.approx(np.mean([v["a"]["dsc"] for v in per_volume]))
    assert s["per_class"]["b"]["hd95"]["std"] == pytest.approx(np.std([v["b"]["hd95"] for v in per_volume]))


# ------------------------------------------------- the libraries each metric follows (issue 25)
# DSC and Jaccard are MONAI's DiceMetric and MeanIoU where the ground truth is not empty; HD95 is
# medpy's hd95 exactly, and MONAI's compute_hausdorff_distance(percentile=95) where the two
# directed distance distributions agree. Each test is skipped, with the reason, where its
# library is missing (`pip install 'supercl[test]'` brings them).


def _monai_metrics():
    return pytest.importorskip("monai.metrics", reason="MONAI is not installed "
                               "(pip install monai, or the [test] extra)")


def _medpy_hd95():
    return pytest.importorskip("medpy.metric.binary", reason="medpy is not installed "
                               "(pip install medpy, or the [test] extra)").hd95


def _onehot(mask):
    """A binary mask as MONAI's one-hot (B=1, C=2, ...) float tensor."""
    m = torch.as_tensor(np.asarray(mask, dtype=bool))
    return torch.stack([~m, m]).unsqueeze(0).float()


def _mask_pairs(ndim, n, seed):
    rng = np.random.default_rng(seed)
    for i in range(n):
        shape = (13 + i, 19) if ndim == 2 else (6 + i % 3, 15, 17)
        a = random_blobs(rng, shape, 0.15 + 0.05 * i, smooth=1.5 + 0.3 * i)
        b = random_blobs(rng, shape, 0.3 - 0.03 * i, smooth=2.0)
        yield a, b


@pytest.mark.parametrize("ndim", [2, 3])
def test_dice_and_jaccard_match_monai(ndim):
    metrics = _monai_metrics()
    dice = metrics.DiceMetric(include_background=False, reduction="none")
    iou = metrics.MeanIoU(include_background=False, reduction="none")
    for a, b in _mask_pairs(ndim, 5, seed=ndim):
        assert b.any()
        y_pred, y = _onehot(a), _onehot(b)
        assert dice_score(a, b) == pytest.approx(float(dice(y_pred, y)[0, 0]), rel=1e-6)
        assert jaccard_score(a, b) == pytest.approx(float(iou(y_pred, y)[0, 0]), rel=1e-6)


def test_empty_mask_conventions_against_monai():
    """Where the definitions differ, as the module says: an empty ground truth."""
    metrics = _monai_metrics()
    empty, some = np.zeros((5, 6), bool), np.zeros((5, 6), bool)
    some[1:3, 2:5] = True
    for ignore_empty, both_empty, false_positive in ((True, "nan", "nan"), (False, 1.0, 0.0)):
        for metric in (metrics.DiceMetric(include_background=False, ignore_empty=ignore_empty),
                       metrics.MeanIoU(include_background=False, ignore_empty=ignore_empty)):
            got = [float(metric(_onehot(p), _onehot(g))[0, 0]) for p, g in
                   ((empty, empty), (some, empty))]
            want = [both_empty, false_positive]
            assert [("nan" if math.isnan(v) else v) for v in got] == want, (metric, ignore_empty)
    # supercl: both empty -> NaN (left out of means); a false positive on an absent organ -> 0
    assert math.isnan(dice_score(empty, empty)) and math.isnan(jaccard_score(empty, empty))
    assert dice_score(some, empty) == 0.0 and jaccard_score(some, empty) == 0.0


@pytest.mark.parametrize("ndim", [2, 3])
def test_dice_and_jaccard_match_medpy(ndim):
    binary = pytest.importorskip("medpy.metric.binary", reason="medpy is not installed "
                                 "(pip install medpy, or the [test] extra)")
    for a, b in _mask_pairs(ndim, 5, seed=30 + ndim):
        assert dice_score(a, b) == pytest.approx(binary.dc(a, b), rel=1e-12)
        assert jaccard_score(a, b) == pytest.approx(binary.jc(a, b), rel=1e-12)


@pytest.mark.parametrize("ndim, spacing", [(2, None), (2, (0.7, 1.9)), (3, (2.5, 0.8, 1.1))])
def test_hd95_is_medpys(ndim, spacing):
    medpy_hd95 = _medpy_hd95()
    for a, b in _mask_pairs(ndim, 4, seed=10 + ndim):
        assert hd95(a, b, spacing) == pytest.approx(
            medpy_hd95(a, b, voxelspacing=spacing), rel=1e-12, abs=1e-12)
    # medpy raises on an empty mask; supercl gives NaN (a class absent from a volume)
    empty = np.zeros_like(a)
    with pytest.raises(RuntimeError):
        medpy_hd95(empty, b)
    assert math.isnan(hd95(empty, b))


@pytest.mark.parametrize("spacing", [None, (2.0, 0.5, 0.75)])
def test_hd95_against_monai(spacing):
    """MONAI finds the same surfaces and the same distances (in float32), with the spacing in
    the array's axis order as here; it differs only in the last step: MONAI's
    compute_hausdorff_distance(percentile=95) is the larger of the two directed 95th
    percentiles, medpy's hd95 (and supercl's) the 95th percentile of both directions pooled.
    Neither bounds the other (numpy's linear interpolation lands on different neighbours in
    the pooled list), so the two are compared through MONAI's own directed distances."""
    metrics = _monai_metrics()
    from monai.metrics.utils import get_edge_surface_distance

    cube = np.zeros((12, 14, 16), bool)
    cube[3:8, 4:9, 5:11] = True
    pairs = [(cube, np.roll(cube, (1, 2, -2), axis=(0, 1, 2)))] + list(_mask_pairs(3, 4, seed=20))
    for a, b in pairs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # MONAI's own deprecation notices
            _, (d_ab, d_ba), _ = get_edge_surface_distance(
                torch.as_tensor(a), torch.as_tensor(b), spacing=spacing, symmetric=True)
            monai = float(metrics.compute_hausdorff_distance(
                _onehot(a), _onehot(b), include_background=False, percentile=95,
                spacing=None if spacing is None else list(spacing))[0, 0])
        d_ab, d_ba = d_ab.double().numpy(), d_ba.double().numpy()
        assert hd95(a, b, spacing) == pytest.approx(
            np.percentile(np.hstack((d_ab, d_ba)), 95), rel=1e-6)
        assert monai == pytest.approx(
            max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)), rel=1e-6)
