"""Superpixel pooling (segment mean), forward + backward: supercl against the ways users write
it by hand (``index_add_``, ``scatter_reduce``) and torch_scatter, on the same inputs.

One benchmark per (device, provider), grouped as ``superpixel_pool-<device>-<B>x<C>x<S>x<S>``.
Each round is one training step of the op: ``means = pool(features, segments)`` then
``(means ** 2).sum().backward()``, with ``features.grad`` reset (not accumulated) each round.

Inputs: C = 64 channels of fixed-seed Gaussian features at 256x256 and the SLIC labels
(``n_segments=100``, the SuperCL setting) of the fixed-seed phantom slices as segments;
K = max label + 1 over the batch. B = 32 slices (one SuperCL batch) on a GPU; B = 8 on the CPU
to keep the CPU run short (``extra_info['batch']``, ``batch_reduced_from``).

Correctness before timing: every provider's means and feature gradient on the first two slices
match the float64 oracle (``superpixel_pool_reference`` in float64) within the float32
tolerance of tests/tolerances.py.

Throughput: ``gb_per_s`` = ``bytes_moved / median``, with the minimum traffic of any
implementation of the step:

    bytes_moved = 2 * B*C*H*W * f      (features read forward, their gradient written backward)
                + 2 * B*H*W * s        (segment ids read forward and backward)
                + 2 * B*K*C * f        (means written, their gradient read)
                + B*K * 8              (counts written)

with f, s the item sizes of features (4) and ids (4, int32): 1.09 GB at B = 32, 0.23 ms at an
H200's 4.8 TB/s. The Triton kernels move this much and no more at C <= 64 (each kernel reads
the ids once per block of 64 channels; the segment sums' atomics and the paint's gathers stay
in L2): see the roofline in kernels/triton/superpixel_pool.py. The timed round also holds the
host's launches (custom ops, autograd, the id-range check, the small (B, K) divisions), which
the bytes do not count.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from supercl.ops import slic
from supercl.ops import superpixel_pool
from supercl.testing import superpixel_pool_reference

HAS_CUDA = torch.cuda.is_available()
HAS_TORCH_SCATTER = importlib.util.find_spec("torch_scatter") is not None
SIZE = 256
CHANNELS = 64
N_SEGMENTS = 100
COMPACTNESS = 0.1  # the SuperCL setting, see supercl.ops.slic
BATCH = {"cpu": 8, "cuda": 32}
N_CHECKED = 2
# Measured here (2 cores, B=8): a round takes 0.2-1.5 s on the CPU; 3 rounds keep the file
# under a minute. GPU rounds take milliseconds.
ROUNDS = {"cpu": 3, "cuda": 20}


def _load_tolerances():
    """tests/tolerances.py, the one tolerance table (the benchmarks are not a package)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "tolerances.py"
    spec = importlib.util.spec_from_file_location("supercl_tests_tolerances", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tolerances = _load_tolerances()


def _supercl(backend):
    def pool(features, segments, k):
        return superpixel_pool(features, segments, k, backend=backend)[0]

    return pool


def _index_add(features, segments, k):
    return superpixel_pool_reference(features, segments, k)[0]


def _scatter_reduce(features, segments, k):
    """What one writes with torch alone: scatter_reduce(mean) over the flattened pixels."""
    batch, channels, height, width = features.shape
    index = segments.reshape(batch, 1, height * width).long().expand(batch, channels, -1)
    out = features.new_zeros(batch, channels, k)
    out = out.scatter_reduce(2, index, features.reshape(batch, channels, -1), reduce="mean",
                             include_self=False)
    return out.transpose(1, 2)


def _torch_scatter(features, segments, k):
    import torch_scatter

    batch, channels, height, width = features.shape
    index = segments.reshape(batch, 1, height * width).long()
    out = torch_scatter.scatter_mean(features.reshape(batch, channels, -1), index, dim=2,
                                     dim_size=k)
    return out.transpose(1, 2)


PROVIDERS = {
    "supercl-torch": _supercl("torch"),
    "supercl-triton": _supercl("triton"),
    "index_add": _index_add,
    "scatter_reduce": _scatter_reduce,
    "torch_scatter": _torch_scatter,
}


def _params():
    params = []
    for device in ("cpu", "cuda"):
        for provider in PROVIDERS:
            marks = []
            if device == "cuda" and not HAS_CUDA:
                marks.append(pytest.mark.skip(reason="needs a CUDA GPU"))
            if provider == "supercl-triton" and device == "cpu":
                marks.append(pytest.mark.skip(
                    reason="Triton runs on CUDA tensors (only its interpreter on the CPU)"))
            if provider == "torch_scatter" and not HAS_TORCH_SCATTER:
                marks.append(pytest.mark.skip(reason="torch_scatter is not installed"))
            params.append(pytest.param(device, provider, marks=marks,
                                       id=f"{device}-{provider}"))
    return params


_SEGMENTS: dict[int, tuple[torch.Tensor, int]] = {}


def _segments(phantom, batch: int) -> tuple[torch.Tensor, int]:
    """SLIC labels (int32) of the first ``batch`` phantom slices, and K = max label + 1."""
    if batch not in _SEGMENTS:
        images, _ = phantom(SIZE)
        labels = torch.from_numpy(slic(images[:batch], n_segments=N_SEGMENTS,
                                       compactness=COMPACTNESS))
        _SEGMENTS[batch] = labels, int(labels.max()) + 1
    return _SEGMENTS[batch]


def _bytes_moved(batch, k, features, segments) -> int:
    pixels = batch * SIZE * SIZE
    f, s = features.element_size(), segments.element_size()
    return 2 * pixels * CHANNELS * f + 2 * pixels * s + 2 * batch * k * CHANNELS * f + batch * k * 8


def _step(fn, features, segments, k, cuda):
    def run():
        features.grad = None
        means = fn(features, segments, k)
        means.square().sum().backward()
        if cuda:
            torch.cuda.synchronize()
        return means

    return run


def _check(fn, features, segments, k):
    """Means and feature gradient of the first N_CHECKED slices against the float64 oracle."""
    features.grad = None
    means = fn(features, segments, k)
    means.square().sum().backward()
    x = features[:N_CHECKED].detach().double().requires_grad_()
    expected = superpixel_pool_reference(x, segments[:N_CHECKED], k)[0]
    expected.square().sum().backward()
    tolerances.assert_close(means[:N_CHECKED].detach(), expected, dtype=torch.float32)
    tolerances.assert_close(features.grad[:N_CHECKED], x.grad, dtype=torch.float32)
    features.grad = None


@pytest.mark.parametrize("device, provider", _params())
def test_bench_superpixel_pool(benchmark, measure, phantom, device, provider):
    batch = BATCH[device]
    segments, k = _segments(phantom, batch)
    segments = segments.to(device)
    g = torch.Generator().manual_seed(0)
    features = torch.randn(batch, CHANNELS, SIZE, SIZE, generator=g).to(device)
    features.requires_grad_()
    fn = PROVIDERS[provider]
    cuda = device == "cuda"

    _check(fn, features, segments, k)
    bytes_moved = _bytes_moved(batch, k, features, segments)
    measure(_step(fn, features, segments, k, cuda), provider=provider, size=SIZE,
            rounds=ROUNDS[device], threads=None if cuda else torch.get_num_threads(),
            group=f"superpixel_pool-{device}-{batch}x{CHANNELS}x{SIZE}x{SIZE}", batch=batch,
            cuda=cuda, channels=CHANNELS, num_segments=k, bytes_moved=bytes_moved,
            batch_reduced_from=None if cuda else BATCH["cuda"], device=device)
    if not benchmark.disabled:  # --benchmark-disable: one untimed run, nothing to record
        benchmark.extra_info["gb_per_s"] = bytes_moved / benchmark.stats.stats.median / 1e9
