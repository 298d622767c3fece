"""The CUDA backend's own code, run on the CPU: kernels/cuda/*.cu compiled as host C++ (one
thread visiting every index, tests/cuda_host_shim.h) and launched by the real launcher in
kernels/cuda/launch.py through a stand-in for CuPy.  This checks the kernels and their launch
sequence (init, merge, compress, scan, gather; the SLIC iterations, connectivity enforcement,
pointer jumping, renumbering) against the CPU backend and scikit-image on machines without a
GPU.  What it cannot check -- concurrency, atomics under contention, CuPy itself -- is left to
the tests marked `cuda` in test_cuda.py."""

import sys

import numpy as np
import pytest
import torch

from phantom_v1 import phantom_batch
from supercl.ops import connected_components, slic
from supercl.testing import connected_components_reference

import ccl_cases

# The fixture ``emulated`` (tests/conftest.py) compiles the kernels for the host and routes
# backend="cuda" through them; it skips without g++.


_DTYPES = ccl_cases.KERNEL_DTYPES


def _check_cuda_against_cpu_and_reference(images, connectivity, background, spatial_dims):
    """The emulated CUDA path equals scikit-image and the CPU backend, labels and counts."""
    kwargs = dict(connectivity=connectivity, background=background, spatial_dims=spatial_dims)
    out, num = connected_components(torch.from_numpy(images), return_num=True, backend="cuda",
                                    **kwargs)
    expected = connected_components_reference(images, connectivity, background, spatial_dims)
    np.testing.assert_array_equal(out.numpy(), expected)
    np.testing.assert_array_equal(num.numpy(), expected.reshape(len(images), -1).max(1))
    np.testing.assert_array_equal(out.numpy(), connected_components(images, backend="cpu",
                                                                    **kwargs))


@pytest.mark.parametrize("connectivity", [1, 2])
def test_connected_components_kernels(emulated, connectivity):
    rng = np.random.default_rng(connectivity)
    for shape in [(1, 1, 1), (3, 5, 123), (4, 31, 29), (2, 64, 48), (2, 70, 150)]:
        for dtype in _DTYPES:
            images = rng.integers(0, 3, size=shape).astype(dtype)
            _check_cuda_against_cpu_and_reference(images, connectivity, None, 2)
    assert {"cc_tiles_u8", "cc_tiles_i32", "cc_tiles_i64", "cc_borders_u8", "cc_borders_i32",
            "cc_borders_i64", "cc_roots", "cc_gather_kernel"} <= set(emulated)


@pytest.mark.parametrize("background", [None, -1])
@pytest.mark.parametrize("connectivity", [1, 2])
def test_connected_components_block_edge_cases(emulated, connectivity, background):
    """Tile borders, corners and clipped tiles (ccl_cases.cases_2d), every dtype, background on
    (0) and off (-1 matches no value)."""
    for k, (name, images) in enumerate(ccl_cases.cases_2d(seed=connectivity)):
        dtype = _DTYPES[k % len(_DTYPES)] if background is None else np.int32
        try:
            _check_cuda_against_cpu_and_reference(images.astype(dtype), connectivity, background,
                                                  2)
        except AssertionError as error:
            raise AssertionError(f"case {name!r}") from error


def test_connected_components_sizes_around_tile_multiples(emulated):
    """Every image size one below, at and one above a multiple of the 32 x 64 tile (and
    8 x 8 x 32 in 3-D): the clipped last tiles and their borders."""
    rng = np.random.default_rng(17)
    for h in (31, 32, 33, 65):
        for w in (63, 64, 65, 129):
            images = (rng.random((1, h, w)) < 0.55).astype(np.uint8)
            for connectivity in (1, 2):
                _check_cuda_against_cpu_and_reference(images, connectivity, None, 2)
    for d, h, w in [(7, 8, 31), (8, 9, 32), (9, 7, 33), (17, 15, 65), (9, 17, 33), (10, 2, 34)]:
        volumes = (rng.random((1, d, h, w)) < 0.3).astype(np.uint8)
        for connectivity in (1, 3):
            _check_cuda_against_cpu_and_reference(volumes, connectivity, None, 3)


def test_connected_components_kernels_strided_and_background(emulated):
    rng = np.random.default_rng(5)
    base = torch.from_numpy(rng.integers(0, 4, size=(3, 140, 150)))
    for view in (base.transpose(1, 2)[:, ::2], base[:, 1::3, 2::2], base[::2, 5:, 7:]):
        got = connected_components(view, background=2, backend="cuda")
        expected = connected_components_reference(view.numpy(), 2, background=2)
        np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize("connectivity", [1, 2, 3])
