# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint install clean docs

# pip takes torch's CPU wheel from this machine's disk (uv does not look there); uv installs the rest
# from constraints.txt in parallel (a minute faster than pip here); pip does it if uv cannot.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt uv torch
	$(BIN)/uv pip install --python $(BIN)/python -q -c constraints.txt -e '.[test]' \
	  || $(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH bash scripts/demo.sh

lint: $(STAMP)
	$(BIN)/ruff check gptx_cli tests benchmarks scripts
	$(BIN)/ruff format --check gptx_cli tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

# One intra-op thread per process: two xdist workers (and the ranks they launch) share 2 cores.
test: $(STAMP) lint
	OMP_NUM_THREADS=1 PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -n 2 --dist worksteal -q --durations=25

docs: $(STAMP)
	$(BIN)/python scripts/gen_config_reference.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
