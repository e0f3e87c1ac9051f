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
# Real nodes (kubelet + containerd, needs root) `make cluster-up` starts beside the KWOK nodes.
REAL_NODES ?= 0
# Where hack/build-toolchain.sh caches the control-plane binaries (outside the repo).
export VIDEOQUEUE_CACHE ?= $(HOME)/.cache/videoqueue
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
PYTEST_ARGS ?=
# Extra arguments of a benchmark target, e.g. BENCH_ARGS="--modes static,oracle".
BENCH_ARGS ?=
LOCAL_KUBECONFIG := $(CURDIR)/$(CLUSTER_DIR)/kubeconfig
KUBECONFIG ?= $(LOCAL_KUBECONFIG)
KUBECTL = KUBECONFIG=$(KUBECONFIG) $(VIDEOQUEUE_CACHE)/bin/kubectl

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

.PHONY: toolchain-s3
toolchain-s3: ## The toolchain plus SeaweedFS, the S3 server of the s3:// tests.
	hack/build-toolchain.sh --s3

.PHONY: toolchain-peers
toolchain-peers: ## The toolchain plus the servers tests and benchmarks run beside it: SeaweedFS, Kueue.
	hack/build-toolchain.sh --peers

##@ Development

.PHONY: lint
lint: venv ## Run ruff (lint + format check), mypy --strict and the import-layer contracts.
	$(RUN)/ruff check operator tests worker-image benchmarks
	$(RUN)/ruff format --check operator tests worker-image benchmarks
	$(RUN)/mypy
# The contracts are in pyproject.toml; PYTHONPATH: the worker runtime is not installed.
	PYTHONPATH=operator:worker-image $(RUN)/lint-imports

.PHONY: fmt
fmt: venv ## Format and auto-fix the Python code.
	$(RUN)/ruff format operator tests worker-image benchmarks
	$(RUN)/ruff check --fix operator tests worker-image benchmarks

.PHONY: cluster-up
cluster-up: venv toolchain ## Start the local control plane with KWOK nodes (state in .dev/cluster; REAL_NODES=1 adds a real node).
	$(RUN)/python -m videoqueue.envtest up --state-dir $(CLUSTER_DIR) --real-nodes $(REAL_NODES)

.PHONY: cluster-down
cluster-down: ## Stop the local control plane and delete its state.
	@if [[ -x $(RUN)/python ]]; then $(RUN)/python -m videoqueue.envtest down --state-dir $(CLUSTER_DIR); fi

.PHONY: cluster-status
cluster-status: ## Tell whether the local control plane is running.
	$(RUN)/python -m videoqueue.envtest status --state-dir $(CLUSTER_DIR)

.PHONY: manifests
manifests: venv ## Generate crds/ and docs/api.md from the API models in videoqueue.api.
	$(RUN)/python -m videoqueue.api.crds --out crds
	$(RUN)/python -m videoqueue.api.docs --out docs/api.md

.PHONY: docs
docs: venv ## Generate the API reference docs/api.md from the API models.
	$(RUN)/python -m videoqueue.api.docs --out docs/api.md

.PHONY: install
install: ## Apply the CRDs (and kopf's peering CRD, for HA) to the cluster of KUBECONFIG (default: the local cluster).
	$(KUBECTL) apply --server-side --force-conflicts -f crds/ -f crds/peering/
	$(KUBECTL) wait --for=condition=Established --timeout=60s crd/videoqueues.videoqueue.dev crd/videojobs.videoqueue.dev

.PHONY: run
run: venv ## Run the operator in the foreground against KUBECONFIG (default: the local cluster).
	KUBECONFIG=$(KUBECONFIG) $(RUN)/python -m videoqueue

.PHONY: dev
# Always the local cluster, whatever KUBECONFIG the shell has: sample jobs never land elsewhere.
dev: export KUBECONFIG := $(LOCAL_KUBECONFIG)
# A real node needs root (kubelet, containerd, mounts); without it, or if it cannot start, the
# samples run on KWOK nodes with scripted results, and make dev says so.
dev: setup ## Local cluster with a real node + CRDs + sample jobs doing real work in .dev/media, then run the operator.
	@if [[ $$(id -u) != 0 ]]; then \
	  echo "make dev: not root, so no real node (kubelet and containerd need root): KWOK plays the pods (examples/local)"; \
	  $(MAKE) --no-print-directory cluster-up REAL_NODES=0; \
	elif ! $(MAKE) --no-print-directory cluster-up REAL_NODES=1; then \
	  echo "make dev: the real node did not start (logs: $(CLUSTER_DIR)/logs): KWOK plays the pods (examples/local)"; \
	  $(MAKE) --no-print-directory cluster-down cluster-up REAL_NODES=0; \
	fi
	$(MAKE) --no-print-directory install
	$(RUN)/python -m videoqueue.envtest.dev --kubeconfig $(KUBECONFIG) --media $(CURDIR)/.dev/media
	@echo "Watch the jobs from another shell: KUBECONFIG=$(KUBECONFIG) $(VIDEOQUEUE_CACHE)/bin/kubectl get vj -w"
	@echo "Stop with Ctrl-C, then: make cluster-down"
	$(MAKE) --no-print-directory run

