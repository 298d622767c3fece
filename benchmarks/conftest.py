"""Shared set-up of the benchmarks (see benchmarks/README.md for the method).

- :func:`pytest_benchmark_update_machine_info` records versions, commit, OpenMP and CPU count
  in the ``machine_info`` of the ``--benchmark-json`` file, next to the timings.
- ``phantom``: the same inputs for every provider -- a fixed-seed batch of CT-like phantom
  slices per size, generated once per session.
- ``measure``: times one provider with ``benchmark.pedantic`` and fills ``extra_info`` with
  throughput computed from the median.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import platform
import subprocess
import tempfile
from importlib import metadata

import numpy as np
import pytest
import torch

from supercl.data import phantom_batch

BATCH = 32  # slices per call, as in one SuperCL training batch
SEED = 0
HAS_CUDA = torch.cuda.is_available()


def _version(module: str, dist: str | None = None) -> str:
    """Version of an installed distribution (``dist``) or module; 'missing' if absent."""
    try:
        return metadata.version(dist or module)
    except metadata.PackageNotFoundError:
        pass
    try:
        return str(getattr(importlib.import_module(module), "__version__", "unknown"))
    except Exception:  # noqa: BLE001 - metadata must never break the run
        return "missing"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=os.path.dirname(os.path.abspath(__file__)),
            capture_output=True, text=True, timeout=10,
            # read-only: never let `git status` refresh (write) the index of a shared checkout
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def supercl_metadata() -> dict:
    """Everything needed to reproduce or compare a results file."""
    import supercl

    try:
        from supercl import _C

        openmp = bool(_C.has_openmp())
    except Exception:  # noqa: BLE001
        openmp = None
    try:
        import cv2

        cv2_threads = cv2.getNumThreads()
    except Exception:  # noqa: BLE001
        cv2_threads = None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "supercl_version": supercl.__version__,
        "supercl_commit": _git("rev-parse", "--short", "HEAD") or "unknown",
        "supercl_dirty": None if status is None else bool(status),
        "supercl_openmp": openmp,
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "opencv_num_threads": cv2_threads,
        "cuda_device": torch.cuda.get_device_name(0) if HAS_CUDA else None,
        "python": platform.python_version(),
        "versions": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "scikit-image": _version("skimage", "scikit-image"),
            "scipy": _version("scipy"),
            "cc3d": _version("cc3d", "connected-components-3d"),
            "opencv": _version("cv2", "opencv-contrib-python-headless"),
            "cupy": _version("cupy"),  # cupy-cuda12x or cupy-cuda13x: the module's version
            "pytest-benchmark": _version("pytest_benchmark", "pytest-benchmark"),
        },
    }


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["supercl"] = supercl_metadata()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """pytest-benchmark creates its storage folder (default ``./.benchmarks``) on every run,
    even when nothing is saved there. Unless the run saves or compares runs, point it to the
    temporary directory so that a benchmark run leaves nothing in the checkout."""
    opt = config.option
    if getattr(opt, "benchmark_storage", None) != "file://./.benchmarks":
        return
    if opt.benchmark_save or opt.benchmark_autosave or opt.benchmark_compare:
        return
    opt.benchmark_storage = "file://" + os.path.join(tempfile.gettempdir(), "supercl-benchmarks")


@functools.lru_cache(maxsize=None)
def _phantom(size: int) -> tuple[np.ndarray, np.ndarray]:
    images, organs = phantom_batch(BATCH, size, size, seed=SEED)
    images.setflags(write=False)  # every provider gets the very same, untouched array
    organs.setflags(write=False)
    return images, organs


@pytest.fixture(scope="session")
def phantom():
    """``phantom(size) -> (images float32 (B, S, S), organ_labels uint8 (B, S, S))``."""
    return _phantom


@pytest.fixture
def measure(benchmark):
    """``measure(fn, provider=..., size=..., rounds=..., threads=..., group=..., **extra)``
    (``shape=(D, H, W)`` for volumes: slices/s and pixels/s then count axial slices and voxels).

    Runs ``fn`` once as warm-up and ``rounds`` timed rounds of one call each, then records
    provider, size, batch, threads and the throughput of the median round in ``extra_info``
    (plus peak GPU memory with ``cuda=True``; ``fn`` must then synchronise itself). The
    caller checks correctness before, outside the timed region.
    """

    def run(fn, *, provider: str, size: int, rounds: int, threads: int | None, group: str,
            batch: int = BATCH, cuda: bool = False, shape: tuple | None = None, **extra):
        benchmark.group = group
        if cuda:  # fn synchronises itself; peak memory over warm-up and timed rounds
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        result = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
        median = benchmark.stats.stats.median
        if cuda:
            extra["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated()
        # shape=(D, H, W): a batch of volumes; slices are the D axial slices of each, pixels
        # its voxels.
        slices, pixels = (batch, batch * size * size) if shape is None else (
            batch * shape[0], batch * math.prod(shape))
        benchmark.extra_info.update(
            provider=provider,
            size=f"{size}x{size}" if shape is None else "x".join(map(str, shape)),
            batch=batch,
            threads=threads,
            median_s=median,
            slices_per_s=slices / median,
            pixels_per_s=pixels / median,
            # crude contention signal on shared machines; includes this run's own 1-2 threads
            load_1min=round(os.getloadavg()[0], 2),
            **extra,
        )
        return result

    return run


@pytest.fixture
def torch_threads():
    """``with torch_threads(n): ...`` -- torch (and so supercl's OpenMP) threads, restored."""
    import contextlib

    @contextlib.contextmanager
    def use(n: int):
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield n
        finally:
            torch.set_num_threads(before)

    return use


@pytest.fixture
def cuda_backend() -> None:
    """Skip a supercl-cuda provider only where the backend cannot run (no CuPy or no GPU);
    any error of the backend itself fails the benchmark."""
    from supercl.kernels.cuda import launch as _cuda

    ok, why = _cuda.available()
    if not ok:
        pytest.skip(f"supercl's CUDA backend is unavailable: {why}")
