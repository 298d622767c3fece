"""supercl.ops.slic against skimage.segmentation.slic: scikit-image's own 2D test cases with
their expected outputs, quality on phantom slices, determinism, the GPU form, and errors."""

import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from phantom_v1 import phantom_batch
from supercl.ops import connected_components, slic
from supercl.testing import slic_reference
from supercl.viz import boundary_mask as boundaries

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


# --------------------------------------------------------------------------------------------
# Quality on phantom slices, against scikit-image on the same slices
# --------------------------------------------------------------------------------------------


def boundary_recall(superpixels, truth, tolerance=2):
    """Fraction of ground-truth boundary pixels with a superpixel boundary within `tolerance`
    pixels (chessboard distance)."""
    truth_edges = boundaries(truth)
    size = 2 * tolerance + 1
    near = ndimage.binary_dilation(boundaries(superpixels), structure=np.ones((size, size)))
    return (truth_edges & near).sum() / max(truth_edges.sum(), 1)


def undersegmentation_error(superpixels, truth):
    """Neubert & Protzel's corrected undersegmentation error: for every superpixel and every
    ground-truth segment it overlaps, the smaller of the part inside and the part outside,
    summed and divided by the number of pixels."""
    s = superpixels.ravel().astype(np.int64)
    t = truth.ravel().astype(np.int64)
    pairs, overlap = np.unique(s * (t.max() + 1) + t, return_counts=True)
    size = np.bincount(s)[pairs // (t.max() + 1)]
    return np.minimum(overlap, size - overlap).sum() / s.size


@pytest.fixture(scope="module")
def phantom_slices():
    return phantom_batch(6, 160, 192, seed=2)


def test_phantom_quality_matches_skimage(phantom_slices):
    images, organs = phantom_slices
    kwargs = dict(n_segments=100, compactness=0.1, start_label=0)
    ours = slic(images, **kwargs)
    theirs = slic_reference(images, **kwargs)
    for b in range(len(images)):
        n_ours, n_theirs = len(np.unique(ours[b])), len(np.unique(theirs[b]))
        assert abs(n_ours - n_theirs) <= 0.25 * n_theirs, (b, n_ours, n_theirs)
        recall_ours = boundary_recall(ours[b], organs[b])
        recall_theirs = boundary_recall(theirs[b], organs[b])
        assert recall_ours >= recall_theirs - 0.02, (b, recall_ours, recall_theirs)
        ue_ours = undersegmentation_error(ours[b], organs[b])
        ue_theirs = undersegmentation_error(theirs[b], organs[b])
        assert ue_ours <= ue_theirs + 0.02, (b, ue_ours, ue_theirs)


def test_quality_metrics_are_sensitive():
    """The metrics above can fail: a blocky grid ignores organ boundaries."""
    _, organs = phantom_batch(1, 160, 192, seed=2)
    grid = (np.arange(160)[:, None] // 40) * 10 + np.arange(192)[None, :] // 40
    assert boundary_recall(grid, organs[0]) < 0.5
    assert undersegmentation_error(grid, organs[0]) > 0.05
    assert boundary_recall(organs[0], organs[0]) == 1.0
    assert undersegmentation_error(organs[0], organs[0]) == 0.0


# --------------------------------------------------------------------------------------------
# Invariants: connectivity, numbering, determinism, the GPU form
# --------------------------------------------------------------------------------------------


def assert_each_label_one_region(labels, first=0):
    """Every label is exactly one 4-connected region, labels are consecutive from `first`."""
    labels = np.asarray(labels)
    for image in labels.reshape(-1, *labels.shape[-2:]):
        values = np.unique(image[image >= first])
        np.testing.assert_array_equal(values, np.arange(first, first + len(values)))
        regions = connected_components(image.astype(np.int64), connectivity=1, background=-1)
        assert int(regions.max()) == len(np.unique(image))


def test_every_segment_is_connected(phantom_slices):
    images, _ = phantom_slices
    for n_segments, compactness in [(100, 0.1), (400, 0.01), (30, 1.0), (100, 1e-4)]:
        labels = slic(images, n_segments=n_segments, compactness=compactness)
        assert_each_label_one_region(labels)


@pytest.mark.parametrize("start_label", [0, 1, 5])
def test_labels_consecutive_from_start_label(phantom_slices, start_label):
    images, _ = phantom_slices
    for enforce in (True, False):
        labels = slic(images[:2], n_segments=50, compactness=0.1, start_label=start_label,
                      enforce_connectivity=enforce)
        for image in labels:
            values = np.unique(image)
            np.testing.assert_array_equal(values, np.arange(start_label, start_label + len(values)))


def test_deterministic_across_calls_and_threads(phantom_slices, threads):
    images, _ = phantom_slices
    threads(1)
    one = slic(images, n_segments=100, compactness=0.1)
    again = slic(images, n_segments=100, compactness=0.1)
    threads(2)
    two = slic(images, n_segments=100, compactness=0.1)
    single = np.stack([slic(images[b], n_segments=100, compactness=0.1) for b in range(2)])
    np.testing.assert_array_equal(one, again)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one[:2], single)  # one image, 2 threads: row-parallel path


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("use_mask", [False, True])
def test_device_form_matches_host_form(emulated, phantom_slices, channels, use_mask):
    """slic_assign_pixel and per-pixel accumulation (the CUDA kernels, run on the host) give
    the host driver's labels bit for bit."""
    images, organs = phantom_slices
    x = np.repeat(images[:3, None], channels, axis=1)
    if channels > 1:
        x[:, 1] = x[:, 1][:, ::-1]
        x[:, 2] = np.sqrt(np.abs(x[:, 2]))
    mask = (organs[:3] > 0) | (images[:3] > -500) if use_mask else None
    assert_host_form_equals_device_form(x, mask=mask)


@pytest.mark.parametrize("shape", [(1, 1), (1, 217), (217, 1), (7, 31), (5, 123), (2, 2), (64, 3)])
@pytest.mark.parametrize("n_segments", [1, 4, 100])
def test_odd_sizes(shape, n_segments):
    rng = np.random.default_rng(sum(shape) + n_segments)
    images = rng.random((2,) + shape)
    labels = slic(images, n_segments=n_segments, compactness=0.5)
    assert labels.shape == (2,) + shape and labels.dtype == np.int32
    assert_each_label_one_region(labels)


def test_constant_image():
    labels = slic(np.full((2, 40, 50), 3.0), n_segments=20, compactness=0.1)
    assert_each_label_one_region(labels)
    assert len(np.unique(labels[0])) >= 10


def test_mask_keeps_superpixels_inside(phantom_slices):
    images, organs = phantom_slices
    body = images > -500
    labels = slic(images, n_segments=80, compactness=0.1, mask=body)
    assert (labels[~body] == 0).all()
    assert (labels[body] >= 1).all()
    for b in range(len(images)):
        image = np.where(body[b], labels[b], -1)
        values = np.unique(labels[b][body[b]])
        np.testing.assert_array_equal(values, np.arange(1, len(values) + 1))
        regions = connected_components(image, connectivity=1, background=-1)
        assert int(regions.max()) == len(values)
        assert 0.5 * 80 <= len(values) <= 1.5 * 80


def test_empty_mask_gives_zeros():
    images = np.random.default_rng(0).random((2, 12, 13))
    mask = np.zeros((2, 12, 13), dtype=bool)
    mask[1, 3:9, 4:10] = True
    labels = slic(images, n_segments=4, mask=mask)
    assert (labels[0] == 0).all()
    assert labels[1][mask[1]].min() == 1 and (labels[1][~mask[1]] == 0).all()


def test_masked_nan_is_ignored():
    images = np.random.default_rng(1).random((1, 16, 16))
    mask = np.ones((1, 16, 16), dtype=bool)
    mask[0, :, :4] = False
    images[0, :, :4] = np.nan
    labels = slic(images, n_segments=4, mask=mask)
    assert (labels[0, :, :4] == 0).all() and labels[0, :, 4:].min() >= 1


def test_torch_input_output_and_non_contiguous(phantom_slices):
    images, _ = phantom_slices
    expected = slic(np.ascontiguousarray(images[:, ::2, ::3]), n_segments=30, compactness=0.1)
    t = torch.from_numpy(images)[:, ::2, ::3]
    assert not t.is_contiguous()
    got = slic(t, n_segments=30, compactness=0.1)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int32
    np.testing.assert_array_equal(got.numpy(), expected)
    half = slic(t.half(), n_segments=30, compactness=0.1)
    assert half.shape == got.shape


def test_multichannel_matches_skimage_exactly_on_easy_input():
    rng = np.random.default_rng(3)
    image = np.zeros((1, 4, 30, 40))
    image[0, 0, :15] = 1
    image[0, 1, :, :20] = 1
    image[0, 2:] = rng.random((2, 30, 40)) * 0.01
    ours = slic(image, n_segments=12, compactness=1.0, start_label=0)
    theirs = slic_reference(image, n_segments=12, compactness=1.0, start_label=0)
    assert len(np.unique(ours)) == len(np.unique(theirs))
    assert undersegmentation_error(ours[0], theirs[0]) < 0.02


@given(
    st.integers(1, 24),
    st.integers(1, 24),
    st.integers(1, 3),
    st.integers(1, 60),
    st.floats(1e-3, 100.0),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_property_valid_labels(height, width, channels, n_segments, compactness, enforce, seed):
    images = np.random.default_rng(seed).random((2, channels, height, width)).astype(np.float32)
    labels = slic(images, n_segments=n_segments, compactness=compactness,
                  enforce_connectivity=enforce)
    assert labels.shape == (2, height, width) and labels.dtype == np.int32
    for image in labels:
        values = np.unique(image)
        np.testing.assert_array_equal(values, np.arange(len(values)))
    if enforce:
        assert_each_label_one_region(labels)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------

GOOD = np.zeros((2, 8, 9), dtype=np.float32)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(images=[[0.0, 1.0]]), TypeError, "images"),
        (dict(images=GOOD.astype(bool)), TypeError, "images"),
        (dict(images=GOOD.astype(np.complex64)), TypeError, "images"),
        (dict(images=np.zeros(5)), ValueError, "images"),
        (dict(images=np.zeros((1, 1, 1, 2, 2))), ValueError, "images"),
        (dict(images=np.zeros((0, 8, 9))), ValueError, "empty batch"),
        (dict(images=np.zeros((2, 0, 9))), ValueError, "empty image"),
        (dict(images=np.zeros((2, 0, 8, 9))), ValueError, "channels"),
        (dict(images=np.full((2, 8, 9), np.nan)), ValueError, "NaN"),
        (dict(images=np.full((2, 8, 9), np.inf)), ValueError, "inf"),
        (dict(images=GOOD, n_segments=0), ValueError, "n_segments"),
        (dict(images=GOOD, n_segments=2.5), TypeError, "n_segments"),
        (dict(images=GOOD, compactness=0), ValueError, "compactness"),
        (dict(images=GOOD, compactness=-1.0), ValueError, "compactness"),
        (dict(images=GOOD, compactness=float("nan")), ValueError, "compactness"),
        (dict(images=GOOD, compactness="10"), TypeError, "compactness"),
        (dict(images=GOOD, max_num_iter=0), ValueError, "max_num_iter"),
        (dict(images=GOOD, spacing=[1.0]), ValueError, "spacing"),
        (dict(images=GOOD, spacing=[1.0, -2.0]), ValueError, "spacing"),
        (dict(images=GOOD, spacing=3.0), TypeError, "spacing"),
        (dict(images=GOOD, mask=np.ones((2, 8, 9), dtype=np.float32)), TypeError, "mask"),
        (dict(images=GOOD, mask=np.ones((2, 9, 8), dtype=bool)), ValueError, "mask"),
        (dict(images=GOOD, enforce_connectivity=1), TypeError, "enforce_connectivity"),
        (dict(images=GOOD, min_size_factor=-0.5), ValueError, "min_size_factor"),
        (dict(images=GOOD, max_size_factor=0), ValueError, "max_size_factor"),
        (dict(images=GOOD, start_label=-1), ValueError, "start_label"),
        (dict(images=GOOD, backend="gpu"), ValueError, "backend"),
    ],
)
def test_bad_input_raises_clearly(kwargs, error, match):
    with pytest.raises(error, match=match):
        slic(**kwargs)


