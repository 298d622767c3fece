"""The package as users get it: imports, installed files, the shared headers compiling for the
host and (where nvcc exists) the device, the extension's build options, the demo command."""

import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import supercl
import supercl.kernels

HEADERS = sorted((supercl.kernels.include_dir() / "supercl").glob("*.h"))


def run(args, cwd, **kwargs):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, **kwargs)


def test_import_from_elsewhere_without_gpu_libraries(tmp_path):
    code = (
        "import sys, numpy, supercl.ops, supercl.data; "
        "assert 'triton' not in sys.modules and 'cupy' not in sys.modules, sorted(sys.modules); "
        "print(supercl.ops.connected_components(numpy.eye(2, dtype=int)).tolist())"
    )
    result = run([sys.executable, "-c", code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[[1, 0], [0, 1]]"


def _is_editable():
    dist = importlib.metadata.distribution("supercl")
    direct = dist.read_text("direct_url.json")
    return bool(direct) and json.loads(direct).get("dir_info", {}).get("editable", False)


@pytest.mark.skipif(_is_editable(), reason="an editable install lists no package files")
def test_installed_files():
    files = {str(f) for f in importlib.metadata.files("supercl")}
    assert any(f.startswith("supercl/_C") and f.endswith(".so") for f in files)
    for header in ("common.h", "slic.h", "connected_components.h"):
        assert f"supercl/kernels/include/supercl/{header}" in files
    assert "supercl/kernels/__init__.py" in files
    # kernels/ is installed inside supercl only: another distribution owns `kernels`.
    assert not any(f.startswith("kernels/") for f in files)


def test_headers_found():
    names = {h.name for h in HEADERS}
    assert {"common.h", "slic.h", "connected_components.h"} <= names


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
@pytest.mark.parametrize("header", HEADERS, ids=lambda p: p.name)
def test_header_is_self_contained_cpp17(header, tmp_path):
    source = tmp_path / "probe.cpp"
    source.write_text(f'#include "supercl/{header.name}"\nint main() {{ return 0; }}\n')
    result = run(
        ["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-fsyntax-only",
         f"-I{supercl.kernels.include_dir()}", str(source)],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr


# The device side of the shared bodies: every SUPERCL_HD entry point instantiated in a
# __global__ function, compiled to PTX, so that device-only syntax (atomics, __dadd_rn, ...)
# cannot hide on a machine without a GPU.
DEVICE_PROBE = r"""
#include "supercl/connected_components.h"
#include "supercl/slic.h"
using namespace supercl;

template <typename T>
__global__ void cc_steps(const T* image, int32_t* parent, int32_t* rank, int32_t* out,
                         int64_t h, int64_t w, int connectivity) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= h * w) return;
  cc_init_pixel<T>(image, w, 1, w, i / w, i % w, true, T(0), parent);
  cc_merge_pixel<T>(image, w, 1, w, i / w, i % w, connectivity, true, T(0), parent);
  cc_compress_pixel(parent, i);
  rank[i] = cc_root_flag(parent, i);
  out[i] = cc_gather(parent, rank, i);
}
template __global__ void cc_steps<uint8_t>(const uint8_t*, int32_t*, int32_t*, int32_t*, int64_t, int64_t, int);
template __global__ void cc_steps<int32_t>(const int32_t*, int32_t*, int32_t*, int32_t*, int64_t, int64_t, int);
template __global__ void cc_steps<int64_t>(const int64_t*, int32_t*, int32_t*, int32_t*, int64_t, int64_t, int);

__global__ void slic_steps(const float* image, int32_t* quant, const int64_t* grid,
                           double* centres, SlicParams p, int32_t* labels, int64_t* sums,
                           int32_t* cc, int64_t* size, int32_t* target, int64_t c,
                           int64_t h, int64_t w) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= h * w) return;
  const SlicGrid g = slic_grid(grid);
  quant[i] = slic_quantize(image[i]);
  if (i < g.ny * g.nx) slic_init_centre(g, i, c, centres + i * (2 + c));
  labels[i] = slic_assign_pixel(quant, c, h, w, i / w, i % w, g, centres, p, labels[i]);
  slic_accumulate_run(quant, c, h, w, i / w, i % w, i % w + 1, labels[i], sums);
  if (i < g.ny * g.nx) slic_update_centre(sums, i, c, centres);
  target[i] = slic_merge_target(cc, w, i);
  cc[i] = slic_merge_parent(size, target, 4, static_cast<int32_t>(i));
}
"""


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_device_code_compiles_with_nvcc(arch, tmp_path):
    sources = [tmp_path / "probe.cu"]
    sources[0].write_text(DEVICE_PROBE)
    sources += sorted((Path(supercl.kernels.__file__).parent / "cuda").glob("*.cu"))
    for source in sources:
        result = run(
            ["nvcc", "--ptx", f"-arch={arch}", "-std=c++17", f"-I{supercl.kernels.include_dir()}",
             str(source), "-o", str(tmp_path / (source.stem + ".ptx"))],
            cwd=tmp_path,
        )
        assert result.returncode == 0, f"{source.name}:\n{result.stderr}"
        assert (tmp_path / (source.stem + ".ptx")).stat().st_size > 0


def test_extension_build_options():
    from supercl import _C

    assert isinstance(_C.has_openmp(), bool)
    assert _C.has_openmp(), "the CPU backend was built without OpenMP on a compiler that has it"


def test_setup_lists_every_subpackage():
    """setup.py names its packages; a new subpackage missing there is absent from the wheel
    (an editable install would hide that)."""
    root = Path(__file__).resolve().parents[1]
    setup_py = (root / "setup.py").read_text()
    for init in (root / "supercl").rglob("__init__.py"):
        name = ".".join(init.parent.relative_to(root).parts)
        assert f'"{name}"' in setup_py, f"{name} is not in setup.py's packages"


def test_cli_rejects_bad_options(tmp_path):
    result = run([sys.executable, "-m", "supercl", "pretrain", "--epochs", "0"], cwd=tmp_path)
    assert result.returncode == 2 and "--epochs" in result.stderr


@pytest.mark.parametrize(
    "module",
    ["supercl.ops.slic", "supercl.ops.connected_components", "supercl.ops.supcon_loss",
     "supercl.ops.superpixel_pool", "supercl.ops.graph_components", "supercl.viz",
     "supercl.data.phantom", "supercl.data.scanning", "supercl.data.loading",
     "supercl.data.splitting", "supercl.models.unet", "supercl.losses",
     "supercl.eval.metrics", "supercl.train.views"],
)
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
