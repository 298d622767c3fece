"""Tests of phantom v2 (supercl.data.phantom_v2): classes differ by shape, position, texture.

Each property that the module docstring promises has a test here. Volumes are
small (at most 24 x 96 x 96) and cached per module, so that the file runs in
seconds.
"""

import json

import numpy as np
import pytest
from scipy import ndimage

from supercl.data import phantom_v2_slice, phantom_v2_volume, write_msd
from supercl.data import phantom_v2 as v2
from supercl.data.nifti import load_case, scan_dataset

N = v2.MAX_ORGANS
SHAPE = (24, 96, 96)
SEEDS = (0, 1, 2, 3)
C = {name: k for k, name in enumerate(v2.CLASS_NAMES, start=1)}


@pytest.fixture(scope="module")
def ct():
    """Noisy CT volumes with all classes, one per seed."""
    return {s: phantom_v2_volume(*SHAPE, n_organs=N, seed=s) for s in SEEDS}


@pytest.fixture(scope="module")
def ct_clean():
    return phantom_v2_volume(*SHAPE, n_organs=N, seed=0, noise=False)


@pytest.fixture(scope="module")
def mr():
    return {s: phantom_v2_volume(*SHAPE, n_organs=N, seed=s, modality="MR") for s in SEEDS[:3]}


def _interior(lab, c, k=3):
    """Voxels of class ``c`` at least ``k // 2`` pixels in-plane from its boundary."""
    return ndimage.binary_erosion(lab == c, np.ones((1, k, k), dtype=bool))


def _overlap(a, b, lo, hi, step):
    """Overlap coefficient sum(min(p, q)) of the histograms of ``a`` and ``b`` (1 = identical)."""
    bins = np.arange(lo, hi + step, step)
    p = np.histogram(a, bins)[0] / a.size
    q = np.histogram(b, bins)[0] / b.size
    return float(np.minimum(p, q).sum())


def _lag_corr(img, mask, lag, axis):
    """Correlation of ``img`` with itself shifted by ``lag`` along ``axis`` inside ``mask``."""
    n = img.shape[axis]
    a_sl = [slice(None)] * img.ndim
    b_sl = [slice(None)] * img.ndim
    a_sl[axis], b_sl[axis] = slice(0, n - lag), slice(lag, n)
    both = mask[tuple(a_sl)] & mask[tuple(b_sl)]
    return float(np.corrcoef(img[tuple(a_sl)][both], img[tuple(b_sl)][both])[0, 1])


# ----------------------------------------------------------------------------
# determinism, shapes, dtypes, sizes
# ----------------------------------------------------------------------------

def test_shapes_dtypes_and_labels(ct):
    img, lab = ct[0]
    assert img.shape == SHAPE and lab.shape == SHAPE
    assert img.dtype == np.float32 and lab.dtype == np.uint8
    assert np.isfinite(img).all()
    assert int(lab.max()) <= N
    assert img.min() > -1100 and img[lab > 0].mean() > -200


def test_deterministic_per_seed():
    a = phantom_v2_volume(6, 40, 44, seed=5)
    b = phantom_v2_volume(6, 40, 44, seed=np.int64(5))
    c = phantom_v2_volume(6, 40, 44, seed=np.random.SeedSequence(5))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a, c):
        np.testing.assert_array_equal(x, y)
    d = phantom_v2_volume(6, 40, 44, seed=6)
    assert not np.array_equal(a[1], d[1])
    # noise and bias_field do not change the geometry (the random streams are separate)
    np.testing.assert_array_equal(phantom_v2_volume(6, 40, 44, seed=5, noise=False)[1], a[1])
    m1 = phantom_v2_volume(6, 40, 44, seed=5, modality="MR")
    np.testing.assert_array_equal(m1[1], a[1])


@pytest.mark.parametrize("shape", [(3, 37, 41), (1, 1, 1), (2, 5, 123), (1, 17, 9), (5, 64, 3)])
@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_odd_sizes(shape, modality):
    img, lab = phantom_v2_volume(*shape, seed=1, modality=modality)
    assert img.shape == shape and lab.shape == shape
    assert img.dtype == np.float32 and lab.dtype == np.uint8
    assert np.isfinite(img).all() and int(lab.max()) <= 5
    if modality == "MR":
        assert img.min() >= 0


