"""3-D SLIC supervoxels: supercl against scikit-image on the same phantom CT volume.

One benchmark per provider, grouped as ``slic_3d-128x256x256``: a fixed-seed 128 x 256 x 256
phantom CT volume (phantom_v1.phantom_volume, tests/phantom_v1.py) segmented into ~2000
supervoxels (16^3 voxels each) with 10 k-means iterations, compactness 0.1 on [0, 1]-rescaled
intensities, CT spacing (2.5, 0.7, 0.7) mm and 6-connectivity enforcement. Correctness before timing,
outside the timed region: supercl's supervoxel count within 25 % of scikit-image's, and its
boundary recall and undersegmentation error against the organ labels within 0.02 of
scikit-image's. The cuda-marked cases (a GPU session) time the GPU backend on the same volume
and on a 512 x 512 x 300 CT-sized volume (target: under 100 ms). See benchmarks/README.md.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest
import torch

from phantom_v1 import phantom_volume
from supercl.ops import slic

HAS_CUDA = torch.cuda.is_available()
# SUPERCL_BENCH_3D_DOWNSCALE=f divides every side by f (and the supervoxel count by f^3), for a
# machine too busy for scikit-image's ~25 s per round at full size; the results say the shape.
DOWNSCALE = int(os.environ.get("SUPERCL_BENCH_3D_DOWNSCALE", "1"))
SHAPE = tuple(s // DOWNSCALE for s in (128, 256, 256))
KWARGS = dict(n_segments=2000 // DOWNSCALE**3, compactness=0.1, max_num_iter=10,
              spacing=(2.5, 0.7, 0.7), start_label=0)
# Measured here (2 cores): a round takes supercl ~2-3 s on one thread, scikit-image ~25 s
# (one timed round after the warm-up: its spread is small next to the ratio).
ROUNDS = {"supercl": 5, "skimage": 1}
PROVIDERS = ["supercl-cpu-1thread", "supercl-cpu-allthreads", "skimage",
             pytest.param("supercl-cuda", marks=[
                 pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")])]


@functools.lru_cache(maxsize=None)
def phantom_ct(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    image, organs = phantom_volume(*shape, seed=0)
    image.setflags(write=False)
    return image, organs


def _skimage(image: np.ndarray) -> np.ndarray:
    from skimage.segmentation import slic as sk_slic

    return sk_slic(image, channel_axis=None, **KWARGS)


@functools.lru_cache(maxsize=None)
def _skimage_quality() -> tuple[int, float, float]:
    image, organs = phantom_ct(SHAPE)
    return _quality(_skimage(image), organs)


def _quality(labels, organs) -> tuple[int, float, float]:
    """(supervoxels, boundary recall at 2 voxels, undersegmentation error) vs the organs."""
    from scipy import ndimage

    def edges(a):
        e = np.zeros(a.shape, dtype=bool)
        e[:-1] |= a[:-1] != a[1:]
        e[:, :-1] |= a[:, :-1] != a[:, 1:]
        e[:, :, :-1] |= a[:, :, :-1] != a[:, :, 1:]
        return e

    truth = edges(organs)
    near = ndimage.binary_dilation(edges(labels), structure=np.ones((5, 5, 5)))
    recall = float((truth & near).sum() / max(truth.sum(), 1))
    s, t = labels.ravel().astype(np.int64), organs.ravel().astype(np.int64)
    pairs, overlap = np.unique(s * (t.max() + 1) + t, return_counts=True)
    size = np.bincount(s)[pairs // (t.max() + 1)]
    ue = float(np.minimum(overlap, size - overlap).sum() / s.size)
    return len(np.unique(labels)), recall, ue


def _check(labels: np.ndarray) -> dict:
    _, organs = phantom_ct(SHAPE)
    n, recall, ue = _quality(labels, organs)
    n_ref, recall_ref, ue_ref = _skimage_quality()
    assert abs(n - n_ref) <= 0.25 * n_ref, (n, n_ref)
    assert recall >= recall_ref - 0.02 and ue <= ue_ref + 0.02, (recall, recall_ref, ue, ue_ref)
    return dict(labels_first_slice=n, skimage_supervoxels=n_ref, boundary_recall=recall,
                skimage_boundary_recall=recall_ref, undersegmentation_error=ue,
                skimage_undersegmentation_error=ue_ref)


@pytest.mark.filterwarnings("ignore:Benchmark fixture was not used")
@pytest.mark.parametrize("provider", PROVIDERS)
def test_bench_slic_3d(request, measure, torch_threads, provider):
    image, _ = phantom_ct(SHAPE)
    common = dict(provider=provider, size=SHAPE[-1], shape=SHAPE, batch=1,
                  group=f"slic_3d-{'x'.join(map(str, SHAPE))}", input="volume",
                  n_segments=KWARGS["n_segments"], compactness=KWARGS["compactness"],
                  max_num_iter=KWARGS["max_num_iter"], spacing=list(KWARGS["spacing"]))

    def run_supercl(x):
        return slic(x, spatial_dims=3, **KWARGS)

    if provider.startswith("supercl-cpu"):
        n = 1 if provider == "supercl-cpu-1thread" else os.cpu_count()
        with torch_threads(n):
            extra = _check(run_supercl(image))
            measure(lambda: run_supercl(image), rounds=ROUNDS["supercl"], threads=n, **common,
                    **extra)

    elif provider == "skimage":
        n, recall, ue = _skimage_quality()
        measure(lambda: _skimage(image), rounds=ROUNDS["skimage"], threads=1, **common,
                labels_first_slice=n, boundary_recall=recall, undersegmentation_error=ue)

    elif provider == "supercl-cuda":
        request.getfixturevalue("cuda_backend")
        x = torch.from_numpy(np.array(image)).cuda()
        labels = run_supercl(x)
        np.testing.assert_array_equal(labels.cpu().numpy(), run_supercl(image))  # bit-identical
        extra = _check(labels.cpu().numpy())

        def run():
            out = run_supercl(x)
            torch.cuda.synchronize()
            return out

        measure(run, rounds=10, threads=None, cuda=True, **common, **extra)

    else:  # pragma: no cover
        raise AssertionError(f"unknown provider {provider}")


# The GPU target: a 512 x 512 x 300 CT volume in under 100 ms.
@pytest.mark.cuda
@pytest.mark.filterwarnings("ignore:Benchmark fixture was not used")
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_bench_slic_3d_gpu_ct(request, measure):
    request.getfixturevalue("cuda_backend")
    shape = (300, 512, 512)
    image, _ = phantom_volume(*shape, seed=1)
    x = torch.from_numpy(image).cuda()
    kwargs = dict(KWARGS, n_segments=20000)
    labels = slic(x, spatial_dims=3, **kwargs)
    assert labels.shape == shape and int(labels.max()) > 1000

    def run():
        out = slic(x, spatial_dims=3, **kwargs)
        torch.cuda.synchronize()
        return out

    measure(run, provider="supercl-cuda", size=shape[-1], shape=shape, batch=1, rounds=10,
            threads=None, cuda=True, group="slic_3d_gpu-300x512x512", input="volume",
            n_segments=kwargs["n_segments"], target_ms=100.0)
