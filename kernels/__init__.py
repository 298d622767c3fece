"""The kernels of supercl that are compiled at run time on the GPU, with their launchers;
installed as ``supercl.kernels``.

- ``cuda/``: ``*.cu`` kernels of the image ops (SLIC, connected components) and their CuPy
  launcher (:mod:`supercl.kernels.cuda.launch`).
- ``triton/``: the Triton kernels of the learning ops and their launchers.
- ``include/supercl/*.h``: the shared host/device bodies that both the ``.cu`` files and the
  C++ CPU backend (``csrc/``) include. In the source tree ``include`` is a link to
  ``csrc/include``; the wheel holds a copy. Either way the headers are found at the same place
  beside this file, from a wheel, an editable install or the source tree.

Nothing here imports CuPy or Triton; :func:`include_dir` and :func:`cuda_source` only locate
files.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def include_dir() -> Path:
    """Directory to pass as ``-I`` so that ``#include "supercl/slic.h"`` resolves."""
    path = _HERE / "include"
    if not (path / "supercl" / "common.h").is_file():
        raise FileNotFoundError(
            f"supercl's kernel headers are missing from {path}; reinstall supercl with "
            "`pip install .` (or `pip install -e .`) from a source checkout")
    return path


def cuda_source(name: str) -> str:
    """Text of ``cuda/<name>.cu``."""
    path = _HERE / "cuda" / f"{name}.cu"
    if not path.is_file():
        raise FileNotFoundError(f"no CUDA kernel source {path}")
    return path.read_text()
