"""supercl.ops.connected_components against skimage.measure.label (the oracle), cc3d and
scipy.ndimage.label: exact equality, numbering included."""

import numpy as np
import pytest
import torch
from ccl_cases import spiral
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from supercl.ops import connected_components
from supercl.testing import connected_components_reference


cc3d = pytest.importorskip("cc3d")
ndimage = pytest.importorskip("scipy.ndimage")


def reference(labels, connectivity=2, background=None):
    return connected_components_reference(labels, connectivity=connectivity, background=background)


def check(labels, connectivity=2, background=None):
    got = connected_components(labels, connectivity=connectivity, background=background)
    expected = reference(np.asarray(labels), connectivity, background)
    np.testing.assert_array_equal(np.asarray(got), expected)
    return got


@pytest.mark.parametrize("connectivity", [1, 2])
def test_thousands_of_random_images(connectivity):
    rng = np.random.default_rng(connectivity)
    checked = 0
    while checked < 2000:
        h, w = (int(v) for v in rng.integers(1, 33, size=2))
        batch = int(rng.integers(1, 9))
        n_values = int(rng.integers(1, 6))
        images = rng.integers(0, n_values, size=(batch, h, w))
        check(images, connectivity)
        checked += batch


@pytest.mark.parametrize("shape", [(1, 1), (1, 97), (97, 1), (5, 123), (517, 263), (2, 2)])
@pytest.mark.parametrize("connectivity", [1, 2])
def test_odd_sizes(shape, connectivity):
    rng = np.random.default_rng(sum(shape))
    images = rng.integers(0, 3, size=(3,) + shape)
    check(images, connectivity)
    check(images[0], connectivity)  # a single (H, W) image


@pytest.mark.parametrize("value", [0, 7])
def test_constant_images(value):
    image = np.full((2, 9, 13), value)
    out = check(image, 2)
    assert (out == (0 if value == 0 else 1)).all()


def test_checkerboard_separates_4_and_8_connectivity():
    board = (np.indices((11, 11)).sum(0) % 2).astype(np.int32)
    four = check(board, 1)
    eight = check(board, 2)
    assert four.max() == board.sum()  # every foreground pixel alone
    assert eight.max() == 1  # all diagonal neighbours


@pytest.mark.parametrize("n", [5, 64, 301])
@pytest.mark.parametrize("connectivity", [1, 2])
def test_spirals(n, connectivity):
    image = spiral(n)
    check(image, connectivity)
    check(image[:, ::-1].copy(), connectivity)
    check(image.T, connectivity)


def test_large_and_negative_label_values():
    rng = np.random.default_rng(3)
    values = np.array([2**31 - 1, 2**31 - 2, -(2**31), 0, 5], dtype=np.int64)
    images = values[rng.integers(0, len(values), size=(4, 23, 31))]
    check(images, 2)
    check(images.astype(np.int32), 1)
    big = np.array([2**62, -(2**62), 2**63 - 1], dtype=np.int64)
    check(big[rng.integers(0, 3, size=(2, 17, 19))], 2)


@pytest.mark.parametrize(
    "dtype",
    [np.bool_, np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64],
)
def test_every_integer_dtype(dtype):
    rng = np.random.default_rng(4)
    images = rng.integers(0, 2 if dtype == np.bool_ else 4, size=(3, 19, 27)).astype(dtype)
    check(images, 2)
    out = connected_components(torch.from_numpy(images))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.int32
    np.testing.assert_array_equal(out.numpy(), reference(images))


def test_uint64_beyond_int64_is_rejected():
    images = np.array([[[2**63 + 5, 1]]], dtype=np.uint64)
    with pytest.raises(ValueError, match="uint64"):
        connected_components(images)


@pytest.mark.parametrize("background", [None, 0, 2, 99, -1])
def test_background(background):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 4, size=(3, 21, 17)).astype(np.uint8)
    # -1 is not a uint8 value: no pixel is background (skimage compares after casting too)
    out = connected_components(images, background=background)
    if background == -1:
        expected = reference(images.astype(np.int64), 2, -1)
    else:
        expected = reference(images, 2, background)
    np.testing.assert_array_equal(out, expected)


def test_non_contiguous_and_negative_strides():
    rng = np.random.default_rng(6)
    base = rng.integers(0, 3, size=(4, 40, 50))
    for view in (base[:, ::2, ::3], base.transpose(0, 2, 1), base[::-1, :, ::-1], base[1:3, 5:, 7:]):
        check(view, 2)
        tensor_view = torch.from_numpy(np.ascontiguousarray(base))
        got = connected_components(tensor_view.transpose(1, 2), connectivity=1)
        np.testing.assert_array_equal(got.numpy(), reference(base.transpose(0, 2, 1), 1))


