"""The CUDA backend's own code, run on the CPU: kernels/cuda/*.cu compiled as host C++ (one
thread visiting every index, tests/cuda_host_shim.h) and launched by the real launcher in
kernels/cuda/launch.py through a stand-in for CuPy.  This checks the kernels and their launch
sequence (init, merge, compress, scan, gather; the SLIC iterations, connectivity enforcement,
pointer jumping, renumbering) against the CPU backend and scikit-image on machines without a
GPU.  What it cannot check -- concurrency, atomics under contention, CuPy itself -- is left to
the tests marked `cuda` in test_cuda.py."""

import numpy as np
import pytest
import torch

from supercl.data import phantom_batch
from supercl.ops import connected_components, slic
from supercl.testing import connected_components_reference

# The fixture ``emulated`` (tests/conftest.py) compiles the kernels for the host and routes
# backend="cuda" through them; it skips without g++.


@pytest.mark.parametrize("connectivity", [1, 2])
def test_connected_components_kernels(emulated, connectivity):
    rng = np.random.default_rng(connectivity)
    for shape in [(1, 1, 1), (3, 5, 123), (4, 31, 29), (2, 64, 48)]:
        for dtype in (np.uint8, np.int32, np.int64):
            images = rng.integers(0, 3, size=shape).astype(dtype)
            out, num = connected_components(torch.from_numpy(images), connectivity=connectivity,
                                            return_num=True, backend="cuda")
            expected = connected_components_reference(images, connectivity)
            np.testing.assert_array_equal(out.numpy(), expected)
            np.testing.assert_array_equal(num.numpy(), expected.reshape(len(images), -1).max(1))
    assert {"cc_merge_u8", "cc_merge_i32", "cc_merge_i64", "cc_gather_kernel"} <= set(emulated)


def test_connected_components_kernels_strided_and_background(emulated):
    rng = np.random.default_rng(5)
    base = torch.from_numpy(rng.integers(0, 4, size=(3, 40, 50)))
    view = base.transpose(1, 2)[:, ::2]
    got = connected_components(view, background=2, backend="cuda")
    expected = connected_components_reference(view.numpy(), 2, background=2)
    np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize("connectivity", [1, 2, 3])
def test_connected_components_3d_kernels(emulated, connectivity):
    rng = np.random.default_rng(30 + connectivity)
    for shape in [(1, 1, 1, 1), (2, 3, 5, 23), (1, 9, 7, 11), (2, 4, 6, 1)]:
        for dtype in (np.uint8, np.int32, np.int64):
            volumes = rng.integers(0, 3, size=shape).astype(dtype)
            out, num = connected_components(torch.from_numpy(volumes), connectivity=connectivity,
                                            return_num=True, backend="cuda", spatial_dims=3)
            expected = connected_components_reference(volumes, connectivity, spatial_dims=3)
            np.testing.assert_array_equal(out.numpy(), expected)
            np.testing.assert_array_equal(num.numpy(), expected.reshape(len(volumes), -1).max(1))
    assert {"cc3_merge_u8", "cc3_merge_i32", "cc3_merge_i64", "cc_gather_kernel"} <= set(emulated)


def test_connected_components_3d_kernels_strided_and_background(emulated):
    base = torch.from_numpy(np.random.default_rng(6).integers(0, 4, size=(2, 9, 14, 10)))
    view = base.transpose(1, 3)[:, ::2]
    got = connected_components(view, connectivity=2, background=3, backend="cuda",
                               spatial_dims=3)
    expected = connected_components_reference(view.numpy(), 2, background=3, spatial_dims=3)
    np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize("enforce", [True, False])
@pytest.mark.parametrize("use_mask", [False, True])
def test_slic_kernels_match_cpu_backend(emulated, enforce, use_mask):
    images, _ = phantom_batch(3, 96, 80, seed=4)
    mask = images > -500 if use_mask else None
    kwargs = dict(n_segments=60, compactness=0.1, enforce_connectivity=enforce, mask=mask)
    cpu = slic(images, backend="cpu", **kwargs)
    device_path = slic(images, backend="cuda", **kwargs)
    np.testing.assert_array_equal(device_path, cpu)
    assert emulated.count("slic_assign_kernel") == 10 * (2 if use_mask else 1)
    assert ("slic_relabel" in emulated) == enforce and ("slic_compact" in emulated) != enforce


@pytest.mark.parametrize("enforce", [True, False])
@pytest.mark.parametrize("use_mask", [False, True])
def test_slic_3d_kernels_match_cpu_backend(emulated, enforce, use_mask):
    """The 3-D kernels, launched by the real launcher, give the CPU backend's labels bit for bit
    (the CPU's row scans against the GPU's per-voxel assignment)."""
    from supercl.data.phantom import phantom_volume

    volume, organs = phantom_volume(14, 40, 44, seed=5)
    volumes = np.stack([volume, volume[::-1].copy()])
    mask = np.stack([organs, organs[::-1]]) > 0 if use_mask else None
    kwargs = dict(n_segments=60, compactness=0.1, enforce_connectivity=enforce, mask=mask,
                  spacing=(2.5, 0.7, 0.7), spatial_dims=3)
    cpu = slic(volumes, backend="cpu", **kwargs)
    device_path = slic(volumes, backend="cuda", **kwargs)
    np.testing.assert_array_equal(device_path, cpu)
    assert emulated.count("slic3_assign_kernel") == 10 * (2 if use_mask else 1)
    assert ("slic_relabel" in emulated) == enforce and ("slic_compact" in emulated) != enforce


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 1, 1, 37), (1, 5, 1, 23), (1, 2, 5, 7, 9)])
def test_slic_3d_kernels_odd_sizes_channels_and_small_compactness(emulated, shape):
    volumes = np.random.default_rng(sum(shape)).random(shape)
    for n_segments, compactness in ((1, 0.3), (7, 0.3), (300, 0.3), (20, 1e-3)):
        kwargs = dict(n_segments=n_segments, compactness=compactness, max_num_iter=4,
                      spatial_dims=3)
        np.testing.assert_array_equal(slic(volumes, backend="cuda", **kwargs),
                                      slic(volumes, backend="cpu", **kwargs))


@pytest.mark.parametrize("shape", [(2, 1, 1), (2, 1, 37), (1, 5, 123), (2, 3, 17, 19)])
def test_slic_kernels_odd_sizes_and_channels(emulated, shape):
    images = np.random.default_rng(sum(shape)).random(shape)
    for n_segments in (1, 7, 500):
        kwargs = dict(n_segments=n_segments, compactness=0.3, max_num_iter=4)
        np.testing.assert_array_equal(slic(images, backend="cuda", **kwargs),
                                      slic(images, backend="cpu", **kwargs))


def test_slic_kernels_small_compactness_merges(emulated):
    """Tiny compactness fragments superpixels: enforcement merges long chains of pieces,
    exercising the pointer jumping."""
    images = np.random.default_rng(9).random((2, 48, 40))
    kwargs = dict(n_segments=30, compactness=1e-3, start_label=1)
    np.testing.assert_array_equal(slic(images, backend="cuda", **kwargs),
                                  slic(images, backend="cpu", **kwargs))
