# Two entry points, both self-contained on a fresh machine with only Python 3.10+:
#   make book   create/reuse .venv, install, execute every notebook and build the book (_build/html)
#   make test   create/reuse .venv, install, run the whole test suite (library, notebook conventions,
#               papermill injection, every notebook under nbval, the book rendered in headless Chromium)
# For developers, a quicker check while working on the library:
#   make test-fast   the library tests only: no notebooks, no browser, nothing marked slow
#   make test-compat the library tests on the lowest supported transformers (transformers 4.46.2)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= llm,book,test,cluster
# The CPU wheel of torch this project is tested with. On Linux x86-64 outside this workplace,
# PyPI's torch==2.13.0 is a CUDA build: set PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
# first if you want the small CPU wheel.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
# Notebooks draw their figures with ipykernel's inline backend, which ipykernel installs only when
# MPLBACKEND is unset: a shell's MPLBACKEND=Agg must not reach the kernels of `make book` and
# `make test` (the library tests pick Agg themselves, in tests/conftest.py).
unexport MPLBACKEND

.PHONY: install browser book test test-fast test-compat lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -c constraints.txt "$(TORCH_SPEC)" -e ".[$(EXTRAS)]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(STAMP)

# tools/execute_book.py first executes the notebooks that the cache lacks, BOOK_WORKERS kernels at once
# (default: one per core), into the jupyter-cache that `jupyter-book build` then reads.
BOOK_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
book: install
	@start=$$(date +%s); \
	$(BIN)/python tools/execute_book.py --workers $(BOOK_WORKERS) \
	  && $(BIN)/jupyter-book build . -W --keep-going --path-output . ; rc=$$?; \
	echo "book build: $$(( $$(date +%s) - start )) s, exit $$rc"; exit $$rc

# Headless Chromium for tests/book/test_book_build.py (Debian package `chromium`). Installed only when
# missing and apt-get is usable (root, or passwordless sudo); never fails the build: without a
# browser the browser checks skip with a message.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	   || command -v google-chrome >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
	    echo "note: chromium missing and apt-get needs root; browser checks will skip"; exit 0; fi; \
	  echo "installing chromium (apt-get) for the browser checks ..."; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { $$SUDO apt-get install -y -qq chromium >/dev/null 2>&1 \
	    || { $$SUDO apt-get update -qq >/dev/null 2>&1 \
	         && $$SUDO apt-get install -y -qq chromium >/dev/null 2>&1; }; } \
	    || echo "warning: could not install chromium; browser checks will skip"; \
	else echo "note: chromium missing and no apt-get; browser checks will skip"; fi

# The whole suite on TEST_WORKERS processes (pytest-xdist; default: one per core). `--dist loadfile` keeps
# each file on one worker, so a notebook's cells run in order in one kernel; the workers share the cores
# (tests/conftest.py gives each its share of threads).
TEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
test: install browser
	@start=$$(date +%s); \
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile; rc=$$?; \
	echo "test suite: $$(( $$(date +%s) - start )) s, exit $$rc"; exit $$rc

# The library tests without the notebooks, the browser and the slow marker (a few minutes on 2 cores).
test-fast: install
	@start=$$(date +%s); \
	$(BIN)/python -m pytest tests -m "not notebook and not browser and not slow"; rc=$$?; \
	echo "fast library tests: $$(( $$(date +%s) - start )) s, exit $$rc"; exit $$rc

# The library tests again (no notebooks, no browser, no slow tests) in a second environment,
# .venv-compat/, with the lowest transformers the package declares (pyproject: transformers>=4.46) and
# the peft, accelerate, tokenizers and huggingface_hub of its time (constraints-compat.txt).
COMPAT_VENV ?= .venv-compat
COMPAT_BIN := $(COMPAT_VENV)/bin
COMPAT_STAMP := $(COMPAT_VENV)/.installed

$(COMPAT_BIN)/python:
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_BIN)/python -m pip install -q --upgrade pip setuptools wheel

$(COMPAT_STAMP): pyproject.toml constraints.txt constraints-compat.txt | $(COMPAT_BIN)/python
	@start=$$(date +%s); \
	$(COMPAT_BIN)/python -m pip install -q -c constraints.txt -c constraints-compat.txt "$(TORCH_SPEC)" \
	  -e ".[$(EXTRAS)]" || exit $$?; \
	echo "test-compat: environment installed in $$(( $$(date +%s) - start )) s"
	touch $@

test-compat: $(COMPAT_STAMP)
	@$(COMPAT_BIN)/python -c 'import transformers, peft, accelerate, tokenizers; print("test-compat:", \
	  *(f"{m.__name__} {m.__version__}" for m in (transformers, peft, accelerate, tokenizers)))'
	@start=$$(date +%s); \
	$(COMPAT_BIN)/python -m pytest tests -m "not notebook and not browser and not slow" -p no:cacheprovider; \
	rc=$$?; echo "test-compat: library tests $$(( $$(date +%s) - start )) s, exit $$rc"; exit $$rc

lint: install
	$(BIN)/ruff check crispedit_lite tests benchmarks

clean:
	rm -rf _build .pytest_cache

# Student versions of the chapters for a course (solution regions -> stubs, hidden tests removed,
# Colab badge to the student copy): _build/student/NN_*.ipynb. See book/instructors.md.
.PHONY: student
student: install
	$(BIN)/python -m crispedit_lite.exercises student notebooks/[0-9][0-9]_*.ipynb --out _build/student
