"""supercl: GPU kernels and a thin trainer for SuperCL, superpixel-guided contrastive
pre-training for medical image segmentation.

Subpackages:

- :mod:`supercl.ops` -- the functional ops (SLIC superpixels, connected components, ...).
- :mod:`supercl.data` -- data, including the synthetic CT phantom used as embedded default.
- :mod:`supercl.kernels` -- kernel sources compiled at run time on the GPU.

``import supercl`` imports neither Triton nor CuPy; the GPU backends load them on first use.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("supercl")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
