# One entry point for people and CI. `make demo` and `make test` work from a fresh clone: they create
# .venv and install everything they need into it (the Rust extension is built by maturin).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install system-deps demo test test-rust test-python lint bench clean

install: $(STAMP)

# The three distributions, editable, in one resolve: bsc-cache (root, Rust + `bsc`), langchain-bsc and
# llama-index-bsc (integrations/). Their `bsc-cache` requirement is satisfied by this checkout, never by an index.
$(STAMP): pyproject.toml Cargo.toml integrations/*/pyproject.toml $(wildcard rust/src/*.rs rust/src/*/*.rs)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "maturin>=1.9,<2"
	$(PY) -m pip install --quiet -e ".[dev]" -e "./integrations/langchain_bsc[demo]" -e ./integrations/llamaindex_bsc
	touch $(STAMP)

# Debian packages the tests need (servers, a headless browser): .ci/system-packages.txt.
system-deps:
	bash .ci/system_deps.sh

demo: install
	$(VENV)/bin/bsc demo

test: install system-deps test-rust test-python

test-rust:
	cargo test --no-default-features --release

test-python: install
	$(PY) -m pytest

lint: install
	cargo fmt --check
	cargo clippy --no-default-features --all-targets -- -D warnings
	cargo clippy --all-targets -- -D warnings
	$(VENV)/bin/ruff check core integrations tests benchmarks
	$(VENV)/bin/ruff format --check core integrations tests benchmarks
	$(VENV)/bin/mypy core/bsc integrations/langchain_bsc/langchain_bsc integrations/llamaindex_bsc/llamaindex_bsc

bench: install
	$(PY) benchmarks/bench_core.py
	$(PY) benchmarks/bench_scan.py
	$(PY) benchmarks/bench_namespaces.py
	$(PY) benchmarks/bench_text.py
	$(PY) benchmarks/bench_persistence.py
	$(PY) benchmarks/bench_embed.py --threads 1
	$(PY) benchmarks/quality.py

clean:
	rm -rf $(VENV) target
