# sslkit: `make train` runs the default experiment, `make test` the fast test suite.
# Both create .venv first when it is missing (Python >= 3.11 as `python3`, or PYTHON=...).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup train test test-all bench figures docs clean

setup: $(STAMP)

# Re-installs only when pyproject.toml changes; a second `make setup` is a no-op.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,docs]'
	touch $(STAMP)

# The default experiment (experiment=stepwise_digits, configs/train.yaml); extra Hydra overrides via ARGS="...".
train: setup
	$(BIN)/sslkit-train $(ARGS)

test: setup
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

test-all: setup
	$(BIN)/python -m pytest $(ARGS)

# The documentation site (mkdocs.yml, docs/) into site/, strictly: a broken link or anchor fails.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# Regenerates the figures committed under scripts/figures/ and shown in the README and docs/.
figures: setup
	$(BIN)/python scripts/make_figures.py

# Every speed benchmark in scripts/ (scripts/bench_*.py); each prints its figure last, and docs/benchmarks.md
# keeps the latest ones.
bench: setup
	for script in scripts/bench_*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf runs outputs site .pytest_cache
