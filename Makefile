# Single entry point. On a fresh Debian 12 machine as root:
#   make demo   -> installs what is missing and runs nodereach on every lab scenario
#   make test   -> installs what is missing and runs the whole test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: deps system-deps venv demo test lint bench clean

deps: system-deps venv

system-deps:
	@bash scripts/install-system-deps.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip
	@$(BIN)/pip install -q -e '.[test,fast]'
	@touch $@

demo: deps
	@$(BIN)/nodereach demo

# pytest exits 5 when it collected no test: that is a broken run, not a green one.
test: deps
	@$(BIN)/ruff check src tests benchmarks
	@$(BIN)/mypy
	@$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest ran no test" >&2; exit 1; fi; exit $$rc

lint: venv
	@$(BIN)/ruff check src tests benchmarks
	@$(BIN)/mypy

bench: deps
	@$(BIN)/python benchmarks/run_all.py

clean:
	@-$(BIN)/nodereach lab down --all 2>/dev/null
	rm -rf $(VENV) build *.egg-info src/*.egg-info
