# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# llama-cpp-python compiles from source (about 7 minutes on 2 cores); pip caches the wheel afterwards.
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: demo test install clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)

# `auditor setup` extracts llama.cpp's GGUF converter from the llama-cpp-python sdist into .venv.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test]'
	$(BIN)/auditor setup
	touch $(STAMP)

# The tests also exercise the optional Ray executor against a local Ray cluster.
$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install -e '.[test,ray]'
	touch $(TEST_STAMP)

install: $(STAMP)

# The study scores the variants (real BBQ when found: $AUDITOR_BBQ_DIR, `auditor data fetch bbq`,
# ../shared/bbq; else the fixture sample) and, in its [measure] unit, measures every variant's size
# and latency per storage format (same Wanda calibration as the study); `bench sparse-kernels` times
# dense vs sparse matmul, and `report` redraws the report with them.
demo: $(STAMP)
	$(BIN)/auditor run studies/demo.toml
	$(BIN)/auditor bench sparse-kernels --out reports/demo
	$(BIN)/auditor report reports/demo

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
