# infershift: everything installs from the package registries by name, into two virtualenvs:
#   .venv         the Pulumi program, the simulator, the local stack, the benchmarks, the tests
#   .venv-picker  the endpoint picker (its gRPC stubs come from xds-protos, which overwrites
#                 files of packages Pulumi uses, so it never shares an environment with Pulumi)
#   .venv-routers the routers the benchmarks compare against (SGLang's and vLLM's), kept apart
#                 so their dependencies never touch the project's
PYTHON ?= python3
VENV := .venv
PICKER_VENV := .venv-picker
ROUTERS_VENV := .venv-routers
STACK ?= ack-canary
OUT ?= out/$(STACK)

.PHONY: setup demo test test-main test-picker lint render bench bench-quick picker-bench realengine clean

setup: $(VENV)/.installed $(PICKER_VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[ack,gke,local,test,lint]'
	touch $@

$(PICKER_VENV)/.installed: infershift/picker/requirements.txt infershift/picker/requirements-test.txt
	test -x $(PICKER_VENV)/bin/python || $(PYTHON) -m venv $(PICKER_VENV)
	$(PICKER_VENV)/bin/pip install -q --upgrade pip
	$(PICKER_VENV)/bin/pip install -q -r infershift/picker/requirements.txt -r infershift/picker/requirements-test.txt
	touch $@

$(ROUTERS_VENV)/.installed: bench/requirements-routers.txt
	test -x $(ROUTERS_VENV)/bin/python || $(PYTHON) -m venv $(ROUTERS_VENV)
	$(ROUTERS_VENV)/bin/pip install -q -r bench/requirements-routers.txt
	touch $@

# The main job: the local stack (real Envoy, pickers, simulated model servers), traffic, a
# weight shift, the observed splits; stops everything and exits 0.
demo: setup
	$(VENV)/bin/python -m infershift.devstack demo

# Progressive rollouts on the local stack (infershift/rollout/README.md): a healthy base-model
# canary promoted step by step, a slowed one rolled back, then the mirror's shadow report
# (infershift/shadow/README.md); reports in out/rollout-demo.
.PHONY: rollout-demo
rollout-demo: setup
	$(VENV)/bin/python -m infershift.rollout.demo --out out/rollout-demo

test: setup test-main test-picker

test-main:
	$(VENV)/bin/python -m pytest tests --ignore=tests/picker -q

test-picker:
	$(PICKER_VENV)/bin/python -m pytest tests/picker -q

# The real engine the tests/realengine tests and the upstream-epp benchmark router use (issue 16),
# built from pinned Go modules (tools/realengine/*/go.mod) into ~/.cache/infershift/realengine and
# reused while the pins are unchanged: the control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kwok), the Pulumi CLI + pulumi-kubernetes provider, and
# the upstream endpoint picker. Needs Go (the Go module proxy on a fresh machine).
GO_PATH_DIR ?= /usr/local/go/bin
realengine:
	PATH="$$PATH:$(GO_PATH_DIR)" bash tools/realengine/k8s/build.sh
	PATH="$$PATH:$(GO_PATH_DIR)" bash tools/realengine/pulumi/build.sh
	PATH="$$PATH:$(GO_PATH_DIR)" bash tools/realengine/epp/build.sh

# ruff and mypy on the product package (config in pyproject.toml); the picker is type-checked
# against its own environment's packages.
lint: setup
	$(VENV)/bin/ruff check infershift
	$(VENV)/bin/mypy infershift --exclude 'infershift/picker/'
	$(VENV)/bin/mypy --python-executable $(PICKER_VENV)/bin/python infershift/picker infershift/contract.py

# Offline render of a stack's resources (Pulumi mock runtime): make render STACK=ack-canary
render: $(VENV)/.installed
	$(VENV)/bin/python -m infershift.components.render --stack $(STACK) --out $(OUT)

# Routing quality against other routers on simulated pools (bench/RESULTS.md). The quick run is
# CI's smoke run: a few minutes, figures printed, nothing asserted about speed.
bench-quick: setup $(ROUTERS_VENV)/.installed
	$(VENV)/bin/python -m bench --quick --out out/bench-quick

bench: setup $(ROUTERS_VENV)/.installed
	$(VENV)/bin/python -m bench

# The picker's own overhead: decision time, added latency, CPU per request (picker/BENCH.md).
picker-bench: setup
	$(PICKER_VENV)/bin/python -m bench.pickerbench.bench

clean:
	rm -rf $(VENV) $(PICKER_VENV) $(ROUTERS_VENV) out .pytest_cache
