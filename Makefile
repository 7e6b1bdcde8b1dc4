# jumper-proxy: set-up, demo, tests and benchmarks. Everything runs from a virtual environment
# under the checkout (.venv), created on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install scorep demo test lint typecheck bench bench-peers clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Real Score-P for the tests and benchmarks: from ../shared/scorep when /opt/scorep lacks it,
# and the Score-P Python bindings built into .venv. Without ../shared and /opt/scorep the
# real-Score-P tests are skipped and the test summary says why.
scorep: $(STAMP)
	bash .ci/install-scorep.sh $(BIN)/python

demo: $(STAMP)
	$(BIN)/jumper-proxy run examples/demo.ipynb -o examples/demo.out.ipynb

test: lint typecheck scorep
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check jumper_proxy tests benchmarks
	$(BIN)/ruff format --check jumper_proxy tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy


bench: $(STAMP) scorep
	cd benchmarks && ../$(BIN)/python run.py

# optional, about fifteen minutes: the peers from PyPI, each in a venv of its own under benchmarks/
# (JUmPER 1.1.1, jumper-extension 0.4.1, jumper-wrapper-kernel 0.1.2)
bench-peers: $(STAMP)
	cd benchmarks && ../$(BIN)/python bench_peers.py

clean:
	rm -rf $(VENV) build *.egg-info examples/demo.out.ipynb benchmarks/results
