# The two commands of the README: `make demo` and `make test`. Both create .venv from the project's own files.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Re-install when pyproject.toml changes.
STAMP_DEMO := $(VENV)/.installed-demo
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: demo test lint protos check-protos clean help

help:
	@echo "make demo   - train, export, serve and classify on the bundled digits (creates .venv)"
	@echo "make test   - run the test suite (creates .venv with the dev extras)"
	@echo "make lint   - ruff check and format check"
	@echo "make protos - regenerate the gRPC stubs from protos/"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP_DEMO): pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[train,client]"
	touch $@

$(STAMP_DEV): pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[dev]"
	touch $@ $(STAMP_DEMO)

demo: $(STAMP_DEMO)
	$(PY) scripts/demo.py

test: $(STAMP_DEV)
	$(PY) protos/generate.py --check
	$(PY) -m pytest tests -q -p no:cacheprovider
	# tritonclient registers the same protobuf symbols as our stubs, so its tests run in their own process.
	$(PY) -m pytest tests/compat -q -p no:cacheprovider

lint: $(STAMP_DEV)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

protos: $(STAMP_DEV)
	$(PY) protos/generate.py

clean:
	rm -rf artifacts models out .pytest_cache
