# The OPD Book: the two commands of the README, and their shared set-up.
#   make book   set up, execute every notebook, build the HTML into _build/html
#   make test   set up, then ruff, unit tests, every notebook, Colab copies up to date
# Both start from nothing on a fresh clone (Python 3.10+ on PATH as python3).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
BOOK_DIR ?= .

.PHONY: setup book test lint colab clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -e ".[lab,book,test]"
	touch $(STAMP)

book: setup
	$(BIN)/jupyter-book build $(BOOK_DIR) --all --warningiserror --nitpick --keep-going --builder html
	@echo "The book is at $(abspath $(BOOK_DIR))/_build/html/index.html"

lint: setup
	$(BIN)/ruff check .

test: lint
	$(BIN)/python tools/make_colab.py --check
	$(BIN)/pytest --nbval-lax --nbval-current-env $(PYTEST_ARGS) tests notebooks

colab: setup
	$(BIN)/python tools/make_colab.py

clean:
	rm -rf _build $(VENV)
