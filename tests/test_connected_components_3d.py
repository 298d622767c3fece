"""supercl.ops.connected_components with spatial_dims=3 against skimage.measure.label (the
oracle) and cc3d: exact equality, numbering included, for the 6-, 18- and 26-neighbourhoods.
scikit-image's own 3-D label cases are ported at the end."""

import numpy as np
import pytest
import torch

from supercl.ops import connected_components
from supercl.testing import connected_components_reference

cc3d = pytest.importorskip("cc3d")

CONNECTIVITIES = [1, 2, 3]
CC3D_NAME = {1: 6, 2: 18, 3: 26}


def label3(labels, connectivity=3, background=None, **kwargs):
    return connected_components(labels, connectivity=connectivity, background=background,
                                spatial_dims=3, **kwargs)


def check(volumes, connectivity, background=None):
    got = label3(volumes, connectivity, background)
    expected = connected_components_reference(np.asarray(volumes), connectivity, background,
                                              spatial_dims=3)
    np.testing.assert_array_equal(np.asarray(got), expected)
    return got


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    """The single-thread run scan and the multi-thread form (rows joined with atomics)."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("connectivity", CONNECTIVITIES)
def test_random_volumes_odd_sizes(connectivity, threads):
    rng = np.random.default_rng(connectivity)
    for shape in [(1, 1, 1), (1, 1, 97), (97, 1, 1), (1, 97, 1), (3, 5, 123), (7, 19, 23),
                  (31, 17, 13), (2, 2, 2)]:
        for n_values in (2, 3):
            volume = rng.integers(0, n_values, size=shape)
            check(volume, connectivity)
            check(volume[None].repeat(2, 0), connectivity)  # a (B, D, H, W) batch


@pytest.mark.parametrize("connectivity", CONNECTIVITIES)
def test_every_small_shape(connectivity):
    """Every shape with sides 1..4, size-1 axes included: scikit-image numbers a (D, H, 1)
    volume in the raster order of its (H, D) transpose, and so must supercl."""
    rng = np.random.default_rng(20 + connectivity)
    for shape in np.ndindex(4, 4, 4):
        shape = tuple(s + 1 for s in shape)
        check(rng.integers(0, 3, size=(2,) + shape), connectivity)


@pytest.mark.parametrize("connectivity", CONNECTIVITIES)
def test_hundreds_of_random_batches(connectivity):
    rng = np.random.default_rng(10 + connectivity)
    for _ in range(150):
        d, h, w = (int(v) for v in rng.integers(1, 12, size=3))
        batch = int(rng.integers(1, 4))
        p = float(rng.uniform(0.1, 0.9))
        volumes = (rng.random((batch, d, h, w)) < p).astype(np.uint8)
        if rng.random() < 0.5:
            volumes = volumes * rng.integers(1, 4, size=volumes.shape)
        check(volumes, connectivity)


@pytest.mark.parametrize("connectivity", CONNECTIVITIES)
def test_equals_cc3d_on_blobs(connectivity, threads):
    """Smooth blobs (long runs, many merges across slices) at an odd size, against cc3d too."""
    rng = np.random.default_rng(3)
    field = rng.random((21, 40, 37))
    for axis in range(3):  # a cheap smoothing: a few box filters along each axis
        for _ in range(3):
            field = (np.roll(field, 1, axis) + field + np.roll(field, -1, axis)) / 3
    volume = (field > np.median(field)).astype(np.uint8)
    got = check(volume, connectivity)
    np.testing.assert_array_equal(got, cc3d.connected_components(
        volume, connectivity=CC3D_NAME[connectivity]))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32,
                                   np.int64, np.uint64, bool])
def test_dtypes(dtype):
    volume = np.random.default_rng(1).integers(0, 2 if dtype is bool else 4, size=(5, 9, 11))
    check(volume.astype(dtype), 1)


def test_background_and_return_num(threads):
    rng = np.random.default_rng(7)
    volumes = rng.integers(0, 4, size=(3, 6, 7, 9))
    for background in (None, 0, 2, -1, 99):
        got, num = label3(volumes, 2, background, return_num=True)
        expected = connected_components_reference(volumes, 2, background, spatial_dims=3)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(num, expected.reshape(3, -1).max(1))
        assert num.dtype == np.int64 and num.shape == (3,)
    single, num = label3(volumes[0], 1, return_num=True)
    assert type(num) is int and num == single.max()  # a Python int, as in scikit-image


def test_non_contiguous_and_tensor_input(threads):
    base = torch.from_numpy(np.random.default_rng(2).integers(0, 3, size=(12, 30, 20)))
    for view in (base.transpose(0, 2), base[::2, :, ::3], base.permute(1, 2, 0)[:, 3:]):
        got = label3(view, 3)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.int32
        np.testing.assert_array_equal(got.numpy(), connected_components_reference(
            view.numpy(), 3, spatial_dims=3))


def test_volume_is_not_a_batch_of_slices():
    """A (D, H, W) input is one volume with spatial_dims=3 and D images with the default 2."""
    x = np.zeros((2, 3, 3), dtype=np.uint8)
    x[0, 1, 1] = x[1, 1, 1] = 1
    assert label3(x, 1).max() == 1
    np.testing.assert_array_equal(connected_components(x).reshape(2, -1).max(1), [1, 1])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_bad_input_is_named(spatial_dims):
    good = np.zeros((2, 3, 4, 5), dtype=np.int32)
    with pytest.raises(ValueError, match="spatial_dims"):
        connected_components(good, spatial_dims=4)
    with pytest.raises(TypeError, match="labels"):
        connected_components(good.astype(np.float32), spatial_dims=3)
    with pytest.raises(ValueError, match="labels"):
        connected_components(good[0, 0], spatial_dims=3)
    with pytest.raises(ValueError, match="labels"):
        connected_components(good[None], spatial_dims=3)
    with pytest.raises(ValueError, match="labels"):
        connected_components(good[:, :0], spatial_dims=3)
    with pytest.raises(ValueError, match="connectivity"):
        connected_components(good, connectivity=4, spatial_dims=3)
    with pytest.raises(ValueError, match="connectivity"):
        connected_components(good[0, 0], connectivity=3)  # 3 is a 3-D neighbourhood
    with pytest.raises(TypeError, match="background"):
        connected_components(good, background=1.5, spatial_dims=3)
    with pytest.raises(TypeError, match="return_num"):
        connected_components(good, return_num=1, spatial_dims=3)


# scikit-image's 3-D cases (skimage/measure/tests/test_ccomp.py, TestConnectedComponents3d),
# with its background value BG = 0.
BG = 0


def _skimage_volume():
    x = np.zeros((3, 4, 5), int)
    x[0] = [[0, 3, 2, 1, 9], [0, 1, 9, 2, 9], [0, 1, 9, 9, 9], [3, 1, 5, 3, 0]]
    x[1] = [[3, 3, 2, 1, 9], [0, 3, 9, 2, 1], [0, 3, 3, 1, 1], [3, 1, 3, 3, 0]]
    x[2] = [[3, 3, 8, 8, 0], [2, 3, 9, 8, 8], [2, 3, 0, 8, 0], [2, 1, 0, 0, 0]]
    labels = np.zeros((3, 4, 5), int)
    labels[0] = [[0, 1, 2, 3, 4], [0, 5, 4, 2, 4], [0, 5, 4, 4, 4], [1, 5, 6, 1, 0]]
    labels[1] = [[1, 1, 2, 3, 4], [0, 1, 4, 2, 3], [0, 1, 1, 3, 3], [1, 5, 1, 1, 0]]
    labels[2] = [[1, 1, 7, 7, 0], [8, 1, 4, 7, 7], [8, 1, 0, 7, 0], [8, 5, 0, 0, 0]]
    return x, labels


def test_skimage_basic():
    x, labels = _skimage_volume()
    np.testing.assert_array_equal(label3(x, 3), labels)
    assert x[0, 0, 2] == 2, "data was modified"


def test_skimage_diag():
    x = np.zeros((3, 3, 3), int)
    x[0, 2, 2] = x[1, 1, 1] = x[2, 0, 0] = 1
    np.testing.assert_array_equal(label3(x, 3), x)
    np.testing.assert_array_equal(label3(x, 2), x * [[[1]], [[2]], [[3]]])


@pytest.mark.parametrize("connectivity", [1, 2])
def test_skimage_connectivity_vs_full(connectivity):
    x = np.zeros((2, 2, 2), int)
    x[0, 1, 1] = x[1, 0, 0] = 1
    separate = x.copy()
    separate[1, 0, 0] = 2
    np.testing.assert_array_equal(label3(x, connectivity), separate)
    np.testing.assert_array_equal(label3(x, 3), x)


def test_skimage_background():
    x = np.zeros((2, 3, 3), int)
    x[0] = [[1, 0, 0], [1, 0, 0], [0, 0, 0]]
    x[1] = [[0, 0, 0], [0, 1, 5], [0, 0, 0]]
    lnb = x.copy()
    lnb[0] = [[1, 2, 2], [1, 2, 2], [2, 2, 2]]
    lnb[1] = [[2, 2, 2], [2, 1, 3], [2, 2, 2]]
    lb = x.copy()
    lb[0] = [[1, BG, BG], [1, BG, BG], [BG, BG, BG]]
    lb[1] = [[BG, BG, BG], [BG, 1, 2], [BG, BG, BG]]
    np.testing.assert_array_equal(label3(x, 3), lb)
    np.testing.assert_array_equal(label3(x, 3, background=-1), lnb)


def test_skimage_background_two_regions():
    x = np.zeros((2, 3, 3), int)
    x[0] = [[0, 0, 6], [0, 0, 6], [5, 5, 5]]
    x[1] = [[6, 6, 0], [5, 0, 0], [0, 0, 0]]
    lb = x.copy()
    lb[0] = [[BG, BG, 1], [BG, BG, 1], [2, 2, 2]]
    lb[1] = [[1, 1, BG], [2, BG, BG], [BG, BG, BG]]
    np.testing.assert_array_equal(label3(x, 3, background=0), lb)


def test_skimage_background_one_region_center():
    x = np.zeros((3, 3, 3), int)
    x[1, 1, 1] = 1
    lb = np.full_like(x, BG)
    lb[1, 1, 1] = 1
    np.testing.assert_array_equal(label3(x, 1, background=0), lb)


def test_skimage_1d_shapes():
    x = np.array((0, 1, 2, 2, 1, 1, 0, 0))
    y = np.array((0, 1, 2, 2, 3, 3, 0, 0))
    for shape in ((1, 8, 1), (8, 1, 1), (1, 1, 8)):
        np.testing.assert_array_equal(label3(x.reshape(shape), 3).ravel(), y)
