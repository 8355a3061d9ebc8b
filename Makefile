# Two entry points for a newcomer on a fresh machine: `make doctor` and `make test`.
# Each creates .venv and installs what it needs. torch is pinned to the CPU wheel
# (an unpinned torch pulls several GB of CUDA packages).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: install doctor test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
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