def test_odd_size_keeps_organs():
    _, lab = phantom_v2_volume(3, 37, 41, n_organs=4, seed=0)
    assert set(np.unique(lab).tolist()) == {0, 1, 2, 3, 4}


def test_every_class_present(ct):
    for seed, (_, lab) in ct.items():
        present = set(np.unique(lab).tolist())
        assert present == set(range(N + 1)), (seed, present)
    _, lab3 = phantom_v2_volume(*SHAPE, n_organs=3, seed=0)
    assert set(np.unique(lab3).tolist()) == {0, 1, 2, 3}
    # the classes that are drawn have the same geometry whatever n_organs (up to occlusion
    # by the later, smaller classes)
    lab7 = ct[0][1]
    for c in (1, 2, 3):
        assert ((lab3 == c) & (lab7 == c)).sum() >= 0.9 * (lab7 == c).sum()


def test_slice_convenience():
    img, lab = phantom_v2_slice(96, 112, seed=3)
    assert img.shape == (96, 112) and lab.shape == (96, 112)
    assert img.dtype == np.float32 and lab.dtype == np.uint8
    assert set(np.unique(lab).tolist()) == {0, 1, 2, 3, 4, 5}
    img2, lab2 = phantom_v2_slice(96, 112, seed=3)
    np.testing.assert_array_equal(img, img2)
    _, top = phantom_v2_slice(64, 64, position=0.0, seed=3, n_organs=7)
    _, bottom = phantom_v2_slice(64, 64, position=1.0, seed=3, n_organs=7)
    assert C["liver"] in top and C["liver"] not in bottom
    assert C["psoas"] in bottom and C["psoas"] not in top


# ----------------------------------------------------------------------------
# shape, position, z extent
# ----------------------------------------------------------------------------

def test_position_priors_stable_and_distinct(ct):
    """Class centroids (z, y, |x - centre|) normalised by the volume size: stable across
    seeds (sd < 0.03) and far apart between classes (> 4 sd), with the anatomical sides."""
    d, h, w = SHAPE
    cents = np.zeros((len(SEEDS), N, 3))
    for i, (_, lab) in enumerate(ct.values()):
        for c in range(1, N + 1):
            zz, yy, xx = np.nonzero(lab == c)
            cents[i, c - 1] = (zz.mean() / d, yy.mean() / h, np.abs(xx / (w - 1) - 0.5).mean())
    mean, sd = cents.mean(0), cents.std(0)
    assert sd.max() < 0.03, sd
    dist = np.linalg.norm(mean[:, None] - mean[None], axis=-1)
    off = dist[~np.eye(N, dtype=bool)]
    assert off.min() > max(4 * sd.max(), 0.05), dist
    _, lab = ct[0]
    xs = {c: np.nonzero(lab == c)[2].mean() / (w - 1) for c in range(1, N + 1)}
    ys = {c: np.nonzero(lab == c)[1].mean() / (h - 1) for c in range(1, N + 1)}
    assert xs[C["liver"]] < 0.45 < 0.55 < xs[C["spleen"]]          # patient right / left
    assert ys[C["gallbladder"]] < ys[C["liver"]] < ys[C["kidneys"]]  # anterior .. posterior
    assert mean[C["liver"] - 1, 0] < mean[C["kidneys"] - 1, 0] < mean[C["psoas"] - 1, 0]  # z


def test_organs_appear_and_disappear_along_z(ct):
    d = SHAPE[0]
    for _, lab in ct.values():
        area = np.stack([(lab == c).sum(axis=(1, 2)) for c in range(1, N + 1)])  # (N, D)
        assert area[C["aorta"] - 1].min() > 0                       # the tube spans all slices
        for c in (C["spleen"], C["kidneys"], C["gallbladder"], C["pancreas"], C["psoas"]):
            assert (area[c - 1] == 0).any() and (area[c - 1] > 0).any()
        assert area[C["liver"] - 1, 0] > 0 and area[C["liver"] - 1, d - 1] == 0
        # smooth along z: consecutive slices of a big organ overlap well (Dice > 0.6)
        liver = lab == C["liver"]
        for k in range(d - 1):
            a, b = liver[k], liver[k + 1]
            if a.sum() > 50 and b.sum() > 50:
                assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.6