def test_return_num_matches_skimage():
    from skimage.measure import label

    rng = np.random.default_rng(7)
    images = rng.integers(0, 3, size=(5, 15, 16))
    out, num = connected_components(torch.from_numpy(images), return_num=True)
    assert num.dtype == torch.int64 and num.shape == (5,)
    for b in range(5):
        _, expected = label(images[b], return_num=True, connectivity=2)
        assert int(num[b]) == expected == int(out[b].max())
    single, n = connected_components(images[0], return_num=True)
    # one numpy image: a Python int, as scikit-image's label(..., return_num=True) returns
    assert type(n) is int and n == int(num[0])


def test_output_kind_follows_input():
    images = np.zeros((2, 3, 4), dtype=np.int32)
    assert isinstance(connected_components(images), np.ndarray)
    assert isinstance(connected_components(torch.from_numpy(images)), torch.Tensor)


@pytest.mark.parametrize("connectivity", [1, 2])
def test_device_form_matches_host_form(emulated, connectivity):
    """The CUDA backend's passes (init, merge, compress, flags, scan, gather), its kernels run
    on the host, give the host driver's labels."""
    rng = np.random.default_rng(8)
    for shape in [(3, 1, 1), (2, 37, 41), (1, 200, 150)]:
        images = rng.integers(0, 3, size=shape)
        fast = connected_components(images, connectivity=connectivity)
        np.testing.assert_array_equal(
            fast, connected_components(images, connectivity=connectivity, backend="cuda"))
    np.testing.assert_array_equal(
        connected_components(spiral(99), connectivity=connectivity, backend="cuda"),
        reference(spiral(99), connectivity),
    )


@pytest.mark.parametrize("connectivity", [1, 2])
def test_thread_counts_agree(threads, connectivity):
    """One image with 2 threads takes the row-parallel path with atomic unions."""
    rng = np.random.default_rng(9)
    image = rng.integers(0, 2, size=(1, 301, 257))
    threads(1)
    one = connected_components(image, connectivity=connectivity)
    threads(2)
    two = connected_components(image, connectivity=connectivity)
    batch = connected_components(np.repeat(image, 5, axis=0), connectivity=connectivity)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one, reference(image, connectivity))
    np.testing.assert_array_equal(batch, np.repeat(one, 5, axis=0))


def test_agrees_with_cc3d_and_scipy_on_binary_masks():
    from phantom_v1 import phantom_batch

    _, organs = phantom_batch(4, 97, 131, seed=1)
    masks = (organs > 0).astype(np.uint8)
    out = connected_components(masks, connectivity=2)
    for b in range(4):
        ours = out[b]
        theirs = cc3d.connected_components(masks[b], connectivity=8)
        np.testing.assert_array_equal(ours, theirs)  # cc3d numbers in raster order too
        scipy_labels, _ = ndimage.label(masks[b], structure=np.ones((3, 3)))
        np.testing.assert_array_equal(ours, scipy_labels)
    four = connected_components(masks, connectivity=1)
    for b in range(4):
        np.testing.assert_array_equal(four[b], ndimage.label(masks[b])[0])


@given(
    hnp.arrays(
        dtype=st.sampled_from([np.int32, np.int64, np.uint8]),
        shape=hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=24),
        elements=st.integers(0, 3),
    ),
    st.sampled_from([1, 2]),
    st.sampled_from([None, 0, 1, 3]),
)
def test_property_equals_skimage(images, connectivity, background):
    check(images, connectivity, background)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(labels=np.zeros((3, 3), dtype=np.float32)), TypeError, "labels"),
        (dict(labels=[[1, 2], [3, 4]]), TypeError, "labels"),
        (dict(labels=np.zeros(5, dtype=np.int32)), ValueError, "labels"),
        (dict(labels=np.zeros((1, 2, 3, 4), dtype=np.int32)), ValueError, "labels"),
        (dict(labels=np.zeros((0, 4, 4), dtype=np.int32)), ValueError, "empty batch"),
        (dict(labels=np.zeros((2, 0, 4), dtype=np.int32)), ValueError, "empty image"),
        (dict(labels=np.zeros((4, 4), dtype=np.int32), connectivity=3), ValueError, "connectivity"),
        (dict(labels=np.zeros((4, 4), dtype=np.int32), connectivity=0), ValueError, "connectivity"),
        (dict(labels=np.zeros((4, 4), dtype=np.int32), connectivity=True), ValueError, "connectivity"),
        (dict(labels=np.zeros((4, 4), dtype=np.int32), background=0.5), TypeError, "background"),
        (dict(labels=np.zeros((4, 4), dtype=np.int32), return_num=1), TypeError, "return_num"),
        (dict(labels=np.zeros((4, 4), dtype=np.int32), backend="tpu"), ValueError, "backend"),
        (dict(labels=np.zeros((4, 4), dtype=np.complex64)), TypeError, "labels"),
    ],
)
def test_bad_input_raises_clearly(kwargs, error, match):
    with pytest.raises(error, match=match):
        connected_components(**kwargs)


