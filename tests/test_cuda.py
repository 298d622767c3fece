"""The CUDA backend on a GPU (marker `cuda`; skipped without one): bit-identical labels with the
CPU backend, equality with scikit-image, determinism, no host synchronisation inside SLIC's
iterations.  On machines without a GPU, test_cuda_emulated.py runs the same kernels on the host
and test_package.py compiles them with nvcc; the NVRTC compile below needs only CuPy."""

import sys

import numpy as np
import pytest
import torch

import supercl.kernels
from phantom_v1 import phantom_batch
from supercl.ops import connected_components, slic
from supercl.testing import connected_components_reference

import ccl_cases

slic_module = sys.modules["supercl.ops.slic"]


def test_kernels_compile_with_nvrtc():
    """The run-time compiler sees the .cu files exactly as the backend does (no C library
    headers, the package's include directory); this needs CuPy and NVRTC, not a GPU."""
    nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc")
    for name in ("connected_components", "connected_components_3d", "slic", "slic_3d"):
        program = nvrtc.createProgram(supercl.kernels.cuda_source(name), f"{name}.cu", (), ())
        try:
            nvrtc.compileProgram(program, ["-std=c++17", "--fmad=false",
                                           f"-I{supercl.kernels.include_dir()}",
                                           "--gpu-architecture=compute_80"])
        except Exception as error:  # the log says what failed
            pytest.fail(f"{name}.cu: {error}\n{nvrtc.getProgramLog(program)}")
        assert len(nvrtc.getPTX(program)) > 0


cuda = pytest.mark.cuda


@cuda
@pytest.mark.parametrize("connectivity", [1, 2])
def test_connected_components_gpu_equals_cpu_and_skimage(connectivity):
    rng = np.random.default_rng(connectivity)
    for shape in [(1, 1, 1), (7, 5, 123), (3, 517, 263), (16, 64, 64)]:
        for dtype in ccl_cases.KERNEL_DTYPES:
            images = rng.integers(0, 3, size=shape).astype(dtype)
            gpu, num = connected_components(torch.from_numpy(images).cuda(),
                                            connectivity=connectivity, return_num=True)
            assert gpu.is_cuda and num.is_cuda and gpu.dtype == torch.int32
            cpu = connected_components(images, connectivity=connectivity)
            np.testing.assert_array_equal(gpu.cpu().numpy(), cpu)
            np.testing.assert_array_equal(cpu, connected_components_reference(images, connectivity))


@cuda
def test_connected_components_gpu_non_contiguous_and_deterministic():
    base = torch.from_numpy(np.random.default_rng(0).integers(0, 4, size=(8, 300, 200))).cuda()
    view = base.transpose(1, 2)[:, ::3]
    first = connected_components(view, background=1)
    for _ in range(3):
        assert torch.equal(connected_components(view, background=1), first)
    np.testing.assert_array_equal(
        first.cpu().numpy(), connected_components_reference(view.cpu().numpy(), 2, 1)
    )


@cuda
@pytest.mark.parametrize("connectivity", [1, 2, 3])
def test_connected_components_3d_gpu_equals_cpu_and_skimage(connectivity):
    rng = np.random.default_rng(40 + connectivity)
    for shape in [(1, 1, 1, 1), (2, 7, 5, 123), (1, 37, 61, 29), (3, 16, 64, 64)]:
        for dtype in ccl_cases.KERNEL_DTYPES:
            volumes = rng.integers(0, 3, size=shape).astype(dtype)
            gpu, num = connected_components(torch.from_numpy(volumes).cuda(), spatial_dims=3,
                                            connectivity=connectivity, return_num=True)
            assert gpu.is_cuda and num.is_cuda and gpu.dtype == torch.int32
            cpu = connected_components(volumes, connectivity=connectivity, spatial_dims=3)
            np.testing.assert_array_equal(gpu.cpu().numpy(), cpu)
            np.testing.assert_array_equal(
                cpu, connected_components_reference(volumes, connectivity, spatial_dims=3))


_DTYPES = ccl_cases.KERNEL_DTYPES


