"""Tests of the v1 CT-like phantom generator (tests/phantom_v1.py, formerly
supercl.data.phantom): the inputs that other tests and the benchmarks draw from it keep their
properties."""

import json

import nibabel as nib
import numpy as np
import pytest

import phantom_v1 as phantom_module
from phantom_v1 import phantom_batch, phantom_slice, phantom_volume, write_msd


# ----------------------------------------------------------------------------
# determinism, shapes, dtypes
# ----------------------------------------------------------------------------

def test_slice_shapes_dtypes():
    img, lab = phantom_slice(96, 80, n_organs=4, seed=3)
    assert img.shape == (96, 80) and lab.shape == (96, 80)
    assert img.dtype == np.float32 and lab.dtype == np.uint8
    assert np.isfinite(img).all()
    assert lab.max() <= 4


def test_slice_deterministic_and_seed_dependent():
    a_img, a_lab = phantom_slice(64, 64, seed=11)
    b_img, b_lab = phantom_slice(64, 64, seed=11)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    c_img, c_lab = phantom_slice(64, 64, seed=12)
    assert not np.array_equal(a_lab, c_lab)
    assert np.abs(a_img - c_img).mean() > 10.0
    # numpy integer and SeedSequence seeds are accepted and deterministic
    d_img, _ = phantom_slice(64, 64, seed=np.int64(11))
    np.testing.assert_array_equal(a_img, d_img)
    ss = np.random.SeedSequence(5, spawn_key=(2,))
    e1, _ = phantom_slice(32, 32, seed=ss)
    e2, _ = phantom_slice(32, 32, seed=np.random.SeedSequence(5, spawn_key=(2,)))
    np.testing.assert_array_equal(e1, e2)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (2, 2), (5, 123), (217, 31), (33, 17)])
def test_odd_and_tiny_sizes(shape):
    for seed in range(3):
        img, lab = phantom_slice(*shape, n_organs=5, seed=seed)
        assert img.shape == shape and lab.shape == shape
        assert img.dtype == np.float32 and lab.dtype == np.uint8
        assert np.isfinite(img).all()
        assert lab.max() <= 5
    vol, vlab = phantom_volume(3, *shape, n_organs=3, seed=1)
    assert vol.shape == (3,) + shape and vlab.shape == (3,) + shape
    assert np.isfinite(vol).all() and vlab.max() <= 3


def test_odd_sizes_keep_organs():
    for shape in [(217, 31), (31, 217), (101, 77)]:
        _, lab = phantom_slice(*shape, n_organs=3, seed=0)
        assert set(np.unique(lab).tolist()) == {0, 1, 2, 3}


def test_zero_organs():
    img, lab = phantom_slice(64, 64, n_organs=0, seed=1)
    assert not lab.any()
    assert img.min() < -900 and img.max() > 0


# ----------------------------------------------------------------------------
# content
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(8))
def test_organs_present_and_distinct(seed):
    n = 5
    img, lab = phantom_slice(256, 256, n_organs=n, seed=seed, noise=20.0)
    assert set(np.unique(lab).tolist()) == set(range(n + 1))
    body = img > -500
    tissue = img[(lab == 0) & body]
    body_ref = np.median(tissue)
    assert -10.0 < body_ref < 70.0  # soft tissue is about 0..60 HU
    means = []
    for k in range(1, n + 1):
        m = lab == k
        assert m.sum() >= 50, f"organ {k} too small"
        assert body[m].all(), "organs lie inside the body"
        mean = img[m].mean()
        assert -130.0 < mean < 330.0
        assert abs(mean - body_ref) > 15.0, f"organ {k} not distinct from the body"
        means.append(mean)
    means = np.sort(means)
    assert np.diff(means).min() > 15.0, "organs have distinct mean intensities"


def test_many_organs_present():
    _, lab = phantom_slice(256, 256, n_organs=10, seed=4)
    assert set(np.unique(lab).tolist()) == set(range(11))


