# Two entry points (see README): `make run` installs and runs the default study, `make test` installs
# and runs the test suite. Both create/refresh .venv from the pinned requirements.lock.
PY ?= python3
VENV ?= .venv
UV := $(VENV)/bin/uv
export DVC_NO_ANALYTICS := 1

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q uv
	$(UV) pip install -q --compile-bytecode --python $(VENV)/bin/python -r requirements.lock -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/snakemake --cores all

repro: install
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/dvc repro

test: install
	$(VENV)/bin/python -m pytest

test-slow: install
	$(VENV)/bin/python -m pytest -m slow

.PHONY: install run repro test test-slow
