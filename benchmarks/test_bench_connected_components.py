"""Connected components: supercl against cc3d, scipy and scikit-image on the same maps.

One benchmark per (input kind, size, provider), grouped as
``connected_components-<kind>-<S>x<S>``. Two kinds of 32-slice inputs, built from the same
fixed-seed phantom batch:

- ``superpixels``: supercl's SLIC labels (~100 per slice, numbered from 1 so that every pixel
  is foreground) -- the multi-label case SuperCL runs after SLIC;
- ``binary``: ``organ_labels > 0``, the classic binary case every peer supports.

Issue 19 adds ``real_mri_superpixels`` at 512x512: supercl's SLIC labels (~100 per slice,
numbered from 1) of the 8 MNI152 T1 slices of the ``real_mri`` fixture, with the one-thread
target of 1.25x cc3d (``SUPERCL_BENCH_2D_DOWNSCALE=f`` divides the sides, for quick
correctness runs).

All use 8-connectivity. Correctness is checked before timing, outside the timed region: supercl
pixel for pixel against scikit-image, cc3d and scipy by component count, the GPU peers cuCIM
(``cucim.skimage.measure.label``) and bkeccl (BKE, binary only, one image per call) by
``same_partition`` on every slice (their numbering may differ). See benchmarks/README.md for the
method.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch

from supercl.ops import connected_components, slic

SIZES = [256, 512]
KINDS = ["superpixels", "binary"]
HAS_CUDA = torch.cuda.is_available()
N_CHECKED = 4  # slices compared pixel for pixel with scikit-image
# Measured here (2 cores): a round of 32 slices takes 10-80 ms except scikit-image
# (60-200 ms), so 10 rounds of every provider cost a few seconds in all.
ROUNDS = 10
STRUCTURE_2D = np.ones((3, 3), dtype=bool)  # 8-connectivity for scipy / cupyx

HAS_CUPY = importlib.util.find_spec("cupy") is not None
PROVIDERS = [
    "supercl-cpu-1thread",
    "supercl-cpu-allthreads",
    "cc3d",
    "scipy",
    "skimage",
    "supercl-cuda",
    "cupyx",
    "cucim",
    "bkeccl",
]
# scipy.ndimage.label (and cupyx's copy of it) treats every nonzero value as one foreground, so
# it cannot label a multi-label superpixel map: those providers run on binary masks only.
# bkeccl (PyPI; Allegretti et al.'s BKE on CuPy) labels binary masks with 8-connectivity only.
BINARY_ONLY = {"scipy", "cupyx", "bkeccl"}
GPU_PEERS = ("cupyx", "cucim", "bkeccl")


def _marks(kind: str, provider: str) -> list:
    marks = []
    if kind != "binary" and provider in BINARY_ONLY:
        marks.append(pytest.mark.skip(
            reason=f"{provider} labels all nonzero values as one foreground, so it cannot label "
                   "a multi-label superpixel map; it is benchmarked on binary masks only"))
    if provider == "supercl-cuda" or provider in GPU_PEERS:
        marks.append(pytest.mark.cuda)  # benchmarks/gpu_check.py selects GPU rows by marker
        if not HAS_CUDA:
            marks.append(pytest.mark.skip(reason="needs a CUDA GPU"))
    if provider == "cupyx" and not HAS_CUPY:
        marks.append(pytest.mark.skip(reason="needs CuPy (pip install 'supercl[cuda12]' or 'supercl[cuda13]')"))
    if provider == "cucim" and importlib.util.find_spec("cucim") is None:
        marks.append(pytest.mark.skip(reason="needs cuCIM (pip install cucim-cu12 or cucim-cu13)"))
    if provider == "bkeccl" and importlib.util.find_spec("bkeccl") is None:
        marks.append(pytest.mark.skip(reason="needs bkeccl (pip install bkeccl)"))
    return marks


CASES = [
    pytest.param(kind, size, provider, marks=_marks(kind, provider),
                 id=f"{kind}-{size}x{size}-{provider}")
    for kind in KINDS for size in SIZES for provider in PROVIDERS
]
# Issue 19: SLIC maps of real MRI slices, CPU providers only (scipy is skipped with its reason:
# it cannot label a multi-label map).
DOWNSCALE_2D = int(os.environ.get("SUPERCL_BENCH_2D_DOWNSCALE", "1"))
REAL_SIZE = 512 // DOWNSCALE_2D
REAL_PROVIDERS = ["supercl-cpu-1thread", "supercl-cpu-allthreads", "cc3d", "scipy", "skimage"]
CASES += [
    pytest.param("real_mri_superpixels", REAL_SIZE, provider,
                 marks=_marks("real_mri_superpixels", provider),
                 id=f"real_mri_superpixels-{REAL_SIZE}x{REAL_SIZE}-{provider}")
    for provider in REAL_PROVIDERS
]
# The issue-19 target: supercl on one thread against cc3d in the same run.
TARGETS = {"real_mri_superpixels": {"peer": "cc3d", "speedup": 1.25}}


@pytest.fixture(scope="module")
def cc_input(request, phantom):
    """``cc_input(kind, size) -> (map, reference)``: the (32, S, S) map of that kind and its
    scikit-image labels (the oracle), both built once per module, outside any timing."""
    cache: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

    def get(kind: str, size: int) -> tuple[np.ndarray, np.ndarray]:
        if (kind, size) not in cache:
            if kind == "real_mri_superpixels":
                images, _ = request.getfixturevalue("real_mri")((size, size))
                x = slic(images, n_segments=100, compactness=0.1, start_label=1)
            elif kind == "superpixels":
                images, organs = phantom(size)
                x = slic(images, n_segments=100, compactness=0.1, start_label=1)
            else:
                _, organs = phantom(size)
                x = np.asarray(organs) > 0
            x.setflags(write=False)
            cache[kind, size] = x, _skimage(x)
        return cache[kind, size]

    return get


def _per_slice(fn, x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape, dtype=np.int32)
    for i in range(x.shape[0]):
        out[i] = fn(x[i])
    return out


def _skimage(x):
    from skimage.measure import label

    return _per_slice(lambda s: label(s, connectivity=2), x)


def _cc3d(x):
    import cc3d

    return _per_slice(lambda s: cc3d.connected_components(s, connectivity=8), x)


def _scipy(x):
    from scipy import ndimage

    return _per_slice(lambda s: ndimage.label(s, structure=STRUCTURE_2D)[0], x)


def _supercl(x):
    return connected_components(x, connectivity=2)


def same_partition(a, b) -> bool:
    """Whether two label maps of one image (or volume) hold the same components, whatever their
    numbering: the same background, and the pairs (label in a, label in b) of the foreground
    are a bijection.  For peers whose numbering differs from scikit-image's (bkeccl, cuCIM)."""
    a, b = np.asarray(a).ravel().astype(np.int64), np.asarray(b).ravel().astype(np.int64)
    if a.shape != b.shape or not np.array_equal(a == 0, b == 0):
        return False
    a, b = a[a != 0], b[b != 0]
    pairs = np.unique(a * (int(b.max(initial=0)) + 1) + b).size
    return pairs == np.unique(a).size == np.unique(b).size


