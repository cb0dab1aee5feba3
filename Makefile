PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# eslint for static/, pinned in package.json + package-lock.json (needs node/npm;
# only `make lint` and `make test` use it, `make run` does not).
NODE_STAMP := node_modules/.installed

.PHONY: run test lint format install migrate bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

migrate: install
	$(BIN)/python manage.py migrate --noinput

run: migrate
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python manage.py serve

lint: install $(NODE_STAMP)
	$(BIN)/ruff check orderproj orders tests
	$(BIN)/ruff format --check orderproj orders tests
	node_modules/.bin/eslint static

test: lint
	$(BIN)/python -m pytest

format: install
	$(BIN)/ruff format orderproj orders tests
	$(BIN)/ruff check --fix orderproj orders tests

clean:
	rm -rf $(VENV) staticfiles .pytest_cache node_modules
