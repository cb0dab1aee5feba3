PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# eslint for static/, pinned in package.json + package-lock.json (needs node/npm;
# only `make lint` and `make test` use it, `make run` does not).
NODE_STAMP := node_modules/.installed

.PHONY: run test lint format install migrate bench clean docs

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

# The tests of the database writes (the moves, the claim, the steps, the
# dispatcher) run on PostgreSQL too, where the moves are single statements.
POSTGRES_TESTS := tests/test_transitions.py tests/test_properties.py \
	tests/test_steps.py tests/test_services_orders.py tests/test_dispatcher.py \
	tests/test_deliveries.py tests/test_batches.py tests/test_taken_along.py \
	tests/test_stream_reads.py tests/test_services_events.py tests/test_metrics.py \
	tests/test_failure_groups.py

test: lint
	$(BIN)/python -m pytest
	@if [ -n "$$TEST_POSTGRES_URL" ]; then \
		echo "== the database tests again, on PostgreSQL ($$TEST_POSTGRES_URL)"; \
		DATABASE_URL="$$TEST_POSTGRES_URL" $(BIN)/python -m pytest -q $(POSTGRES_TESTS); \
	else \
		echo "== skipped: the database tests on PostgreSQL (TEST_POSTGRES_URL is not set)"; \
	fi

# The docs site (mkdocs.yml, docs/) into site/; --strict fails on a broken
# link. Needs only the docs tools, not the runtime packages.
docs: $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-docs.txt
	$(BIN)/mkdocs build --strict --site-dir site

format: install
	$(BIN)/ruff format orderproj orders tests
	$(BIN)/ruff check --fix orderproj orders tests

clean:
	rm -rf $(VENV) staticfiles .pytest_cache node_modules