def test_unavailable_backend_raises_instead_of_falling_back(monkeypatch):
    """The CUDA backend is made unavailable explicitly, so that this holds on GPU machines."""
    from supercl.kernels.cuda import launch as _cuda

    monkeypatch.setattr(_cuda, "available", lambda: (False, "torch sees no CUDA device"))
    image = np.zeros((4, 4), dtype=np.int32)
    with pytest.raises(RuntimeError, match="backend='cpu'"):
        connected_components(image, backend="cuda")
    monkeypatch.setenv("SUPERCL_BACKEND", "cuda")
    with pytest.raises(RuntimeError, match="CUDA backend"):
        connected_components(image)
    monkeypatch.setenv("SUPERCL_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="SUPERCL_BACKEND"):
        connected_components(image)
    monkeypatch.setenv("SUPERCL_BACKEND", "torch")  # the learning ops' name for the CPU path
    assert connected_components(image).sum() == 0


# --------------------------------------------------------------------------------------------
# The host's run-based path (one thread per image): runs are cut 16 bytes at a time where a row
# is contiguous, element by element otherwise.  Runs of every length across the vector
# boundaries, every dtype width, contiguous and strided rows, against scikit-image.
# --------------------------------------------------------------------------------------------


def runs_image(rng, height, width, max_run, n_values):
    """Rows made of runs of random lengths 1..max_run and random values."""
    image = np.empty((height, width), dtype=np.int64)
    for y in range(height):
        x = 0
        while x < width:
            n = int(rng.integers(1, max_run + 1))
            image[y, x : x + n] = rng.integers(0, n_values)
            x += n
    return image


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64, np.bool_])
@pytest.mark.parametrize("connectivity", [1, 2])
def test_runs_across_vector_boundaries(threads, dtype, connectivity):
    threads(1)
    rng = np.random.default_rng(20 + connectivity)
    n_values = 2 if dtype == np.bool_ else 3
    for width in [1, 2, 15, 16, 17, 31, 33, 47, 64, 65]:
        for max_run in [1, 3, 17, 40]:
            image = runs_image(rng, 9, width, max_run, n_values).astype(dtype)
            check(image[None], connectivity)
            check(image[None], connectivity, background=1 if dtype != np.bool_ else None)
            # strided rows (element stride 2) take the element-by-element run search
            wide = np.repeat(image, 2, axis=1)[:, ::2]
            assert not wide.flags.c_contiguous
            check(wide[None], connectivity)


@pytest.mark.parametrize("connectivity", [1, 2])
def test_run_path_edge_images(emulated, threads, connectivity):
    threads(1)
    board = (np.indices((13, 17)).sum(0) % 2).astype(np.uint8)
    cases = [
        np.zeros((1, 1), np.int32), np.ones((1, 1), np.int32), np.ones((1, 77), np.uint8),
        np.ones((77, 1), np.uint8), np.zeros((40, 50), np.int64), np.full((40, 50), 9),
        board, 1 - board, np.tile(np.arange(5), (7, 7)),  # every run one pixel wide
        np.repeat(np.arange(12)[:, None] % 2, 33, axis=1),  # stripes: full-width runs
    ]
    for image in cases:
        check(image[None], connectivity)
        got = connected_components(image[None], connectivity=connectivity, backend="cuda")
        np.testing.assert_array_equal(got, reference(image[None], connectivity))


def test_run_path_return_num_and_background(threads):
    threads(1)
    rng = np.random.default_rng(31)
    images = rng.integers(0, 4, size=(3, 45, 61))
    for background in [0, 2, 7]:
        labels, num = connected_components(images, connectivity=2, background=background,
                                           return_num=True)
        expected = reference(images, 2, background)
        np.testing.assert_array_equal(labels, expected)
        np.testing.assert_array_equal(num, expected.reshape(3, -1).max(1))


def test_output_of_32_mib_and_more(threads):
    """Outputs from 32 MiB on are allocated 2 MiB-aligned with huge-page advice
    (csrc/bindings.cpp): still a normal, writable, owned array with the right labels."""
    threads(1)
    image = np.zeros((1, 4096, 2048), dtype=np.uint8)
    image[:, 1::4] = 1  # 1024 full-width stripes
    labels = connected_components(image, connectivity=2)
    assert labels.nbytes == 32 << 20 and labels.flags.writeable and labels.flags.c_contiguous
    expected = np.zeros(4096, dtype=np.int32)
    expected[1::4] = np.arange(1, 1025)
    np.testing.assert_array_equal(labels[0, :, 0], expected)
    assert (labels[0] == labels[0, :, :1]).all()
    labels[0, 0, 0] = 7  # writable
    del labels