def test_body_ellipse_and_air():
    for seed in range(4):
        img, lab = phantom_slice(200, 160, seed=seed, noise=10.0)
        body = img > -500
        frac = body.mean()
        # an ellipse spanning 60-90 % of each axis covers pi/4 * (0.36..0.81)
        assert 0.25 < frac < 0.7
        rows = np.nonzero(body.any(axis=1))[0]
        cols = np.nonzero(body.any(axis=0))[0]
        assert 0.55 < (rows[-1] - rows[0] + 1) / 200 < 0.95
        assert 0.55 < (cols[-1] - cols[0] + 1) / 160 < 0.95
        # corners are air at about -1000 HU, labelled background
        assert not lab[~body].any()
        corners = np.zeros_like(body)
        for rs in (slice(0, 20), slice(-20, None)):
            for cs in (slice(0, 20), slice(-20, None)):
                corners[rs, cs] = True
        assert not body[corners].any()
        assert abs(img[corners].mean() + 1000.0) < 2.0
        assert abs(img[corners].std() - 10.0) < 1.0
        # something bright (ring / spine) inside the body
        assert img[body].max() > 300.0


def test_noise_and_texture_controls():
    clean, lab = phantom_slice(128, 128, seed=2, noise=0.0, texture=False)
    noisy, lab2 = phantom_slice(128, 128, seed=2, noise=30.0, texture=False)
    np.testing.assert_array_equal(lab, lab2)
    # without noise and texture, the air is exactly -1000 and organs flat
    assert np.all(clean[:3, :3] == -1000.0)
    assert abs((noisy - clean).std() - 30.0) < 1.5
    textured, _ = phantom_slice(128, 128, seed=2, noise=0.0, texture=True)
    diff = textured - clean
    assert 0.5 < np.abs(diff[clean > -500]).mean() < 30.0
    assert np.all(diff[:3, :3] == 0.0)


# ----------------------------------------------------------------------------
# batches
# ----------------------------------------------------------------------------

def test_batch_shapes_deterministic_and_distinct():
    imgs, labs = phantom_batch(4, 64, 48, n_organs=3, seed=7)
    assert imgs.shape == (4, 64, 48) and labs.shape == (4, 64, 48)
    assert imgs.dtype == np.float32 and labs.dtype == np.uint8
    imgs2, labs2 = phantom_batch(4, 64, 48, n_organs=3, seed=7)
    np.testing.assert_array_equal(imgs, imgs2)
    np.testing.assert_array_equal(labs, labs2)
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.array_equal(labs[i], labs[j])
            assert np.abs(imgs[i] - imgs[j]).mean() > 10.0
    # slice i depends only on (seed, i), through SeedSequence(seed, spawn_key=(i,))
    more, _ = phantom_batch(6, 64, 48, n_organs=3, seed=7)
    np.testing.assert_array_equal(more[:4], imgs)
    one, one_lab = phantom_slice(64, 48, n_organs=3, seed=np.random.SeedSequence(7, spawn_key=(2,)))
    np.testing.assert_array_equal(one, imgs[2])
    np.testing.assert_array_equal(one_lab, labs[2])
    other, _ = phantom_batch(4, 64, 48, n_organs=3, seed=8)
    assert not np.array_equal(other, imgs)


def test_batch_kwargs_and_empty():
    imgs, labs = phantom_batch(0, 17, 9)
    assert imgs.shape == (0, 17, 9) and labs.shape == (0, 17, 9)
    assert imgs.dtype == np.float32 and labs.dtype == np.uint8
    a, _ = phantom_batch(2, 32, 32, seed=1, noise=0.0, texture=False)
    assert np.all(a[:, 0, 0] == -1000.0)
    with pytest.raises(TypeError):
        phantom_batch(2, 32, 32, bogus=1)


# ----------------------------------------------------------------------------
# volumes
# ----------------------------------------------------------------------------

def _dice(a, b):
    s = a.sum() + b.sum()
    return 2.0 * np.logical_and(a, b).sum() / s if s else 1.0


def test_volume_shapes_and_determinism():
    vol, lab = phantom_volume(12, 40, 36, n_organs=3, seed=5)
    assert vol.shape == (12, 40, 36) and lab.shape == (12, 40, 36)
    assert vol.dtype == np.float32 and lab.dtype == np.uint8
    vol2, lab2 = phantom_volume(12, 40, 36, n_organs=3, seed=5)
    np.testing.assert_array_equal(vol, vol2)
    np.testing.assert_array_equal(lab, lab2)
    vol3, lab3 = phantom_volume(12, 40, 36, n_organs=3, seed=6)
    assert not np.array_equal(lab, lab3)


