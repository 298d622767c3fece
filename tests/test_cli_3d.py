"""``supercl superpixels --3d``: supervoxels of a whole volume written as NIfTI with the image's
affine and header spacing, plus a PNG of three orthogonal slices."""

from pathlib import Path

import numpy as np
import pytest

from supercl.cli import main
from phantom_v1 import write_msd
from supercl.ops import connected_components, slic

nib = pytest.importorskip("nibabel")


@pytest.fixture(scope="module")
def msd(tmp_path_factory):
    return write_msd(tmp_path_factory.mktemp("data") / "msd", n_volumes=2, shape=(9, 45, 51),
                     n_organs=2, seed=4)


def test_supervoxels_nifti_and_png(msd, tmp_path, capsys):
    out = tmp_path / "sv"
    assert main(["superpixels", "--3d", "--data", str(msd), "--out", str(out),
                 "--n-segments", "40", "--device", "cpu"]) == 0
    case = sorted(Path(msd, "imagesTr").glob("*.nii.gz"))[0].name[: -len(".nii.gz")]
    image = nib.load(str(Path(msd, "imagesTr", case + ".nii.gz")))
    labels_img = nib.load(str(out / f"supervoxels_{case}.nii.gz"))
    labels = np.asarray(labels_img.dataobj)
    assert labels.shape == image.shape and labels.dtype == np.int32
    np.testing.assert_allclose(labels_img.affine, image.affine)
    np.testing.assert_allclose(labels_img.header.get_zooms()[:3], image.header.get_zooms()[:3])
    # The same supervoxels as the op on the windowed volume with the header's spacing.
    volume = np.clip(np.asarray(image.dataobj, dtype=np.float32), -200.0, 300.0)
    expected = slic(volume, n_segments=40, compactness=0.1,
                    spacing=tuple(float(z) for z in image.header.get_zooms()[:3]),
                    spatial_dims=3)
    np.testing.assert_array_equal(labels, expected)
    n = int(labels.max()) + 1
    assert 10 <= n <= 80
    assert int(connected_components(labels, connectivity=1, background=-1,
                                    spatial_dims=3).max()) == n
    png = out / f"supervoxels_{case}.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "supervoxels" in capsys.readouterr().out


def test_supervoxels_reject_non_volume(tmp_path, capsys):
    data = tmp_path / "flat"
    data.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((2, 3, 4, 2), np.float32), np.eye(4)),
             str(data / "four_d.nii.gz"))
    assert main(["superpixels", "--3d", "--data", str(data), "--out", str(tmp_path / "o"),
                 "--device", "cpu"]) != 0
    assert "--3d needs a 3-D volume" in capsys.readouterr().err