def _assert_gpu_equals_cpu(images, connectivity, background, spatial_dims, name=""):
    kwargs = dict(connectivity=connectivity, background=background, spatial_dims=spatial_dims)
    gpu, num = connected_components(torch.from_numpy(images).cuda(), return_num=True, **kwargs)
    cpu, cpu_num = connected_components(images, return_num=True, backend="cpu", **kwargs)
    np.testing.assert_array_equal(gpu.cpu().numpy(), cpu, err_msg=name)
    np.testing.assert_array_equal(num.cpu().numpy(), cpu_num, err_msg=name)


@cuda
@pytest.mark.parametrize("background", [None, -1])
@pytest.mark.parametrize("connectivity", [1, 2])
def test_connected_components_gpu_block_edge_cases(connectivity, background):
    """The block-based kernels under real concurrency on the edge cases of ccl_cases (tile
    borders and corners, clipped tiles, snakes, checkerboards): the CPU backend's labels."""
    for k, (name, images) in enumerate(ccl_cases.cases_2d(seed=connectivity)):
        dtype = _DTYPES[k % len(_DTYPES)] if background is None else np.int32
        _assert_gpu_equals_cpu(images.astype(dtype), connectivity, background, 2, name)


@cuda
@pytest.mark.parametrize("background", [None, -1])
@pytest.mark.parametrize("connectivity", [1, 2, 3])
def test_connected_components_3d_gpu_block_edge_cases(connectivity, background):
    for k, (name, volumes) in enumerate(ccl_cases.cases_3d(seed=connectivity)):
        dtype = _DTYPES[k % len(_DTYPES)] if background is None else np.int32
        _assert_gpu_equals_cpu(volumes.astype(dtype), connectivity, background, 3, name)


@cuda
@pytest.mark.parametrize("threads, blocks", [(32, 3), (512, 65535), (96, 1)])
def test_connected_components_gpu_any_block_and_grid(monkeypatch, threads, blocks):
    """The tile kernels stride over a tile's pixels by blockDim and over tiles by gridDim: any
    block size (a warp, a large block, not a power of two) and a grid smaller than the tile
    count give the same labels.  The large block is 512, not 1024: the 3-D border kernels need
    64-68 registers per thread (ptxas, sm_90), and 1024 threads of more than 64 registers
    exceed an SM's 65536 registers per block, so CUDA refuses the launch
    (CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, seen on an H200).  The launcher uses 256 threads."""
    from supercl.kernels.cuda import launch

    monkeypatch.setattr(launch, "_TILE_THREADS", threads)
    monkeypatch.setattr(launch, "_MAX_BLOCKS", blocks)
    rng = np.random.default_rng(threads)
    images = rng.integers(0, 3, size=(3, 130, 300)).astype(np.uint8)
    volumes = rng.integers(0, 2, size=(2, 20, 30, 70)).astype(np.int64)
    for connectivity in (1, 2):
        _assert_gpu_equals_cpu(images, connectivity, None, 2)
    for connectivity in (1, 3):
        _assert_gpu_equals_cpu(volumes, connectivity, None, 3)


