"""Builds the pybind11 extension supercl._C from csrc/ and installs kernels/ as supercl.kernels.

C++17 at -O3 with -fno-wrapv and -ffp-contract=off (the host must not fuse multiply-adds, or its float results
would differ from the device's correctly rounded ones; see csrc/include/supercl/common.h).
OpenMP is used when the compiler accepts -fopenmp, otherwise the build warns and the extension
runs serially with the same results.  No -march=native: set SUPERCL_MARCH=native (or another
value) to opt in on a machine that only runs its own build.
"""

import os
import tempfile
import warnings

from pybind11.setup_helpers import Pybind11Extension
from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext


def _compiles_with(compiler, flags):
    """Whether `compiler` builds and links a small OpenMP program with `flags`."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.cpp")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objs, os.path.join(tmp, "probe"), extra_postargs=flags)
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    def build_extensions(self):
        # -fno-wrapv undoes Python's -fwrapv: with it GCC 12 cannot vectorise SLIC's distance
        # loop (-fopt-info-vec: "control flow in loop"), which made the assignment 2x slower.
        compile_args = ["-O3", "-ffp-contract=off", "-fno-wrapv"]
        link_args = []
        march = os.environ.get("SUPERCL_MARCH")
        if march:
            compile_args.append(f"-march={march}")
        if _compiles_with(self.compiler, ["-fopenmp"]):
            compile_args.append("-fopenmp")
            link_args.append("-fopenmp")
        else:
            warnings.warn(
                "supercl: the C++ compiler does not support OpenMP (-fopenmp); the CPU backend "
                "is built serial. Results are the same, only slower.",
                stacklevel=1,
            )
        for ext in self.extensions:
            ext.extra_compile_args = list(ext.extra_compile_args or []) + compile_args
            ext.extra_link_args = list(ext.extra_link_args or []) + link_args
        super().build_extensions()


ext_modules = [
    Pybind11Extension(
        "supercl._C",
        sources=[
            "csrc/bindings.cpp",
            "csrc/cpu/connected_components.cpp",
            "csrc/cpu/connected_components_3d.cpp",
            "csrc/cpu/slic.cpp",
            "csrc/cpu/slic_3d.cpp",
        ],
        include_dirs=["csrc/include", "csrc"],
        cxx_std=17,
    )
]

# Every package under supercl/ and kernels/, found rather than listed, so that a new subpackage
# cannot be left out of the wheel.  kernels/ is installed as supercl.kernels; its include/ (a
# link to csrc/include in the source tree) ships the shared headers for the run-time compiler.
packages = find_packages(include=["supercl", "supercl.*"]) + ["supercl.kernels"] + [
    f"supercl.kernels.{name}" for name in find_packages("kernels")]

setup(
    packages=packages,
    package_dir={"supercl": "supercl", "supercl.kernels": "kernels"},
    package_data={
        "supercl": ["py.typed"],  # PEP 561: the package's annotations are meant for type checkers
        "supercl.kernels": ["include/supercl/*.h"],
        "supercl.kernels.cuda": ["*.cu"],
    },
    ext_modules=ext_modules,
    cmdclass={"build_ext": BuildExt},
    zip_safe=False,
)
