# mnist-platform: `make up` stands the platform up (local stack by default), `make test` runs the offline suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STACK ?= local
# The stamp is rebuilt when the dependencies change, so a second `make test` does not reinstall.
INSTALLED := $(VENV)/.installed
# Where the CPU build of torch comes from (empty: only pip's configured indexes, e.g. a local mirror).
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: install test lint typecheck unit up down clean mutate

# pip with patience. A network that drops mid-download is not a broken build: CI once failed when the
# 95 MB xgboost wheel stalled at 38 MB through all of pip's resume attempts, which follow each other without
# a pause. So a failed install is run again after 30 s, then 60 s; the wheels it had finished come from
# pip's cache. (More connection retries, PIP_RETRIES, would not do it: pip waits between them, and each
# of the many index pages that fail to resolve on a machine without the PyTorch index waits its full round.)
PIP_ATTEMPTS ?= 3
PIP_PAUSE_S ?= 30
define pip_install
@echo "pip install $(1)"; \
for attempt in $$(seq $(PIP_ATTEMPTS)); do \
  $(BIN)/pip install --quiet $(1) && break; \
  [ $$attempt -lt $(PIP_ATTEMPTS) ] || { echo "error: pip install $(1) failed $(PIP_ATTEMPTS) times (see above)" >&2; exit 1; }; \
  echo "pip install $(1) failed (attempt $$attempt of $(PIP_ATTEMPTS)): trying again in $$((attempt * $(PIP_PAUSE_S))) s" >&2; \
  sleep $$((attempt * $(PIP_PAUSE_S))); \
done
endef

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(call pip_install,--upgrade pip)
	# torch first, pinned, from PyTorch's CPU index: on Linux PyPI's torch pulls GBs of CUDA wheels.
	$(call pip_install,torch==2.13.0 $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)))
	$(call pip_install,-e '.[dev]')
	touch $@

install: $(INSTALLED)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(INSTALLED)
	$(BIN)/pyright

test: lint typecheck
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# Mutation testing (bench/mutation.py, docs/testing.md): mutmut 3 over the modules where a silent bug costs
# most, each in a copy under .mnist-platform/mutation/; scores to bench/results/mutation.json. Minutes per
# module on 2 cores, so it is not part of `make test` or CI: run it when those modules change.
# `make mutate MODULES=serving/payloads.py` runs one; MUTATE_FLAGS=--recheck tests only the last run's
# survivors again, with the tests as they are now (after writing tests to kill them).
MUTMUT := mutmut==3.8.1
MODULES ?=
MUTATE_FLAGS ?=
mutate: $(INSTALLED)
	$(call pip_install,$(MUTMUT))
	nice -n 15 $(BIN)/python bench/mutation.py $(MUTATE_FLAGS) $(MODULES)

# --- `make up` / `make down`: the stack STACK (local by default; `make up STACK=aws` for SageMaker) ---
# scripts/stack does the work: the local stack in one step with its state in .pulumi-state/; a cloud
# stack only with a state backend that outlives this clone (PULUMI_BACKEND_URL, or LOCAL_STATE=1),
# previewed with the policy pack, and deployed after a yes at the terminal (or YES=1).
PULUMI_INSTALLER := https://get.pulumi.com
up down pulumi-cli: export PATH := $(HOME)/.pulumi/bin:$(PATH)

.PHONY: pulumi-cli
pulumi-cli:
	@command -v pulumi >/dev/null 2>&1 && exit 0; \
	command -v curl >/dev/null 2>&1 || { echo "error: the Pulumi CLI is missing and curl is not installed to fetch it." \
	  "Install curl, or the CLI itself (https://www.pulumi.com/docs/install/), then run make again." >&2; exit 1; }; \
	echo "The Pulumi CLI is missing: installing it with Pulumi's official installer ($(PULUMI_INSTALLER))"; \
	installer=$$(mktemp); trap 'rm -f "$$installer"' EXIT; \
	if ! curl -fsSL --max-time 60 $(PULUMI_INSTALLER) -o "$$installer"; then \
	  echo "error: could not download the Pulumi installer from $(PULUMI_INSTALLER): this machine seems to have" \
	    "no internet access. Install the Pulumi CLI by other means (https://www.pulumi.com/docs/install/;" \
	    "e.g. unpack a release archive so that ~/.pulumi/bin/pulumi exists) and run make again." >&2; \
	  exit 1; \
	fi; \
	sh "$$installer" || { echo "error: Pulumi's installer failed (see its output above); without internet access" \
	  "install the CLI by other means (https://www.pulumi.com/docs/install/) and run make again." >&2; exit 1; }

up: $(INSTALLED) pulumi-cli
	scripts/stack up $(STACK)

down: $(INSTALLED) pulumi-cli
	scripts/stack down $(STACK)
