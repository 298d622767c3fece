"""Boundary helpers shared by the public ops: input conversion, validation messages, backend
choice and the compiled extension.  Internal; the public functions live in the op modules."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from supercl._validate import check_bool, check_float, check_int  # noqa: F401 (re-exported)

# The dtypes of the learning ops' inputs: feature maps (any float, float64 for gradcheck) and
# superpixel ids (the kernels index with int32 or int64 as given, no widening copy).
FEATURE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
ID_DTYPES = (torch.int32, torch.int64)
# supercl._validate.check_tensor's arguments for superpixel ids (pooling, downsample_segments).
ID_CHECK = dict(dtype=ID_DTYPES, dtype_text="hold integer ids of dtype int32 or int64")

BACKENDS = ("cpu", "cuda")
# One vocabulary for every op, in ``backend=`` and in SUPERCL_BACKEND: "cpu" and "cuda" name
# the kind of implementation, "torch" and "triton" the implementation of the learning-side ops
# (pooling, losses, graph components). The image ops (SLIC, connected components) run "cpu" as
# their C++ backend and "cuda" as their CuPy kernels; the learning ops run "cpu" as torch and
# "cuda" as Triton. So "torch" means "cpu" and "triton" means "cuda" for an image op.
BACKEND_NAMES = ("cpu", "cuda", "torch", "triton")
TRITON_BACKENDS = ("torch", "triton")
_ENV_TO_TRITON = {"cpu": "torch", "cuda": "triton", "torch": "torch", "triton": "triton"}
_ENV_TO_IMAGE = {"cpu": "cpu", "cuda": "cuda", "torch": "cpu", "triton": "cuda"}


def as_tensor(value: Any, name: str) -> tuple[torch.Tensor, bool]:
    """``value`` as a tensor, and whether it came in as a numpy array (results go back out in
    the same kind).  numpy arrays are shared, not copied, except when torch cannot view them
    (negative strides, read-only memory)."""
    if isinstance(value, torch.Tensor):
        return value, False
    if isinstance(value, np.ndarray):
        if value.dtype == object or value.dtype.kind in "USV":
            raise TypeError(f"{name} must hold numbers, got a numpy array of dtype {value.dtype}")
        if not value.flags.writeable or any(s < 0 for s in value.strides):
            value = np.array(value)  # torch.from_numpy refuses both; one copy
        return torch.from_numpy(value), True
    raise TypeError(f"{name} must be a torch.Tensor or a numpy.ndarray, got {type(value).__name__}")


def to_output(result: torch.Tensor, as_numpy: bool) -> Any:
    return result.numpy() if as_numpy else result


def _named_backend(backend: str | None, names: dict[str, str]) -> str | None:
    """``backend`` (else ``SUPERCL_BACKEND``) mapped onto an op family's implementation names
    by ``names``; None when neither is set. Any of :data:`BACKEND_NAMES` is accepted."""
    source = "backend"
    if backend is None and os.environ.get("SUPERCL_BACKEND"):
        backend, source = os.environ["SUPERCL_BACKEND"], "SUPERCL_BACKEND"
    if backend is None:
        return None
    if not isinstance(backend, str) or backend not in names:
        raise ValueError(f"{source} must be one of {BACKEND_NAMES} or None, got {backend!r}")
    return names[backend]


def resolve_backend(op: str, backend: str | None, device: torch.device) -> str:
    """The backend that runs ``op`` for an input on ``device``.

    ``backend`` (else the ``SUPERCL_BACKEND`` environment variable) forces one ("cpu" or
    "torch": the C++ backend, "cuda" or "triton": the CUDA backend); otherwise the input's
    device decides: CUDA tensors to the CUDA backend, everything else to the C++ CPU
    backend.  A forced or chosen backend that is unavailable raises instead of silently
    running elsewhere.
    """
    backend = _named_backend(backend, _ENV_TO_IMAGE)
    if backend is None:
        backend = "cuda" if device.type == "cuda" else "cpu"
    if backend == "cuda":
        from supercl.kernels.cuda import launch as _cuda

        _cuda.require(op)
    return backend


def resolve_triton_backend(op: str, backend: str | None, device: torch.device) -> str:
    """``"torch"`` or ``"triton"`` for a learning-side op on ``device``.

    ``backend`` (else ``SUPERCL_BACKEND``) may also be the device-kind alias ``"cpu"`` (torch)
    or ``"cuda"`` (Triton).

    ``None`` (and no ``SUPERCL_BACKEND``) chooses Triton for CUDA tensors and torch otherwise.
    ``"triton"`` on CPU tensors runs the kernels in Triton's interpreter, which must be switched
    on with ``TRITON_INTERPRET=1`` before Triton is imported; otherwise it raises and says so.
    """
    backend = _named_backend(backend, _ENV_TO_TRITON)
    if backend is None:
        return "triton" if device.type == "cuda" else "torch"
    if backend == "triton":
        try:
            import triton  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(
                f"supercl.ops.{op}: backend='triton' needs Triton (`pip install triton`, Linux)"
            ) from exc
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(
                f"supercl.ops.{op}: backend='triton' got {device.type} tensors; Triton runs them "
                "only in its interpreter, enabled by TRITON_INTERPRET=1 in the environment "
                "before Triton is imported. Use backend='torch' (or None) for CPU tensors."
            )
    return backend


def cuda_device(device: torch.device) -> torch.device:
    """The CUDA device that runs a forced CUDA op: the input's, or the current one for a CPU
    input (whose result then comes back to the CPU)."""
    return device if device.type == "cuda" else torch.device("cuda", torch.cuda.current_device())


def extension():
    """The compiled CPU backend ``supercl._C``."""
    try:
        from supercl import _C
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "supercl's compiled extension supercl._C is missing or broken. Install the package "
            "with `pip install .` (or `pip install -e .`) from a source checkout so that it is "
            f"built; the import failed with: {exc}"
        ) from exc
    return _C


def num_threads() -> int:
    """CPU threads for the C++ backend: the same knob as torch (``torch.set_num_threads``)."""
    return max(1, torch.get_num_threads())
