"""Shared set-up of the benchmarks (see benchmarks/README.md for the method).

- :func:`pytest_benchmark_update_machine_info` records versions, commit, OpenMP and CPU count
  in the ``machine_info`` of the ``--benchmark-json`` file, next to the timings.
- ``phantom``: the same inputs for every provider -- a fixed-seed batch of CT-like phantom
  slices per size, generated once per session.
- ``measure``: times one provider with ``benchmark.pedantic`` and fills ``extra_info`` with
  throughput computed from the median (and, with ``peers=``, the speedups over the peers
  measured in the same run, with ``target=`` whether a target ratio was met).
- ``real_mri`` and ``flat_ct`` (issue 19): 8 axial slices of the MNI152 T1 template shipped in
  nilearn's wheel, and the phantom batch through the trainer's CT window (flat plateaus).
  ``SUPERCL_BENCH_2D_DOWNSCALE=f`` divides their sides by ``f`` (quick correctness runs).
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

# The inputs are the v1 phantom's (their labels and pinned figures were set on it), which left
# the package for tests/phantom_v1.py (issue 25): one copy, found there by the benchmarks too.
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))
from phantom_v1 import phantom_batch  # noqa: E402

BATCH = 32  # slices per call, as in one SuperCL training batch
SEED = 0
HAS_CUDA = torch.cuda.is_available()
# SUPERCL_BENCH_2D_DOWNSCALE=f divides the sides of the issue-19 2-D inputs (real_mri,
# flat_ct) by f, for a quick correctness run (`--benchmark-disable`); the ids and groups then
# carry the smaller sizes. The phantom cases keep their sizes.
DOWNSCALE_2D = int(os.environ.get("SUPERCL_BENCH_2D_DOWNSCALE", "1"))
MRI_SLICES = 8  # axial slices of the MNI152 template, evenly spaced through the brain
# The trainer's default CT window (supercl.data.loading.load_case): clipped, scaled to [0, 1].
CT_WINDOW = (-200.0, 300.0)


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
    # A named commit (SUPERCL_COMMIT) belongs to a copied tree, whose own git (if any) compares
    # it with another commit: its status says nothing about that tree.
    status = (None if os.environ.get("SUPERCL_COMMIT")
              else _git("status", "--porcelain", "--untracked-files=no"))
    return {
        "supercl_version": supercl.__version__,
        # SUPERCL_COMMIT: for a copy of the tree (a GPU machine's), the commit it was copied
        # from, as the caller states it; the copy's own .git, if any, may name another.
        "supercl_commit": (os.environ.get("SUPERCL_COMMIT")
                           or _git("rev-parse", "--short", "HEAD") or "unknown"),
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


@functools.lru_cache(maxsize=None)
def _mri_volume_slices() -> tuple[np.ndarray, np.ndarray]:
    """MRI_SLICES axial slices (Z, Y, X order, as the trainer reads NIfTI) of the MNI152 T1
    template in nilearn's wheel, evenly spaced through the slices that hold brain (the two
    outermost of MRI_SLICES + 2 left out), and their grey/white-matter labels."""
    from supercl.data.mni152 import mni152_task

    t1, labels, _, (z0, z1) = mni152_task()
    zs = np.linspace(z0, z1 - 1, MRI_SLICES + 2).round().astype(int)[1:-1]
    return (np.ascontiguousarray(t1[:, :, zs].transpose(2, 1, 0)),
            np.ascontiguousarray(labels[:, :, zs].transpose(2, 1, 0)))


@functools.lru_cache(maxsize=None)
def _real_mri(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    from supercl.data.loading import _to_patch

    t1, labels = _mri_volume_slices()
    # the trainer's resize="pad": resampled (bilinear, antialiased) to fit (H, W) with the
    # aspect ratio kept, the short side padded with the background (exactly 0 in this template)
    images, labels = _to_patch(t1, labels, shape, "pad")
    lo = images.min(axis=(1, 2), keepdims=True)
    hi = images.max(axis=(1, 2), keepdims=True)
    images = ((images - lo) / (hi - lo)).astype(np.float32)  # each slice to [0, 1]
    labels = labels.astype(np.uint8)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


@pytest.fixture(scope="session")
def real_mri():
    """``real_mri((H, W)) -> (images float32 (8, H, W) in [0, 1], labels uint8 (8, H, W))``:
    8 axial slices of the MNI152 2009a T1 template (nilearn's wheel, nothing downloaded; the
    template is brain-extracted, so more than half of each slice is exactly 0) brought to
    (H, W) as the trainer does, each scaled to [0, 1]; labels 0 background, 1 grey matter,
    2 white matter. Skips without nilearn."""
    pytest.importorskip("nilearn", reason="the real-MRI cases need nilearn's MNI152 template "
                                          "(pip install -e '.[bench]')")
    return _real_mri


@functools.lru_cache(maxsize=None)
def _flat_ct(size: int) -> tuple[np.ndarray, np.ndarray]:
    images, organs = _phantom(size)
    lo, hi = CT_WINDOW
    x = ((np.clip(images, lo, hi) - lo) / (hi - lo)).astype(np.float32)
    x.setflags(write=False)
    return x, organs


@pytest.fixture(scope="session")
def flat_ct():
    """``flat_ct(size) -> (images float32 (32, S, S) in [0, 1], organ_labels)``: the phantom
    batch through the trainer's CT window (-200..300 HU, scaled to [0, 1]), so that the air
    around the body (more than half of a slice) is exactly 0 and the brightest bone exactly 1 --
    large flat plateaus, as a windowed CT slice has."""
    return _flat_ct


# group -> provider -> (median, extra_info, peers): the speedups of a row over its peers in
# the same run (``measure(..., peers=...)``), filled in whichever of the two ran last.
_MEDIANS: dict[str, dict[str, tuple[float, dict, tuple]]] = {}


def _record_speedups(group: str, provider: str, median: float, info: dict, peers: tuple,
                     ) -> None:
    rows = _MEDIANS.setdefault(group, {})
    rows[provider] = (median, info, tuple(peers))
    for own_median, own_info, own_peers in rows.values():
        for peer in own_peers:
            if peer in rows:
                own_info[f"speedup_vs_{peer}"] = rows[peer][0] / own_median
        # target_met: every target whose peer has run is met (target_met_vs_<peer>: each)
        met = []
        for target in _targets(own_info):
            ratio = own_info.get(f"speedup_vs_{target['peer']}")
            if ratio is not None:
                own_info[f"target_met_vs_{target['peer']}"] = ratio >= target["speedup"]
                met.append(ratio >= target["speedup"])
        if met:
            own_info["target_met"] = all(met)


def _targets(info: dict) -> list[dict]:
    """The row's targets: ``target`` is one ``{"peer", "speedup"}`` or a list of them."""
    target = info.get("target")
    if not target:
        return []
    return [target] if isinstance(target, dict) else list(target)


