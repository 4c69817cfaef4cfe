# infershift: everything installs from the package registries by name, into two virtualenvs:
#   .venv         the Pulumi program, the simulator, the local stack, the benchmarks, the tests
#   .venv-picker  the endpoint picker (its gRPC stubs come from xds-protos, which overwrites
#                 files of packages Pulumi uses, so it never shares an environment with Pulumi)
PYTHON ?= python3
VENV := .venv
PICKER_VENV := .venv-picker
STACK ?= ack-canary
OUT ?= out/$(STACK)

.PHONY: setup demo test test-main test-picker render bench bench-quick clean

setup: $(VENV)/.installed $(PICKER_VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[local,test]'
	touch $@

$(PICKER_VENV)/.installed: picker/requirements.txt picker/requirements-test.txt
	test -x $(PICKER_VENV)/bin/python || $(PYTHON) -m venv $(PICKER_VENV)
	$(PICKER_VENV)/bin/pip install -q --upgrade pip
	$(PICKER_VENV)/bin/pip install -q -r picker/requirements.txt -r picker/requirements-test.txt
	touch $@

# The main job: the local stack (real Envoy, pickers, simulated model servers), traffic, a
# weight shift, the observed splits; stops everything and exits 0.
demo: setup
	$(VENV)/bin/python -m devstack demo

test: setup test-main test-picker

test-main:
	$(VENV)/bin/python -m pytest tests --ignore=tests/picker -q

test-picker:
	$(PICKER_VENV)/bin/python -m pytest tests/picker -q

# Offline render of a stack's resources (Pulumi mock runtime): make render STACK=ack-canary
render: $(VENV)/.installed
	$(VENV)/bin/python -m components.render --stack $(STACK) --out $(OUT)

bench-quick: setup
	$(VENV)/bin/python -m bench --quick

bench: setup
	$(VENV)/bin/python -m bench

clean:
	rm -rf $(VENV) $(PICKER_VENV) out .pytest_cache
