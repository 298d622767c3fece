"""The package as users get it: imports, installed files, the shared headers compiling for the
host and (where nvcc exists) the device, the extension's build options, the demo command."""

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import python_isolated

import supercl
import supercl.kernels

ROOT = Path(__file__).resolve().parents[1]
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


def test_cpu_backend_gives_the_same_labels_on_any_number_of_threads(threads):
    """With OpenMP the C++ backend splits the work over threads, without it (a compiler that
    lacks -fopenmp) it runs serially; the labels must be the same either way."""
    from phantom_v1 import phantom_batch
    from supercl.ops import connected_components, slic

    images, organs = phantom_batch(3, 61, 47, seed=5)
    results = []
    for n in (1, 3):
        threads(n)
        results.append((slic(images, n_segments=30, compactness=0.1),
                        connected_components(organs, connectivity=1)))
    for a, b in zip(*results):
        assert (a == b).all()


def _source_packages() -> set[str]:
    """Every package of the source tree, as installed: supercl/... and kernels/... (which is
    installed as supercl.kernels)."""
    names = set()
    for top, installed in (("supercl", "supercl"), ("kernels", "supercl.kernels")):
        for init in (ROOT / top).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / top).parts
            names.add(".".join((installed, *parts)))
    return names


@pytest.mark.skipif(_is_editable(), reason="an editable install lists no package files")
def test_the_installed_package_holds_every_subpackage():
    """setup.py finds its packages; a new subpackage must reach the wheel."""
    installed = {str(f.parent).replace("/", ".") for f in importlib.metadata.files("supercl")
                 if f.name == "__init__.py"}
    assert _source_packages() <= installed, sorted(_source_packages() - installed)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="needs a git checkout to copy")
def test_an_editable_install_imports_the_kernels_like_the_wheel(tmp_path):
    """`pip install -e .` (from a copy of the checkout, in a fresh virtual environment): the
    kernels package, its headers and its CUDA sources are found as in the installed wheel."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    copy = tmp_path / "supercl"
    for name in filter(None, files):
        src, dest = ROOT / os.fsdecode(name), copy / os.fsdecode(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dest.symlink_to(os.readlink(src))
        elif src.is_file():
            shutil.copy2(src, dest)
    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path).returncode == 0
    python = venv / "bin" / "python"
    # Offline (a GPU machine reaches no package index), pip cannot fetch the build
    # requirements for an isolated build: where this environment has them, the build uses
    # them instead, through PYTHONPATH (the new venv itself has none).
    build = [importlib.util.find_spec(m) for m in ("setuptools", "pybind11")]
    isolation, env = [], None
    if all(build):
        isolation = ["--no-build-isolation"]
        dirs = {str(Path(spec.submodule_search_locations[0]).parent) for spec in build}
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sorted(dirs))}
    result = run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
                  "--no-deps", *isolation, "-e", copy], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    probe = ("import importlib.util, supercl.kernels as k; "
             "assert (k.include_dir() / 'supercl' / 'common.h').is_file(); "
             "assert '__global__' in k.cuda_source('slic'); "
             "assert importlib.util.find_spec('supercl.kernels.cuda.launch'); "
             "assert importlib.util.find_spec('supercl.kernels.triton.supcon_loss'); "
             "print(k.__file__)")
    editable = run([python, "-I", "-c", probe], cwd=tmp_path)
    assert editable.returncode == 0, editable.stderr
    assert Path(editable.stdout.strip()) == copy / "kernels" / "__init__.py"
    wheel = python_isolated(probe, cwd=tmp_path)  # the supercl this process imports
    assert wheel.returncode == 0, wheel.stderr


def test_cli_rejects_bad_options(tmp_path):
    result = run([sys.executable, "-m", "supercl", "pretrain", "--epochs", "0"], cwd=tmp_path)
    assert result.returncode == 2 and "--epochs" in result.stderr


@pytest.mark.parametrize(
    "module",
    ["supercl.ops.slic", "supercl.ops.connected_components", "supercl.ops.supcon_loss",
     "supercl.ops.superpixel_pool", "supercl.ops.downsample", "supercl.ops.graph_components",
     "supercl.viz",
     "supercl.data.msd", "supercl.data.phantom_v2", "supercl.data.scanning",
     "supercl.data.loading",
     "supercl.data.splitting", "supercl.models.unet", "supercl.losses",
     "supercl.eval.metrics", "supercl.train.views"],
)
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def _import_graph() -> dict[str, set[str]]:
    """supercl's modules (source tree) -> the supercl modules each imports, at any scope
    (function-level imports included: they still make a cycle, only a hidden one)."""
    import ast

    pkg = ROOT / "supercl"
    modules = {}
    for path in pkg.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path

    def resolve(base: str) -> str | None:
        while base and base not in modules:
            base = base.rpartition(".")[0]
        return base or None

    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    mod = f"{base}.{node.module}" if node.module else base
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" for a in node.names] + [mod]
            else:
                continue
            for target in targets:
                if target.startswith("supercl"):
                    found = resolve(target)
                    if found and found != name:
                        edges.add(found)
        graph[name] = edges
    return graph


def test_the_modules_import_each_other_without_cycles():
    """Each layer imports only the layers below it (ARCHITECTURE.md): no cycle among the
    modules, not even through an import inside a function. A package's __init__ importing
    its own modules is not a cycle; it is left out."""
    graph = _import_graph()
    assert "supercl.train.finetuning" in graph and "supercl.ops.slic" in graph  # the scan saw them
    for name, edges in graph.items():  # a module's edge to its own package's __init__
        graph[name] = {e for e in edges if not name.startswith(e + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_scoring_and_the_ops_import_nothing_of_the_trainer():
    graph = _import_graph()
    above = ("supercl.train", "supercl.cli", "supercl.demo", "supercl.ablate")
    for name, edges in graph.items():
        if name.startswith(("supercl.eval", "supercl.ops", "supercl.data", "supercl.models")):
            wrong = sorted(e for e in edges if e.startswith(above))
            assert not wrong, f"{name} imports {wrong}"


def test_isolated_children_import_the_supercl_under_test():
    """Tests that run code in a fresh ``python -I`` (no current folder, no PYTHONPATH) must
    import the same supercl as this process: under the GPU check that is a build installed
    with ``pip install --target`` and found through PYTHONPATH, which ``-I`` alone ignores."""
    out = python_isolated("import supercl; print(supercl.__file__)")
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).resolve() == Path(supercl.__file__).resolve()


def test_no_package_attribute_shadows_its_submodule():
    """Issue 25, item 3: ``supercl.train.evaluate`` was bound to the function over the module of
    that name, so ``import supercl.train.evaluate as m`` gave a function. Each name of a
    package (an attribute, or a module file beside its ``__init__.py``) means one thing.
    supercl.ops is the one exception, by STYLE.md's first rule: an op's module has the op's
    name (``supercl/ops/slic.py`` holds ``slic``), as in kernels/, csrc/, tests/, benchmarks/."""
    import importlib
    import inspect
    import pkgutil

    packages = ["supercl"] + [f"supercl.{m.name}" for m in pkgutil.iter_modules(supercl.__path__)
                              if m.ispkg and m.name not in ("kernels", "ops")]
    shadowed = []
    for name in packages:
        package = importlib.import_module(name)
        for sub in pkgutil.iter_modules(package.__path__):
            value = getattr(package, sub.name, None)
            if value is not None and not inspect.ismodule(value):
                shadowed.append(f"{name}.{sub.name}")
    assert packages[1:] and not shadowed