@pytest.mark.parametrize("seed", range(3))
def test_volume_slices_consistent(seed):
    n = 5
    vol, lab = phantom_volume(32, 96, 96, n_organs=n, seed=seed)
    assert set(np.unique(lab).tolist()) == set(range(n + 1))
    inter = total = 0
    dices = []
    for z in range(vol.shape[0] - 1):
        for k in range(1, n + 1):
            a, b = lab[z] == k, lab[z + 1] == k
            if a.any() and b.any():
                dices.append(_dice(a, b))
                inter += 2 * np.logical_and(a, b).sum()
                total += a.sum() + b.sum()
    assert inter / total > 0.85
    assert np.median(dices) > 0.85
    # organs appear and disappear along z: not every organ is in every slice
    presence = np.array([[np.any(lab[z] == k) for k in range(1, n + 1)] for z in range(32)])
    assert not presence.all()
    assert presence.any(axis=0).all()
    # slice position matters: first and last slices differ
    assert not np.array_equal(lab[0], lab[-1])
    # the body persists through the volume, air outside
    assert np.all((vol > -500).mean(axis=(1, 2)) > 0.2)
    assert abs(vol[:, :4, :4].mean() + 1000.0) < 5.0
    # each organ's mean differs from the soft tissue
    tissue = np.median(vol[(lab == 0) & (vol > -500)])
    for k in range(1, n + 1):
        assert abs(vol[lab == k].mean() - tissue) > 15.0


# ----------------------------------------------------------------------------
# MSD writer
# ----------------------------------------------------------------------------

def test_write_msd_round_trip(tmp_path):
    shape = (6, 24, 20)
    root = write_msd(tmp_path / "ds", n_volumes=3, shape=shape, n_organs=3, seed=2)
    assert root == tmp_path / "ds"
    meta = json.loads((root / "dataset.json").read_text())
    for key in ("name", "description", "modality", "labels", "numTraining", "numTest",
                "training", "test"):
        assert key in meta
    assert meta["modality"] == {"0": "CT"}
    assert meta["labels"] == {"0": "background", "1": "organ1", "2": "organ2", "3": "organ3"}
    assert meta["numTraining"] == 3 and meta["numTest"] == 0 and meta["test"] == []
    names = [f"phantom_{i:03d}.nii.gz" for i in range(3)]
    assert meta["training"] == [
        {"image": f"./imagesTr/{n}", "label": f"./labelsTr/{n}"} for n in names]
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == names
    assert sorted(p.name for p in (root / "labelsTr").iterdir()) == names
    declared = {int(k) for k in meta["labels"]}
    for i, case in enumerate(meta["training"]):
        img = nib.load(root / case["image"])
        lab = nib.load(root / case["label"])
        # NIfTI (X, Y, Z) = (W, H, D), slices along the last axis
        assert img.shape == (shape[2], shape[1], shape[0]) == lab.shape
        assert img.get_data_dtype() == np.int16
        assert lab.get_data_dtype() == np.uint8
        np.testing.assert_allclose(img.header.get_zooms(), (0.8, 0.8, 2.5))
        data = np.asarray(img.dataobj)
        labels = np.asarray(lab.dataobj)
        assert set(np.unique(labels).tolist()) <= declared
        assert -1024 <= data.min() and data.max() <= 3071
        # the stored volume is phantom_volume with the case's derived seed
        vol, vlab = phantom_volume(*shape, n_organs=3, seed=np.random.SeedSequence(2, spawn_key=(i,)),
                                   consistent_classes=True)
        np.testing.assert_array_equal(labels.transpose(2, 1, 0), vlab)
        np.testing.assert_array_equal(
            data.transpose(2, 1, 0), np.clip(np.rint(vol), -1024, 3071).astype(np.int16))


def test_write_msd_refuses_overwrite(tmp_path):
    root = tmp_path / "ds"
    write_msd(root, n_volumes=3, shape=(4, 16, 16), n_organs=2, seed=0)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_msd(root, n_volumes=1, shape=(4, 16, 16), n_organs=2)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        write_msd(other, n_volumes=1, shape=(4, 16, 16))
    assert (other / "notes.txt").read_text() == "keep me"
    # an existing empty folder is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    write_msd(empty, n_volumes=1, shape=(4, 16, 16), n_organs=1, modality="MRI")
    assert json.loads((empty / "dataset.json").read_text())["modality"] == {"0": "MRI"}
    # overwrite=True replaces the dataset, stale cases removed
    write_msd(root, n_volumes=2, shape=(4, 16, 16), n_organs=4, overwrite=True)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and len(meta["labels"]) == 5
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == [
        "phantom_000.nii.gz", "phantom_001.nii.gz"]
    assert len(list((root / "labelsTr").iterdir())) == 2


