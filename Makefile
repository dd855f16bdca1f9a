# Two commands do all set-up on a fresh machine (Python >= 3.10 with pip):
#   make train   - create/refresh .venv, generate the synthetic demo data, train it on a local Ray
#   make test    - create/refresh .venv, run the test suite
# Both are idempotent: the environment is reinstalled only when pyproject.toml changes.
# The install uses uv (from PyPI, into the venv): it downloads and unpacks wheels in parallel and
# byte-compiles everything up front, about 50 s here against 2-3 min for pip. Where uv cannot resolve
# (e.g. a machine that reaches only a package mirror configured for pip), pip installs instead and
# compileall byte-compiles the venv on every core. Compiling must happen up front: where
# PYTHONDONTWRITEBYTECODE is set, nothing compiled at import time is kept, and every process would
# compile torch again. Files that do not compile (a few Python-2 examples inside packages) are skipped.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= data/synthetic
CONFIG ?= configs/synthetic.yaml
ARGS ?=
PYTEST_ARGS ?=

.PHONY: env data train test lint clean-runs

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing the environment into $(VENV) (first time: a few minutes; log: $(VENV)/install.log)"
	@{ $(PY) -m pip install --progress-bar off uv && \
	   $(PY) -m uv pip install --python $(PY) --compile-bytecode -e '.[dev]'; } > $(VENV)/install.log 2>&1 \
	|| { echo "uv could not install (log: $(VENV)/install.log); installing with pip"; \
	     $(PY) -m pip install --progress-bar off --no-compile -e '.[dev]' >> $(VENV)/install.log 2>&1 \
	     || { tail -n 30 $(VENV)/install.log; echo "pip install failed (full log: $(VENV)/install.log)"; exit 1; }; \
	     $(PY) -m compileall -qq -j 0 $(VENV)/lib >> $(VENV)/install.log 2>&1 || true; }
	@touch $(STAMP)

env: $(STAMP)

data: env
	@$(PY) pipelines/make_synthetic.py --demo --quiet --out-dir $(DATA)

train: data
	$(PY) pipelines/train.py --cluster local --config $(CONFIG) $(ARGS)

test: env
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: env
	$(VENV)/bin/ruff check .