@pytest.fixture
def measure(benchmark):
    """``measure(fn, provider=..., size=..., rounds=..., threads=..., group=..., **extra)``
    (``size=(H, W)`` for non-square slices; ``shape=(D, H, W)`` for volumes: slices/s and
    pixels/s then count axial slices and voxels).

    Runs ``fn`` once as warm-up and ``rounds`` timed rounds of one call each, then records
    provider, size, batch, threads and the throughput of the median round in ``extra_info``
    (plus peak GPU memory with ``cuda=True``; ``fn`` must then synchronise itself). The
    caller checks correctness before, outside the timed region.

    ``peers=("cc3d", ...)``: record ``speedup_vs_<peer>`` (peer median / this median) for each
    peer that runs in the same group and session, whichever runs first. ``target={"peer":
    "cc3d", "speedup": 1.25}``, or a list of such targets: recorded as is, plus
    ``target_met_vs_<peer>`` once that peer has run and ``target_met`` (all of them met).
    With ``--benchmark-disable`` (a quick correctness run) ``fn`` runs once, untimed, and
    nothing is recorded.
    """

    def run(fn, *, provider: str, size, rounds: int, threads: int | None, group: str,
            batch: int = BATCH, cuda: bool = False, shape: tuple | None = None,
            peers: tuple = (), **extra):
        benchmark.group = group
        if cuda:  # fn synchronises itself; peak memory over warm-up and timed rounds
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        result = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
        if benchmark.disabled:  # --benchmark-disable: fn ran once, there is nothing to record
            return result
        median = benchmark.stats.stats.median
        if cuda:
            extra["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated()
        # shape=(D, H, W): a batch of volumes; slices are the D axial slices of each, pixels
        # its voxels.
        # size=(H, W): a batch of non-square slices.
        hw = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        slices, pixels = (batch, batch * math.prod(hw)) if shape is None else (
            batch * shape[0], batch * math.prod(shape))
        benchmark.extra_info.update(
            provider=provider,
            size="x".join(map(str, hw if shape is None else shape)),
            batch=batch,
            threads=threads,
            median_s=median,
            slices_per_s=slices / median,
            pixels_per_s=pixels / median,
            # crude contention signal on shared machines; includes this run's own 1-2 threads
            load_1min=round(os.getloadavg()[0], 2),
            **extra,
        )
        _record_speedups(group, provider, median, benchmark.extra_info, peers)
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
