"""supercl.ops.superpixel_pool (superpixel_pool, superpixel_unpool, superpixel_mean_map) and
supercl.ops.downsample (downsample_segments) against the plain-torch references: the torch
backend and the Triton kernels (in Triton's interpreter on CPU-only machines), odd sizes, empty
segments, every pixel its own segment, non-contiguous and half-precision inputs, determinism,
float64 gradcheck, torch.compile, and errors.  Tolerances come from tests/tolerances.py only."""

import importlib

import pytest
import torch
import torch.nn.functional as F

from supercl.ops._common import resolve_triton_backend
from supercl.ops import downsample_segments, superpixel_mean_map, superpixel_pool, superpixel_unpool
from supercl.testing import (
    downsample_segments_reference,
    superpixel_mean_map_reference,
    superpixel_pool_reference,
    superpixel_unpool_reference,
)
from conftest import triton_compile_for_gpu
from tolerances import assert_close, assert_close_lowp

triton_available = importlib.util.find_spec("triton") is not None
# Tests parametrized over BACKENDS make their inputs on the ``backend_device`` fixture: the CPU
# for the torch backend, conftest's triton_device (CUDA, or the CPU under the interpreter) for
# the Triton kernels; the references run on the CPU.
TRITON = pytest.param("triton", marks=pytest.mark.triton)
BACKENDS = ["torch", TRITON]
cuda = pytest.mark.cuda