def test_shape_families_differ(ct):
    """Solidity (area / convex-hull area) and elongation of the 2D cross-sections."""
    from scipy.spatial import ConvexHull

    def stats(mask2d):
        lab, n = ndimage.label(mask2d)
        out = []
        for i in range(1, n + 1):
            pts = np.argwhere(lab == i).astype(float)
            if len(pts) < 12:
                continue
            hull = ConvexHull(pts)
            ev = np.linalg.eigvalsh(np.cov(pts.T))
            out.append((len(pts) / hull.volume, np.sqrt(ev[1] / max(ev[0], 1e-9)), n))
        return out

    per = {c: [] for c in range(1, N + 1)}
    for _, lab in ct.values():
        for k in range(SHAPE[0]):
            for c in range(1, N + 1):
                per[c] += stats(lab[k] == c)
    solidity = {c: np.median([s[0] for s in v]) for c, v in per.items() if v}
    elong = {c: np.median([s[1] for s in v]) for c, v in per.items() if v}
    assert solidity[C["spleen"]] < solidity[C["aorta"]] - 0.1          # crescent vs disc
    assert elong[C["pancreas"]] > 2.5 and elong[C["aorta"]] < 1.5       # strip vs round tube
    assert elong[C["spleen"]] > 1.8
    # kidneys and psoas are bilateral: two components per slice
    assert np.median([s[2] for s in per[C["kidneys"]]]) == 2
    assert np.median([s[2] for s in per[C["psoas"]]]) == 2


# ----------------------------------------------------------------------------
# intensities: overlap between classes, consistency across volumes
# ----------------------------------------------------------------------------

def test_intensity_bands_overlap(ct, mr):
    """At least two class pairs have HU distributions that overlap substantially."""
    vals = {c: np.concatenate([img[lab == c] for img, lab in ct.values()])
            for c in range(1, N + 1)}
    assert _overlap(vals[C["liver"]], vals[C["spleen"]], -200, 400, 10) > 0.5
    assert _overlap(vals[C["kidneys"]], vals[C["aorta"]], -200, 400, 10) > 0.5
    assert _overlap(vals[C["liver"]], vals[C["psoas"]], -200, 400, 10) > 0.5
    # and some pairs do not: intensity is informative, just not sufficient
    assert _overlap(vals[C["gallbladder"]], vals[C["aorta"]], -200, 400, 10) < 0.35
    # MR: arbitrary units, per volume z-scored as the loader does
    mvals = {c: [] for c in range(1, N + 1)}
    for img, lab in mr.values():
        z = (img - img.mean()) / img.std()
        for c in range(1, N + 1):
            mvals[c].append(z[lab == c])
    mvals = {c: np.concatenate(v) for c, v in mvals.items()}
    assert _overlap(mvals[C["liver"]], mvals[C["pancreas"]], -3, 6, 0.1) > 0.4
    assert _overlap(mvals[C["spleen"]], mvals[C["kidneys"]], -3, 6, 0.1) > 0.4


def test_classes_consistent_across_volumes(ct):
    """Each class's interior mean HU varies across volumes by less than half its band width."""
    for c in range(1, N + 1):
        means = [img[_interior(lab, c)].mean() for img, lab in ct.values()]
        band = np.mean([img[lab == c].std() for img, lab in ct.values()])
        assert np.ptp(means) < 0.5 * band, (v2.CLASS_NAMES[c - 1], means, band)


def test_mr_contrast_order_differs_from_ct(ct, mr):
    for img, lab in ct.values():
        med = {c: np.median(img[_interior(lab, c)]) for c in range(1, N + 1)}
        assert med[C["gallbladder"]] == min(med.values())
        assert med[C["aorta"]] > med[C["liver"]] and med[C["kidneys"]] > med[C["liver"]]
    for img, lab in mr.values():
        med = {c: np.median(img[_interior(lab, c)]) for c in range(1, N + 1)}
        assert med[C["gallbladder"]] == max(med.values())       # fluid bright
        assert med[C["aorta"]] == min(med.values())             # flow void
        assert med[C["kidneys"]] > med[C["liver"]]


# ----------------------------------------------------------------------------
# texture
# ----------------------------------------------------------------------------

def _texture_stats(img, lab):
    stats = {}
    for c in (C["liver"], C["spleen"], C["kidneys"]):
        m = _interior(lab, c, 5)
        assert m.sum() > 100
        stats[c] = dict(sd=float(img[m].std()),
                        rx=_lag_corr(img, m, 3, 2), ry=_lag_corr(img, m, 3, 1))
    return stats


