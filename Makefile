# make demo | make test | make bench -- each one sets itself up from nothing in .venv.
# make clean (build outputs) | make clean-runs (runs/) | make distclean (all, .venv too).
#
# torch: on a machine without an NVIDIA GPU the CPU wheel torch==2.13.0 is installed first
# (a plain `torch` requirement would pull a multi-GB CUDA build). With `nvidia-smi` present the
# venv sees the system's packages: a torch and a CuPy already there are used as they are;
# otherwise pip installs torch, and the CuPy extra that matches torch's CUDA major version
# ([cuda12] or [cuda13]) -- never a second CuPy next to one the image ships.
#
# make demo PINNED=1 (make test PINNED=1): the exact versions of constraints.txt, those the
# README's numbers were measured with (Python 3.11, x86-64 Linux, CPU). The flag takes effect
# when .venv is set up: run `make distclean` first if it exists.
#
# make gpu-check: the one-call GPU check (benchmarks/gpu_check.py) with $(GPU_PYTHON), the
# Python that holds the GPU torch; on a machine without a GPU it says so and exits 0.
# make gpu-wheels: on a machine with network, download into .whl/ the wheels a GPU image lacks
# (supercl's runtime dependencies and the benchmark peers, for $(GPU_PY_VERSION) on x86-64
# Linux, ~45 MB); gpu-check installs them for its children (see benchmarks/README.md).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH_CPU ?= torch==2.13.0
comma  := ,
PINNED ?=
PIN    := $(if $(PINNED),-c constraints.txt)
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
EXTRAS := test,bench
GPU_PYTHON ?= python3
# the CuPy extra for the venv's torch, or nothing when a CuPy is importable already
CUPY_EXTRA = $(shell $(BIN)/python -c "import importlib.util as u, torch; v = torch.version.cuda; print('' if u.find_spec('cupy') or not v else ',cuda' + v.split('.')[0])")
SOURCES := pyproject.toml setup.py MANIFEST.in constraints.txt $(shell find supercl csrc kernels -type f \( -name '*.py' -o -name '*.h' -o -name '*.cpp' -o -name '*.cu' \) 2>/dev/null)

DEMO_OUT  ?= runs/demo
DEMO_ARGS ?=

.PHONY: demo test bench install clean clean-runs distclean gpu-check gpu-wheels

# An interrupted demo continues where it stopped; a finished one (results.json) is run again
# from the start (--overwrite replaces the demo's own files in $(DEMO_OUT), nothing else).
demo: $(VENV)/.installed
	$(BIN)/supercl demo --out $(DEMO_OUT) $(DEMO_ARGS) $$(test -f $(DEMO_OUT)/results.json && echo --overwrite)

test: $(VENV)/.installed
	$(BIN)/pytest tests -p no:cacheprovider

# fast-slic, the benchmarks' fastest CPU SLIC peer, has no wheel for this Python: it builds
# from source with Cython and numpy installed first and no build isolation.  Where it cannot
# build, its benchmark rows skip and say why.
bench: $(VENV)/.installed
	$(BIN)/python -c "import fast_slic" 2>/dev/null || { $(BIN)/pip install Cython numpy && \
		$(BIN)/pip install --no-build-isolation fast-slic; } || \
		echo "fast-slic did not build: its benchmark rows will skip"
	mkdir -p runs
	$(BIN)/pytest benchmarks -p no:cacheprovider --benchmark-json=runs/bench.json
	$(BIN)/python benchmarks/summarize.py runs/bench.json

install: $(VENV)/.installed

gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

GPU_PY_VERSION ?= 3.12
GPU_WHEELS ?= nibabel kornia kornia_rs connected-components-3d bkeccl cucim-cu13 \
	pytorch-metric-learning nilearn
GPU_PLATFORMS := $(foreach n,17 24 27 28 31 34 35,--platform manylinux_2_$(n)_x86_64) \
	--platform manylinux2014_x86_64 --platform manylinux1_x86_64

gpu-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
	  --python-version $(GPU_PY_VERSION) $(GPU_PLATFORMS) -d .whl $(GPU_WHEELS)

# A regular (non-editable) install, so that the tests run against what users get: the built
# extension and the package data, imported from site-packages.
$(VENV)/.installed: $(SOURCES)
	rm -rf build  # setuptools reuses build/lib: a module deleted from the tree would ship again
ifeq ($(HAS_GPU),1)
	test -x $(BIN)/python || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet torch
	$(BIN)/python -m pip install --quiet ".[$(EXTRAS)$(CUPY_EXTRA)]"
else
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(PIN) $(TORCH_CPU)
	$(BIN)/python -m pip install --quiet $(PIN) ".[$(EXTRAS)]"
endif
	# the tests of --backbone nnunet: dynamic-network-architectures without its timm requirement
	# (timm pulls a torchvision that does not import beside the CPU torch; its U-Nets need no timm)
	$(BIN)/python -m pip install --quiet $(PIN) --no-deps "dynamic-network-architectures>=0.4.4,<0.5" einops
	touch $@

# clean: build outputs only (the next install rebuilds the extension); clean-runs: the run
# folders (runs/); distclean: both and the virtual environment.
clean:
	rm -rf build dist *.egg-info supercl/_C*.so

clean-runs:
	rm -rf runs

distclean: clean clean-runs
	rm -rf $(VENV) .whl