def test_forced_cuda_backend_without_cuda_raises(monkeypatch):
    """A forced CUDA backend that cannot run says so (and how to compute on the host) instead
    of falling back; "cannot run" is made explicit, so this holds on GPU machines too."""
    from supercl.kernels.cuda import launch as _cuda

    monkeypatch.setattr(_cuda, "available", lambda: (False, "torch sees no CUDA device"))
    with pytest.raises(RuntimeError, match="backend='cpu'"):
        slic(GOOD, backend="cuda")


# --------------------------------------------------------------------------------------------
# The host's float form: float distances, near-ties settled exactly, AVX2 and baseline scans,
# the double-only fallback for extreme weights, and the C++ rescaling.  Each must give the
# labels of the CUDA kernels (slic_assign_pixel in double, run on the host) bit for bit.
# --------------------------------------------------------------------------------------------


def assert_host_form_equals_device_form(images, mask=None, **kwargs):
    """The host driver's labels (backend="cpu") equal the CUDA kernels' (backend="cuda"; in
    these tests the kernels compiled for the host, through the ``emulated`` fixture)."""
    args = dict(n_segments=100, compactness=0.1, mask=mask) | kwargs
    host = slic(images, backend="cpu", **args)
    np.testing.assert_array_equal(host, slic(images, backend="cuda", **args))
    return host


