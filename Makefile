PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# What each list installs: the runtime list (`make run`), with the tests' and
# lint's tools (`make test`, `make test-fast`, `make lint`), the docs' tools
# (`make docs`).
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
DOCS_STAMP := $(VENV)/.installed-docs
# eslint for static/, pinned in package.json + package-lock.json (needs node/npm;
# only `make lint` and `make test` use it, `make run` does not).
NODE_STAMP := node_modules/.installed

.PHONY: run test test-fast lint format install install-dev install-docs migrate bench \
	clean docs messages fuzz

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# requirements-dev.txt includes the runtime list, so it stands for both.
$(DEV_STAMP): requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP) $(DEV_STAMP)

$(DOCS_STAMP): requirements-docs.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-docs.txt
	touch $(DOCS_STAMP)

install: $(STAMP)
install-dev: $(DEV_STAMP)
install-docs: $(DOCS_STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

# Development mode, asked for: with neither DEBUG nor SECRET_KEY set the
# settings refuse to start (a server must not fall back to a debug one), and
# the README's first request uses the failure simulation, off unless turned on.
DEVELOPMENT := DEBUG=1 ORDER_SIMULATION_ENABLED=1

migrate: install
	$(DEVELOPMENT) $(BIN)/python manage.py migrate --noinput
	$(DEVELOPMENT) $(BIN)/python manage.py roles

# The translations (locale/*/LC_MESSAGES/*.po) into the .mo files Django reads,
# in pure Python (Babel): no GNU gettext needed. Build output, not committed.
messages: install
	$(DEVELOPMENT) $(BIN)/python manage.py compilemessages --if-stale -v0

run: migrate messages
	$(DEVELOPMENT) $(BIN)/python manage.py collectstatic --noinput -v0
	$(DEVELOPMENT) $(BIN)/python manage.py serve

lint: install-dev $(NODE_STAMP)
	$(BIN)/ruff check orderproj orders tests
	$(BIN)/ruff format --check orderproj orders tests
	node_modules/.bin/eslint static

# The tests of the database writes (the moves, the claim, the steps, the
# dispatcher) run on PostgreSQL too, where the moves are single statements.
POSTGRES_TESTS := tests/test_transitions.py tests/test_properties.py \
	tests/test_steps.py tests/test_services_orders.py tests/test_dispatcher.py \
	tests/test_deliveries.py tests/test_batches.py tests/test_taken_along.py \
	tests/test_stream_reads.py tests/test_services_events.py tests/test_metrics.py \
	tests/test_failure_groups.py tests/test_transitions_sql.py \
	tests/test_failure_retention.py \
	tests/test_webhook_delivery.py tests/test_signals.py tests/test_admin_webhooks.py \
	tests/test_customer_texts.py tests/test_customer_mail.py

# Test processes (pytest-xdist): one per core unless told otherwise.
TEST_WORKERS ?= auto
# The full lane's first part: twice as many as cores. Its end-to-end tests
# mostly wait for the servers and workers they started (a two-worker run used
# under one core of two: docs/developers/testing.md).
FULL_LANE_WORKERS ?= $(shell echo $$(( $$(nproc) * 2 )))

# The fast lane: lint, then every test that starts no server, cluster or
# browser (all but tests/e2e/).
test-fast: lint messages
	$(BIN)/python -m pytest -q -m "not e2e" -n $(TEST_WORKERS)

# The full lane, which CI runs: every test, in two parts. First all but the
# tests marked `alone` (a time or memory bound), whole files handed out to
# FULL_LANE_WORKERS workers (a module's stack stays in one), longest first
# (tests/conftest.py); then the tests marked alone, one at a time, with nothing
# beside them. The slowest of each part are listed at its end.
test: lint messages
	$(BIN)/python -m pytest -n $(FULL_LANE_WORKERS) --dist loadfile --no-loadscope-reorder \
		-m "not alone" --durations=25
	@echo "== the tests marked alone, one at a time"
	$(BIN)/python -m pytest -m alone --durations=10
	@if [ -n "$$TEST_POSTGRES_URL" ]; then \
		echo "== the database tests again, on PostgreSQL ($$TEST_POSTGRES_URL)"; \
		DATABASE_URL="$$TEST_POSTGRES_URL" $(BIN)/python -m pytest -q -n $(TEST_WORKERS) \
			$(POSTGRES_TESTS); \
	else \
		echo "== skipped: the database tests on PostgreSQL (TEST_POSTGRES_URL is not set)"; \
	fi

# schemathesis over the API with every check and phase, anonymous and as staff,
# against a stack of its own (tests/fuzz.py): the full lane's run with a random
# seed and many more examples. FUZZ_SEED=<seed> replays a run.
FUZZ_EXAMPLES ?= 200
FUZZ_SEED ?=
fuzz: install-dev
	$(DEVELOPMENT) $(BIN)/python -m tests.fuzz --max-examples $(FUZZ_EXAMPLES) \
		$(if $(FUZZ_SEED),--seed $(FUZZ_SEED))

# The docs site (mkdocs.yml, docs/) into site/; --strict fails on a broken
# link. Needs only the docs tools, not the runtime packages.
docs: install-docs
	$(BIN)/mkdocs build --strict --site-dir site

format: install-dev
	$(BIN)/ruff format orderproj orders tests
	$(BIN)/ruff check --fix orderproj orders tests

clean:
	rm -rf $(VENV) staticfiles .pytest_cache node_modules
