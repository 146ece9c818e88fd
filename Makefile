# wasm-gitops. Needs only Python 3.11+, make and kubectl on the machine: everything else goes into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Two stamps: rendering needs the runtime dependencies only (~190 MB); the tests, the linters, the
# benchmark and the local wasm build add the test extras (ziglang's clang alone is ~410 MB).
RUNTIME_STAMP := $(VENV)/.installed-runtime
STAMP  := $(VENV)/.installed
WG     := $(BIN)/wasm-gitops

.PHONY: all render validate check diff test verify wasm wasm-local bench lint kubernetes-schemas clean help

all: render

help:
	@echo "make render      render filters.yaml into base/, overlays/ and kustomization.yaml"
	@echo "make test        run the test suite (needs kubectl for kustomize builds)"
	@echo "make check       fail when the committed output differs from a fresh render"
	@echo "make verify      run the declared tests of filters, services and gateways through the rendered chains in Envoy"
	@echo "make wasm        build filters with a build: section in the Envoy SDK Docker image"
	@echo "make wasm-local  build the same filters without Docker (zig's clang from PyPI)"
	@echo "make bench       measure render, check and validate at mesh scale"
	@echo "make kubernetes-schemas  regenerate schemas/kubernetes-X.Y.json from the pinned kubernetes-validate"

$(RUNTIME_STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
		{ echo "wasm-gitops needs Python 3.11 or later (found: $$($(PYTHON) --version 2>&1))"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e .
	@touch $@

$(STAMP): $(RUNTIME_STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	@touch $@

render: $(RUNTIME_STAMP)
	$(WG) render

validate: $(RUNTIME_STAMP)
	$(WG) validate

check: $(RUNTIME_STAMP)
	$(WG) check

diff: $(RUNTIME_STAMP)
	$(WG) diff

verify: $(RUNTIME_STAMP)
	$(WG) verify

test: $(STAMP)
	$(BIN)/python -m pytest
	$(WG) verify

wasm: $(RUNTIME_STAMP)
	$(WG) build --docker

wasm-local: $(STAMP)
	$(WG) build --local

bench: $(STAMP)
	$(BIN)/python bench/bench.py --snapshot

lint: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt ruff mypy
	$(BIN)/ruff check renderer tests bench scripts
	$(BIN)/mypy renderer scripts/kubernetes-schemas.py scripts/yaml-speed.py

# The Kubernetes schema subset committed in schemas/, cut from the pinned kubernetes-validate release
# (installed into build/, not into .venv).
kubernetes-schemas: $(RUNTIME_STAMP)
	$(BIN)/python scripts/kubernetes-schemas.py --install build/kubernetes-validate

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