@cuda
@pytest.mark.slow
def test_connected_components_gpu_big_batch():
    """cupy issue 9851: cupyx.scipy.ndimage.label returns zeros for later slices of a
    (5000, 768, 768) uint8 batch.  2.9e9 pixels (> 2**31) labeled in one call: the first,
    middle and last slices equal the CPU backend's labels of those slices, and so do their
    counts.  Needs ~40 GB of GPU memory (input 2.9 GB, int32 parents, output and ranks)."""
    batch, height, width = 5000, 768, 768
    generator = torch.Generator(device="cuda").manual_seed(0)
    images = torch.randint(0, 2, (batch, height, width), dtype=torch.uint8, device="cuda",
                           generator=generator)
    labels, num = connected_components(images, return_num=True)
    for b in (0, batch // 2, batch - 1):
        image = images[b].cpu().numpy()
        cpu, cpu_num = connected_components(image, return_num=True, backend="cpu")
        np.testing.assert_array_equal(labels[b].cpu().numpy(), cpu, err_msg=f"slice {b}")
        assert int(num[b]) == int(cpu_num) > 0


@cuda
@pytest.mark.parametrize("use_mask", [False, "host", "device"])
@pytest.mark.parametrize("enforce", [True, False])
def test_slic_gpu_equals_cpu_on_phantoms(use_mask, enforce):
    """A mask on the host is planned there; one on the GPU is planned on the GPU (arrays
    sized by the pixel bound): both give the CPU's labels."""
    images, _ = phantom_batch(16, 256, 256, seed=3)
    mask = images > -500 if use_mask else None
    kwargs = dict(n_segments=100, compactness=0.1, mask=mask, enforce_connectivity=enforce)
    cpu = slic(images, **kwargs)
    if use_mask == "device":
        kwargs["mask"] = torch.from_numpy(mask).cuda()
    gpu = slic(torch.from_numpy(images).cuda(), **kwargs)
    assert gpu.is_cuda
    np.testing.assert_array_equal(gpu.cpu().numpy(), cpu)


@cuda
@pytest.mark.parametrize("use_mask", [False, "host", "device"])
@pytest.mark.parametrize("enforce", [True, False])
def test_slic_3d_gpu_equals_cpu_on_phantom_volumes(use_mask, enforce):
    from phantom_v1 import phantom_volume

    volume, organs = phantom_volume(48, 128, 128, seed=3)
    volumes = np.stack([volume, volume[:, ::-1].copy()])
    mask = np.stack([organs, organs[:, ::-1]]) > 0 if use_mask else None
    kwargs = dict(n_segments=500, compactness=0.1, mask=mask, enforce_connectivity=enforce,
                  spacing=(2.5, 0.7, 0.7), spatial_dims=3)
    cpu = slic(volumes, **kwargs)
    if use_mask == "device":
        kwargs["mask"] = torch.from_numpy(mask).cuda()
    gpu = slic(torch.from_numpy(volumes).cuda(), **kwargs)
    assert gpu.is_cuda
    np.testing.assert_array_equal(gpu.cpu().numpy(), cpu)


@cuda
@pytest.mark.parametrize("shape", [(2, 1, 1), (3, 1, 217), (2, 5, 123), (2, 3, 37, 41)])
def test_slic_gpu_equals_cpu_odd_sizes(shape):
    images = np.random.default_rng(sum(shape)).random(shape).astype(np.float32)
    for n_segments in (1, 9, 100):
        cpu = slic(images, n_segments=n_segments, compactness=0.2)
        gpu = slic(torch.from_numpy(images).cuda(), n_segments=n_segments, compactness=0.2)
        np.testing.assert_array_equal(gpu.cpu().numpy(), cpu)


@cuda
def test_slic_gpu_non_contiguous_and_deterministic():
    images, _ = phantom_batch(4, 200, 300, seed=1)
    t = torch.from_numpy(images).cuda().transpose(1, 2)[:, ::2]
    first = slic(t, n_segments=80, compactness=0.1)
    for _ in range(3):
        assert torch.equal(slic(t, n_segments=80, compactness=0.1), first)
    np.testing.assert_array_equal(
        first.cpu().numpy(), slic(t.cpu().contiguous().numpy(), n_segments=80, compactness=0.1)
    )


@cuda
def test_slic_gpu_large_batch_equals_cpu():
    images, _ = phantom_batch(256, 512, 512, seed=7)
    gpu = slic(torch.from_numpy(images).cuda(), n_segments=100, compactness=0.1).cpu().numpy()
    cpu = slic(images, n_segments=100, compactness=0.1)
    np.testing.assert_array_equal(gpu, cpu)


@cuda
def test_slic_iterations_do_not_synchronise():
    """The launcher, from the rescaled input to the labels, makes no synchronising torch call
    (torch raises in sync-debug mode "error"); the public op's input validation (NaN check)
    does synchronise once, before."""
    from supercl.kernels.cuda import launch as _cuda

    images, _ = phantom_batch(8, 128, 128, seed=2)
    x = torch.from_numpy(images).cuda()
    # the launcher takes (B, C, H, W); _rescale gives (B, H, W) for grey images
    normalized = slic_module._rescale(x.double(), None).float()[:, None].contiguous()
    grid, params, min_size = slic_module._plan(None, 8, (128, 128), 100, 0.1, (1.0, 1.0), 0.5)
    _cuda.slic(normalized, None, grid, params, 10, True, min_size, 0)  # compile first
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        labels = _cuda.slic(normalized, None, grid, params, 10, True, min_size, 0)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    np.testing.assert_array_equal(labels.cpu().numpy(), slic(images, n_segments=100, compactness=0.1))


def test_cuda_backend_unavailable_says_how_to_get_it(monkeypatch):
    from supercl.kernels.cuda import launch as _cuda

    monkeypatch.setattr(_cuda, "available", lambda: (False, "CuPy is not installed"))
    with pytest.raises(RuntimeError, match=r"supercl\[cuda1[23]\]"):
        slic(np.zeros((1, 8, 8)), backend="cuda")
    with pytest.raises(RuntimeError, match=r"supercl\[cuda1[23]\]"):
        connected_components(np.zeros((8, 8), dtype=np.int32), backend="cuda")


def test_compiled_module_cache_key_follows_the_headers(tmp_path, monkeypatch):
    """CuPy's disk cache keys on source and options only; the headers' digest is an option, so
    editing a header must change it."""
    import shutil

    from supercl.kernels.cuda import launch as _cuda

    shutil.copytree(supercl.kernels.include_dir(), tmp_path / "include")
    monkeypatch.setattr(supercl.kernels, "include_dir", lambda: tmp_path / "include")
    _cuda._headers_digest.cache_clear()
    before = _cuda._headers_digest()
    header = tmp_path / "include" / "supercl" / "slic.h"
    header.write_text(header.read_text() + "\n// changed\n")
    _cuda._headers_digest.cache_clear()
    assert _cuda._headers_digest() != before
    _cuda._headers_digest.cache_clear()


@cuda
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("enforce", [True, False])
def test_masked_slic_does_not_synchronise(spatial_dims, enforce):
    """Issue 22: the whole public op with a mask -- validation, rescaling of integer input,
    bounding boxes and grids planned on the device, iterations, enforcement -- makes no
    synchronising torch call (torch raises in sync-debug mode "error").  One image's mask is
    empty and one is a single pixel.  The labels equal the CPU backend's."""
    if spatial_dims == 2:
        images, organs = phantom_batch(6, 96, 112, seed=3)
        masks = images > -500
    else:
        from phantom_v1 import phantom_volume

        volume, organs = phantom_volume(12, 40, 44, seed=5)
        images = np.stack([volume, volume[::-1], volume[:, ::-1], volume[:, :, ::-1], volume,
                           volume[::-1, ::-1]])
        masks = images > -500
    images = images.astype(np.int16)
    masks[1] = False
    masks[2] = False
    masks[2].flat[masks[2].size // 2] = True
    kwargs = dict(n_segments=40, compactness=0.1, enforce_connectivity=enforce,
                  spatial_dims=spatial_dims)
    x, m = torch.from_numpy(images).cuda(), torch.from_numpy(masks).cuda()
    slic(x, mask=m, **kwargs)  # compile the kernels, build the planning tables
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        labels = slic(x, mask=m, **kwargs)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    np.testing.assert_array_equal(labels.cpu().numpy(), slic(images, mask=masks, **kwargs))


@cuda
def test_slic_batch_beyond_2_31_pixels_labels_every_slice():
    """Issue 22 / cupy 9851: a batch of more than 2**31 pixels (2049 x 1024^2 uint8: indices
    past int32 in every grid-stride kernel and per-image offset) labels its later slices as
    it labels them alone, and as the CPU does.  enforce_connectivity=False keeps the memory to
    ~40 GB (the enforcement's per-component arrays would add ~60 GB)."""
    batch, side = 2049, 1024
    assert batch * side * side > 2**31
    generator = torch.Generator(device="cuda").manual_seed(9851)
    images = torch.randint(0, 256, (batch, side, side), dtype=torch.uint8, device="cuda",
                           generator=generator)
    kwargs = dict(n_segments=64, compactness=0.1, max_num_iter=3, enforce_connectivity=False)
    labels = slic(images, **kwargs)
    for b in (0, 1, 2047, 2048):
        alone = slic(images[b : b + 1].cpu().numpy(), **kwargs)
        np.testing.assert_array_equal(labels[b : b + 1].cpu().numpy(), alone,
                                      err_msg=f"slice {b}")
    del labels
    torch.cuda.empty_cache()
