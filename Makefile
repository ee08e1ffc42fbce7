# The README's two commands: `make study` and `make test`. Both create .venv when it is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: study test venv fixup lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## Run the default (demo) study on the embedded synthetic twin, then write the report.
study: $(STAMP)
	$(PY) -m study $(ARGS)

## Run the test suite.
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

## Lint and format.
fixup: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## CPU step-time benchmark (per-arm ratios to unet, stock vs fast double backward).
bench: $(STAMP)
	$(PY) -m benchmarks.step

clean:
	rm -rf outputs ray_results .pytest_cache
