# make demo | make test | make bench -- each one sets itself up from nothing in .venv.
#
# torch: on a machine without an NVIDIA GPU the CPU wheel torch==2.13.0 is installed first
# (a plain `torch` requirement would pull a multi-GB CUDA build); with `nvidia-smi` present,
# the default CUDA build and the [cuda] extra (CuPy) are installed instead.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH_CPU ?= torch==2.13.0
comma  := ,
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
EXTRAS := test,bench$(if $(HAS_GPU),$(comma)cuda)
SOURCES := pyproject.toml setup.py MANIFEST.in $(shell find supercl csrc kernels -type f \( -name '*.py' -o -name '*.h' -o -name '*.cpp' -o -name '*.cu' \) 2>/dev/null)

.PHONY: demo test bench install clean

demo: $(VENV)/.installed
	$(BIN)/supercl demo --out runs/demo

test: $(VENV)/.installed
	$(BIN)/pytest tests -p no:cacheprovider

bench: $(VENV)/.installed
	mkdir -p runs
	$(BIN)/pytest benchmarks -p no:cacheprovider --benchmark-json=runs/bench.json
	$(BIN)/python benchmarks/summarize.py runs/bench.json

install: $(VENV)/.installed

# A regular (non-editable) install, so that the tests run against what users get: the built
# extension and the package data, imported from site-packages.
$(VENV)/.installed: $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
ifeq ($(HAS_GPU),1)
	$(BIN)/python -m pip install --quiet torch
else
	$(BIN)/python -m pip install --quiet $(TORCH_CPU)
endif
	$(BIN)/python -m pip install --quiet ".[$(EXTRAS)]"
	touch $@

clean:
	rm -rf $(VENV) build dist *.egg-info runs supercl/_C*.so
