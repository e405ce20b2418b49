# Set-up and the two jobs. `make demo` runs the main job, `make test` the tests;
# both create .venv on first use (CPU torch, then this package with the extras they need).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
DEMO_BACKEND ?= torch
# Each pass on every core (pytest-xdist); a test file stays on one worker.
PYTEST := $(PYTHON) -m pytest -q -n 2 --dist loadfile

.PHONY: demo test

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	# The CPU build first: an unpinned torch would pull a CUDA build of several GB.
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e ".[torch,experiments,minilm,test]"
	touch $@

demo: $(VENV)/.installed
	KERAS_BACKEND=$(DEMO_BACKEND) $(PYTHON) -m keras_scl.experiments

# Everything on torch; the library (and a smoke run of the main job) on jax and tensorflow:
# the harness on top of the library is backend-agnostic code (see conftest.py).
test: $(VENV)/.installed
	$(VENV)/bin/ruff check --no-cache .
	KERAS_BACKEND=torch $(PYTEST)
	KERAS_BACKEND=jax $(PYTEST) -m "not harness"
	KERAS_BACKEND=tensorflow $(PYTEST) -m "not harness"