def test_connected_components_3d_kernels(emulated, connectivity):
    rng = np.random.default_rng(30 + connectivity)
    for shape in [(1, 1, 1, 1), (2, 3, 5, 23), (1, 9, 7, 11), (2, 4, 6, 1), (1, 11, 19, 70)]:
        for dtype in _DTYPES:
            volumes = rng.integers(0, 3, size=shape).astype(dtype)
            _check_cuda_against_cpu_and_reference(volumes, connectivity, None, 3)
    assert {"cc3_tiles_u8", "cc3_tiles_i32", "cc3_tiles_i64", "cc3_borders_u8", "cc3_borders_i32",
            "cc3_borders_i64", "cc_roots", "cc_gather_kernel"} <= set(emulated)


@pytest.mark.parametrize("background", [None, -1])
@pytest.mark.parametrize("connectivity", [1, 2, 3])
def test_connected_components_3d_block_edge_cases(emulated, connectivity, background):
    for k, (name, volumes) in enumerate(ccl_cases.cases_3d(seed=connectivity)):
        dtype = _DTYPES[k % len(_DTYPES)] if background is None else np.int32
        try:
            _check_cuda_against_cpu_and_reference(volumes.astype(dtype), connectivity,
                                                  background, 3)
        except AssertionError as error:
            raise AssertionError(f"case {name!r}") from error


def test_connected_components_3d_kernels_strided_and_background(emulated):
    base = torch.from_numpy(np.random.default_rng(6).integers(0, 4, size=(2, 20, 34, 40)))
    for view in (base.transpose(1, 3)[:, ::2], base[:, 1::2, :, 3:]):
        got = connected_components(view, connectivity=2, background=3, backend="cuda",
                                   spatial_dims=3)
        expected = connected_components_reference(view.numpy(), 2, background=3, spatial_dims=3)
        np.testing.assert_array_equal(got.numpy(), expected)


def test_tile_shapes_agree_with_the_header():
    """The launcher sizes the tile kernels' grids with its own copy of the tile shapes."""
    import re

    import supercl.kernels
    from supercl.kernels.cuda import launch

    header = (supercl.kernels.include_dir() / "supercl" / "connected_components_block.h").read_text()
    value = {name: int(v) for name, v in re.findall(r"constexpr int (kCc3?Tile\w?) = (\d+);", header)}
    assert launch._CC_TILE == (value["kCcTileH"], value["kCcTileW"])
    assert launch._CC3_TILE == (value["kCc3TileD"], value["kCc3TileH"], value["kCc3TileW"])
    assert launch._CC_SEGMENT == int(re.search(r"constexpr int kCcSegment = (\d+);", header)[1])


def test_big_batch_index_arithmetic():
    """A (5000, 768, 768) batch (cupy issue 9851) holds 2.9e9 > 2**31 pixels: the launcher's
    tile count and scan chunks are exact Python integers, every chunk stays under 2**31
    elements and the chunks cover the batch.  (The kernels' loops are 64-bit; test_cuda.py
    labels the real batch on a GPU.)"""
    from supercl.kernels.cuda import launch

    batch, height, width = 5000, 768, 768
    assert batch * height * width >= 2**31
    assert launch._tile_count((batch, height, width), launch._CC_TILE) == batch * 24 * 12
    assert launch._tile_count((7, 33, 65, 97), launch._CC3_TILE) == 7 * 5 * 9 * 4
    chunks = launch._scan_chunks(batch, height * width)
    assert chunks[0][0] == 0 and chunks[-1][1] == batch
    assert all(b1 == c0 for (_, b1), (c0, _) in zip(chunks, chunks[1:]))
    assert all(0 < (b1 - b0) * height * width <= 2**30 for b0, b1 in chunks)
    assert launch._scan_chunks(3, 2**31 - 1) == [(0, 1), (1, 2), (2, 3)]  # one image per chunk


_TILE_PROBE = r"""
#include "supercl/connected_components_block.h"
extern "C" void probe(int64_t tile, int64_t depth, int64_t height, int64_t width, int td, int th,
                      int tw, int64_t* out) {
  const supercl::CcTile t = supercl::cc_tile(tile, depth, height, width, td, th, tw);
  const int64_t values[7] = {t.b, t.z0, t.y0, t.x0, t.d, t.h, t.w};
  for (int k = 0; k < 7; ++k) out[k] = values[k];
}
"""