def make_segments(kind, batch, height, width, k, dtype=torch.int64, seed=0, device="cpu"):
    """(B, H, W) ids of one of several shapes of problem:

    - ``single``: one segment (K = 1).
    - ``each``: every pixel its own segment, ids a random permutation of 0..H*W-1 per image.
    - ``random``: ids uniform in [0, K).
    - ``empty``: even ids only, so every odd segment (and K-1 when K is even) is empty.
    - ``scattered``: ids uniform in [0, K) with K > H*W (many empty segments, and pixel blocks
      spanning so many ids that the Triton kernel takes its per-pixel atomic path).
    - ``raster``: compact 3x4 tiles numbered in raster order, like SLIC labels.
    """
    g = torch.Generator().manual_seed(seed)
    n = height * width
    if kind == "single":
        ids = torch.zeros(batch, n, dtype=torch.int64)
    elif kind == "each":
        assert k == n
        ids = torch.stack([torch.randperm(n, generator=g) for _ in range(batch)])
    elif kind in ("random", "scattered"):
        ids = torch.randint(0, k, (batch, n), generator=g)
    elif kind == "empty":
        ids = 2 * torch.randint(0, (k + 1) // 2, (batch, n), generator=g)
    elif kind == "raster":
        rows = torch.arange(height)[:, None] // 3
        cols = torch.arange(width)[None, :] // 4
        ids = (rows * (-(-width // 4)) + cols).reshape(1, n).expand(batch, n)
        assert int(ids.max()) < k
    else:  # pragma: no cover
        raise AssertionError(kind)
    return ids.reshape(batch, height, width).to(dtype=dtype, device=device)


# (B, C, H, W, K, kind, id dtype): odd sizes, K = 1, K = H*W, empty segments.
CASES = [
    (1, 1, 1, 1, 1, "single", torch.int64),
    (2, 3, 5, 7, 1, "single", torch.int32),
    (2, 3, 5, 7, 35, "each", torch.int64),
    (1, 64, 13, 17, 221, "each", torch.int32),
    (1, 64, 13, 17, 20, "random", torch.int64),
    (2, 3, 13, 17, 40, "empty", torch.int32),
    (1, 3, 13, 17, 400, "scattered", torch.int64),
    (2, 64, 5, 7, 12, "raster", torch.int32),
    # Larger than one pixel block of the Triton kernels (BLOCK_P = 32 KB / (BLOCK_C * itemsize),
    # 64 to 512): several blocks per image and a ragged last one; raster ids whose blocks span
    # two id windows (C = 5: 512-pixel blocks cover ~5 tile rows of 11 ids), 128-pixel blocks
    # (C = 64, float32), 217 pixels, and scattered ids taking the per-pixel fallback in every
    # block.
    (2, 5, 37, 41, 143, "raster", torch.int64),
    (1, 64, 5, 123, 62, "raster", torch.int32),
    (3, 16, 7, 31, 30, "random", torch.int32),
    (1, 3, 37, 41, 2000, "scattered", torch.int64),
]
CASE_IDS = [f"{b}x{c}x{h}x{w}-K{k}-{kind}-{str(dt)[6:]}" for b, c, h, w, k, kind, dt in CASES]


def make_case(case, dtype=torch.float32, seed=0):
    batch, channels, height, width, k, kind, id_dtype = case
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, channels, height, width, generator=g).to(dtype)
    return features, make_segments(kind, batch, height, width, k, id_dtype, seed), k


def pool_oracle(features, segments, k):
    """superpixel_pool_reference in float64, then in the dtype of ``features``."""
    means, counts = superpixel_pool_reference(features.double(), segments, k)
    return means.to(features.dtype), counts


# ---- forward against the references ------------------------------------------------------


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_pool_matches_reference(backend, case, deterministic, backend_device):
    features, segments, k = make_case(case)
    means, counts = superpixel_pool(features.to(backend_device), segments.to(backend_device), k,
                                    deterministic=deterministic, backend=backend)
    means, counts = means.cpu(), counts.cpu()
    expected_means, expected_counts = pool_oracle(features, segments, k)
    assert means.shape == (features.shape[0], k, features.shape[1])
    assert means.dtype == features.dtype and counts.dtype == torch.int64
    assert means.is_contiguous()
    assert torch.equal(counts, expected_counts)
    assert_close(means, expected_means)
    assert bool((means[counts == 0] == 0).all())  # empty segments have mean 0


@pytest.mark.parametrize("case", CASES[1::2], ids=CASE_IDS[1::2])
@pytest.mark.parametrize("backend", BACKENDS)
def test_unpool_matches_reference(backend, case, backend_device):
    features, segments, k = make_case(case)
    means = torch.randn(features.shape[0], k, features.shape[1])
    out = superpixel_unpool(means.to(backend_device), segments.to(backend_device),
                            backend=backend).cpu()
    assert out.shape == features.shape and out.dtype == means.dtype and out.is_contiguous()
    assert torch.equal(out, superpixel_unpool_reference(means, segments))  # a copy: exact


@pytest.mark.parametrize("normalize", ["mean", "area"])
@pytest.mark.parametrize("case", CASES[::2], ids=CASE_IDS[::2])
@pytest.mark.parametrize("backend", BACKENDS)
def test_mean_map_matches_reference(backend, case, normalize, backend_device):
    features, segments, k = make_case(case)
    out = superpixel_mean_map(features.to(backend_device), segments.to(backend_device),
                              normalize, k, backend=backend).cpu()
    expected = superpixel_mean_map_reference(features.double(), segments, normalize, k)
    assert out.shape == features.shape and out.dtype == features.dtype
    assert out.is_contiguous()
    assert_close(out, expected)


def test_mean_map_is_pool_then_unpool_and_area_scales_by_size():
    features, segments, k = make_case(CASES[5])
    means, counts = superpixel_pool(features, segments, k)
    mean_map = superpixel_mean_map(features, segments, "mean", k)
    assert_close(mean_map, superpixel_unpool(means, segments))
    area = superpixel_mean_map(features, segments, "area", k)
    height, width = features.shape[2:]
    scaled = superpixel_unpool(means * counts[..., None] / (height * width), segments)
    assert_close(area, scaled)


def test_num_segments_none_takes_max_plus_one_and_default_backend_is_torch_on_cpu():
    features, segments, _ = make_case(CASES[4])
    k = int(segments.max()) + 1
    means, counts = superpixel_pool(features, segments)
    assert means.shape[1] == k and counts.shape == (1, k)
    expected = superpixel_pool(features, segments, k, backend="torch")
    assert torch.equal(means, expected[0]) and torch.equal(counts, expected[1])
    assert resolve_triton_backend("superpixel_pool", None, features.device) == "torch"
    assert torch.equal(superpixel_mean_map(features, segments),
                       superpixel_mean_map(features, segments, "mean", k, backend="torch"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend, backend_device):
    g = torch.Generator().manual_seed(3)
    on = backend_device
    base = torch.randn(2, 64, 13, 17, generator=g).to(on)
    segments_t = make_segments("random", 2, 17, 13, 30, torch.int32, seed=3).to(on).transpose(1, 2)
    layouts = {
        "channels_last": base.to(memory_format=torch.channels_last),
        "transposed": torch.randn(2, 64, 17, 13, generator=g).to(on).transpose(2, 3),
        "channel_slice": torch.randn(2, 128, 13, 17, generator=g).to(on)[:, ::2],
    }
    for name, features in layouts.items():
        assert not features.is_contiguous(), name
        host, host_segments = features.cpu().contiguous(), segments_t.cpu().contiguous()
        expected, counts = pool_oracle(host, host_segments, 30)
        means, got_counts = superpixel_pool(features, segments_t, 30, backend=backend)
        assert_close(means, expected)
        assert torch.equal(got_counts.cpu(), counts)
        mean_map = superpixel_mean_map(features, segments_t, "mean", 30, backend=backend)
        assert_close(mean_map, superpixel_mean_map_reference(host.double(), host_segments,
                                                             "mean", 30))
    means = torch.randn(2, 64, 30, generator=g).to(on).transpose(1, 2)  # (B, K, C) view
    assert torch.equal(superpixel_unpool(means, segments_t, backend=backend).cpu(),
                       superpixel_unpool_reference(means.cpu(), segments_t.cpu()))


@pytest.mark.parametrize("case", [CASES[4], CASES[8]], ids=[CASE_IDS[4], CASE_IDS[8]])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_half_precision(backend, dtype, case, backend_device):
    """Half features: float32 accumulation, so the result is the float32 reference cast to the
    half dtype, within the table's tolerance for that dtype."""
    features32, segments, k = make_case(case)
    features = features32.to(dtype)
    x, s = features.to(backend_device), segments.to(backend_device)
    means, counts = superpixel_pool(x, s, k, backend=backend)
    assert means.dtype == dtype
    reference = superpixel_pool_reference(features.float(), segments, k)[0]
    assert_close(means, reference.to(dtype))
    mean_map = superpixel_mean_map(x, s, "mean", k, backend=backend)
    assert mean_map.dtype == dtype
    assert_close(mean_map,
                 superpixel_mean_map_reference(features.float(), segments, "mean", k).to(dtype))
    values = torch.randn(features.shape[0], k, features.shape[1]).to(dtype)
    assert torch.equal(superpixel_unpool(values.to(backend_device), s, backend=backend).cpu(),
                       superpixel_unpool_reference(values, segments))


@pytest.mark.triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_triton_paint_divides_like_torch(dtype, triton_device):
    """The paint with counts (the pool's backward, the mean map) equals torch's
    ``(values.float() / counts.clamp_min(1)).to(dtype)`` painted, bit for bit: the kernel
    divides rounding to nearest (div_rn), not with Triton's approximate float32 division."""
    from supercl.kernels.triton import superpixel_pool as kernels

    g = torch.Generator().manual_seed(8)
    segments = make_segments("random", 2, 9, 61, 40, torch.int32, seed=8)  # 549 pixels
    values = (torch.randn(2, 40, 7, generator=g) * 100).to(dtype)
    counts = torch.randint(0, 50, (2, 40), generator=g)  # zeros included: divide by 1
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    per_segment = (values.to(acc) / counts.clamp_min(1)[..., None].to(acc)).to(dtype)
    expected = superpixel_unpool_reference(per_segment, segments)
    got = kernels.paint(values.to(triton_device), segments.to(triton_device), dtype,
                        counts.to(triton_device)).cpu()
    assert got.dtype == dtype
    if dtype == torch.bfloat16 and triton_device.type == "cpu":
        # Triton's interpreter casts float32 to bfloat16 by truncation (the GPU rounds to
        # nearest even): one bf16 step apart at most there.
        assert_close(got, expected)
    else:
        assert torch.equal(got, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_deterministic_is_reproducible_and_agrees(backend, backend_device):
    features, segments, k = make_case(CASES[3], seed=5)
    features, segments = features.to(backend_device), segments.to(backend_device)
    first = superpixel_pool(features, segments, k, deterministic=True, backend=backend)
    second = superpixel_pool(features, segments, k, deterministic=True, backend=backend)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    atomic = superpixel_pool(features, segments, k, deterministic=False, backend=backend)
    assert_close(first[0], atomic[0])
    assert torch.equal(first[1], atomic[1])
    maps = [superpixel_mean_map(features, segments, "mean", k, deterministic=True,
                                backend=backend) for _ in range(2)]
    assert torch.equal(maps[0], maps[1])


# ---- gradients ----------------------------------------------------------------------------


def _grad_inputs(seed=0, shape=(2, 2, 3, 5), k=6):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    # K = 6 on 15 pixels with id 5 unused: an empty segment in every image.
    segments = torch.randint(0, k - 1, (shape[0], *shape[2:]), generator=g)
    means = torch.randn(shape[0], k, shape[1], generator=g, dtype=torch.float64,
                        requires_grad=True)
    return features, segments, means, k


def _functions(segments, k, backend):
    return {
        "pool": (lambda x: superpixel_pool(x, segments, k, backend=backend)[0], "features"),
        "unpool": (lambda m: superpixel_unpool(m, segments, backend=backend), "means"),
        "mean_map-mean": (lambda x: superpixel_mean_map(x, segments, "mean", k,
                                                        backend=backend), "features"),
        "mean_map-area": (lambda x: superpixel_mean_map(x, segments, "area", k,
                                                        backend=backend), "features"),
    }


@pytest.mark.parametrize("op", ["pool", "unpool", "mean_map-mean", "mean_map-area"])
def test_gradcheck_torch(op):
    features, segments, means, k = _grad_inputs()
    fn, which = _functions(segments, k, "torch")[op]
    inputs = (features if which == "features" else means,)
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)  # backward is made of the same ops


@pytest.mark.triton
@pytest.mark.parametrize("op", ["pool", "unpool", "mean_map-mean", "mean_map-area"])
def test_gradcheck_triton(op, triton_device):
    """The kernels take float64 (in the interpreter too): gradcheck the Triton backend itself
    (fast mode: random projections, so that the interpreter stays quick)."""
    features, segments, means, k = _grad_inputs(seed=1, shape=(2, 2, 2, 3), k=5)
    fn, which = _functions(segments.to(triton_device), k, "triton")[op]
    leaf = features if which == "features" else means
    inputs = (leaf.detach().to(triton_device).requires_grad_(),)
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)


@pytest.mark.triton
@pytest.mark.parametrize("op", ["pool", "unpool", "mean_map-mean", "mean_map-area"])
def test_triton_gradients_match_torch_in_float32(op, triton_device):
    """float32 gradients of the Triton backend equal the torch backend's, for a dense upstream
    gradient and for the stride-0 (expanded) one that ``.sum()`` sends back."""
    features, segments, means, k = _grad_inputs(seed=2, shape=(2, 3, 5, 7), k=9)
    grads = {}
    for backend, device in (("torch", torch.device("cpu")), ("triton", triton_device)):
        fn, which = _functions(segments.to(device), k, backend)[op]
        leaf = (features if which == "features" else means).detach().float().to(device)
        leaf.requires_grad_()
        out = fn(leaf)
        upstream = torch.linspace(-1, 1, out.numel(), device=device).view_as(out)
        dense = torch.autograd.grad(out, leaf, upstream)[0].cpu()
        expanded = torch.autograd.grad(fn(leaf).sum(), leaf)[0].cpu()
        grads[backend] = dense, expanded
    assert_close(grads["triton"][0], grads["torch"][0])
    assert_close(grads["triton"][1], grads["torch"][1])


def test_pool_gradient_is_upstream_over_count():
    features, segments, _, k = _grad_inputs()
    means, counts = superpixel_pool(features, segments, k)
    upstream = torch.randn_like(means)
    (grad,) = torch.autograd.grad(means, features, upstream)
    expected = superpixel_unpool_reference(upstream / counts.clamp_min(1)[..., None], segments)
    assert_close(grad, expected)


def test_unpool_backward_honours_deterministic_algorithms():
    features, segments, means, k = _grad_inputs()
    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        out = superpixel_unpool(means, segments)
        (grad,) = torch.autograd.grad(out.sum(), means)
    finally:
        torch.use_deterministic_algorithms(before)
    counts = superpixel_pool_reference(features, segments, k)[1]
    assert_close(grad, counts[..., None].expand_as(means).double())


# ---- torch.compile --------------------------------------------------------------------------


def test_torch_compile_fullgraph_matches_eager():
    """The three ops trace into one graph (custom ops with fake kernels, no graph break), and
    the compiled forward and backward equal eager ones."""
    torch._dynamo.reset()
    features, segments, k = make_case(CASES[5], seed=7)
    features.requires_grad_()

    def fn(x, s):
        means, counts = superpixel_pool(x, s, k, backend="torch")
        painted = superpixel_unpool(means * 2.0, s, backend="torch")
        asp = superpixel_mean_map(x.mean(1, keepdim=True), s, "area", k, backend="torch")
        return means, counts, painted, asp

    compiled = torch.compile(fn, fullgraph=True)
    got, expected = compiled(features, segments), fn(features, segments)
    for a, b in zip(got, expected):
        assert a.shape == b.shape and a.dtype == b.dtype
        if a.is_floating_point():
            assert_close(a, b)
        else:
            assert torch.equal(a, b)
    grads = [torch.autograd.grad(out[0].square().sum() + out[2].sum() + out[3].square().sum(),
                                 features)[0] for out in (got, expected)]
    assert_close(grads[0], grads[1])


# ---- downsample_segments ------------------------------------------------------------------

NEAREST_SIZES = [((5, 7), (1, 1)), ((5, 7), (5, 7)), ((5, 7), (10, 14)), ((13, 17), (4, 5)),
                 ((256, 256), (16, 16)), ((2, 3), (82, 94)), ((6, 123), (74, 3)),
                 ((512, 96), (32, 7)), ((17, 13), (29, 31))]


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("shapes", NEAREST_SIZES, ids=lambda s: f"{s[0]}->{s[1]}")
def test_downsample_nearest_equals_interpolate(shapes, dtype):
    """The index choice of F.interpolate(segments[:, None].float(), mode="nearest"), exactly
    (ids < 2**24, so the float32 copy is exact). (2, 3) -> (82, 94) and (6, 123) -> (74, 3)
    are sizes where the rational floor(i * in / out) differs from torch's float32 rounding.
    (torch rounds differently again for float64 input; float32 is the documented rule.)"""
    (height, width), size = shapes
    segments = make_segments("random", 2, height, width, 1000, dtype, seed=height * width)
    got = downsample_segments(segments, size)
    expected = F.interpolate(segments[:, None].float(), size=size, mode="nearest")
    assert got.dtype == dtype and got.shape == (2, *size)
    assert torch.equal(got, expected[:, 0].to(dtype))
    assert torch.equal(got, downsample_segments_reference(segments, size))


def test_downsample_majority_by_hand():
    segments = torch.tensor([[[5, 0, 1, 1, 7],
                              [0, 0, 1, 2, 7],
                              [3, 4, 2, 2, 9],
                              [4, 3, 2, 8, 9]]], dtype=torch.int32)
    # 4x5 -> 2x2: rows {0,1} {2,3}; columns {0,1} {2,3,4} (floor(j * 5 / 2)).
    # top-left {5,0,0,0} -> 0; top-right {1,1,7,1,2,7} -> 1; bottom-left {3,4,4,3}: a tie, the
    # smaller id 3; bottom-right {2,2,9,2,8,9} -> 2.
    got = downsample_segments(segments, (2, 2), mode="majority")
    assert got.dtype == torch.int32
    assert got.tolist() == [[[0, 1], [3, 2]]]
    # Up-sampling: one source pixel per target (the window floor(i * H / h), one row).
    up = downsample_segments(segments, (8, 10), mode="majority")
    assert torch.equal(up, segments.repeat_interleave(2, 1).repeat_interleave(2, 2))
    assert torch.equal(downsample_segments(segments, (4, 5), mode="majority"), segments)


@pytest.mark.parametrize("seed", range(6))
def test_downsample_majority_matches_loop(seed):
    g = torch.Generator().manual_seed(seed)
    height, width = (int(v) for v in torch.randint(1, 24, (2,), generator=g))
    out_h, out_w = (int(v) for v in torch.randint(1, 12, (2,), generator=g))
    k = int(torch.randint(1, 6, (1,), generator=g))  # few ids: many ties
    segments = torch.randint(-2, k, (2, height, width), generator=g)
    got = downsample_segments(segments, (out_h, out_w), mode="majority")
    assert torch.equal(got, downsample_segments_reference(segments, (out_h, out_w), "majority"))


def test_downsample_numpy_in_numpy_out():
    import numpy as np

    segments = make_segments("raster", 1, 13, 17, 25, torch.int32).numpy()
    out = downsample_segments(segments, 5, mode="majority")
    assert isinstance(out, np.ndarray) and out.dtype == np.int32 and out.shape == (1, 5, 5)


# ---- errors -------------------------------------------------------------------------------


def _ok():
    return torch.randn(2, 3, 5, 7), torch.zeros(2, 5, 7, dtype=torch.int64)


@pytest.mark.parametrize("call, error, match", [
    (lambda x, s: superpixel_pool(x.long(), s, 2), TypeError, "features must have dtype"),
    (lambda x, s: superpixel_pool(x.tolist(), s, 2), TypeError, "features must be a torch"),
    (lambda x, s: superpixel_pool(x, s.float(), 2), TypeError, "segments must hold integer"),
    (lambda x, s: superpixel_pool(x, s.bool(), 2), TypeError, "segments must hold integer"),
    (lambda x, s: superpixel_pool(x, s.to(torch.int16), 2), TypeError, "int32 or int64"),
    (lambda x, s: superpixel_pool(x[0], s, 2), ValueError, r"shape \(B, C, H, W\)"),
    (lambda x, s: superpixel_pool(x, s[:1], 2), ValueError, "segments must have shape"),
    (lambda x, s: superpixel_pool(x, s[:, :4], 2), ValueError, "segments must have shape"),
    (lambda x, s: superpixel_pool(x[:0], s[:0], 2), ValueError, "empty batch"),
    (lambda x, s: superpixel_pool(x[:, :0], s, 2), ValueError, "no channels"),
    (lambda x, s: superpixel_pool(x[:, :, :0], s[:, :0], 2), ValueError, "empty image"),
    (lambda x, s: superpixel_pool(x, s.to("meta"), 2), ValueError, "segments is on meta"),
    (lambda x, s: superpixel_pool(x, s + 2, 2), ValueError, r"ids in \[0, num_segments\)"),
    (lambda x, s: superpixel_pool(x, s - 1, 2), ValueError, r"ids in \[0, num_segments\)"),
    (lambda x, s: superpixel_pool(x, s - 1), ValueError, "ids >= 0"),
    (lambda x, s: superpixel_pool(x, s, 0), ValueError, "num_segments must be >= 1"),
    (lambda x, s: superpixel_pool(x, s, 2.0), TypeError, "num_segments must be an int"),
    (lambda x, s: superpixel_pool(x, s, 2, deterministic=1), TypeError, "deterministic"),
    (lambda x, s: superpixel_pool(x, s, 2, backend="gpu"), ValueError, "backend must be"),
    (lambda x, s: superpixel_mean_map(x, s, "sum", 2), ValueError, "normalize must be"),
    (lambda x, s: superpixel_mean_map(x, s, None, 2), ValueError, "normalize must be"),
    (lambda x, s: superpixel_mean_map(x, s.double(), "mean", 2), TypeError, "segments"),
    (lambda x, s: superpixel_mean_map(x, s + 5, "mean", 2), ValueError, "ids in"),
    (lambda x, s: superpixel_unpool(x[:, 0], s + 5), ValueError, r"ids in \[0, num_segments\)"),
    (lambda x, s: superpixel_unpool(x[:, 0].long(), s), TypeError, "means must have dtype"),
    (lambda x, s: superpixel_unpool(x, s), ValueError, r"shape \(B, K, C\)"),
    (lambda x, s: superpixel_unpool(x[:1, 0], s), ValueError, "like means' batch"),
    (lambda x, s: superpixel_unpool(x[:, 0], s.to("meta")), ValueError, "segments is on meta"),
    (lambda x, s: downsample_segments(s.float(), 2), TypeError, "segments must hold integer"),
    (lambda x, s: downsample_segments(s[0], 2), ValueError, r"shape \(B, H, W\)"),
    (lambda x, s: downsample_segments(s[:0], 2), ValueError, "empty batch"),
    (lambda x, s: downsample_segments(s, 0), ValueError, r"size\[0\] must be >= 1"),
    (lambda x, s: downsample_segments(s, (2, 3, 4)), ValueError, "pair"),
    (lambda x, s: downsample_segments(s, 2.5), TypeError, "size must be an int"),
    (lambda x, s: downsample_segments(s, (2, True)), TypeError, r"size\[1\] must be an int"),
    (lambda x, s: downsample_segments(s, 2, mode="bilinear"), ValueError, "mode must be"),
])
def test_bad_inputs_raise(call, error, match):
    features, segments = _ok()
    with pytest.raises(error, match=match):
        call(features, segments)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_id_range_device_assertion(monkeypatch, dtype):
    """The check that CUDA tensors and torch.compile get (an asynchronous assertion on the
    ids' aminmax, no host synchronisation), run on the CPU: ids at K or below 0 raise, ids in
    [0, K) pass."""
    module = importlib.import_module("supercl.ops.superpixel_pool")
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    segments = torch.tensor([[[0, 1, 2], [3, 3, 0]]], dtype=dtype)
    module._check_id_range(segments, 4)
    for bad in (4, -1, 2**31 - 1):
        wrong = segments.clone()
        wrong[0, 1, 1] = bad
        with pytest.raises(RuntimeError, match=r"ids in \[0, 4\)"):
            module._check_id_range(wrong, 4)


def test_triton_on_cpu_without_interpreter_raises(monkeypatch):
    """The interpreter flag is checked when the backend is resolved, before any kernel runs."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("SUPERCL_BACKEND", raising=False)
    features, segments = _ok()
    if not triton_available:
        with pytest.raises(RuntimeError, match="needs Triton"):
            superpixel_pool(features, segments, 1, backend="triton")
        return
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        resolve_triton_backend("superpixel_pool", "triton", torch.device("cpu"))
    for call in (lambda: superpixel_pool(features, segments, 1, backend="triton"),
                 lambda: superpixel_unpool(features[:, :1, 0], segments, backend="triton"),
                 lambda: superpixel_mean_map(features, segments, "mean", 1, backend="triton")):
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            call()


# ---- CUDA (skipped without a GPU) -----------------------------------------------------------


@cuda
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_triton_against_reference(dtype, deterministic):
    g = torch.Generator().manual_seed(11)
    features32 = torch.randn(4, 64, 64, 96, generator=g)
    segments = make_segments("raster", 4, 64, 96, 22 * 24, torch.int32).cuda()
    k = 22 * 24
    x = features32.cuda().to(dtype)
    reference = superpixel_pool_reference(x.float(), segments, k)[0]
    means, counts = superpixel_pool(x, segments, k, deterministic=deterministic)
    assert torch.equal(counts, superpixel_pool_reference(x.float(), segments, k)[1])
    mean_map = superpixel_mean_map(x, segments, "mean", k, deterministic=deterministic)
    map_reference = superpixel_mean_map_reference(x.float(), segments, "mean", k)
    if dtype == torch.float32:
        assert_close(means, superpixel_pool_reference(x.double(), segments, k)[0].float())
        assert_close(mean_map,
                     superpixel_mean_map_reference(x.double(), segments, "mean", k).float())
    else:
        torch_lowp = superpixel_pool_reference(x, segments, k)[0]
        assert_close_lowp(means, torch_lowp, reference)
        assert_close_lowp(mean_map, superpixel_mean_map_reference(x, segments, "mean", k),
                          map_reference)
    grad_out = torch.randn_like(means)
    leaf = x.detach().requires_grad_()
    (grad,) = torch.autograd.grad(superpixel_pool(leaf, segments, k)[0], leaf, grad_out)
    ref_leaf = x.detach().float().requires_grad_()
    (ref_grad,) = torch.autograd.grad(superpixel_pool_reference(ref_leaf, segments, k)[0],
                                      ref_leaf, grad_out.float())
    if dtype == torch.float32:
        assert_close(grad, ref_grad)
    else:
        assert_close_lowp(grad, ref_grad.to(dtype), ref_grad)


@cuda
def test_cuda_scattered_ids_and_determinism():
    features = torch.randn(2, 48, 45, 37, device="cuda")
    segments = make_segments("scattered", 2, 45, 37, 5000, torch.int64, seed=4).cuda()
    expected = superpixel_pool_reference(features.double(), segments, 5000)[0].float()
    for deterministic in (False, True):
        assert_close(superpixel_pool(features, segments, 5000, deterministic=deterministic)[0],
                     expected)
    runs = [superpixel_pool(features, segments, 5000, deterministic=True)[0] for _ in range(3)]
    assert all(torch.equal(runs[0], r) for r in runs[1:])


@cuda
def test_cuda_no_host_sync_with_num_segments():
    features = torch.randn(2, 16, 33, 35, device="cuda", requires_grad=True)
    segments = make_segments("raster", 2, 33, 35, 108, torch.int32).cuda()
    superpixel_pool(features, segments, 108)  # warm-up: compile the kernels
    superpixel_mean_map(features, segments, "mean", 108)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        means, _ = superpixel_pool(features, segments, 108)
        painted = superpixel_unpool(means, segments)
        mean_map = superpixel_mean_map(features, segments, "area", 108)
        (painted.sum() + mean_map.sum()).backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()  # a synchronising call inside the block above would have raised
    assert features.grad is not None and bool(torch.isfinite(features.grad).all())
    assert_close(painted, superpixel_unpool_reference(means, segments))


_COMPILE_FOR_GPU = r"""
import re
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from supercl.kernels.triton import superpixel_pool as k

target = GPUTarget("cuda", 90, 32)
# As the JIT specialises the benchmark's launch (contiguous features, int32 ids, C = 64,
# W = 256): unit strides become constexpr 1; pointers and multiples of 16 are 16-divisible.
pointers = {"X": "*{x}", "S": "*{ids}", "SUMS": "*{acc}", "COUNTS": "*i64", "V": "*{x}",
            "OUT": "*{x}"}
DIV16 = {"C", "W", "N", "stride_xb", "stride_xc", "stride_xh", "stride_sb", "stride_sh",
         "stride_vb", "stride_vk"}
ONE = {"stride_xw", "stride_sw", "stride_vc"}


def build(kernel, consts, x, acc, ids="i32"):
    names = kernel.arg_names
    consts = {**consts, **{n: 1 for n in ONE if n in names}}
    signature = {n: pointers[n].format(x=x, acc=acc, ids=ids) if n in pointers
                 else "constexpr" if n in consts else "i32" for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in names
             if n in pointers or n in DIV16}
    src = ASTSource(kernel, signature, {(names.index(n),): v for n, v in consts.items()}, attrs)
    compiled = triton.compile(src, target=target, options=dict(num_warps=k.NUM_WARPS))
    assert "cubin" in compiled.asm, kernel.__name__
    return compiled.asm["ptx"]


# (dtype, accumulator, MODE, itemsize, 16-byte vector load of the feature tile)
for x, acc, mode, item, vector in [("fp32", "fp32", 1, 4, "ld.global.v4.b32"),
                                   ("bf16", "fp32", 0, 2, "ld.global.v4.b32"),
                                   ("fp16", "fp32", 0, 2, "ld.global.v4.b32"),
                                   ("fp64", "fp64", 2, 8, "ld.global.v2.b64")]:
    acc_t = tl.float64 if acc == "fp64" else tl.float32
    block_p, block_c = k._blocks(64, item)
    for kernel, extra in [(k._segment_sum_atomic_kernel, dict(MAX_K_BLOCKS=k.MAX_K_BLOCKS)),
                          (k._segment_sum_ordered_kernel, {})]:
        # Transposed views (FLAT_X False) only for the atomic float32 kernel: same code else.
        flats = (True, False) if (x, kernel) == ("fp32", k._segment_sum_atomic_kernel) else (True,)
        for flat in flats:
            consts = dict(MODE=mode, ACC=acc_t, UPCAST=False, FLAT_X=flat, FLAT_S=flat,
                          BLOCK_P=block_p, BLOCK_C=block_c, BLOCK_K=k.BLOCK_K, **extra)
            # int64 ids once per dtype, on the atomic kernel's flat path.
            ids = "i64" if flat and kernel is k._segment_sum_atomic_kernel else "i32"
            ptx = build(kernel, consts, x, acc, ids)
            atomics = set(re.findall(r"\b(?:red|atom)\.global[\w.]*", ptx))
            # The one-hot products on tensor cores, in the operand type that keeps them exact:
            # bf16 parts for float32 (never TF32's 10-bit truncation), fp16, fp64.
            mma = {"fp32": "bf16.bf16", "bf16": "bf16.bf16", "fp16": "f16.f16", "fp64": "f64.f64"}
            assert re.search(r"mma\.sync\.aligned\.[\w.]*\." + mma[x], ptx), (kernel.__name__, x)
            assert "tf32" not in ptx, (kernel.__name__, x)
            # Features read in 16-byte vectors (a mask that depends on the ids made every load
            # scalar once).
            assert vector in ptx, (kernel.__name__, x, flat, sorted(set(
                re.findall(r"ld\.global[\w.]*", ptx))))
            if kernel is k._segment_sum_ordered_kernel:
                assert not atomics, atomics             # deterministic: no atomics at all
            else:
                assert atomics, kernel.__name__
    for divide in (False, True):
        consts = dict(ACC=acc_t, DIVIDE=divide, FLAT_S=True, BLOCK_P=block_p, BLOCK_C=block_c)
        ptx = build(k._paint_kernel, consts, x, acc)
        assert ("st.global.v2.b64" if x == "fp64" else "st.global.v4.b32") in ptx, (x, divide)
        if divide:  # rounded to nearest, as torch divides; never the approximate div.full
            assert ("div.rn.f64" if x == "fp64" else "div.rn.f32") in ptx, x
            assert "div.full" not in ptx and "div.approx" not in ptx, x
print("ok")
"""


@pytest.mark.slow
@pytest.mark.skipif(not triton_available, reason="needs Triton")
def test_kernels_compile_for_a_gpu():
    """Without a GPU, Triton still compiles the kernels for sm_90 (PTX and cubin), in every
    dtype, with the launcher's block sizes and warps: this catches what the interpreter does
    not check (types, layouts, tensor-core products), that the feature tiles are read and the
    paint written in 16-byte vectors, that the paint divides rounding to nearest, and that the
    deterministic kernel holds no atomics."""
    triton_compile_for_gpu(_COMPILE_FOR_GPU)