def test_textures_differ_between_classes(ct_clean):
    """Noise-free: texture amplitude and correlation length are class properties, the same
    in every volume (checked on two)."""
    all_stats = [_texture_stats(*ct_clean),
                 _texture_stats(*phantom_v2_volume(*SHAPE, n_organs=N, seed=1, noise=False))]
    for stats in all_stats:
        liver, spleen, kidneys = stats[C["liver"]], stats[C["spleen"]], stats[C["kidneys"]]
        # liver: fine speckle of low amplitude; spleen: coarse blobs
        assert liver["sd"] < 0.6 * spleen["sd"]
        assert liver["rx"] < 0.4 and liver["ry"] < 0.4
        assert spleen["rx"] > 0.6 and spleen["ry"] > 0.6
        # kidneys: striated, correlated left-right and not antero-posterior
        assert kidneys["rx"] > kidneys["ry"] + 0.4
        assert kidneys["sd"] > 1.5 * liver["sd"]
    # the liver (many voxels, so a precise estimate) has the same amplitude in both
    assert 0.8 < all_stats[1][C["liver"]]["sd"] / all_stats[0][C["liver"]]["sd"] < 1.25


def test_no_organs():
    img, lab = phantom_v2_volume(4, 32, 30, n_organs=0, seed=0)
    assert not lab.any() and np.isfinite(img).all() and img.max() > 0


# ----------------------------------------------------------------------------
# partial volume and noise
# ----------------------------------------------------------------------------

def test_partial_volume_in_plane(ct_clean):
    """Noise-free: voxels between air (-1000) and the fat shell (-105) exist only along the body
    outline, where the PSF blurs the edge."""
    img, _ = ct_clean
    mid = (img > -900) & (img < -200)
    assert mid.sum() > 0
    body = img > -550
    edge = ndimage.binary_dilation(body, np.ones((1, 5, 5))) & ~ndimage.binary_erosion(
        body, np.ones((1, 5, 5)))
    assert (mid & ~edge).sum() <= 0.02 * mid.sum()
    # every row crossing the body has an intermediate voxel on its way in
    z, y = SHAPE[0] // 2, SHAPE[1] // 2
    row = img[z, y]
    inside = np.nonzero(row > -550)[0]
    assert ((row[: inside[0] + 1] > -990) & (row[: inside[0] + 1] < -200)).any()


def test_partial_volume_through_plane(monkeypatch):
    """Each slice averages three sub-slices: rendering one sub-slice instead changes the
    image at the z ends of organs only, and keeps the labels (taken at the slice centre)."""
    args = dict(n_organs=N, seed=2, noise=False)
    img3, lab3 = phantom_v2_volume(12, 64, 64, **args)
    monkeypatch.setattr(v2, "_SUBSLICES", 1)
    img1, lab1 = phantom_v2_volume(12, 64, 64, **args)
    np.testing.assert_array_equal(lab1, lab3)
    diff = np.abs(img3 - img1) > 5.0
    assert diff.sum() > 100
    # where an organ starts or ends between slices the thick slice is intermediate
    changes = np.zeros_like(diff)
    changes[:-1] |= lab3[:-1] != lab3[1:]
    changes[1:] |= lab3[1:] != lab3[:-1]
    kid = (lab3 == C["kidneys"]) & changes
    assert (np.abs(img3 - img1)[kid] > 5.0).mean() > 0.3


def test_ct_noise_level_and_correlation():
    clean, lab = phantom_v2_volume(*SHAPE, n_organs=5, seed=1, noise=False)
    noisy, _ = phantom_v2_volume(*SHAPE, n_organs=5, seed=1)
    n = noisy - clean
    body = ndimage.binary_erosion(clean > -500, np.ones((1, 9, 9)))
    assert 10.0 < n[body].std() < 32.0
    assert abs(float(n.mean())) < 1.0
    # correlated in-plane (band-pass, not white), independent between slices
    assert _lag_corr(n, np.ones_like(body), 1, 2) > 0.2
    assert abs(_lag_corr(n, np.ones_like(body), 1, 0)) < 0.05
    # heavier in the body centre than near its edge
    d, h, w = SHAPE
    yy, xx = np.mgrid[:h, :w]
    centre = np.broadcast_to((np.abs(yy - h / 2) < 8) & (np.abs(xx - w / 2) < 8), n.shape) & body
    rim = body & ~ndimage.binary_erosion(body, np.ones((1, 9, 9)))
    assert n[centre].std() > 1.2 * n[rim].std()