# ids without "cuda": the check needs no GPU (conftest skips items whose keywords say cuda)
@pytest.mark.parametrize("backend", ["cpu", "cuda"], ids=["host", "device"])
def test_images_of_2_31_pixels_or_more_are_refused_before_any_work(backend):
    """Parent indices are int32 per image: an image (or volume) of 2**31 pixels or more is
    refused with a ValueError naming ``labels``, before any allocation or backend check (the
    inputs are stride-0 views of one byte)."""
    image = torch.zeros(1, dtype=torch.uint8).expand(46341, 46341)  # 2**31 + 2.5e4 pixels
    with pytest.raises(ValueError, match=r"labels images have 2147488281 pixels; at most 2\*\*31"):
        connected_components(image, backend=backend)
    volume = torch.zeros(1, dtype=torch.uint8).expand(2, 1291, 1291, 1291)
    with pytest.raises(ValueError, match=r"labels volumes have \d+ voxels; at most 2\*\*31"):
        connected_components(volume, spatial_dims=3, backend=backend)
    # a batch of 2**31 elements and more whose images are small is accepted (not run here: the
    # int32 output alone would be 8 GiB; test_cuda.py labels a (5000, 768, 768) batch on a GPU)


def test_eager_calls_skip_the_custom_op_and_tracing_keeps_it(monkeypatch):
    """Plain eager calls run the op's body directly (the custom op's dispatch is a fixed cost
    per call); FakeTensors (torch.compile, export) still go through supercl::connected_components
    and get its fake outputs, and the registered op passes torch's opcheck and gives the same
    labels as the direct call."""
    import sys

    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    module = sys.modules["supercl.ops.connected_components"]
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 3, size=(3, 17, 23)))
    calls = []
    real_op = module._connected_components_op
    monkeypatch.setattr(module, "_connected_components_op",
                        lambda *args: calls.append(args) or real_op(*args))
    direct = connected_components(x, return_num=True)
    assert calls == []
    via_op = real_op(x, 2, True, 0, "cpu")
    np.testing.assert_array_equal(direct[0].numpy(), via_op[0].numpy())
    np.testing.assert_array_equal(direct[1].numpy(), via_op[1].numpy())
    np.testing.assert_array_equal(direct[0].numpy(), reference(x.numpy()))
    with FakeTensorMode() as mode:
        fake = connected_components(mode.from_tensor(x), return_num=True)
    assert len(calls) == 1
    assert isinstance(fake[0], FakeTensor) and fake[0].shape == x.shape
    assert fake[0].dtype == torch.int32 and fake[1].shape == (3,) and fake[1].dtype == torch.int64
    torch.library.opcheck(torch.ops.supercl.connected_components.default, (x, 2, True, 0, "cpu"))


def test_label_dtypes_are_one_list_in_python_and_cpp():
    """The dtypes the labeling is compiled for are written once per language:
    SUPERCL_CC_DTYPES in supercl/connected_components.h (the C++ drivers, the .cu kernels and
    the extension's dispatch) and supercl.kernels.CC_DTYPES (the op's widening and the CUDA
    launcher's kernel names).  The two must agree, or a dtype would reach a backend that has
    no kernel for it."""
    import re

    import supercl.kernels
    from supercl.kernels.cuda import launch
    from supercl.ops._common import extension

    python = [f"{name}:{suffix}" for name, suffix in supercl.kernels.CC_DTYPES]
    assert extension().connected_components_dtypes() == python
    header = (supercl.kernels.include_dir() / "supercl" / "connected_components.h").read_text()
    listed = re.search(r"#define SUPERCL_CC_DTYPES\(X\) (.*)", header)[1]
    assert re.findall(r"X\(\w+, (\w+)\)", listed) == [s for _, s in supercl.kernels.CC_DTYPES]
    assert sorted(str(t).removeprefix("torch.") for t in launch._CC_SUFFIX) == sorted(
        name for name, _ in supercl.kernels.CC_DTYPES)
    # every dtype of the list runs as it is, and others are refused by the extension by name
    for name, _ in supercl.kernels.CC_DTYPES:
        labels = np.array([[[1, 1, 0], [0, 2, 2]]], dtype=name)
        out, counts = extension().connected_components(labels, 1, True, 0, 1)
        np.testing.assert_array_equal(out, [[[1, 1, 0], [0, 2, 2]]])
        assert counts.tolist() == [2]
    with pytest.raises(TypeError, match="image dtype must be uint8, int32 or int64, got int16"):
        extension().connected_components(np.zeros((1, 2, 2), np.int16), 1, True, 0, 1)
