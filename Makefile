# make demo | make test | make bench -- each one sets itself up from nothing in .venv.
#
# torch: on a machine without an NVIDIA GPU the CPU wheel torch==2.13.0 is installed first
# (a plain `torch` requirement would pull a multi-GB CUDA build). With `nvidia-smi` present the
# venv sees the system's packages: a torch and a CuPy already there are used as they are;
# otherwise pip installs torch, and the CuPy extra that matches torch's CUDA major version
# ([cuda12] or [cuda13]) -- never a second CuPy next to one the image ships.
#
# make gpu-check: the one-call GPU check (benchmarks/gpu_check.py) with $(GPU_PYTHON), the
# Python that holds the GPU torch; on a machine without a GPU it says so and exits 0.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH_CPU ?= torch==2.13.0
comma  := ,
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
EXTRAS := test,bench
GPU_PYTHON ?= python3
# the CuPy extra for the venv's torch, or nothing when a CuPy is importable already
CUPY_EXTRA = $(shell $(BIN)/python -c "import importlib.util as u, torch; v = torch.version.cuda; print('' if u.find_spec('cupy') or not v else ',cuda' + v.split('.')[0])")
SOURCES := pyproject.toml setup.py MANIFEST.in $(shell find supercl csrc kernels -type f \( -name '*.py' -o -name '*.h' -o -name '*.cpp' -o -name '*.cu' \) 2>/dev/null)

.PHONY: demo test bench install clean gpu-check

demo: $(VENV)/.installed
	$(BIN)/supercl demo --out runs/demo

test: $(VENV)/.installed
	$(BIN)/pytest tests -p no:cacheprovider

bench: $(VENV)/.installed
	mkdir -p runs
	$(BIN)/pytest benchmarks -p no:cacheprovider --benchmark-json=runs/bench.json
	$(BIN)/python benchmarks/summarize.py runs/bench.json

install: $(VENV)/.installed

gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

# A regular (non-editable) install, so that the tests run against what users get: the built
# extension and the package data, imported from site-packages.
$(VENV)/.installed: $(SOURCES)
ifeq ($(HAS_GPU),1)
	test -x $(BIN)/python || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet torch
	$(BIN)/python -m pip install --quiet ".[$(EXTRAS)$(CUPY_EXTRA)]"
else
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_CPU)
	$(BIN)/python -m pip install --quiet ".[$(EXTRAS)]"
endif
	touch $@

clean:
	rm -rf $(VENV) build dist *.egg-info runs supercl/_C*.so
