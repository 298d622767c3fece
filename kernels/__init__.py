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

# The label dtypes that connected-component labeling is compiled for (numpy / torch names), each
# with the suffix of its CUDA kernels (cc_tiles_u8, ...): the Python side of SUPERCL_CC_DTYPES
# in include/supercl/connected_components.h, which instantiates the C++ drivers and the .cu
# kernels; tests/test_connected_components.py checks that the two lists agree.  Other integer
# dtypes are widened to one of these by supercl.ops.connected_components.
CC_DTYPES = (("uint8", "u8"), ("int32", "i32"), ("int64", "i64"))


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
