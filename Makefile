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

# The offline page of `dvc plots show` (vega, vega-lite and vega-embed inlined; downloaded once from the npm
# registry and SHA-512 checked; not committed): rebuilt only when its pins change, a current page is kept.
# Without the registry the install goes on (the pipeline does not need the page) and says so.
DVC_TEMPLATE := .dvc/plots/offline.html
$(DVC_TEMPLATE): src/vaebench/dev/dvc_template.py | $(VENV)/.installed
	-$(VENV)/bin/python -m vaebench dvc-template

install: $(VENV)/.installed $(DVC_TEMPLATE)

# A study other than the default: make run STUDY=studies/taming_table1.yaml (make repro likewise, with its generated
# DVC pipeline pipelines/<study>/dvc.yaml).
STUDY ?= params.yaml
PIPELINE := $(if $(filter params.yaml,$(STUDY)),dvc.yaml,pipelines/$(basename $(notdir $(STUDY)))/dvc.yaml)

run: install
	$(VENV)/bin/snakemake --cores all --configfile $(STUDY)

repro: install
	$(VENV)/bin/python -m vaebench validate --params $(STUDY) > /dev/null
	$(VENV)/bin/python -m vaebench dvc-yaml > /dev/null
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/dvc repro $(PIPELINE)

# The suite runs in TEST_WORKERS pytest-xdist processes, a test file in one of them (docs/development.md, Tests).
TEST_WORKERS ?= 2
test: install
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# The inner loop: everything but the tests that start Snakemake, DVC, MLflow or a browser (marked pipeline).
test-fast: install
	$(VENV)/bin/python -m pytest -m "not slow and not pipeline"

test-slow: install
	$(VENV)/bin/python -m pytest -m slow

# Our training loop against the sigma-VAE reference loop shape, and the L_k evaluation's cost (vaebench.dev.bench):
# writes reports/bench.json and prints a table. The defaults are the real benchmark (a GPU: minutes; a CPU:
# hours); shrink it with flags, e.g. make bench BENCH_ARGS="--epochs 1 --n-test 1000 --eval-images 20".
BENCH_ARGS ?=
bench: install
	$(VENV)/bin/python -m vaebench bench $(BENCH_ARGS)

# Full-page picture of the report as headless Chromium renders it (Debian: apt-get install chromium), the
# same view as tests/test_browser.py checks. --no-sandbox: Chromium refuses to start as root without it (it only
# opens our own local file).
CHROMIUM ?= chromium
SCREENSHOT ?= reports/screenshot.png
screenshot:
	@test -f reports/index.html || { echo "no reports/index.html: run 'make run' first" >&2; exit 1; }
	$(CHROMIUM) --headless --no-sandbox --disable-gpu --hide-scrollbars --log-level=3 --window-size=1400,3000 \
		--screenshot=$(SCREENSHOT) file://$(CURDIR)/reports/index.html \
		|| { echo "$(CHROMIUM) failed: rerun that command without --log-level=3 to see why" >&2; exit 1; }

.PHONY: install run repro test test-fast test-slow bench screenshot
