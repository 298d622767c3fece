"""The CUDA kernels of the image ops and their launcher.

- ``*.cu``: ``__global__`` wrappers over the shared host/device bodies in
  ``include/supercl/*.h``, compiled at run time by NVRTC through CuPy.
- :mod:`.launch`: the CuPy launcher (compilation, grids, the launch sequence of each op).

Importing this package imports neither CuPy nor torch; :mod:`.launch` imports torch, and
CuPy only when a kernel is compiled.
"""
