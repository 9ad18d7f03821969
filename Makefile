# The OPD Book: the two commands of the README, and their shared set-up.
#   make book   set up, execute every notebook, build the HTML into _build/html
#   make test   set up, then ruff, unit tests, every notebook, Colab copies up to date, and the
#               browser test of _build/html (skipped when there is no build or no Chromium)
#   make site-check   the browser check of _build/html alone, with a per-page report
# Both start from nothing on a fresh clone (Python 3.10+ on PATH as python3; npm for MathJax).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# test files run in parallel, each file on one worker (a notebook's cells share one kernel)
TEST_WORKERS ?= 2
BOOK_DIR ?= .
# MathJax for the offline book (tools/offline_assets.py copies it into _static), pinned by the lock.
JS_DIR := tools/js
JS_STAMP := $(JS_DIR)/node_modules/.installed

.PHONY: setup js-assets book test lint colab site-check clean

setup: $(STAMP)

js-assets: $(JS_STAMP)

$(JS_STAMP): $(JS_DIR)/package.json $(JS_DIR)/package-lock.json
	npm ci --no-audit --no-fund --prefer-offline --prefix $(JS_DIR)
	touch $(JS_STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -e ".[lab,book,test]"
	touch $(STAMP)

# One retry: now and then nbclient waits for a message the kernel never sends (the kernel sits
# idle, see DESIGN.md's pitfalls); the cell timeout in _config.yml turns that wait into a
# failure, and a second build passes. A notebook that really fails fails twice.
JB_BUILD = $(BIN)/jupyter-book build $(BOOK_DIR) --all --warningiserror --nitpick --keep-going \
	--builder html

book: setup js-assets
	$(JB_BUILD) || { echo "book build failed; retrying once" >&2; $(JB_BUILD); }
	@echo "The book is at $(abspath $(BOOK_DIR))/_build/html/index.html"

lint: setup
	$(BIN)/ruff check .

test: lint
	$(BIN)/python tools/make_colab.py --check
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --nbval-lax --nbval-current-env $(PYTEST_ARGS) \
		tests notebooks

colab: setup
	$(BIN)/python tools/make_colab.py

site-check: setup
	$(BIN)/python tools/check_site.py _build/html --screenshots _build/screenshots

clean:
	rm -rf _build $(VENV) $(JS_DIR)/node_modules
