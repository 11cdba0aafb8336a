# Quick start: `make demo` (both phases on Fashion-MNIST) and `make test`.
# Each target sets up what it needs: a venv in .venv with requirements.txt and
# requirements-test.txt, for the demo Debian's dataset-fashion-mnist package, and for the
# tests Debian's shellcheck
# (which checks launch/*), Debian's slurm-wlm and munge (a one-node SLURM cluster for the sweep
# tests); all through apt-get, where available.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
WORKDIR ?= workdirs/demo

.PHONY: demo smoke test test-all test-fast bench device-suite setup shellcheck slurm fashion-mnist clean-venv

demo: setup fashion-mnist
	$(PY) -m aikd_jax.main --config=configs/demo.py --workdir=$(WORKDIR)

smoke: setup fashion-mnist
	$(PY) -m aikd_jax.main --config=configs/demo.py:smoke --workdir=workdirs/smoke

# The default suite (what CI runs): every test not marked slow.
test: setup shellcheck
	$(PY) -m pytest -q -n 2 --dist loadgroup -m "not slow"

# Everything: also the slow tests (a real one-node SLURM cluster, pip installs, 4-device and
# multi-process runs, packed-seed exactness, the sweep of every method).
test-all: setup shellcheck slurm
	$(PY) -m pytest -q -n 2 --dist loadgroup

test-fast: test

bench: setup
	$(PY) benchmarks/step_time.py

device-suite: setup
	PYTHON=$(PY) benchmarks/device_suite.sh

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt -r requirements-test.txt
	touch $@

fashion-mnist:
	@if [ ! -f $(FASHION) ]; then \
	  if command -v apt-get >/dev/null; then \
	    $(SUDO) apt-get install -y dataset-fashion-mnist || \
	      ($(SUDO) apt-get update && $(SUDO) apt-get install -y dataset-fashion-mnist); \
	  else \
	    echo "Fashion-MNIST not found: install Debian's dataset-fashion-mnist, or put the four IDX files in a folder and pass --config.data.manual_dir"; exit 1; \
	  fi; \
	fi

shellcheck:
	@if ! command -v shellcheck >/dev/null; then \
	  if command -v apt-get >/dev/null; then \
	    $(SUDO) apt-get install -y shellcheck || \
	      ($(SUDO) apt-get update && $(SUDO) apt-get install -y shellcheck); \
	  else \
	    echo "shellcheck not installed and no apt-get: the launcher lint test will be skipped"; \
	  fi; \
	fi

slurm:
	@if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then \
	  if command -v apt-get >/dev/null; then \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm munge || \
	      ($(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm munge) || \
	      echo "apt-get could not install slurm-wlm/munge: the SLURM sweep tests will be skipped"; \
	  else \
	    echo "slurm-wlm/munge not installed and no apt-get: the SLURM sweep tests will be skipped"; \
	  fi; \
	fi

clean-venv:
	rm -rf $(VENV)