# ----------------------------------------------------------------------------
# argument validation
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("call, name", [
    (lambda: phantom_slice(0, 10), "height"),
    (lambda: phantom_slice(10, -3), "width"),
    (lambda: phantom_slice(10, 10, n_organs=-1), "n_organs"),
    (lambda: phantom_slice(10, 10, n_organs=256), "n_organs"),
    (lambda: phantom_slice(10, 10, noise=-1.0), "noise"),
    (lambda: phantom_slice(10, 10, noise=float("nan")), "noise"),
    (lambda: phantom_slice(10, 10, seed=-1), "seed"),
    (lambda: phantom_batch(-1, 10, 10), "batch"),
    (lambda: phantom_batch(2, 0, 10), "height"),
    (lambda: phantom_batch(2, 10, 10, n_organs=-2), "n_organs"),
    (lambda: phantom_batch(2, 10, 10, noise=-5), "noise"),
    (lambda: phantom_volume(0, 10, 10), "depth"),
    (lambda: phantom_volume(4, 10, 0), "width"),
    (lambda: phantom_volume(4, 10, 10, n_organs=-1), "n_organs"),
])
def test_bad_arguments(call, name):
    with pytest.raises(ValueError, match=name):
        call()


@pytest.mark.parametrize("height", [10.5, True])
def test_sizes_of_another_type_are_a_type_error(height):
    with pytest.raises(TypeError, match="height"):
        phantom_slice(height, 10)
    with pytest.raises(TypeError, match="seed"):  # one seed check (supercl._validate.check_seed)
        phantom_slice(10, 10, seed="abc")


def test_write_msd_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_volumes"):
        write_msd(tmp_path / "a", n_volumes=0)
    with pytest.raises(ValueError, match="shape"):
        write_msd(tmp_path / "b", shape=(4, 16))
    with pytest.raises(ValueError, match="shape"):
        write_msd(tmp_path / "c", shape=(4, 0, 16))
    with pytest.raises(ValueError, match="n_organs"):
        write_msd(tmp_path / "d", n_organs=-1)
    with pytest.raises(ValueError, match="modality"):
        write_msd(tmp_path / "e", modality="")
    # validation happens before anything is written
    assert not any(tmp_path.iterdir())


def test_public_api_returns_what_it_documents(tmp_path):
    """The four public functions and their documented return values: shapes, dtypes, label
    range, and the MSD folder that write_msd returns (scanned back by supercl.data)."""
    from supercl.data import scan_dataset

    assert set(phantom_module.__all__) == {"phantom_slice", "phantom_batch", "phantom_volume",
                                           "write_msd"}
    image, labels = phantom_slice(20, 30, n_organs=3, seed=1)
    assert image.shape == labels.shape == (20, 30)
    assert image.dtype == np.float32 and labels.dtype == np.uint8 and labels.max() <= 3
    images, labels = phantom_batch(2, 20, 30, n_organs=3, seed=1)
    assert images.shape == labels.shape == (2, 20, 30) and images.dtype == np.float32
    volume, labels = phantom_volume(4, 20, 30, n_organs=3, seed=1)
    assert volume.shape == labels.shape == (4, 20, 30) and labels.dtype == np.uint8
    root = write_msd(tmp_path / "msd", n_volumes=2, shape=(4, 20, 30), n_organs=3)
    info = scan_dataset(root)
    assert [c.name for c in info.cases] == ["phantom_000", "phantom_001"]
    assert sorted(info.class_names) == [0, 1, 2, 3]


def test_consistent_classes_keep_each_organ_class_in_one_intensity_band():
    """write_msd's mode: class c has the same nominal intensity in every volume (+-5 HU), the
    classes stay >= 30 HU apart and clear of soft tissue, and the shapes are those of the
    default mode (the same random draws)."""
    medians = []
    for seed in range(6):
        vol, lab = phantom_volume(6, 96, 96, n_organs=5, seed=seed, noise=0.0, texture=False,
                                  consistent_classes=True)
        _, lab_default = phantom_volume(6, 96, 96, n_organs=5, seed=seed, noise=0.0,
                                        texture=False)
        np.testing.assert_array_equal(lab, lab_default)
        medians.append([np.median(vol[lab == c]) if (lab == c).any() else np.nan
                        for c in range(1, 6)])
    medians = np.array(medians)
    spread = np.nanmax(medians, 0) - np.nanmin(medians, 0)
    assert (spread <= 10.0 + 1e-3).all(), spread
    nominal = np.nanmedian(medians, 0)
    assert (np.diff(nominal) >= 30.0).all() and (np.abs(nominal - 30.0) >= 50.0).all(), nominal
