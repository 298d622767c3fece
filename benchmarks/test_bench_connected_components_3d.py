"""3-D connected components: supercl against cc3d, scipy and scikit-image on the same volumes.

One benchmark per (input kind, provider), grouped as ``connected_components_3d-<kind>-<DxHxW>``.
Two kinds, from the fixed-seed phantom CT volume generator:

- ``binary``: ``organ_labels > 0`` of a 256^3 phantom volume, the classic binary case every
  peer supports;
- ``supervoxels``: supercl's 3-D SLIC labels of a 128 x 256 x 256 phantom volume (~2000
  supervoxels, every voxel foreground), the multi-label case after supervoxel SLIC.

Issue 19 adds two CPU-only kinds:

- ``noisy_binary``: Gaussian-smoothed white noise (sigma 1 voxel, fixed seed) of 128 x 192 x
  192 thresholded at its 90th percentile -- thousands of small components, the hard
  case for a union-find labeller; target on one thread: 1.0x cc3d;
- ``real_mri_supervoxels``: supercl's 3-D SLIC labels (2000 supervoxels, numbered from 1) of
  the MNI152 T1 template in nilearn's wheel, 189 x 233 x 197 in (Z, Y, X) order.

Issue 24 adds ``phantom_supervoxels`` (the ``supervoxels`` map again, for the CPU targets) and
runs the three CPU-only kinds at 6-, 18- and 26-connectivity (ids and groups ``-c6``,
``-c18``; 26 keeps the issue-19 names), supercl and cc3d at all three, scipy and scikit-image
at 26 only; target on one thread: 1.0x cc3d for each.

Issue 22 adds the GPU-only ``smoothed_noise`` kind: the ``noisy_binary`` field (sigma 1 voxel,
90th percentile) at 256^3, many small components, where a per-voxel global union-find loses;
cupyx is its peer, cuCIM and bkeccl run beside it (checked by ``same_partition``, their
numbering may differ).

All others use 26-connectivity (``connectivity=3``). cc3d 4.x has no thread option (it is
single-threaded), so its one row serves as the peer of both supercl rows. Correctness is
checked before timing, outside the timed region: supercl pixel for pixel against
scikit-image, the other peers by component count. See benchmarks/README.md for the method.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np
import pytest
import torch

from phantom_v1 import phantom_volume
from supercl.ops import connected_components, slic
from test_bench_connected_components import same_partition

HAS_CUDA = torch.cuda.is_available()
HAS_CUPY = importlib.util.find_spec("cupy") is not None
# SUPERCL_BENCH_3D_DOWNSCALE=f divides every side by f (see test_bench_slic_3d.py).
DOWNSCALE = int(os.environ.get("SUPERCL_BENCH_3D_DOWNSCALE", "1"))
SHAPES = {"binary": tuple(s // DOWNSCALE for s in (256, 256, 256)),
          "supervoxels": tuple(s // DOWNSCALE for s in (128, 256, 256)),
          # issue 19
          "noisy_binary": tuple(s // DOWNSCALE for s in (128, 192, 192)),
          # the MNI152 T1 (X, Y, Z) = (197, 233, 189) as (Z, Y, X), every DOWNSCALE-th voxel
          "real_mri_supervoxels": tuple(-(-s // DOWNSCALE) for s in (189, 233, 197)),
          # issue 24: the phantom's supervoxel map ("supervoxels") for the CPU targets, at
          # every connectivity (named so that `-k phantom` selects it)
          "phantom_supervoxels": tuple(s // DOWNSCALE for s in (128, 256, 256)),
          # issue 22: the GPU's hard case (named so that gpu_check's `not noisy_binary` keeps it)
          "smoothed_noise": tuple(s // DOWNSCALE for s in (256, 256, 256))}
NEW_KINDS = {"noisy_binary", "real_mri_supervoxels", "phantom_supervoxels"}  # CPU only
GPU_KINDS = {"smoothed_noise"}  # GPU providers only (CPU rows would add minutes, no target)
NOISE_SIGMA = 1.0  # voxels
NOISE_FOREGROUND = 0.10  # share of voxels above the threshold (a quantile of the field)
# The targets of supercl on one thread against cc3d in the same run: issue 19 (noisy_binary,
# 26-connectivity), issue 24 (the noisy volume and both supervoxel maps, every connectivity).
TARGETS = {kind: {"peer": "cc3d", "speedup": 1.0} for kind in NEW_KINDS}
# Connectivities (6, 18, 26 neighbours) per kind; the others run at 26 only.  At 6 and 18 only
# supercl and cc3d run (scipy and scikit-image add minutes and are no target's peer).
CONNECTIVITIES = {kind: (26, 18, 6) for kind in NEW_KINDS}
NEIGHBOURS = {6: 1, 18: 2, 26: 3}  # scikit-image's connectivity of each neighbourhood
# Measured here (2 cores): supercl 10-40 ms, cc3d 20-60 ms, scipy 0.1-0.5 s and scikit-image
# 0.2-1 s a round; 5 rounds of each keep the file under a minute.
ROUNDS = 5
STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)
CPU_PROVIDERS = ["supercl-cpu-1thread", "supercl-cpu-allthreads", "cc3d", "scipy", "skimage"]
GPU_PROVIDERS = ["supercl-cuda", "cupyx", "cucim", "bkeccl"]
PROVIDERS = CPU_PROVIDERS + GPU_PROVIDERS
# Every nonzero value is one foreground for scipy and cupyx; bkeccl labels binary masks with
# 26-connectivity only.
BINARY_ONLY = {"scipy", "cupyx", "bkeccl"}


def _marks(kind: str, provider: str) -> list:
    marks = []
    if kind not in ("binary", "noisy_binary", "smoothed_noise") and provider in BINARY_ONLY:
        marks.append(pytest.mark.skip(
            reason=f"{provider} labels all nonzero values as one foreground; it cannot label a "
                   "multi-label supervoxel map"))
    if provider in GPU_PROVIDERS:
        marks.append(pytest.mark.cuda)
        if not HAS_CUDA:
            marks.append(pytest.mark.skip(reason="needs a CUDA GPU"))
    if provider in ("cupyx", "cucim", "bkeccl") and not HAS_CUPY:
        marks.append(pytest.mark.skip(reason="needs CuPy"))
    if provider == "cucim" and importlib.util.find_spec("cucim") is None:
        marks.append(pytest.mark.skip(reason="needs cuCIM (pip install cucim-cu12 or cucim-cu13)"))
    if provider == "bkeccl" and importlib.util.find_spec("bkeccl") is None:
        marks.append(pytest.mark.skip(reason="needs bkeccl (pip install bkeccl)"))
    return marks


def _providers(kind: str) -> list[str]:
    if kind in NEW_KINDS:
        return CPU_PROVIDERS
    return GPU_PROVIDERS if kind in GPU_KINDS else PROVIDERS


def _conn_id(conn: int) -> str:
    """'' at 26 (the ids and groups of issue 19), '-c6' / '-c18' otherwise."""
    return "" if conn == 26 else f"-c{conn}"


CASES = [
    pytest.param(kind, provider, conn, marks=_marks(kind, provider),
                 id=f"{kind}-{'x'.join(map(str, SHAPES[kind]))}{_conn_id(conn)}-{provider}")
    for kind in SHAPES for conn in CONNECTIVITIES.get(kind, (26,))
    for provider in _providers(kind)
    if conn == 26 or provider.startswith("supercl-cpu") or provider == "cc3d"
]


@functools.lru_cache(maxsize=None)
def volume_input(kind: str, conn: int = 26) -> tuple[np.ndarray, np.ndarray]:
    """The (D, H, W) volume of that kind and its scikit-image labels at that connectivity (6,
    18 or 26; the oracle)."""
    if conn != 26:
        x = volume_input(kind)[0]
        return x, label_reference(x, conn)
    if kind == "phantom_supervoxels":  # the same map as "supervoxels", made once
        return volume_input("supervoxels")
    from skimage.measure import label

    shape = SHAPES[kind]
    if kind in ("noisy_binary", "smoothed_noise"):
        from scipy import ndimage

        noise = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        field = ndimage.gaussian_filter(noise, NOISE_SIGMA)
        x = field > np.quantile(field, 1.0 - NOISE_FOREGROUND)
    elif kind == "real_mri_supervoxels":
        pytest.importorskip("nilearn", reason="needs nilearn's MNI152 template")
        from supercl.data.mni152 import mni152_task

        t1 = mni152_task()[0].transpose(2, 1, 0)[::DOWNSCALE, ::DOWNSCALE, ::DOWNSCALE]
        assert t1.shape == shape, (t1.shape, shape)
        x = np.asarray(slic(np.ascontiguousarray(t1), n_segments=max(1, 2000 // DOWNSCALE**3),
                            compactness=0.1, start_label=1, spatial_dims=3))
    else:
        image, organs = phantom_volume(*shape, seed=0)
    if kind == "binary":
        x = organs > 0
    elif kind in ("supervoxels", "phantom_supervoxels"):
        x = np.asarray(slic(image, n_segments=2000 // DOWNSCALE**3, compactness=0.1,
                            start_label=1, spatial_dims=3))
    x.setflags(write=False)
    return x, label_reference(x, 26)


def label_reference(x: np.ndarray, conn: int) -> np.ndarray:
    from skimage.measure import label

    return label(x, connectivity=NEIGHBOURS[conn]).astype(np.int32)


def _supercl(x, conn: int = 26):
    return connected_components(x, connectivity=NEIGHBOURS[conn], spatial_dims=3)


@pytest.mark.filterwarnings("ignore:Benchmark fixture was not used")
@pytest.mark.parametrize(("kind", "provider", "conn"), CASES)
def test_bench_connected_components_3d(request, measure, torch_threads, kind, provider, conn):
    x, reference = volume_input(kind, conn)
    count = int(reference.max())
    shape = SHAPES[kind]
    common = dict(provider=provider, size=shape[-1], shape=shape, batch=1,
                  group=(f"connected_components_3d-{kind}{_conn_id(conn)}-"
                         f"{'x'.join(map(str, shape))}"),
                  input=kind, connectivity=conn, components_per_slice=float(count))

    if provider.startswith("supercl-cpu"):
        n = 1 if provider == "supercl-cpu-1thread" else os.cpu_count()
        target = TARGETS.get(kind) if n == 1 else None
        with torch_threads(n):
            np.testing.assert_array_equal(_supercl(x, conn), reference)
            measure(lambda: _supercl(x, conn), rounds=ROUNDS, threads=n,
                    peers=("cc3d", "scipy", "skimage"), target=target, **common)

    elif provider == "cc3d":
        import cc3d

        xw = np.array(x)  # cc3d refuses read-only buffers; copied untimed

        def run():
            return cc3d.connected_components(xw, connectivity=conn)

        assert int(run().max()) == count
        measure(run, rounds=ROUNDS, threads=1, **common)

    elif provider == "scipy":
        from scipy import ndimage

        assert ndimage.label(x, structure=STRUCTURE_26)[1] == count
        measure(lambda: ndimage.label(x, structure=STRUCTURE_26), rounds=ROUNDS, threads=1,
                **common)

    elif provider == "skimage":
        from skimage.measure import label

        measure(lambda: label(x, connectivity=3), rounds=ROUNDS, threads=1, **common)

    elif provider == "supercl-cuda":
        request.getfixturevalue("cuda_backend")
        xd = torch.from_numpy(np.array(x)).cuda()
        np.testing.assert_array_equal(_supercl(xd).cpu().numpy(), reference)

        def run():
            out = _supercl(xd)
            torch.cuda.synchronize()
            return out

        measure(run, rounds=4 * ROUNDS, threads=None, cuda=True, **common)

    elif provider == "cupyx":
        cupy = pytest.importorskip("cupy")
        cupy_ndimage = pytest.importorskip("cupyx.scipy.ndimage")
        xd = cupy.asarray(x)
        sd = cupy.asarray(STRUCTURE_26)
        assert int(cupy_ndimage.label(xd, structure=sd)[1]) == count

        def run():
            out = cupy_ndimage.label(xd, structure=sd)
            cupy.cuda.runtime.deviceSynchronize()
            return out

        measure(run, rounds=4 * ROUNDS, threads=None, **common)

    elif provider == "cucim":
        cupy = pytest.importorskip("cupy")
        cucim_measure = pytest.importorskip("cucim.skimage.measure")
        xd = cupy.asarray(x)
        assert same_partition(cucim_measure.label(xd, connectivity=3).get(), reference)

        def run():
            out = cucim_measure.label(xd, connectivity=3)
            cupy.cuda.runtime.deviceSynchronize()
            return out

        measure(run, rounds=4 * ROUNDS, threads=None, **common)

    elif provider == "bkeccl":
        cupy = pytest.importorskip("cupy")
        bkeccl = pytest.importorskip("bkeccl")
        xd = cupy.asarray(np.asarray(x, dtype=np.uint8))
        labels, n = bkeccl.ccl(xd, "bke", "3D")
        assert same_partition(labels.get(), reference) and int(n) == count

        def run():
            out = bkeccl.ccl(xd, "bke", "3D")
            cupy.cuda.runtime.deviceSynchronize()
            return out

        measure(run, rounds=4 * ROUNDS, threads=None, **common)

    else:  # pragma: no cover
        raise AssertionError(f"unknown provider {provider}")
