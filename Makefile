# Set-up and the two jobs. `make demo` runs the main job, `make test` the tests;
# both create .venv on first use (CPU torch, then this package with the extras they need).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
BACKENDS ?= torch jax tensorflow
DEMO_BACKEND ?= torch

.PHONY: demo test

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	# The CPU build first: an unpinned torch would pull a CUDA build of several GB.
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e ".[torch,experiments,minilm,test]"
	touch $@

demo: $(VENV)/.installed
	KERAS_BACKEND=$(DEMO_BACKEND) $(PYTHON) examples/few_shot.py

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	@for backend in $(BACKENDS); do \
		echo "== KERAS_BACKEND=$$backend"; \
		KERAS_BACKEND=$$backend $(PYTHON) -m pytest -q || exit 1; \
	done