# ----------------------------------------------------------------------------
# MR
# ----------------------------------------------------------------------------

def test_mr_bias_field_smooth_multiplicative():
    """MR with / without the bias field (noise-free, same seed): their ratio inside the body is
    one smooth field for every tissue, spanning about +-20-30 %."""
    a, lab = phantom_v2_volume(*SHAPE, n_organs=N, seed=4, modality="MR", noise=False)
    b, _ = phantom_v2_volume(*SHAPE, n_organs=N, seed=4, modality="MR", noise=False,
                             bias_field=False)
    body = b > 50
    ratio = np.where(body, a / np.where(body, b, 1.0), np.nan)
    r = ratio[body]
    assert 0.65 < r.min() < 0.9 and 1.1 < r.max() < 1.4
    assert r.max() / r.min() > 1.3
    # smooth: neighbouring voxels differ by < 1 % in-plane
    dx = np.abs(np.diff(ratio, axis=2))
    assert np.nanmax(dx) < 0.01
    # a homogeneous organ shows the field: a quadratic fit of the liver's interior intensity
    # over its position spans several times more with the field than without it (texture only)
    spans = []
    for seed in (0, 4, 5):
        with_f, lab = phantom_v2_volume(*SHAPE, n_organs=N, seed=seed, modality="MR",
                                        noise=False)
        without, _ = phantom_v2_volume(*SHAPE, n_organs=N, seed=seed, modality="MR",
                                       noise=False, bias_field=False)
        m = ndimage.binary_erosion(lab == C["liver"], np.ones((3, 5, 5), dtype=bool))
        zz, yy, xx = (c / n for c, n in zip(np.nonzero(m), SHAPE))
        design = np.stack([np.ones_like(zz), zz, yy, xx, yy * yy, xx * xx, yy * xx], axis=1)
        span = []
        for x in (with_f, without):
            coef = np.linalg.lstsq(design, x[m].astype(np.float64), rcond=None)[0]
            span.append(np.ptp(design @ coef) / np.median(x[m]))
        spans.append(span)
    spans = np.array(spans)
    assert (spans[:, 0] > 0.08).all() and (spans[:, 1] < 0.05).all(), spans
    assert spans[:, 0].mean() > 2.5 * spans[:, 1].mean(), spans


def test_mr_rician_noise(mr):
    img, _ = mr[0]
    assert img.min() >= 0
    air = img[:, :4, :]                       # the first rows are outside the body
    ratio = air.mean() / air.std()
    assert 1.75 < ratio < 2.1                 # Rayleigh: mean / sd = 1.91
    assert air.mean() < 0.1 * np.percentile(img, 99)


# ----------------------------------------------------------------------------
# argument errors
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(depth=0), ValueError, "depth"),
    (dict(height=-3), ValueError, "height"),
    (dict(width=2.5), TypeError, "width"),
    (dict(depth=True), TypeError, "depth"),
    (dict(n_organs=8), ValueError, "n_organs"),
    (dict(n_organs=-1), ValueError, "n_organs"),
    (dict(n_organs="5"), TypeError, "n_organs"),
    (dict(modality="PET"), ValueError, "modality"),
    (dict(modality=3), TypeError, "modality"),
    (dict(spacing=(1.0, 0.0, 1.0)), ValueError, "spacing"),
    (dict(spacing=(1.0, 1.0)), ValueError, "spacing"),
    (dict(spacing=None), TypeError, "spacing"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=1.5), TypeError, "seed"),
])
def test_bad_arguments(kwargs, exc, name):
    args = dict(depth=4, height=16, width=16)
    args.update(kwargs)
    depth, height, width = args.pop("depth"), args.pop("height"), args.pop("width")
    with pytest.raises(exc, match=name):
        phantom_v2_volume(depth, height, width, **args)


def test_bad_slice_arguments():
    with pytest.raises(ValueError, match="position"):
        phantom_v2_slice(16, 16, position=1.5)
    with pytest.raises(TypeError, match="position"):
        phantom_v2_slice(16, 16, position="top")
    with pytest.raises(ValueError, match="height"):
        phantom_v2_slice(0, 16)