@pytest.mark.parametrize("compactness", [1e-30, 1e-4, 1e-2, 10.0, 1e30])
@pytest.mark.parametrize("channels", [1, 2])
def test_float_form_matches_device_form_across_compactness(emulated, phantom_slices, compactness, channels):
    """1e-4: the colour term swamps float's 24 bits, most pixels are near-ties and go to the
    exact resolution; 1e-30 and 1e30: weights outside the float form's range, every pixel is
    assigned in double."""
    images, _ = phantom_slices
    x = images[:2, None, :96, :80]
    if channels == 2:
        x = np.concatenate([x, x[:, :, ::-1]], axis=1)
    assert_host_form_equals_device_form(x, compactness=compactness, n_segments=30)


def test_float_form_exact_ties_on_even_grids(emulated):
    """Even grid steps put whole rows and columns exactly half-way between two centres of the
    same colour in the first iteration: exact ties in double, broken by the lower index."""
    flat = np.zeros((2, 64, 64))
    flat[1, 20:40, 10:50] = 1.0
    for iters in (1, 10):
        labels = assert_host_form_equals_device_form(flat, n_segments=16, max_num_iter=iters,
                                enforce_connectivity=False)
        assert len(np.unique(labels[0])) == 16


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (3.0, 0.5), (1e-3, 1e3), (1e-40, 1.0)])
def test_float_form_matches_device_form_with_spacing(emulated, phantom_slices, spacing):
    images, organs = phantom_slices
    assert_host_form_equals_device_form(images[:2, :70, :90], spacing=spacing, n_segments=40)
    assert_host_form_equals_device_form(images[:2, :70, :90], mask=organs[:2, :70, :90] > 0, spacing=spacing,
                   n_segments=40)


