# videoqueue-operator: `make help` lists the targets.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(PYTHON) -m uv
VENV := .venv
RUN := $(VENV)/bin
CLUSTER_DIR := .dev/cluster
# Where hack/build-toolchain.sh caches the control-plane binaries (outside the repo).
export VIDEOQUEUE_CACHE ?= $(HOME)/.cache/videoqueue
PYTEST_ARGS ?=

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} \
	  /^[a-zA-Z_-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Setup

.PHONY: setup
setup: system-packages venv toolchain ## Install everything: Debian packages, Python env, control plane.

.PHONY: system-packages
system-packages: ## Install the Debian packages the tests need (apt, only what is missing).
	hack/install-system-packages.sh

.PHONY: venv
venv: ## Create .venv from uv.lock (exact pinned versions).
	@$(UV) --version 2>/dev/null | grep -q ' $(UV_VERSION)' || $(PYTHON) -m pip install -q "uv==$(UV_VERSION)"
	$(UV) sync --locked

.PHONY: toolchain
toolchain: ## Build etcd, Kubernetes, KWOK and Helm from Go modules (cached per version).
	hack/build-toolchain.sh

##@ Development

.PHONY: lint
lint: venv ## Run ruff (lint + format check) and mypy --strict.
	$(RUN)/ruff check operator tests
	$(RUN)/ruff format --check operator tests
	$(RUN)/mypy

.PHONY: fmt
fmt: venv ## Format and auto-fix the Python code.
	$(RUN)/ruff format operator tests
	$(RUN)/ruff check --fix operator tests

.PHONY: cluster-up
cluster-up: venv toolchain ## Start the local control plane with KWOK nodes (state in .dev/cluster).
	$(RUN)/python -m videoqueue.envtest up --state-dir $(CLUSTER_DIR)

.PHONY: cluster-down
cluster-down: ## Stop the local control plane and delete its state.
	@if [[ -x $(RUN)/python ]]; then $(RUN)/python -m videoqueue.envtest down --state-dir $(CLUSTER_DIR); fi

.PHONY: cluster-status
cluster-status: ## Tell whether the local control plane is running.
	$(RUN)/python -m videoqueue.envtest status --state-dir $(CLUSTER_DIR)

.PHONY: dev
dev: setup cluster-up ## Bring up the local cluster (the operator and sample jobs join it later).
	@echo "Local cluster ready. Use it with: export KUBECONFIG=$(CURDIR)/$(CLUSTER_DIR)/kubeconfig"
	@echo "kubectl is at $(VIDEOQUEUE_CACHE)/bin/kubectl; stop everything with: make cluster-down"

##@ Test

.PHONY: test
test: setup lint test-unit test-integration ## Everything CI runs: lint, unit and integration tests.

.PHONY: test-unit
test-unit: venv ## Pure tests, no cluster.
	$(RUN)/pytest tests/unit $(PYTEST_ARGS)

.PHONY: test-integration
test-integration: venv toolchain ## Tests against the local control plane (one per session).
	$(RUN)/pytest tests/integration $(PYTEST_ARGS)

.PHONY: clean
clean: cluster-down ## Remove local state (not the toolchain cache).
	rm -rf .dev .pytest_cache .mypy_cache .ruff_cache
