# Two commands matter: `make demo` and `make test`. Both build the virtual environment themselves
# from a fresh clone (only the package registry is needed): a bootstrap venv holds uv, uv builds
# .venv from the pinned lock file.
SHELL := /bin/bash
PYTHON ?= python3
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
export UV_COMPILE_BYTECODE := 1
export UV_LINK_MODE := copy
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: demo test lint bench dev standins clean lock

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==0.13.9

$(VENV)/.installed: pyproject.toml requirements.lock | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VENV)
	$(UV) pip sync --quiet --python $(PY) requirements.lock
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	touch $@

lock: | $(UV)
	$(UV) pip compile --quiet --python-version 3.11 --extra dev pyproject.toml -o requirements.lock

# The instance in DAGSTER_HOME gets the repo's dagster.yaml and the pool limits (dagster.yaml can
# only hold a default limit): one DuckDB writer at a time, a few API loads per target.
$(DAGSTER_HOME)/dagster.yaml: dagster.yaml | $(VENV)/.installed
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@
	$(VENV)/bin/dagster instance concurrency set duckdb_writer 1 >/dev/null
	$(VENV)/bin/dagster instance concurrency set edfi_api 3 >/dev/null
	$(VENV)/bin/dagster instance concurrency set linkit_api 2 >/dev/null

demo: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m staff_pipeline.demo $(DEMO_ARGS)

test: $(VENV)/.installed
	mkdir -p $(DAGSTER_HOME)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/dagster definitions validate -m staff_pipeline.definitions
	$(VENV)/bin/pytest -n 2 -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

bench: $(VENV)/.installed
	$(PY) -m bench $(BENCH_ARGS)

dev: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -w workspace.yaml

standins: $(VENV)/.installed
	$(PY) -m staff_pipeline.standins all

clean:
	rm -rf $(VENV) $(TOOLS) .dagster_home data/warehouse.duckdb* data/analytics.duckdb data/landing data/archive data/failed data/journal
