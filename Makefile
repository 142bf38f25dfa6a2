# The two commands of the README's quick start: `make demo` and `make test`.
# Each creates .venv at the repository root if missing and installs what it needs, so both work on a
# fresh machine. torch/torchvision are pinned here (they install from this workplace's local disk);
# pyproject.toml declares the looser ranges users get.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?= -n 2

.PHONY: demo test setup setup-test data clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# pip byte-compiles what it installs on one core (about a third of installing torch); compileall does the same on
# every core. Its exit status is ignored as pip ignores it: a few packages ship files for other Python versions.
COMPILE := $(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || true

$(VENV)/.setup-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile $(TORCH) -e .
	$(COMPILE)
	touch $@

$(VENV)/.setup-test: pyproject.toml $(VENV)/.setup-run
	$(BIN)/python -m pip install -q --no-compile -e '.[test]'
	$(COMPILE)
	touch $@

setup: $(VENV)/.setup-run data
setup-test: $(VENV)/.setup-test data

# Fashion-MNIST for `compscale train --data fashion-mnist` comes from the Debian package; without apt (or root)
# the rest still works and the command says how to install it.
data:
	@test -d /usr/share/datasets/fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) \
		|| echo "warning: could not install dataset-fashion-mnist (apt-get install dataset-fashion-mnist); fashion-mnist tests will be skipped"

demo: setup
	$(BIN)/compscale demo

test: setup-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis
