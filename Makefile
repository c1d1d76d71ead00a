# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# llama-cpp-python compiles from source (3-7 minutes on 2 cores), with patches/*.patch applied (ggml's
# AMX kernels died with SIGILL on Intel CPUs with AMX: the patch says why), once per machine: the wheel
# is kept under the user's cache, in a folder named by the patches and your CMAKE_ARGS (e.g. CUDA's).
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
LLAMA_PIN := $(shell grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml)
LLAMA_PATCHES := $(sort $(wildcard patches/llama-cpp-python-*.patch))
WHEELS := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/auditor/wheels/$(shell cat $(LLAMA_PATCHES) \
	| { cat; printf '%s' '$(CMAKE_ARGS)'; } | sha1sum | cut -c1-12)
LLAMA_WHEEL := $(WHEELS)/$(subst ==,-,$(LLAMA_PIN)).built

.PHONY: demo test install clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)

# No file prerequisites: a clean clone's fresh timestamps must not rebuild it (the folder's name does that).
$(LLAMA_WHEEL): | $(BIN)/python
	rm -rf $(WHEELS)/src && mkdir -p $(WHEELS)/src
	$(BIN)/pip download --no-deps --no-binary llama-cpp-python -d $(WHEELS)/src '$(LLAMA_PIN)'
	tar xzf $(WHEELS)/src/llama_cpp_python-*.tar.gz -C $(WHEELS)/src
	for p in $(LLAMA_PATCHES); do patch -d $(WHEELS)/src/llama_cpp_python-*/ -p1 < $$p || exit 1; done
	$(BIN)/pip wheel --no-deps --no-cache-dir -w $(WHEELS) $(WHEELS)/src/llama_cpp_python-*/
	rm -rf $(WHEELS)/src
	touch $@

# `auditor setup` extracts llama.cpp's GGUF converter from the llama-cpp-python sdist into .venv.
$(STAMP): pyproject.toml $(LLAMA_WHEEL) | $(BIN)/python
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install --no-deps --force-reinstall --no-index --find-links $(WHEELS) '$(LLAMA_PIN)'
	$(BIN)/pip install --find-links $(WHEELS) -e '.[test]'
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