def _counts(labels: np.ndarray) -> list[int]:
    return [int(s.max()) for s in labels]  # all peers number 1..N consecutively


# A CUDA machine whose build lacks a backend skips at run time, after `benchmark` was set up.
@pytest.mark.filterwarnings("ignore:Benchmark fixture was not used")
@pytest.mark.parametrize(("kind", "size", "provider"), CASES)
def test_bench_connected_components(request, measure, cc_input, torch_threads, kind, size, provider):
    x, reference = cc_input(kind, size)
    common = dict(provider=provider, size=size, group=f"connected_components-{kind}-{size}x{size}",
                  input=kind, connectivity=8, batch=len(x),
                  components_per_slice=float(np.mean(_counts(reference))))

    if provider.startswith("supercl-cpu"):
        n = 1 if provider == "supercl-cpu-1thread" else os.cpu_count()
        target = TARGETS.get(kind) if n == 1 else None
        with torch_threads(n):
            got = _supercl(x[:N_CHECKED])
            np.testing.assert_array_equal(got, reference[:N_CHECKED])
            measure(lambda: _supercl(x), rounds=ROUNDS, threads=n,
                    peers=("cc3d", "scipy", "skimage"), target=target, **common)

    elif provider == "cc3d":
        xw = np.array(x)  # cc3d's Cython signature refuses read-only buffers; copy untimed
        assert _counts(_cc3d(xw)) == _counts(reference)
        measure(lambda: _cc3d(xw), rounds=ROUNDS, threads=1, **common)

    elif provider == "scipy":
        assert _counts(_scipy(x)) == _counts(reference)
        measure(lambda: _scipy(x), rounds=ROUNDS, threads=1, **common)

    elif provider == "skimage":
        assert reference.shape == x.shape
        measure(lambda: _skimage(x), rounds=ROUNDS, threads=1, **common)

    elif provider == "supercl-cuda":
        request.getfixturevalue("cuda_backend")
        xd = torch.from_numpy(np.array(x)).cuda()
        got = _supercl(xd[:N_CHECKED])
        np.testing.assert_array_equal(got.cpu().numpy(), reference[:N_CHECKED])

        def run():
            out = _supercl(xd)
            torch.cuda.synchronize()
            return out

        measure(run, rounds=ROUNDS, threads=None, cuda=True, **common)

    elif provider == "cupyx":
        cupy = pytest.importorskip("cupy")
        cupy_ndimage = pytest.importorskip("cupyx.scipy.ndimage")
        try:
            n_gpus = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # noqa: BLE001 - CuPy without a driver raises its own errors
            pytest.skip(f"CuPy sees no CUDA device: {exc}")
        if n_gpus == 0:
            pytest.skip("CuPy sees no CUDA device")
        # The whole batch in one call: a 3D structure that connects nothing across slices.
        structure = np.zeros((3, 3, 3), dtype=bool)
        structure[1] = STRUCTURE_2D
        xd = cupy.asarray(x)
        sd = cupy.asarray(structure)
        labels, total = cupy_ndimage.label(xd, structure=sd)
        assert int(total) == sum(_counts(reference))

        def run():
            out = cupy_ndimage.label(xd, structure=sd)
            cupy.cuda.runtime.deviceSynchronize()
            return out

        measure(run, rounds=ROUNDS, threads=None, **common)

    elif provider == "cucim":
        cupy = pytest.importorskip("cupy")
        cucim_measure = pytest.importorskip("cucim.skimage.measure")
        xd = cupy.asarray(x)
        for b in range(len(xd)):
            assert same_partition(cucim_measure.label(xd[b], connectivity=2).get(), reference[b])

        def run():  # scikit-image's API: one image per call
            out = [cucim_measure.label(xd[b], connectivity=2) for b in range(len(xd))]
            cupy.cuda.runtime.deviceSynchronize()
            return out

        measure(run, rounds=ROUNDS, threads=None, **common)

    elif provider == "bkeccl":
        cupy = pytest.importorskip("cupy")
        bkeccl = pytest.importorskip("bkeccl")
        xd = cupy.asarray(np.asarray(x, dtype=np.uint8))
        for b in range(len(xd)):
            labels, count = bkeccl.ccl(xd[b], "bke", "2D")
            assert same_partition(labels.get(), reference[b]) and int(count) == reference[b].max()

        def run():  # one image per call: bkeccl has no batch
            out = [bkeccl.ccl(xd[b], "bke", "2D") for b in range(len(xd))]
            cupy.cuda.runtime.deviceSynchronize()
            return out

        measure(run, rounds=ROUNDS, threads=None, **common)

    else:  # pragma: no cover
        raise AssertionError(f"unknown provider {provider}")
