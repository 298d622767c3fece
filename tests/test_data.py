"""Tests of NIfTI / MSD loading and volume splits (supercl.data.nifti).

Expected values are computed independently: files are read back with nibabel,
windowing / z-scores / positions / crops by hand, bilinear up-sampling and
nearest-exact label resizing with small numpy references.
"""

import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from phantom_v1 import write_msd  # its class names (organ1, ...) and HU are pinned below
from supercl.data import (Case, DatasetInfo, SliceSet, load_case, load_slices, scan_dataset,
                          split_cases, write_split)
from supercl.data.nifti import DatasetFileNotFoundError

SHAPE = (5, 33, 41)  # (D, H, W), odd on purpose
CLASSES = {0: "background", 1: "organ1", 2: "organ2"}


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def msd(tmp_path_factory):
    """A read-only 3-volume phantom MSD dataset (copy it before changing it)."""
    return write_msd(tmp_path_factory.mktemp("data") / "msd", n_volumes=3, shape=SHAPE,
                     n_organs=2)


@pytest.fixture
def msd_copy(msd, tmp_path):
    return pathlib_copy(msd, tmp_path / "msd")


def pathlib_copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def read_dhw(path):
    """A NIfTI file as a (D, H, W) float64 array, read independently of supercl."""
    return np.asarray(nib.load(str(path)).dataobj, dtype=np.float64).transpose(2, 1, 0)


def save_xyz(data, path, dtype=None):
    """Save an (X, Y, Z[, T]) array as NIfTI."""
    img = nib.Nifti1Image(np.asarray(data), np.eye(4))
    if dtype is not None:
        img.header.set_data_dtype(dtype)
    nib.save(img, str(path))
    return path


def save_dhw(data, path, dtype=None):
    return save_xyz(np.asarray(data).transpose(2, 1, 0), path, dtype)


def edit_json(root, **changes):
    meta = json.loads((root / "dataset.json").read_text())
    meta.update(changes)
    (root / "dataset.json").write_text(json.dumps(meta))


