# Two entry points for a newcomer on a fresh machine: `make doctor` and `make test`.
# Each creates .venv and installs what it needs, with pip's own progress (a first install
# downloads torch: a minute or more).
#
# torch is pinned to $(TORCH). Which wheel that pin gets depends on where pip looks:
# - from PyPI alone, on an ordinary Linux x86-64 machine, torch==2.13.0 is the CUDA build:
#   it pulls several GB of nvidia-* packages, which a CPU-only machine never uses;
# - with PyTorch's CPU wheel index it is the CPU-only build (a few hundred MB):
#       make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
# - where pip is configured with a local CPU wheel (find-links, as on the project's own
#   machines), the default below already installs that one.
# TORCH_INDEX is empty by default, so that the default works wherever pip's configuration
# already points at the right wheel.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
PIP_FLAGS ?=

TORCH_FROM := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)

.PHONY: install doctor test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@echo "make: installing $(TORCH) from $(or $(TORCH_INDEX),pip's configured indexes (PyPI: the CUDA build on Linux; see the Makefile))"
	$(PY) -m pip install $(PIP_FLAGS) $(TORCH_FROM) $(TORCH)
	$(PY) -m pip install $(PIP_FLAGS) -e '.[dev]'
	touch $@

doctor: install
	$(VENV)/bin/babysit doctor

test: install
	$(PY) -m pytest -q -n 2 -rs

lint: install
	$(VENV)/bin/ruff check babysit tests bench

bench: install
	for f in bench/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) *.egg-info