def test_write_msd_bad_arguments(tmp_path):
    # v2 is the package's one phantom: write_msd no longer takes phantom= (nor v1's
    # consistent_classes=)
    with pytest.raises(TypeError, match="phantom"):
        write_msd(tmp_path / "a", n_volumes=1, shape=(2, 16, 16), phantom="v1")
    with pytest.raises(ValueError, match="n_organs"):
        write_msd(tmp_path / "b", n_volumes=1, shape=(2, 16, 16), n_organs=8)
    with pytest.raises(ValueError, match="modality"):
        write_msd(tmp_path / "c", n_volumes=1, shape=(2, 16, 16), modality="PET")
    with pytest.raises(TypeError, match="consistent_classes"):
        write_msd(tmp_path / "d", n_volumes=1, shape=(2, 16, 16), consistent_classes=False)
    assert not any(tmp_path.iterdir())  # checked before anything is written


# ----------------------------------------------------------------------------
# MSD round trip through supercl's own loader
# ----------------------------------------------------------------------------

def test_write_msd_v2_ct_round_trip(tmp_path):
    shape = (5, 37, 41)
    root = write_msd(tmp_path / "ct", n_volumes=2, shape=shape, n_organs=N, seed=3)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["labels"] == {"0": "background", **{str(k): n for k, n in
                                                    enumerate(v2.CLASS_NAMES, start=1)}}
    assert meta["modality"] == {"0": "CT"} and meta["numTraining"] == 2
    info = scan_dataset(root)
    assert info.modality == "CT" and len(info.cases) == 2
    for i, case in enumerate(info.cases):
        img, lab = phantom_v2_volume(*shape, n_organs=N, modality="CT",
                                     seed=np.random.SeedSequence(3, spawn_key=(i,)),
                                     spacing=(2.5, 0.8, 0.8))
        images, labels, pos = load_case(case, modality="CT", window=(-200.0, 300.0),
                                        patch_size=shape[1:], resize="crop",
                                        class_names=info.class_names)
        np.testing.assert_array_equal(labels, lab)
        expect = (np.clip(np.rint(img), -200, 300) + 200) / 500
        np.testing.assert_allclose(images, expect, atol=1e-6)
        assert pos.shape == (shape[0],)


def test_write_msd_v2_mr_round_trip(tmp_path):
    shape = (4, 33, 29)
    root = write_msd(tmp_path / "mr", n_volumes=1, shape=shape, n_organs=5, seed=1,
                     modality="MR")
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["modality"] == {"0": "MR"} and meta["labels"]["5"] == "gallbladder"
    info = scan_dataset(root)
    assert info.modality == "MRI"
    img, lab = phantom_v2_volume(*shape, n_organs=5, modality="MR",
                                 seed=np.random.SeedSequence(1, spawn_key=(0,)))
    images, labels, _ = load_case(info.cases[0], modality=info.modality, patch_size=shape[1:],
                                  resize="crop", class_names=info.class_names)
    np.testing.assert_array_equal(labels, lab)
    stored = np.rint(img).astype(np.float64)
    expect = (stored - stored.mean()) / stored.std()
    np.testing.assert_allclose(images, expect, atol=1e-4)
    assert abs(float(images.mean())) < 1e-4 and abs(float(images.std()) - 1.0) < 1e-3


def test_write_msd_writes_v2_and_the_trainer_defaults_to_it(tmp_path):
    from supercl.train.dataset import PHANTOM

    a = write_msd(tmp_path / "a", n_volumes=1, shape=(3, 24, 24), n_organs=2, seed=0)
    ma = json.loads((a / "dataset.json").read_text())
    assert ma["name"] == "SuperCLPhantomV2" and ma["labels"]["1"] == "liver"
    stored, labels = v2.msd_case((3, 24, 24), n_organs=2, modality="CT",
                                 seed=np.random.SeedSequence(0, spawn_key=(0,)),
                                 spacing_xyz=(0.8, 0.8, 2.5))
    info = scan_dataset(a)
    images, read, _ = load_case(info.cases[0], modality="CT", window=(-1024.0, 3071.0),
                                patch_size=(24, 24), resize="crop",
                                class_names=info.class_names)
    np.testing.assert_array_equal(read, labels)
    np.testing.assert_allclose(images * 4095 - 1024, stored, atol=1e-3)
    assert PHANTOM["n_organs"] <= v2.MAX_ORGANS  # the trainer's embedded data is this writer's


def test_docstring_examples_run():
    import doctest

    result = doctest.testmod(v2, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
