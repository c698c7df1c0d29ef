# Two entry points for a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Each creates .venv and installs what it needs on its own.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP_QUIET := --quiet --disable-pip-version-check

.PHONY: demo test test-slow bench install clean

$(VENV)/.installed-%: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_QUIET) -c constraints.txt -e '.[$*]' > $(VENV)/pip.log 2>&1 \
	  || { grep -v "is ignored: it is neither" $(VENV)/pip.log; exit 1; }
	touch $@

install: $(VENV)/.installed-test

demo: $(VENV)/.installed-train
	$(VENV)/bin/perceiver-io demo

test: $(VENV)/.installed-test
	$(PY) -m pytest

test-slow: $(VENV)/.installed-test
	$(PY) -m pytest -m slow

bench: $(VENV)/.installed-test
	$(PY) benchmarks/scaling.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
