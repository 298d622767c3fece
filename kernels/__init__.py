"""Kernel sources of supercl, installed as ``supercl.kernels``.

- ``cuda/*.cu``: ``__global__`` wrappers over the shared host/device bodies in
  ``csrc/include/supercl/``, compiled at run time by NVRTC through CuPy (GPU backend).
- ``include/supercl/*.h``: those shared bodies, shipped as package data so that the run-time
  compiler finds them in an installed package.

Nothing here imports CuPy or Triton; :func:`include_dir` and :func:`cuda_source` only locate
files.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def include_dir() -> Path:
    """Directory to pass as ``-I`` so that ``#include "supercl/slic.h"`` resolves.

    In an installed package the headers sit in ``supercl/kernels/include``; in a source
    checkout (editable install, or tests run from the tree) in ``csrc/include``.
    """
    for candidate in (_HERE / "include", _HERE.parent / "csrc" / "include"):
        if (candidate / "supercl" / "common.h").is_file():
            return candidate
    raise FileNotFoundError(
        "supercl's kernel headers (supercl/common.h) are missing; reinstall supercl with "
        "`pip install .` from a source checkout"
    )


def cuda_source(name: str) -> str:
    """Text of ``cuda/<name>.cu``."""
    path = _HERE / "cuda" / f"{name}.cu"
    if not path.is_file():
        raise FileNotFoundError(f"no CUDA kernel source {path}")
    return path.read_text()
