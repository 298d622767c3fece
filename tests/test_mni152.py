"""supercl.data.mni152: the grey/white-matter task built from the MNI152 template in nilearn's
wheel (skipped without nilearn): labels, z-blocks with gaps, the MSD folder read back through
supercl's own loader, and errors."""

import importlib.util
import json

import numpy as np
import pytest

from supercl.data import mni152


def test_without_nilearn_says_how_to_get_it(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "nilearn" else real(name, *a))
    with pytest.raises(ImportError, match=r"supercl\[mni\]"):
        mni152.write_mni152_msd(tmp_path / "mni")
    assert not (tmp_path / "mni").exists()


def test_blocks_are_contiguous_with_gaps():
    blocks = mni152._blocks(8, 152, 10, 2)
    assert len(blocks) == 10 and blocks[0][0] == 8 and blocks[-1][1] == 152
    for (a0, a1), (b0, _) in zip(blocks, blocks[1:]):
        assert a1 < b0 and b0 - a1 == 2  # two slices left out between neighbours
    sizes = [b - a for a, b in blocks]
    assert max(sizes) - min(sizes) <= 1
    assert mni152._blocks(0, 7, 3, 0) == [(0, 2), (2, 5), (5, 7)]
    with pytest.raises(ValueError, match="cannot make"):
        mni152._blocks(0, 10, 5, 2)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n_blocks=2), ValueError, "n_blocks must be >= 3"),
    (dict(n_blocks=4.0), TypeError, "n_blocks must be an int"),
    (dict(gap=-1), ValueError, "gap must be >= 0"),
    (dict(gap=True), TypeError, "gap must be an int"),
])
def test_bad_arguments(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        mni152.write_mni152_msd(tmp_path / "mni", **kwargs)


def test_task_labels_are_the_argmax_of_the_tissue_maps():
    pytest.importorskip("nilearn")
    import nibabel as nib

    t1, labels, affine, (z0, z1) = mni152.mni152_task()
    assert t1.shape == labels.shape == (197, 233, 189) and labels.dtype == np.uint8
    assert set(np.unique(labels).tolist()) == {0, 1, 2}
    paths = mni152.template_paths()
    gm = np.asarray(nib.load(paths["gm"]).dataobj, dtype=np.float32)
    wm = np.asarray(nib.load(paths["wm"]).dataobj, dtype=np.float32)
    # where one tissue has a clear majority, the label is that tissue
    assert (labels[gm > 200] == 1).all() and (labels[wm > 200] == 2).all()
    assert (labels[(gm == 0) & (wm == 0)] == 0).all()
    brain = labels[:, :, z0:z1] > 0
    assert 0.1 < brain.mean() < 0.6  # a brain, not an empty or full box
    assert (labels[:, :, :z0] > 0).mean(axis=(0, 1)).max() < 0.01
    # grey and white matter both substantial, as in an adult brain
    gm_share = (labels == 1).sum() / (labels > 0).sum()
    assert 0.35 < gm_share < 0.75
    assert np.allclose(np.diag(affine)[:3], 1.0)


def test_write_and_read_back_through_the_loader(tmp_path):
    pytest.importorskip("nilearn")
    from supercl.data import load_case, scan_dataset, split_cases

    root = mni152.write_mni152_msd(tmp_path / "mni", n_blocks=5, gap=3)
    dataset = json.loads((root / "dataset.json").read_text())
    assert dataset["modality"] == {"0": "MRI"} and dataset["numTraining"] == 5
    info = scan_dataset(root)
    assert len(info.cases) == 5
    _, labels, _, (z0, z1) = mni152.mni152_task()
    depth = 0
    for case in info.cases:
        start, stop = (int(v) for v in case.name.split("_z")[1].split("-"))
        # the template's own slice size (H, W) = (Y, X): no resampling
        volume, target, positions = load_case(case, modality="MRI", patch_size=(233, 197),
                                              resize="crop")
        assert volume.shape == (stop - start + 1, 233, 197)  # the block's axial slices
        assert abs(float(volume.mean())) < 1e-3  # MRI: z-scored per volume
        np.testing.assert_array_equal(target, labels[:, :, start:stop + 1].transpose(2, 1, 0))
        depth += volume.shape[0]
    assert depth == (z1 - z0) - 3 * 4
    split = split_cases(info, seed=0)
    assert len(split["test"]) == 1 and len(split["val"]) == 1
    with pytest.raises(FileExistsError, match="overwrite"):
        mni152.write_mni152_msd(root)
    mni152.write_mni152_msd(root, n_blocks=3, overwrite=True)
    assert len(list((root / "imagesTr").glob("*.nii.gz"))) == 3