##@ Test

.PHONY: test
test: setup lint check-manifests test-unit test-worker test-integration test-e2e ## Everything CI runs.

.PHONY: check-manifests
check-manifests: venv ## Fail when crds/ or docs/api.md differ from what the API models generate.
	$(RUN)/python -m videoqueue.api.crds --out crds --check
	$(RUN)/python -m videoqueue.api.docs --out docs/api.md --check

.PHONY: test-unit
test-unit: venv ## Pure tests, no cluster.
	$(RUN)/pytest tests/unit $(PYTEST_ARGS)

.PHONY: test-worker
test-worker: venv toolchain-s3 ## The worker with real ffmpeg, ffprobe, redis-server and SeaweedFS's S3 (no cluster).
	$(RUN)/pytest tests/worker $(PYTEST_ARGS)

.PHONY: test-integration
test-integration: venv toolchain-s3 ## Tests against the local control plane (one per session).
	$(RUN)/pytest tests/integration $(PYTEST_ARGS)

.PHONY: test-e2e
test-e2e: venv toolchain-s3 ## Real worker pods on a real node (kubelet + containerd; needs root).
	$(RUN)/pytest tests/e2e $(PYTEST_ARGS)

##@ Benchmarks

.PHONY: bench-scale
bench-scale: venv toolchain-peers ## Scale benchmark (N=5,000 against the honest limit, batch Jobs and Kueue; 20,000 and 100,000 pending): table + benchmarks/scale/results.json.
	$(RUN)/python -m benchmarks.scale.run

.PHONY: bench-scale-quick
bench-scale-quick: venv toolchain-peers ## Scale benchmark, quick mode (N=200 incl. Kueue, 2,000 pending): figures only, no timing assertion.
	$(RUN)/python -m benchmarks.scale.run --quick --out $(CURDIR)/.dev/bench-scale-quick.json

.PHONY: bench-pending
bench-pending: venv ## The operator's own cost per pending job, in one process (2,000, 5,000, 20,000 jobs; default and tuned GC; then memory per job): figures only.
	$(RUN)/python -m benchmarks.pending_cycles
	$(RUN)/python -m benchmarks.pending_cycles --jobs 3000 --gc tuned --memory

.PHONY: bench-chaos
bench-chaos: venv toolchain ## Chaos benchmark (2,000 jobs, 30 faults, then a fault-free baseline): table + benchmarks/chaos/results.json; fails on any lost, stuck or doubled job.
	$(RUN)/python -m benchmarks.chaos.run

.PHONY: bench-chaos-quick
bench-chaos-quick: venv toolchain ## Chaos benchmark, quick mode (200 jobs, 9 faults): fails only on a nonzero count or jobs not finishing.
	$(RUN)/python -m benchmarks.chaos.run --quick --out $(CURDIR)/.dev/bench-chaos-quick.json

.PHONY: bench-sizing
bench-sizing: venv toolchain ## Memory sizing benchmark on a real node (root): static, learned, oracle, 150 real ffmpeg jobs each: table + benchmarks/memory_sizing_results.json.
	$(RUN)/python -m benchmarks.memory_sizing $(BENCH_ARGS)

.PHONY: bench-sizing-quick
bench-sizing-quick: venv toolchain ## Memory sizing benchmark, quick mode (40 jobs a mode, warm-up 3): figures in .dev/bench-sizing-quick.json.
	$(RUN)/python -m benchmarks.memory_sizing --quick --out $(CURDIR)/.dev/bench-sizing-quick.json $(BENCH_ARGS)

.PHONY: images
images: venv ## Build the operator and worker images with the local Docker engine (never pulls).
	hack/docker-build-operator.sh videoqueue/operator:$(VERSION)
	hack/docker-build-worker.sh videoqueue/worker:$(VERSION)

.PHONY: clean
clean: cluster-down ## Remove local state (not the toolchain cache).
	rm -rf .dev .pytest_cache .mypy_cache .ruff_cache