def test_tile_decomposition_of_a_big_batch(tmp_path):
    """cc_tile (the tile kernels' 64-bit tile -> image, origin, extent map) on the last tiles of
    a (5000, 768, 768) batch and of 40 volumes of 300 x 512 x 512 (both >= 2**31 elements),
    compiled for the host, against the same arithmetic in Python."""
    import ctypes
    import shutil
    import subprocess

    import supercl.kernels

    if shutil.which("g++") is None:
        pytest.skip("needs g++")
    source, lib = tmp_path / "probe.cpp", tmp_path / "probe.so"
    source.write_text(_TILE_PROBE)
    subprocess.run(["g++", "-std=c++17", "-shared", "-fPIC", f"-I{supercl.kernels.include_dir()}",
                    str(source), "-o", str(lib)], check=True, timeout=300)
    probe = ctypes.CDLL(str(lib)).probe
    probe.argtypes = [ctypes.c_int64] * 4 + [ctypes.c_int] * 3 + [ctypes.POINTER(ctypes.c_int64)]
    from supercl.kernels.cuda import launch

    for shape, tile in [((5000, 1, 768, 768), (1,) + launch._CC_TILE),
                        ((40, 300, 512, 500), launch._CC3_TILE)]:
        assert np.prod(shape, dtype=np.int64) >= 2**31
        batch, *spatial = shape
        counts = [-(-s // t) for s, t in zip(spatial, tile)]
        per_image = int(np.prod(counts))
        total = launch._tile_count((batch, *spatial), tile)
        assert total == batch * per_image
        for index in (0, 1, per_image - 1, per_image, total // 2 + 7, total - 2, total - 1):
            out = (ctypes.c_int64 * 7)()
            probe(index, *spatial, *tile, out)
            b, r = divmod(index, per_image)
            cz, rest = divmod(r, counts[1] * counts[2])
            cy, cx = divmod(rest, counts[2])
            origin = [c * t for c, t in zip((cz, cy, cx), tile)]
            extent = [min(t, s - o) for t, s, o in zip(tile, spatial, origin)]
            assert list(out) == [b, *origin, *extent], (shape, index)


_RING_PROBE = r"""
#include "supercl/connected_components_block.h"
extern "C" int probe(int d, int h, int w, int* out) {
  supercl::CcTile t{0, 0, 0, 0, d, h, w};
  const int n = supercl::cc3_border_count(t);
  for (int s = 0; s < n; ++s)
    supercl::cc3_border_voxel(t, s, out[3 * s], out[3 * s + 1], out[3 * s + 2]);
  return n;
}
"""


def test_3d_border_slots_list_each_face_voxel_once(tmp_path):
    """cc3_border_count / cc3_border_voxel (the 3-D border pass's slots) list every voxel of a
    d x h x w tile that lies on its first plane or on the ring of a later plane (first or last
    row or column) exactly once, and nothing else, for every extent of a clipped 8 x 8 x 32
    tile's kind (1, 2, odd, full)."""
    import ctypes
    import shutil
    import subprocess

    import supercl.kernels

    if shutil.which("g++") is None:
        pytest.skip("needs g++")
    source, lib = tmp_path / "probe.cpp", tmp_path / "probe.so"
    source.write_text(_RING_PROBE)
    subprocess.run(["g++", "-std=c++17", "-shared", "-fPIC", f"-I{supercl.kernels.include_dir()}",
                    str(source), "-o", str(lib)], check=True, timeout=300)
    probe = ctypes.CDLL(str(lib)).probe
    probe.restype = ctypes.c_int
    for d in (1, 2, 3, 8):
        for h in (1, 2, 3, 8):
            for w in (1, 2, 5, 32):
                out = np.zeros((d * h * w, 3), dtype=np.int32)
                n = probe(d, h, w, out.ctypes.data_as(ctypes.c_void_p))
                listed = [tuple(v) for v in out[:n]]
                expected = {(z, y, x) for z in range(d) for y in range(h) for x in range(w)
                            if z == 0 or y in (0, h - 1) or x in (0, w - 1)}
                assert len(listed) == len(set(listed)) and set(listed) == expected, (d, h, w)


_UNION_PROBE = r"""
#include <thread>
#include <vector>
#include "supercl/connected_components_block.h"
// Threads union their share of the edges through cc_union_split (path splitting by atomicMin)
// on one shared forest while the others union and find too.
extern "C" void probe(int32_t* parent, const int32_t* edges, int64_t m, int threads) {
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([=] {
      for (int64_t e = t; e < m; e += threads) {
        supercl::cc_union_split(parent, edges[2 * e], edges[2 * e + 1]);
        supercl::cc_find_split(parent, edges[2 * ((e * 7919) % m)]);
      }
    });
  for (auto& thread : pool) thread.join();
}
"""


def test_union_with_path_splitting_under_concurrent_threads(tmp_path):
    """cc_union_split / cc_find_split (the border passes' union-find, compressing by atomicMin)
    run by 4 host threads on one forest, from an initial forest whose parents point at smaller
    nodes (the tile pass's output): the final trees are the connected components of the edges
    plus the initial links (scipy), every root is its component's smallest node, and every
    parent is <= its node.  Host threads interleave far less than a GPU's; the GPU tests in
    test_cuda.py cover the device."""
    import ctypes
    import shutil
    import subprocess

    import scipy.sparse
    import scipy.sparse.csgraph

    import supercl.kernels

    if shutil.which("g++") is None:
        pytest.skip("needs g++")
    source, lib = tmp_path / "probe.cpp", tmp_path / "probe.so"
    source.write_text(_UNION_PROBE)
    subprocess.run(["g++", "-std=c++17", "-O1", "-shared", "-fPIC", "-pthread",
                    f"-I{supercl.kernels.include_dir()}", str(source), "-o", str(lib)],
                   check=True, timeout=300)
    probe = ctypes.CDLL(str(lib)).probe
    probe.restype = None
    rng = np.random.default_rng(3)
    for n, m in [(50, 60), (3000, 2500), (3000, 6000)]:
        for _ in range(10):
            # Initial forest: each node points at itself or, like a tile pass's output, at a
            # smaller node that is a root.
            parent = np.arange(n, dtype=np.int32)
            roots = rng.random(n) < 0.3
            roots[0] = True
            root_ids = np.flatnonzero(roots)
            for i in np.flatnonzero(~roots):
                parent[i] = root_ids[rng.integers(0, np.searchsorted(root_ids, i))]
            edges = rng.integers(0, n, size=(m, 2)).astype(np.int32)
            probe(parent.ctypes.data_as(ctypes.c_void_p), edges.ctypes.data_as(ctypes.c_void_p),
                  ctypes.c_int64(m), ctypes.c_int(4))
            links = np.concatenate([edges, np.stack([np.arange(n), parent], 1)])
            graph = scipy.sparse.coo_matrix((np.ones(len(links)), (links[:, 0], links[:, 1])),
                                            shape=(n, n))
            _, component = scipy.sparse.csgraph.connected_components(graph, directed=False)
            assert (parent <= np.arange(n)).all()
            root = parent.copy()
            while not (root[root] == root).all():
                root = root[root]
            smallest = np.full(component.max() + 1, n)
            np.minimum.at(smallest, component, np.arange(n))
            np.testing.assert_array_equal(root, smallest[component])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_chunked_scan_numbers_every_image(emulated, monkeypatch, spatial_dims):
    """With a scan limit below one batch the numbering runs in chunks of whole images (the path
    of batches of 2**31 elements and more): still every image numbered on its own."""
    from supercl.kernels.cuda import launch

    monkeypatch.setattr(launch, "_SCAN_LIMIT", 2 * 37 * 41 * (5 if spatial_dims == 3 else 1))
    rng = np.random.default_rng(11)
    shape = (7, 5, 37, 41) if spatial_dims == 3 else (7, 37, 41)
    images = rng.integers(0, 3, size=shape).astype(np.uint8)
    assert len(launch._scan_chunks(7, int(np.prod(shape[1:])))) == 4
    _check_cuda_against_cpu_and_reference(images, 1, None, spatial_dims)


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
    from phantom_v1 import phantom_volume

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


def awkward_masks(shape, seed):
    """(B, *shape) masks: a blob, an empty one, a single pixel, scattered pixels, a full one."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((5,) + shape, dtype=bool)
    centre = np.indices(shape) - (np.array(shape) // 2).reshape((-1,) + (1,) * len(shape))
    masks[0] = (centre**2).sum(0) < (min(shape) // 2 + 1) ** 2
    masks[2][tuple(s - 1 for s in shape)] = True
    masks[3] = rng.random(shape) < 0.05
    masks[4] = True
    return masks


@pytest.fixture(params=["bound", "exact"])
def centre_bound(request, monkeypatch):
    """Both ways the launcher sizes the centre arrays: the pixel bound (a plan on the GPU; forced
    here, where the emulated plan is on the host) and the exact count (a plan on the host)."""
    if request.param == "bound":
        monkeypatch.setattr(sys.modules["supercl.ops.slic"], "_centre_bound",
                            lambda grid, pixels: pixels)
    return request.param


@pytest.mark.parametrize("enforce", [True, False])
@pytest.mark.parametrize(("shape", "channels"), [((23, 37), 1), ((1, 41), 1), ((16, 9), 3)])
def test_slic_kernels_awkward_masks_match_cpu(emulated, centre_bound, enforce, shape, channels):
    """The masked path (bounding boxes and grids planned in torch; arrays sized by the pixel
    bound as on a GPU, or exactly) against the CPU backend: an empty mask, a single pixel,
    scattered pixels (a box far larger than its area: many centres), odd sizes, channels."""
    masks = awkward_masks(shape, sum(shape))
    images = np.random.default_rng(channels).random((5, channels) + shape)
    for n_segments in (1, 9, 60):
        kwargs = dict(n_segments=n_segments, compactness=0.2, max_num_iter=4, mask=masks,
                      enforce_connectivity=enforce, start_label=2)
        cpu = slic(images, backend="cpu", **kwargs)
        np.testing.assert_array_equal(slic(images, backend="cuda", **kwargs), cpu)
        assert (cpu[1] == 0).all() and (cpu[~masks] == 0).all() and (cpu[masks] >= 2).all()
        assert cpu[2][masks[2]].tolist() == [2]


@pytest.mark.parametrize("enforce", [True, False])
@pytest.mark.parametrize("shape", [(5, 9, 11), (1, 1, 17), (6, 1, 7)])
def test_slic_3d_kernels_awkward_masks_match_cpu(emulated, centre_bound, enforce, shape):
    masks = awkward_masks(shape, sum(shape))
    volumes = np.random.default_rng(len(shape)).integers(0, 1000, (5,) + shape).astype(np.int16)
    for n_segments in (1, 8, 50):
        kwargs = dict(n_segments=n_segments, compactness=0.2, max_num_iter=3, mask=masks,
                      enforce_connectivity=enforce, spacing=(2.0, 1.0, 0.5), spatial_dims=3)
        cpu = slic(volumes, backend="cpu", **kwargs)
        np.testing.assert_array_equal(slic(volumes, backend="cuda", **kwargs), cpu)
        assert (cpu[1] == 0).all() and (cpu[~masks] == 0).all() and (cpu[masks] >= 1).all()


# ---- big batches (issue 22, cupy 9851): index arithmetic past 2**31 without the memory ----


@pytest.mark.parametrize("n", [2**31 - 1, 2**31, 2**31 + 1, 5000 * 768 * 768, 2**40 + 3])
def test_launch_geometry_past_int32(n):
    """The launcher's grid for n elements: at most 65535 blocks (a grid-stride loop covers the
    rest), and n reaches the kernel as an exact int64."""
    from supercl.kernels.cuda import launch as _cuda

    calls = []

    class Module:
        def get_function(self, name):
            return lambda grid, block, args: calls.append((grid, block, args))

    _cuda._launch(Module(), "k", n, np.int64(n))
    (grid, block, args), = calls
    assert 1 <= grid[0] <= 65535 and block[0] >= 1
    assert grid[0] == min(-(-n // block[0]), 65535)
    assert type(args[0]) is np.int64 and int(args[0]) == n


def kernel_signatures(source):
    import re

    return re.findall(r'extern "C" __global__ void (\w+)\(([^)]*)\)', source, re.S)


@pytest.mark.parametrize("name", ["slic", "slic_3d"])
def test_slic_kernels_index_in_int64(name):
    """Every size and index the SLIC kernels compute with is int64: size parameters are
    int64_t, the grid-stride index is int64_t, and the only int32 locals are labels and
    component ids (< 2**31 per image, checked in Python) -- so B * H * W >= 2**31 cannot
    wrap (cupy 9851's failure mode)."""
    import re

    import supercl.kernels

    source = supercl.kernels.cuda_source(name)
    flags = {"has_mask", "with_colour", "start_label", "use_table"}
    signatures = kernel_signatures(source)
    assert len(signatures) >= 4
    for kernel, params in signatures:
        for param in (p.strip() for p in params.split(",")):
            kind, arg = param.rsplit(" ", 1)
            if "*" in param:
                continue
            assert kind == ("int32_t" if arg in flags else "int64_t"), (kernel, param)
    assert ("for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x"
            in source)
    assert "static_cast<int64_t>(gridDim.x) * blockDim.x" in source
    assert not re.search(r"\b(int|unsigned|long)\s+\w+\s*[=;]", source)
    for declaration in re.findall(r"int32_t (\w+) = ([^;]*);", source):
        assert declaration[0] in {"label", "c"}, declaration


@pytest.fixture
def one_slot(emulated, monkeypatch, tmp_path):
    """The emulated backend with the SLIC kernels built with a one-slot shared-memory table
    (SUPERCL_SLIC_SLOTS=1): every second centre a block meets finds the table full and takes
    the direct path to global memory, so both paths run in one call."""
    import ctypes
    import subprocess
    from pathlib import Path

    import supercl.kernels
    from conftest import _HostModule
    from supercl.kernels.cuda import launch as _cuda

    shim = Path(__file__).with_name("cuda_host_shim.h")
    libs = {}
    for name in ("slic", "slic_3d"):
        lib = tmp_path / f"{name}.so"
        result = subprocess.run(
            ["g++", "-x", "c++", "-std=c++17", "-O1", "-shared", "-fPIC", "-ffp-contract=off",
             "-DSUPERCL_SLIC_SLOTS=1", "-include", str(shim),
             f"-I{supercl.kernels.include_dir()}",
             str(Path(supercl.kernels.__file__).parent / "cuda" / f"{name}.cu"), "-o",
             str(lib)],
            capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stderr
        libs[name] = ctypes.CDLL(str(lib))
    default = _cuda._module
    monkeypatch.setattr(_cuda, "_module", lambda name, index: _HostModule(libs[name], emulated)
                        if name in libs else default(name, index))
    return emulated


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_slic_table_overflow_path_matches_cpu(one_slot, spatial_dims):
    """(2-D with two channels; 3-D grey volumes.)"""
    rng = np.random.default_rng(spatial_dims)
    if spatial_dims == 2:
        images = rng.random((3, 2, 29, 35))
        masks = images[:, 0] > 0.2
    else:
        images = rng.random((3, 6, 29, 35))
        masks = images > 0.2
    for mask in (None, masks):
        kwargs = dict(n_segments=40, compactness=0.1, max_num_iter=3, mask=mask,
                      spatial_dims=spatial_dims)
        np.testing.assert_array_equal(slic(images, backend="cuda", **kwargs),
                                      slic(images, backend="cpu", **kwargs))
    assert "slic3_accumulate_kernel" in one_slot if spatial_dims == 3 else (
        "slic_accumulate_kernel" in one_slot)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_masked_slic_reads_nothing_back(emulated, monkeypatch, spatial_dims):
    """The CPU stand-in for the GPU's sync-debug test (test_cuda.py): the masked op on integer
    input, through the real launcher, never converts a tensor to a host value (item, tolist,
    bool, int, float, numpy) -- the calls that would synchronise on a GPU.  So the masked plan
    (bounding boxes, grids, the centre bound) is all device-side tensor work."""
    # the pixel bound, as on a GPU (with a plan on the host the exact count is read back)
    monkeypatch.setattr(sys.modules["supercl.ops.slic"], "_centre_bound",
                        lambda grid, pixels: pixels)
    rng = np.random.default_rng(spatial_dims)
    shape = (3, 20, 24) if spatial_dims == 2 else (3, 6, 10, 12)
    images = torch.from_numpy(rng.integers(-1000, 1000, shape).astype(np.int16))
    masks = images > -300
    masks[1] = False
    kwargs = dict(n_segments=12, compactness=0.1, max_num_iter=3, spatial_dims=spatial_dims)
    expected = slic(images, mask=masks, backend="cpu", **kwargs)

    def refuse(self, *args, **kwargs):
        raise AssertionError("a tensor was read back to the host")

    with monkeypatch.context() as patch:
        for method in ("item", "tolist", "__bool__", "__int__", "__float__", "numpy"):
            patch.setattr(torch.Tensor, method, refuse)
        labels = slic(images, mask=masks, backend="cuda", **kwargs)
    np.testing.assert_array_equal(labels.numpy(), expected.numpy())