@pytest.mark.parametrize("shape", [(1, 1), (1, 33), (33, 1), (17, 15), (16, 16), (65, 47)])
@pytest.mark.parametrize("n_segments", [1, 3, 50])
def test_float_form_odd_widths(emulated, shape, n_segments):
    """Widths below, at and across the 16-pixel blocks and the tables' padding."""
    rng = np.random.default_rng(shape[0] * 100 + shape[1] + n_segments)
    images = rng.random((2,) + shape)
    assert_host_form_equals_device_form(images, n_segments=n_segments, compactness=0.05)
    assert_host_form_equals_device_form(np.repeat(images[:, None], 3, axis=1), n_segments=n_segments, compactness=0.05)


def test_baseline_scans_match_avx2(emulated, tmp_path, phantom_slices):
    """SUPERCL_SIMD=baseline runs the SSE2 versions of the scans (in a fresh process: the level is
    read once); labels equal this process's (AVX2 where the CPU has it) and the kernels'."""
    import os
    import subprocess

    images, organs = phantom_slices
    x = np.ascontiguousarray(images[:3, :100, :120])
    mask = organs[:3, :100, :120] > 0
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "mask.npy", mask)
    script = (
        "import numpy as np, sys\n"
        "from supercl import _C\n"
        "from supercl.ops import slic\n"
        "assert _C.simd_level() == 'baseline', _C.simd_level()\n"
        "d = sys.argv[1]\n"
        "x = np.load(d + '/x.npy'); m = np.load(d + '/mask.npy')\n"
        "np.save(d + '/grey.npy', slic(x, n_segments=50, compactness=0.1))\n"
        "np.save(d + '/masked.npy', slic(x, n_segments=50, compactness=0.1, mask=m))\n"
        "rgb = np.stack([x, x[:, ::-1], x[:, :, ::-1]], 1)\n"
        "np.save(d + '/rgb.npy', slic(rgb, n_segments=50, compactness=0.1))\n"
    )
    env = {**os.environ, "SUPERCL_SIMD": "baseline"}
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rgb = np.stack([x, x[:, ::-1], x[:, :, ::-1]], 1)
    np.testing.assert_array_equal(np.load(tmp_path / "grey.npy"),
                                  assert_host_form_equals_device_form(x, n_segments=50))
    np.testing.assert_array_equal(np.load(tmp_path / "masked.npy"),
                                  assert_host_form_equals_device_form(x, mask=mask, n_segments=50))
    np.testing.assert_array_equal(np.load(tmp_path / "rgb.npy"),
                                  assert_host_form_equals_device_form(rgb, n_segments=50))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("use_mask", [False, True])