def ref_bilinear_up(img, out_h, out_w):
    """Bilinear resize, align_corners=False (half-pixel centres), edge clamped; numpy."""
    def axis(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, fy = axis(img.shape[-2], out_h)
    x0, x1, fx = axis(img.shape[-1], out_w)
    fy, fx = fy[:, None], fx[None, :]
    top = img[..., y0, :][..., x0] * (1 - fx) + img[..., y0, :][..., x1] * fx
    bot = img[..., y1, :][..., x0] * (1 - fx) + img[..., y1, :][..., x1] * fx
    return top * (1 - fy) + bot * fy


def ref_nearest_exact(lab, out_h, out_w):
    """Nearest-exact: source index floor((dst + 0.5) * in / out), clamped; numpy."""
    h, w = lab.shape[-2:]
    iy = np.minimum(np.floor((np.arange(out_h) + 0.5) * h / out_h).astype(int), h - 1)
    ix = np.minimum(np.floor((np.arange(out_w) + 0.5) * w / out_w).astype(int), w - 1)
    return lab[..., iy[:, None], ix[None, :]]


def ref_ct(path, lo=-200.0, hi=300.0):
    return (np.clip(read_dhw(path), lo, hi) - lo) / (hi - lo)


def ref_center(arr, ph, pw):
    """Center crop / zero pad of the last two axes to (ph, pw), by explicit offsets."""
    h, w = arr.shape[-2:]
    out = np.zeros(arr.shape[:-2] + (ph, pw), dtype=arr.dtype)
    for y in range(ph):
        sy = y + (h - ph) // 2 if h >= ph else y - (ph - h) // 2
        for x in range(pw):
            sx = x + (w - pw) // 2 if w >= pw else x - (pw - w) // 2
            if 0 <= sy < h and 0 <= sx < w:
                out[..., y, x] = arr[..., sy, sx]
    return out


# ----------------------------------------------------------------------------
# scan_dataset
# ----------------------------------------------------------------------------

def test_scan_msd(msd):
    info = scan_dataset(msd)
    assert isinstance(info, DatasetInfo)
    assert info.layout == "msd" and info.root == msd
    assert info.modality == "CT"
    assert info.class_names == CLASSES
    assert all(isinstance(k, int) for k in info.class_names)
    assert [c.name for c in info.cases] == ["phantom_000", "phantom_001", "phantom_002"]
    meta = json.loads((msd / "dataset.json").read_text())
    for case, entry in zip(info.cases, meta["training"]):
        assert case.image == msd / entry["image"][2:]
        assert case.label == msd / entry["label"][2:]
        assert case.image.is_file() and case.label.is_file()
    assert len(info.labeled) == 3 and info.unlabeled == ()
    # the dataset.json path itself is accepted; str paths too
    assert scan_dataset(str(msd / "dataset.json")).cases == info.cases


@pytest.mark.parametrize("given, expected", [
    ("MRI", "MRI"), ("MR", "MRI"), ("T2", "MRI"), ("adc", "MRI"), ("T1", "MRI"),
    ("ct", "CT"), ("CT", "CT"), ("pet", "PET")])
def test_scan_modality_normalised(msd, given, expected):
    assert scan_dataset(msd, modality=given).modality == expected


def test_scan_msd_modality_from_json(tmp_path):
    root = write_msd(tmp_path / "mr", n_volumes=1, shape=(2, 9, 11), n_organs=1, modality="T2")
    assert scan_dataset(root).modality == "MRI"
    edit_json(root, modality={"0": "Ultrasound"})
    assert scan_dataset(root).modality == "ULTRASOUND"


def test_scan_msd_test_list_is_unlabeled(msd_copy):
    (msd_copy / "imagesTs").mkdir()
    shutil.copy(msd_copy / "imagesTr" / "phantom_001.nii.gz",
                msd_copy / "imagesTs" / "extra_000.nii.gz")
    shutil.copy(msd_copy / "imagesTr" / "phantom_002.nii.gz",
                msd_copy / "imagesTs" / "aaa.nii.gz")
    edit_json(msd_copy, test=["./imagesTs/extra_000.nii.gz", "./imagesTs/aaa.nii.gz"])
    info = scan_dataset(msd_copy)
    assert [c.name for c in info.cases] == [
        "aaa", "extra_000", "phantom_000", "phantom_001", "phantom_002"]
    by_name = {c.name: c for c in info.cases}
    assert by_name["extra_000"].label is None
    assert by_name["extra_000"].image == msd_copy / "imagesTs" / "extra_000.nii.gz"
    assert by_name["phantom_000"].label is not None
    assert [c.name for c in info.unlabeled] == ["aaa", "extra_000"]


def test_scan_folder_without_labels(msd, tmp_path):
    folder = tmp_path / "vols"
    folder.mkdir()
    shutil.copy(msd / "imagesTr" / "phantom_001.nii.gz", folder / "b_case.nii.gz")
    img = nib.load(str(msd / "imagesTr" / "phantom_000.nii.gz"))
    nib.save(img, str(folder / "a_case.nii"))  # uncompressed
    (folder / "notes.txt").write_text("not an image")
    (folder / "._a_case.nii.gz").write_bytes(b"macOS resource fork")  # hidden: ignored
    info = scan_dataset(folder)
    assert info.layout == "folder" and info.modality == "CT"
    assert [c.name for c in info.cases] == ["a_case", "b_case"]
    assert info.cases[0].image == folder / "a_case.nii"
    assert all(c.label is None for c in info.cases)
    assert info.class_names == {0: "background"}
    assert scan_dataset(folder, modality="MR").modality == "MRI"


def test_scan_folder_with_labels(msd, tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i, name in enumerate(["liver_1", "liver_2", "liver_3"]):
        shutil.copy(msd / "imagesTr" / f"phantom_00{i}.nii.gz", images / f"{name}.nii.gz")
        if name != "liver_2":  # liver_2 stays unlabeled
            shutil.copy(msd / "labelsTr" / f"phantom_00{i}.nii.gz", labels / f"{name}.nii.gz")
    info = scan_dataset(images, labels=labels)
    assert [c.name for c in info.cases] == ["liver_1", "liver_2", "liver_3"]
    assert info.cases[0].label == labels / "liver_1.nii.gz"
    assert info.cases[1].label is None
    assert info.cases[2].label == labels / "liver_3.nii.gz"
    # class names: background plus class1..K, K the largest label value in the files
    k = int(max(read_dhw(labels / n).max() for n in ["liver_1.nii.gz", "liver_3.nii.gz"]))
    assert info.class_names == {0: "background", **{i: f"class{i}" for i in range(1, k + 1)}}


def test_scan_folder_label_without_image(msd, tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    shutil.copy(msd / "imagesTr" / "phantom_000.nii.gz", images / "a.nii.gz")
    shutil.copy(msd / "labelsTr" / "phantom_000.nii.gz", labels / "a.nii.gz")
    shutil.copy(msd / "labelsTr" / "phantom_001.nii.gz", labels / "orphan.nii.gz")
    with pytest.raises(ValueError, match=r"orphan\.nii\.gz.*without an image"):
        scan_dataset(images, labels=labels)


def test_scan_errors_missing_and_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        scan_dataset(tmp_path / "nowhere")
    # the missing-path error is also a ValueError
    with pytest.raises(ValueError, match="nowhere.*does not exist"):
        scan_dataset(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"empty.*no \.nii/\.nii\.gz files"):
        scan_dataset(empty)


def test_scan_errors_labels_folder(msd, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(msd / "imagesTr" / "phantom_000.nii.gz", images / "a.nii.gz")
    with pytest.raises(FileNotFoundError, match="nolabels"):
        scan_dataset(images, labels=tmp_path / "nolabels")
    (tmp_path / "emptylabels").mkdir()
    with pytest.raises(ValueError, match="emptylabels.*empty"):
        scan_dataset(images, labels=tmp_path / "emptylabels")
    with pytest.raises(ValueError, match="labels= is for plain folders"):
        scan_dataset(msd, labels=msd / "labelsTr")


def test_scan_errors_duplicate_names(msd, msd_copy, tmp_path):
    folder = tmp_path / "dup"
    folder.mkdir()
    shutil.copy(msd / "imagesTr" / "phantom_000.nii.gz", folder / "case.nii.gz")
    nib.save(nib.load(str(folder / "case.nii.gz")), str(folder / "case.nii"))
    with pytest.raises(ValueError, match=r"case\.nii.*duplicate case name 'case'"):
        scan_dataset(folder)
    # an MSD test entry with the name of a training case
    (msd_copy / "imagesTs").mkdir()
    shutil.copy(msd_copy / "imagesTr" / "phantom_000.nii.gz", msd_copy / "imagesTs")
    edit_json(msd_copy, test=["./imagesTs/phantom_000.nii.gz"])
    with pytest.raises(ValueError, match=r"imagesTs.phantom_000\.nii\.gz.*duplicate case name"):
        scan_dataset(msd_copy)


def test_scan_errors_dataset_json(msd_copy):
    meta_text = (msd_copy / "dataset.json").read_text()
    (msd_copy / "dataset.json").write_text("{ not json")
    with pytest.raises(ValueError, match=r"dataset\.json.*cannot read"):
        scan_dataset(msd_copy)
    meta = json.loads(meta_text)
    del meta["training"]
    (msd_copy / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"dataset\.json.*no \"training\" list"):
        scan_dataset(msd_copy)
    (msd_copy / "dataset.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"dataset\.json.*malformed"):
        scan_dataset(msd_copy)
    meta = json.loads(meta_text)
    meta["labels"] = ["background", "organ1"]
    (msd_copy / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"dataset\.json.*\"labels\""):
        scan_dataset(msd_copy)


def test_scan_nnunet_style_labels(msd_copy):
    edit_json(msd_copy, labels={"background": 0, "liver": 1, "tumour": 2})
    assert scan_dataset(msd_copy).class_names == {0: "background", 1: "liver", 2: "tumour"}


@pytest.mark.parametrize("which", ["image", "label"])
def test_scan_errors_listed_file_missing(msd_copy, which):
    folder = "imagesTr" if which == "image" else "labelsTr"
    (msd_copy / folder / "phantom_001.nii.gz").unlink()
    with pytest.raises(ValueError, match=rf"{folder}.phantom_001\.nii\.gz.*listed in .*"
                                         rf"dataset\.json.*training\[1\]\.{which}.*does not exist"):
        scan_dataset(msd_copy)
    with pytest.raises(FileNotFoundError):
        scan_dataset(msd_copy)


def test_scan_errors_listed_test_file_missing(msd_copy):
    edit_json(msd_copy, test=["./imagesTs/ghost.nii.gz"])
    with pytest.raises(DatasetFileNotFoundError, match=r"ghost\.nii\.gz.*test\[0\]"):
        scan_dataset(msd_copy)


# ----------------------------------------------------------------------------
# load_case
# ----------------------------------------------------------------------------

def test_load_case_ct_matches_hand_windowing(msd):
    info = scan_dataset(msd)
    case = info.cases[1]
    d, h, w = SHAPE
    images, labels, positions = load_case(case, patch_size=(h, w), class_names=info.class_names)
    assert images.shape == (d, h, w) and images.dtype == np.float32
    assert labels.shape == (d, h, w) and labels.dtype == np.int64
    assert positions.shape == (d,) and positions.dtype == np.float32
    np.testing.assert_allclose(images, ref_ct(case.image), atol=1e-6)
    np.testing.assert_array_equal(labels, read_dhw(case.label).astype(np.int64))
    assert images.min() >= 0.0 and images.max() <= 1.0
    # a different window
    images2, _, _ = load_case(case, patch_size=(h, w), window=(-1000, 1000))
    np.testing.assert_allclose(images2, ref_ct(case.image, -1000, 1000), atol=1e-6)


def test_load_case_mri_zscore(msd):
    case = scan_dataset(msd).cases[0]
    d, h, w = SHAPE
    for modality in ("MRI", "T2", "PET"):  # everything but CT is z-scored
        images, labels, _ = load_case(case, modality=modality, patch_size=(h, w))
        raw = read_dhw(case.image)
        np.testing.assert_allclose(images, (raw - raw.mean()) / raw.std(), atol=1e-5)
        assert abs(float(images.mean())) < 1e-4 and abs(float(images.std()) - 1) < 1e-4


def test_load_case_constant_mri_is_zero(tmp_path):
    img = save_dhw(np.full((3, 7, 9), 42.5, np.float32), tmp_path / "const.nii.gz")
    images, labels, _ = load_case(Case("const", img, None), modality="MRI", patch_size=8)
    assert labels is None
    assert images.shape == (3, 8, 8) and np.all(images == 0) and np.isfinite(images).all()


def test_load_case_positions(msd, tmp_path):
    _, _, positions = load_case(scan_dataset(msd).cases[0], patch_size=8)
    np.testing.assert_allclose(positions, np.arange(SHAPE[0]) / (SHAPE[0] - 1))
    assert positions[0] == 0.0 and positions[-1] == 1.0
    one = save_dhw(np.zeros((1, 6, 6), np.int16), tmp_path / "one.nii.gz")
    _, _, pos1 = load_case(Case("one", one), patch_size=4)
    assert pos1.tolist() == [0.0] and pos1.dtype == np.float32


def test_load_case_resize_up_matches_bilinear_reference(msd):
    info = scan_dataset(msd)
    case = info.cases[0]
    p = 64  # up-sampling both axes: plain bilinear
    images, labels, _ = load_case(case, patch_size=p, resize="resize",
                                  class_names=info.class_names)
    assert images.shape == (SHAPE[0], p, p) and labels.shape == (SHAPE[0], p, p)
    np.testing.assert_allclose(images, ref_bilinear_up(ref_ct(case.image), p, p), atol=1e-5)
    np.testing.assert_array_equal(labels, ref_nearest_exact(read_dhw(case.label), p, p))


def test_load_case_resize_down(msd):
    info = scan_dataset(msd)
    case = info.cases[2]
    p = 16
    images, labels, _ = load_case(case, patch_size=p, resize="resize",
                                  class_names=info.class_names)
    assert images.shape == (SHAPE[0], p, p) and images.dtype == np.float32
    assert images.min() >= -1e-6 and images.max() <= 1 + 1e-6
    ref = ref_ct(case.image)
    # antialiased down-sampling keeps the slice means close
    np.testing.assert_allclose(images.mean(axis=(1, 2)), ref.mean(axis=(1, 2)), atol=0.03)
    # the parameters are the documented ones
    expect = F.interpolate(torch.from_numpy(ref.astype(np.float32))[:, None], size=(p, p),
                           mode="bilinear", align_corners=False, antialias=True)[:, 0]
    np.testing.assert_allclose(images, expect.numpy(), atol=1e-5)
    lab = read_dhw(case.label)
    np.testing.assert_array_equal(labels, ref_nearest_exact(lab, p, p))
    # label resizing keeps only declared values present in the original
    assert set(np.unique(labels)) <= set(np.unique(lab).astype(int)) <= set(CLASSES)


def test_load_case_crop_smaller_is_center(msd):
    info = scan_dataset(msd)
    case = info.cases[0]
    images, labels, _ = load_case(case, patch_size=(20, 17), resize="crop",
                                  class_names=info.class_names)
    assert images.shape == (SHAPE[0], 20, 17)
    ref = ref_ct(case.image)
    y0, x0 = (33 - 20) // 2, (41 - 17) // 2
    np.testing.assert_allclose(images, ref[:, y0:y0 + 20, x0:x0 + 17], atol=1e-6)
    np.testing.assert_allclose(images, ref_center(ref, 20, 17), atol=1e-6)
    np.testing.assert_array_equal(labels, read_dhw(case.label)[:, y0:y0 + 20, x0:x0 + 17])


def test_load_case_crop_larger_pads_with_zero(msd):
    info = scan_dataset(msd)
    case = info.cases[0]
    p = 48
    images, labels, _ = load_case(case, modality="MRI", patch_size=p, resize="crop",
                                  class_names=info.class_names)
    assert images.shape == (SHAPE[0], p, p) and labels.shape == (SHAPE[0], p, p)
    raw = read_dhw(case.image)
    z = (raw - raw.mean()) / raw.std()
    np.testing.assert_allclose(images, ref_center(z, p, p), atol=1e-5)
    np.testing.assert_array_equal(labels, ref_center(read_dhw(case.label), p, p))
    y0, x0 = (p - 33) // 2, (p - 41) // 2
    assert np.all(images[:, :y0] == 0) and np.all(images[:, y0 + 33:] == 0)
    assert np.all(images[:, :, :x0] == 0) and np.all(images[:, :, x0 + 41:] == 0)
    assert np.all(labels[:, :y0] == 0)
    # mixed: crop rows, pad columns
    im2, _, _ = load_case(case, patch_size=(21, 45), resize="crop")
    np.testing.assert_allclose(im2, ref_center(ref_ct(case.image), 21, 45), atol=1e-6)


def test_load_case_unlabeled_and_4d_singleton(msd, tmp_path):
    case = scan_dataset(msd).cases[0]
    data = np.asarray(nib.load(str(case.image)).dataobj)
    four = save_xyz(data[..., None], tmp_path / "four.nii.gz")
    images, labels, _ = load_case(Case("four", four, None), patch_size=(33, 41))
    assert labels is None
    np.testing.assert_allclose(images, ref_ct(case.image), atol=1e-6)


def test_load_case_float_labels_accepted(msd, tmp_path):
    case = scan_dataset(msd).cases[0]
    lab = np.asarray(nib.load(str(case.label)).dataobj).astype(np.float32)
    flt = save_xyz(lab, tmp_path / "flt.nii.gz", np.float32)
    _, labels, _ = load_case(Case("x", case.image, flt), patch_size=(33, 41),
                             class_names=CLASSES)
    np.testing.assert_array_equal(labels, read_dhw(case.label))


def test_load_case_error_unreadable(tmp_path, msd):
    bad = tmp_path / "garbage.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file" * 20)
    with pytest.raises(ValueError, match=r"^.*garbage\.nii\.gz: nibabel cannot read") as exc:
        load_case(Case("garbage", bad, None))
    assert str(exc.value).startswith(str(bad))
    assert exc.value.__cause__ is not None
    # a garbage label file is named too
    good = scan_dataset(msd).cases[0].image
    with pytest.raises(ValueError, match=r"garbage\.nii\.gz: nibabel cannot read"):
        load_case(Case("x", good, bad))
    # a truncated gzip fails when the data is read
    raw = (msd / "imagesTr" / "phantom_000.nii.gz").read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"cut\.nii\.gz: nibabel cannot read"):
        load_case(Case("cut", cut, None))


def test_load_case_error_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ghost\.nii\.gz"):
        load_case(Case("ghost", tmp_path / "ghost.nii.gz", None))


def test_load_case_error_shape_mismatch(msd, tmp_path):
    case = scan_dataset(msd).cases[0]
    lab = save_dhw(np.zeros((5, 33, 40), np.uint8), tmp_path / "lab.nii.gz")
    with pytest.raises(ValueError, match=r"lab\.nii\.gz: label shape \(40, 33, 5\) differs "
                                         r"from image shape \(41, 33, 5\)") as exc:
        load_case(Case("x", case.image, lab))
    assert str(exc.value).startswith(str(lab))


def test_load_case_error_undeclared_label(msd_copy):
    info = scan_dataset(msd_copy)
    case = info.cases[0]
    img = nib.load(str(case.label))
    lab = np.asarray(img.dataobj).copy()
    lab[3, 4, 2] = 7
    nib.save(nib.Nifti1Image(lab, img.affine, img.header), str(case.label))
    with pytest.raises(ValueError, match=r"phantom_000\.nii\.gz: label values \[7\] are not "
                                         r"declared in dataset\.json labels \{0: 'background'"):
        load_case(case, class_names=info.class_names)
    with pytest.raises(ValueError, match=r"labelsTr.phantom_000\.nii\.gz: .*\[7\]"):
        load_slices(info.cases, class_names=info.class_names, progress=False)
    # without class names any non-negative integer is accepted
    _, labels, _ = load_case(case, patch_size=(33, 41))
    assert labels.max() == 7


def test_load_case_error_label_values(msd, tmp_path):
    image = scan_dataset(msd).cases[0].image
    frac = np.zeros((41, 33, 5), np.float32)
    frac[1, 2, 3] = 0.5
    frac_p = save_xyz(frac, tmp_path / "frac.nii.gz", np.float32)
    with pytest.raises(ValueError, match=r"frac\.nii\.gz: non-integer label values \[0\.5\]"):
        load_case(Case("x", image, frac_p))
    neg = np.zeros((41, 33, 5), np.int16)
    neg[0, 0, 0] = -1
    neg_p = save_xyz(neg, tmp_path / "neg.nii.gz", np.int16)
    with pytest.raises(ValueError, match=r"neg\.nii\.gz: negative label values \[-1\]"):
        load_case(Case("x", image, neg_p))


def test_load_case_error_nonfinite_image(tmp_path):
    vol = np.zeros((3, 8, 8), np.float32)
    vol[1, 2, 3] = np.nan
    vol[2, 2, 3] = np.inf
    p = save_dhw(vol, tmp_path / "nan.nii.gz", np.float32)
    with pytest.raises(ValueError, match=r"nan\.nii\.gz: image contains 2 NaN/inf voxels"):
        load_case(Case("nan", p, None))


def test_load_case_error_dimensions(tmp_path):
    multi = save_xyz(np.zeros((8, 8, 3, 2), np.int16), tmp_path / "multi.nii.gz")
    with pytest.raises(ValueError, match=r"multi\.nii\.gz: 4-D image with 2 channels/time "
                                         r"points is not supported; pass one channel"):
        load_case(Case("multi", multi, None))
    flat = save_xyz(np.zeros((8, 8), np.int16), tmp_path / "flat.nii.gz")
    with pytest.raises(ValueError, match=r"flat\.nii\.gz: image is not 3-D"):
        load_case(Case("flat", flat, None))


def test_load_case_error_arguments(msd):
    case = scan_dataset(msd).cases[0]
    with pytest.raises(ValueError, match="window"):
        load_case(case, window=(300, -200))
    with pytest.raises(ValueError, match="window"):
        load_case(case, window=(10, 10))
    with pytest.raises(ValueError, match="resize"):
        load_case(case, resize="stretch")
    for bad in (0, -3, 2.5, True, (8,), (8, 0)):
        with pytest.raises(ValueError, match="patch_size"):
            load_case(case, patch_size=bad)


# ----------------------------------------------------------------------------
# load_slices
# ----------------------------------------------------------------------------

def test_load_slices(msd, capsys):
    info = scan_dataset(msd)
    cases = [info.cases[2], info.cases[0]]  # order given is kept
    s = load_slices(cases, patch_size=16, class_names=info.class_names, progress=False)
    assert isinstance(s, SliceSet)
    d = SHAPE[0]
    assert len(s) == 2 * d
    assert s.images.shape == (2 * d, 1, 16, 16) and s.images.dtype == torch.float32
    assert s.labels.shape == (2 * d, 16, 16) and s.labels.dtype == torch.int64
    assert s.positions.shape == (2 * d,) and s.positions.dtype == torch.float32
    assert s.volume.dtype == torch.int64
    assert s.volume.tolist() == [0] * d + [1] * d
    assert s.names == ["phantom_002", "phantom_000"]
    np.testing.assert_allclose(s.positions.numpy(), np.tile(np.arange(d) / (d - 1), 2))
    for v, case in enumerate(cases):
        im, lab, _ = load_case(case, patch_size=16, class_names=info.class_names)
        np.testing.assert_array_equal(s.images[s.volume == v, 0].numpy(), im)
        np.testing.assert_array_equal(s.labels[s.volume == v].numpy(), lab)
    assert capsys.readouterr().err == ""
    load_slices(cases[:1], patch_size=8, progress=True)
    assert "loading volumes" in capsys.readouterr().err


def test_load_slices_unlabeled(msd):
    info = scan_dataset(msd)
    unl = [Case(c.name, c.image, None) for c in info.cases[:2]]
    s = load_slices(unl, patch_size=8, progress=False)
    assert s.labels is None and len(s) == 2 * SHAPE[0]
    with pytest.raises(ValueError, match=r"phantom_001\.nii\.gz: case 'phantom_001' has no "
                                         r"label file.*require_labels"):
        load_slices([info.cases[0], unl[1]], require_labels=True, progress=False)
    # partly labeled: the unlabeled volume's slices are -1
    mixed = load_slices([info.cases[0], unl[1]], patch_size=8, progress=False)
    assert mixed.labels.shape == (2 * SHAPE[0], 8, 8)
    assert torch.all(mixed.labels[mixed.volume == 1] == -1)
    assert torch.all(mixed.labels[mixed.volume == 0] >= 0)


def test_load_slices_empty():
    with pytest.raises(ValueError, match="no cases"):
        load_slices([], progress=False)


# ----------------------------------------------------------------------------
# split_cases / write_split
# ----------------------------------------------------------------------------

def fake_info(n_labeled, n_unlabeled=0, tmp="/nonexistent"):
    """A DatasetInfo with case names only (split_cases reads no file)."""
    cases = [Case(f"lab{i:02d}", f"{tmp}/lab{i:02d}.nii.gz", f"{tmp}/l/lab{i:02d}.nii.gz")
             for i in range(n_labeled)]
    cases += [Case(f"unl{i:02d}", f"{tmp}/unl{i:02d}.nii.gz", None) for i in range(n_unlabeled)]
    cases.sort(key=lambda c: c.name)
    return DatasetInfo(root=tmp, cases=tuple(cases), modality="CT", class_names=CLASSES,
                       layout="folder")


def test_split_cases_sizes_and_disjointness():
    info = fake_info(20, n_unlabeled=7)
    split = split_cases(info, label_fraction=0.25, seed=3)
    assert set(split) == {"pretrain", "finetune", "val", "test", "label_fraction", "seed"}
    assert split["label_fraction"] == 0.25 and split["seed"] == 3
    labeled = {f"lab{i:02d}" for i in range(20)}
    unlabeled = {f"unl{i:02d}" for i in range(7)}
    val, test = set(split["val"]), set(split["test"])
    pretrain, finetune = set(split["pretrain"]), set(split["finetune"])
    assert len(test) == 4 and len(val) == 4  # round(0.2 * 20)
    assert not val & test
    assert not (val | test) & (pretrain | finetune)
    pool = labeled - val - test
    assert pretrain == pool | unlabeled  # whole pool (labels unused) + every unlabeled case
    assert finetune <= pool and len(finetune) == round(0.25 * 12)
    assert val | test | pool == labeled
    # lists, no duplicates
    for key in ("pretrain", "finetune", "val", "test"):
        assert len(split[key]) == len(set(split[key]))
    # by volume: the names are case names
    names = {c.name for c in info.cases}
    assert pretrain | finetune | val | test <= names


def test_split_cases_nested_and_deterministic():
    info = fake_info(37, n_unlabeled=3)
    for seed in (0, 1, 7):
        s10, s25, s100 = (split_cases(info, label_fraction=f, seed=seed)
                          for f in (0.1, 0.25, 1.0))
        assert set(s10["finetune"]) < set(s25["finetune"]) < set(s100["finetune"])
        # val/test/pretrain do not depend on the label fraction
        for key in ("val", "test", "pretrain"):
            assert s10[key] == s25[key] == s100[key]
        assert set(s100["finetune"]) == set(s100["pretrain"]) - {"unl00", "unl01", "unl02"}
        assert split_cases(info, label_fraction=0.25, seed=seed) == s25
    a = split_cases(info, seed=0)
    b = split_cases(info, seed=1)
    assert a["test"] != b["test"] or a["val"] != b["val"]


def _unit_info(tmp_path, blocks, unit=2, **extra):
    """An MSD DatasetInfo whose dataset.json declares z-units: ``blocks`` [start, stop) ranges
    cut into ``unit``-slice cases (the last one of a block takes the remainder)."""
    units = {}
    for b0, b1 in blocks:
        edges = list(range(b0, b1 - unit + 1, unit)) or [b0]
        for a, b in zip(edges, edges[1:] + [b1]):
            units[f"u{a:03d}"] = {"block": f"b{b0:03d}", "z": [a, b]}
    (tmp_path / "dataset.json").write_text(json.dumps({"supercl_units": units, **extra}))
    cases = tuple(Case(n, f"{tmp_path}/{n}.nii.gz", f"{tmp_path}/l/{n}.nii.gz")
                  for n in sorted(units))
    return DatasetInfo(root=tmp_path, cases=cases, modality="MRI", class_names=CLASSES,
                       layout="msd"), units


def test_split_cases_declared_units_hold_out_blocks_and_stratify_over_z(tmp_path):
    blocks = [(10 * i, 10 * i + 8) for i in range(10)]  # 10 blocks of 8 slices, gaps of 2
    info, units = _unit_info(tmp_path, blocks)
    plain = split_cases(fake_info(10), seed=0)  # the same permutation, over the blocks
    order = {f"lab{i:02d}": f"b{b0:03d}" for i, (b0, _) in enumerate(blocks)}
    draws = set()
    for label_seed in range(20):
        split = split_cases(info, label_fraction=0.25, seed=0, label_seed=label_seed)
        for key in ("test", "val"):  # whole blocks, the ones a volume split would hold out
            assert {units[c]["block"] for c in split[key]} == {order[c] for c in plain[key]}
            assert split[key] == sorted(c for c in units if units[c]["block"] in
                                        {order[n] for n in plain[key]})
        pool = sorted(split["pretrain"], key=lambda c: units[c]["z"][0])
        assert len(pool) == 24 and not set(pool) & set(split["test"] + split["val"])
        # 25 % of 24 units: 6 strata of 4 consecutive units, one unit drawn in each
        strata = [pool[i:i + 4] for i in range(0, 24, 4)]
        assert [len(set(split["finetune"]) & set(s)) for s in strata] == [1] * 6
        assert split["finetune_slices"] == 12 and split["pool_slices"] == 48
        draws.add(tuple(split["finetune"]))
    assert len(draws) > 10  # the label seed moves the draw; test and validation stay
    whole = split_cases(info, label_fraction=1.0, seed=0, label_seed=3)
    assert whole["finetune"] == sorted(pool)
    # without a label seed the draw continues the split seed's generator, deterministically
    assert split_cases(info, seed=5) == split_cases(info, seed=5)


def test_split_cases_declared_units_errors(tmp_path):
    info, units = _unit_info(tmp_path, [(0, 4), (6, 10)])
    with pytest.raises(ValueError, match="2 labeled blocks"):
        split_cases(info)
    units["u000"]["z"] = [4, 0]
    (tmp_path / "dataset.json").write_text(json.dumps({"supercl_units": units}))
    with pytest.raises(ValueError, match="malformed \"supercl_units\""):
        split_cases(info)


def test_split_cases_minimum_sizes():
    split = split_cases(fake_info(3), label_fraction=0.1, val_fraction=0.0, test_fraction=0.01)
    assert len(split["test"]) == 1 and len(split["val"]) == 1
    assert len(split["finetune"]) == 1 and len(split["pretrain"]) == 1


def test_split_cases_errors():
    info = fake_info(10)
    for bad in (0, 0.0, -0.1, 1.5, float("nan"), True, "0.1"):
        with pytest.raises(ValueError, match="label_fraction"):
            split_cases(info, label_fraction=bad)
    with pytest.raises(ValueError, match="val_fraction"):
        split_cases(info, val_fraction=1.0)
    with pytest.raises(ValueError, match="test_fraction"):
        split_cases(info, test_fraction=-0.2)
    with pytest.raises(ValueError, match="seed"):
        split_cases(info, seed=-1)
    with pytest.raises(ValueError, match=r"2 labeled volumes.*leave 0 training volumes"):
        split_cases(fake_info(2, n_unlabeled=5))
    with pytest.raises(ValueError, match=r"10 labeled volumes; test_fraction=0\.5 \(5 test\) "
                                         r"and val_fraction=0\.5 \(5 val\) leave 0"):
        split_cases(info, val_fraction=0.5, test_fraction=0.5)


def test_split_cases_on_scanned_msd(msd_copy):
    (msd_copy / "imagesTs").mkdir()
    shutil.copy(msd_copy / "imagesTr" / "phantom_000.nii.gz", msd_copy / "imagesTs" / "u.nii.gz")
    edit_json(msd_copy, test=["./imagesTs/u.nii.gz"])
    split = split_cases(scan_dataset(msd_copy), label_fraction=1.0)
    assert len(split["val"]) == len(split["test"]) == 1
    assert "u" in split["pretrain"] and "u" not in split["finetune"]


def test_write_split_round_trip(tmp_path):
    split = split_cases(fake_info(12, 2), label_fraction=0.25, seed=5)
    path = tmp_path / "runs" / "exp" / "split.json"  # parents are created
    out = write_split(split, path)
    assert out == path
    assert json.loads(path.read_text()) == split
    # overwrite; numpy scalars are converted; no temporary file is left behind
    split2 = dict(split, seed=np.int64(6), label_fraction=np.float64(0.5))
    write_split(split2, str(path))
    back = json.loads(path.read_text())
    assert back["seed"] == 6 and back["label_fraction"] == 0.5
    assert os.listdir(path.parent) == ["split.json"]
    with pytest.raises(ValueError, match="JSON"):
        write_split({"x": object()}, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()
    assert os.listdir(tmp_path) == ["runs"]
