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


def test_units_tile_a_block():
    assert mni152._units(8, 21, 2) == [(8, 10), (10, 12), (12, 14), (14, 16), (16, 18), (18, 21)]
    assert mni152._units(23, 35, 2)[-1] == (33, 35)
    assert mni152._units(5, 7, 4) == [(5, 7)]  # a unit above the block size: the whole block


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n_blocks=2), ValueError, "n_blocks must be >= 3"),
    (dict(n_blocks=4.0), TypeError, "n_blocks must be an int"),
    (dict(gap=-1), ValueError, "gap must be >= 0"),
    (dict(gap=True), TypeError, "gap must be an int"),
    (dict(unit=0), ValueError, "unit must be >= 1"),
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
    assert dataset["modality"] == {"0": "MRI"}
    info = scan_dataset(root)
    assert len(info.cases) == dataset["numTraining"] == len(dataset["supercl_units"])
    assert len({u["block"] for u in dataset["supercl_units"].values()}) == 5
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
    # the units of a block tile it: 2-slice cases, the last one of a block takes the rest
    units = dataset["supercl_units"]
    assert set(units) == {c.name for c in info.cases}
    for name, unit in units.items():
        start, stop = unit["z"]
        assert name == f"mni152_z{start:03d}-{stop - 1:03d}" and stop - start in (2, 3)
    split = split_cases(info, seed=0)
    # held out by block: one test block and one validation block, all their units
    assert len({units[c]["block"] for c in split["test"]}) == 1
    assert len({units[c]["block"] for c in split["val"]}) == 1
    with pytest.raises(FileExistsError, match="overwrite"):
        mni152.write_mni152_msd(root)
    mni152.write_mni152_msd(root, n_blocks=3, unit=1000, overwrite=True)  # one case per block
    assert len(list((root / "imagesTr").glob("*.nii.gz"))) == 3


def test_the_default_ablation_draws_are_fair(tmp_path):
    """The dataset `supercl ablate --dataset mni152` writes: at 10 % labels every label draw
    spans the test blocks' z range (tolerance 0: lowest labeled slice <= lowest test slice,
    highest >= highest), takes one unit from each z-stratum of the pool, labels the stated
    share of slices, overlaps neither validation nor test, and the draws differ."""
    pytest.importorskip("nilearn")
    from supercl.ablate import label_seeds
    from supercl.data import scan_dataset, split_cases

    root = mni152.write_mni152_msd(tmp_path / "mni")
    units = json.loads((root / "dataset.json").read_text())["supercl_units"]
    info = scan_dataset(root, modality="MRI")

    def zs(names):
        return [z for name in names for z in range(*units[name]["z"])]

    seeds = label_seeds(root, "MRI", 0.1, 15)
    splits = [split_cases(info, label_fraction=0.1, seed=0, label_seed=s) for s in seeds]
    assert len({tuple(s["finetune"]) for s in splits}) == 15  # distinct draws
    first = splits[0]
    # the blocks every MNI152 result so far was tested on (split seed 0)
    assert sorted({units[c]["block"] for c in first["test"]}) == ["z066-078", "z096-107"]
    assert sorted({units[c]["block"] for c in first["val"]}) == ["z037-049", "z110-122"]
    test_z = zs(first["test"])
    pool = sorted(first["pretrain"], key=lambda c: units[c]["z"][0])
    assert len(pool) == 36 and first["pool_slices"] == len(zs(pool)) == 75
    strata = [set(s) for s in np.array_split(np.array(pool, dtype=object), 4)]
    for split in splits:
        assert split["test"] == first["test"] and split["val"] == first["val"]
        assert split["pretrain"] == first["pretrain"]
        labeled = split["finetune"]
        assert set(labeled) <= set(pool)
        assert not set(labeled) & set(split["val"] + split["test"])
        z = zs(labeled)
        assert min(z) <= min(test_z) and max(z) >= max(test_z)
        assert [len(set(labeled) & s) for s in strata] == [1, 1, 1, 1]
        assert split["finetune_slices"] == len(z) in (8, 9)  # 10.7 % or 12.0 % of 75
        # no labeled slice is next to a held-out one: the 2-slice gaps between blocks remain
        held = set(zs(split["val"] + split["test"]))
        assert not {v + d for v in z for d in (-2, -1, 0, 1, 2)} & held
