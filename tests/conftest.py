"""Shared test configuration.

- Devices: CPU always; CUDA only where torch sees a GPU (tests marked ``cuda`` skip elsewhere),
  so that the whole suite collects and passes on a CPU-only machine.
- Triton: one marker, ``triton``, and one fixture, ``triton_device``. Where torch sees a GPU
  the kernels run compiled on CUDA tensors; without one, TRITON_INTERPRET=1 (set here unless
  the environment sets it) runs them in Triton's interpreter on CPU tensors. Where neither
  holds (no Triton, or ``TRITON_INTERPRET=0`` on a CPU-only machine) the ``triton`` tests
  skip with the reason. Tests never infer "interpreter" from "no GPU": they ask the fixture.
- Hypothesis: a bounded, deadline-free profile (CI machines are small and shared).
"""

import os

import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    # Triton kernels run on CPU tensors in Triton's interpreter; the variable must be set
    # before Triton is first imported (supercl imports it lazily, in the ops that use it).
    os.environ.setdefault("TRITON_INTERPRET", "1")

import importlib.util  # noqa: E402

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "supercl",
    max_examples=int(os.environ.get("SUPERCL_HYPOTHESIS_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile("supercl")

DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])


def _triton_device() -> tuple[str | None, str]:
    """Where the Triton kernels run in this process, and if nowhere, why."""
    if importlib.util.find_spec("triton") is None:
        return None, "needs Triton (pip install triton)"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "cpu", ""
    if HAS_CUDA:
        return "cuda", ""
    return None, "needs a CUDA GPU, or TRITON_INTERPRET=1 for Triton's interpreter on the CPU"


TRITON_DEVICE, TRITON_SKIP_REASON = _triton_device()


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_triton = pytest.mark.skip(reason=TRITON_SKIP_REASON)
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_cuda)
        if "triton" in item.keywords and TRITON_DEVICE is None:
            item.add_marker(skip_triton)


def python_isolated(code: str, *, env: dict | None = None, cwd=None, timeout: int = 300):
    """Run ``code`` in a fresh ``python -I`` child that imports the same ``supercl`` as this
    process.

    ``-I`` keeps the checkout (the current folder) and the user's site off ``sys.path``, so the
    child cannot pick up the sources instead of the build under test. But ``-I`` also ignores
    ``PYTHONPATH``, which is how a build installed with ``pip install --target`` is found (the
    GPU check does that): the child then found no supercl at all. So the folder this process
    imported supercl from is put on the child's path explicitly, when it is not there already
    (for a regular install in site-packages it is, and nothing changes).
    Returns the ``subprocess.CompletedProcess`` (text output captured)."""
    import subprocess
    import sys
    from pathlib import Path

    import supercl

    root = str(Path(supercl.__file__).resolve().parent.parent)
    prelude = f"import sys; {root!r} in sys.path or sys.path.insert(0, {root!r})\n"
    return subprocess.run([sys.executable, "-I", "-c", prelude + code], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=timeout)


def triton_compile_for_gpu(code: str) -> None:
    """Run ``code`` -- a script that compiles Triton kernels ahead of time for a GPU target
    and prints "ok" -- in a child without TRITON_INTERPRET (Triton reads it when it is
    imported), through :func:`python_isolated`: it imports the supercl this process imports.
    Skips where this Triton has no ahead-of-time compile API."""
    pytest.importorskip("triton")
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the Triton version
        pytest.skip(f"this Triton has no ahead-of-time compile API: {exc}")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = python_isolated(code, env=env)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


@pytest.fixture
def triton_device() -> torch.device:
    """The device whose tensors the Triton backend takes here: ``cuda`` on a GPU machine,
    ``cpu`` under Triton's interpreter; tests that use it must carry the ``triton`` marker
    (they skip where Triton cannot run)."""
    if TRITON_DEVICE is None:
        pytest.skip(TRITON_SKIP_REASON)
    return torch.device(TRITON_DEVICE)


@pytest.fixture
def backend_device(request) -> torch.device:
    """The device for a test parametrized over ``backend`` ("torch" or "triton"): the CPU for
    the torch backend, ``triton_device`` for the Triton kernels."""
    backend = request.getfixturevalue("backend")
    if backend == "triton":
        return request.getfixturevalue("triton_device")
    return torch.device("cpu")


@pytest.fixture
def threads():
    """Run a test body with a given torch/OpenMP thread count and restore it afterwards."""
    before = torch.get_num_threads()

    def set_threads(n):
        torch.set_num_threads(n)

    yield set_threads
    torch.set_num_threads(before)


# ---- the CUDA backend's kernels, compiled for the host ------------------------------------


@pytest.fixture(scope="session")
def host_kernels(tmp_path_factory):
    """ctypes handles of each .cu file compiled for the host (tests/cuda_host_shim.h)."""
    import ctypes
    import shutil
    import subprocess
    from pathlib import Path

    import supercl.kernels

    if shutil.which("g++") is None:
        pytest.skip("needs g++ to compile the CUDA kernels for the host")
    shim = Path(__file__).with_name("cuda_host_shim.h")
    out = tmp_path_factory.mktemp("cuda_host")
    libs = {}
    for source in sorted((Path(supercl.kernels.__file__).parent / "cuda").glob("*.cu")):
        lib = out / f"{source.stem}.so"
        result = subprocess.run(
            ["g++", "-x", "c++", "-std=c++17", "-O1", "-shared", "-fPIC", "-ffp-contract=off",
             "-include", str(shim), f"-I{supercl.kernels.include_dir()}", str(source), "-o",
             str(lib)],
            capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stderr
        libs[source.stem] = ctypes.CDLL(str(lib))
    return libs


class _HostModule:
    """Stands in for a cupy.RawModule: get_function returns a launcher that ignores the grid
    and calls the host-compiled kernel with the same arguments."""

    def __init__(self, lib, launched):
        self.lib = lib
        self.launched = launched

    @staticmethod
    def _arg(a):
        import ctypes

        import numpy as np

        if isinstance(a, torch.Tensor):
            return ctypes.c_void_p(a.data_ptr())
        ctype = {np.int64: ctypes.c_int64, np.int32: ctypes.c_int32, np.uint8: ctypes.c_uint8}
        return ctype[type(a)](int(a))

    def get_function(self, name):
        function = getattr(self.lib, name)
        function.restype = None

        def launch(grid, block, args):
            assert grid[0] >= 1 and block[0] >= 1
            self.launched.append(name)
            function(*[self._arg(a) for a in args])

        return launch


@pytest.fixture
def emulated(monkeypatch, host_kernels):
    """backend='cuda' runs the real CUDA launcher (kernels/cuda/launch.py) on CPU tensors with
    the .cu kernels compiled for the host: one thread visits every index, so it checks the
    kernels and their launch sequence, not concurrency. Yields the names of the kernels
    launched."""
    import contextlib
    import sys

    from supercl.kernels.cuda import launch as _cuda

    launched = []
    monkeypatch.setattr(_cuda, "require", lambda op: None)
    monkeypatch.setattr(
        _cuda, "_module", lambda name, index: _HostModule(host_kernels[name], launched)
    )
    monkeypatch.setattr(_cuda, "_torch_stream", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(_cuda, "_cp", lambda tensor: tensor)
    for module in ("supercl.ops.slic", "supercl.ops.connected_components"):
        monkeypatch.setattr(sys.modules[module], "cuda_device", lambda device: torch.device("cpu"))
    yield launched