def test_cpu_rescale_matches_torch_form(dtype, use_mask):
    """The C++ rescaling of float input gives the torch form's float32 values bit for bit,
    NaN outside the mask included; constant images and empty masks too."""
    from supercl.ops._common import extension

    rng = np.random.default_rng(5)
    x = (rng.standard_normal((6, 2, 23, 37)) * 1e3 - 7).astype(dtype)
    x[1] = 4.25  # constant image
    x[2, 1] = -1e30  # a huge range
    x[3] = rng.integers(-3, 3, size=x[3].shape)  # values exactly at lo and hi
    mask = rng.random((6, 23, 37)) < 0.6 if use_mask else None
    if use_mask:
        mask[4] = False  # empty mask
        x[5, 0, ~mask[5]] = np.nan  # ignored outside the mask
    t = torch.from_numpy(x)
    mask_t = None if mask is None else torch.from_numpy(mask)
    want = slic_module._rescale_batch(t, mask_t, use_mask, torch.device("cpu"))
    got = extension().slic_rescale(x, None if mask is None else mask.astype(np.uint8), 1)
    np.testing.assert_array_equal(got, want.numpy())
    assert got.dtype == np.float32


def test_cpu_rescale_rejects_non_finite_inside_mask():
    x = np.zeros((2, 8, 9), np.float32)
    x[1, 3, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        slic(x)
    mask = np.ones((2, 8, 9), bool)
    with pytest.raises(ValueError, match="inside mask"):
        slic(x, mask=mask)
    mask[1, 3, 3] = False
    assert slic(x, mask=mask).shape == (2, 8, 9)


# --------------------------------------------------------------------------------------------
# Masked planning on the mask's device (issue 22): torch reductions and a vectorised
# regular_grid, checked against the host's regular_grid and a numpy bounding-box reference.
# --------------------------------------------------------------------------------------------


def test_device_regular_grid_equals_regular_grid():
    """Every branch of regular_grid (all steps equal, the smallest side then two equal steps,
    the two smallest sides then the last) and exact cubes, where the host's pow lands just below
    an integer (32768 ** (1/3) < 32): the threshold tables reproduce those decisions exactly."""
    rng = np.random.default_rng(22)
    shapes, points = [], []
    for _ in range(4000):
        depth = int(rng.integers(1, 60)) if rng.random() < 0.5 else 1
        shapes.append((depth, int(rng.integers(1, 400)), int(rng.integers(1, 400))))
        points.append(int(rng.integers(1, 5000)))
    for side in range(1, 70):
        for n in (1, 2, 8, 27, 64, 125, 1000):
            shapes += [(side, side, side), (2 * side, side, 3 * side), (1, side, side)]
            points += [n, n, n]
    shapes += [(1290, 1290, 1290), (1290, 1, 1), (1, 1, 1)]
    points += [1, 7, 1]
    starts, steps = slic_module._regular_grid_device(torch.tensor(shapes),
                                                     torch.tensor(points, dtype=torch.float64))
    expected = [slic_module.regular_grid(s, n) for s, n in zip(shapes, points)]
    np.testing.assert_array_equal(starts.numpy(), [e[0] for e in expected])
    np.testing.assert_array_equal(steps.numpy(), [e[1] for e in expected])


def test_cube_root_thresholds_are_the_smallest():
    ge, gt = slic_module._cbrt_thresholds()
    for j in (1, 2, 3, 64, 65, 2 * 1290):
        value = j / 2
        assert ge[j] ** (1.0 / 3) >= value > np.nextafter(ge[j], 0) ** (1.0 / 3)
        assert gt[j] ** (1.0 / 3) > value >= np.nextafter(gt[j], 0) ** (1.0 / 3)


def masked_plan_reference(mask, n_segments, compactness, spacing, min_size_factor):
    """The masked 3-D plan as the host computed it before issue 22: numpy bounding boxes,
    regular_grid per box, Python arithmetic."""
    grid, params, min_size = [], [], []
    for m in mask:
        if not m.any():
            grid.append([0, 0, 0, 1, 1, 1, 1, 1, 1])
            params.append([1.0, 1.0, 1.0, 0.0, 2.0])
            min_size.append(0)
            continue
        spans = [np.flatnonzero(m.any(axis=tuple(a for a in range(3) if a != axis)))
                 for axis in range(3)]
        origin = [int(s[0]) for s in spans]
        size = [int(s[-1]) - int(s[0]) + 1 for s in spans]
        n = max(1, round(n_segments * int(np.prod(size)) / int(m.sum())))
        starts, steps = slic_module.regular_grid(tuple(size), n)
        counts = [-(-(s - a) // st) for s, a, st in zip(size, starts, steps)]
        grid.append([o + a for o, a in zip(origin, starts)] + counts + steps)
        step = float(max(max(steps), 1))
        spatial = 1.0 / (step * step)
        params.append([spacing[0] * spacing[0] * spatial, spacing[1] * spacing[1] * spatial,
                       spacing[2] * spacing[2] * spatial,
                       1.0 / (2.0**32 * compactness * compactness), 2.0 * step])
        min_size.append(int(min_size_factor * (int(np.prod(size)) / int(np.prod(counts)))))
    return np.array(grid), np.array(params), np.array(min_size)


def test_masked_plan_on_device_equals_host_reference():
    rng = np.random.default_rng(3)
    mask = np.zeros((7, 9, 23, 31), dtype=bool)
    mask[0, 2:7, 3:20, 5:9] = rng.random((5, 17, 4)) < 0.6  # a sparse box
    mask[1] = rng.random((9, 23, 31)) < 0.01                  # scattered pixels
    mask[2, 4, 11, 30] = True                                 # one pixel, at an edge
    # mask[3] stays empty
    mask[4] = True                                            # everything
    mask[5, :, :, 0] = True                                   # a thin slab
    mask[6, 0, 0, 0] = mask[6, -1, -1, -1] = True             # two opposite corners
    for n_segments, compactness, min_size_factor in ((50, 0.1, 0.5), (1, 3.0, 0.0),
                                                     (4000, 0.01, 2.5)):
        spacing = (2.5, 0.7, 1.3)
        got = slic_module._plan_masked(torch.from_numpy(mask), n_segments, compactness, spacing,
                                       min_size_factor)
        for g, e in zip(got, masked_plan_reference(mask, n_segments, compactness, spacing,
                                                   min_size_factor)):
            np.testing.assert_array_equal(g.numpy(), e)


def test_full_mask_plans_like_no_mask():
    """A mask covering everything gives the unmasked grid (the device plan and the host plan
    are the same regular_grid)."""
    for height, width, n_segments in ((64, 64, 16), (37, 101, 100), (5, 123, 7), (1, 1, 3)):
        full = torch.ones((2, height, width), dtype=torch.bool)
        host = slic_module._plan(None, 2, (height, width), n_segments, 0.1, (1.0, 2.0), 0.5)
        device = slic_module._plan(full, 2, (height, width), n_segments, 0.1, (1.0, 2.0), 0.5)
        for h, d in zip(host, device):
            np.testing.assert_array_equal(d.numpy(), h)
    for shape, n_segments in (((9, 23, 31), 30), ((1, 17, 19), 6), ((40, 3, 5), 12)):
        full = torch.ones((2,) + shape, dtype=torch.bool)
        host = slic_module._plan(None, 2, shape, n_segments, 0.1, (2.5, 1.0, 0.7), 0.5)
        device = slic_module._plan(full, 2, shape, n_segments, 0.1, (2.5, 1.0, 0.7), 0.5)
        for h, d in zip(host, device):
            np.testing.assert_array_equal(d.numpy(), h)


def test_one_image_too_large_is_refused_before_any_work():
    """Labels and component ids within an image are int32: an image of 2**31 pixels or more
    is refused by the validation (a stride-0 view: no memory is needed to ask)."""
    huge = torch.zeros(1, 1, 1).expand(2, 46341, 46341)
    with pytest.raises(ValueError, match="at most 2\\*\\*31 - 1 per image"):
        slic(huge, n_segments=10)
