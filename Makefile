# Obverse: `make run` (development server + worker) and `make test` (the CI gate) do all the set-up.
SHELL := /bin/bash
PY := .venv/bin/python
PIP := .venv/bin/pip
STAMP := .venv/.installed-$(shell sha256sum requirements.txt | cut -c1-16)
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install models db run test lint bench bench-scale stop-db browser redis stress mirador fuzz-api

install: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install --quiet --upgrade "pip==25.3"
	$(PIP) install --quiet -r requirements.txt
	$(PIP) install --quiet --no-deps -r requirements-nodeps.txt
	rm -f .venv/.installed-* && touch $(STAMP)

# Mirador (the IIIF viewer on /specimens/<id>/viewer/), pinned by package-lock.json, installed from
# the npm registry and served from our static files, never from a CDN. Only its built bundle is used,
# so the peer dependencies it bundles are not installed, nor any package scripts run.
MIRADOR := static/vendor/mirador/mirador.min.js
mirador: $(MIRADOR)

$(MIRADOR): package.json package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --omit=peer --ignore-scripts --no-audit --no-fund --loglevel=error && \
		mkdir -p static/vendor/mirador && \
		cp node_modules/mirador/dist/mirador.min.js node_modules/mirador/LICENSE static/vendor/mirador/; \
	else \
		echo "npm not found: the IIIF viewer page needs Mirador; install Node.js 20 and npm, then run make mirador."; \
	fi

models: install
	$(PY) -m mlcore.setup_models

# The embedded PostgreSQL (var/pgdata) is only started when DATABASE_URL is unset.
db: install
	@if [ -z "$$DATABASE_URL" ]; then $(PY) -m config.embedded_db start >/dev/null && echo "embedded PostgreSQL: $$($(PY) -m config.embedded_db status)"; fi

run: models db mirador
	$(PY) -m config.run

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

# Debian's Chromium for the browser test (tests/identification/test_browser.py): installed with
# apt-get when it is missing and we are root, as in CI. Playwright only drives it, never downloads one.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Debian's chromium for the browser test..."; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "chromium not found and not root: the browser test will be skipped (and fail where CI=true);" \
			"install Debian's chromium (sudo apt-get install chromium) to run it."; \
	fi

# Debian's redis-server for the worker-through-Redis test (tests/config/test_redis_broker.py) and for
# OBVERSE_BROKER=redis: installed with apt-get when missing and we are root, as in CI.
redis:
	@if command -v redis-server >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Debian's redis-server for the broker test..."; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	else \
		echo "redis-server not found and not root: the Redis broker test will be skipped (and fail where CI=true)."; \
	fi

# Two pytest-xdist workers, each with its share of the cores (tests/conftest.py); `TEST_WORKERS=0`
# runs the suite in one process, `TEST_WORKERS=auto` one worker per core.
TEST_WORKERS ?= 2

test: models db lint browser redis mirador
	DJANGO_SETTINGS_MODULE=config.settings_test $(PY) manage.py check
	DJANGO_SETTINGS_MODULE=config.settings_test $(PY) manage.py makemigrations --check --dry-run
	$(PY) -m pytest -n $(TEST_WORKERS)

# The API's published contract, fuzzed: schemathesis (pinned) generates requests from /api/schema/ for every
# operation, POST included, and runs every check it has against a live test server with the fake pipeline
# and no rate limits, as a partner institution with a token (tests/config/test_api_contract.py).
# `make test` runs it with 8 examples per operation and a fixed seed (about 1,300 cases); this runs thousands.
# Uploads are generated as small real pictures (tests/config/schemathesis_hooks.py): what the schema's
# description asks for and JSON Schema cannot say. FUZZ_SEED=N explores further.
# One check is excluded, for one operation (tests/config/schemathesis.toml): negative_data_rejection on
# POST /api/v1/submissions/, because it is wrong there: its re-reading of a form as sent (where a number
# is text and an empty email is blank, both valid) fails on the photo parts, so valid uploads are reported
# as invalid ones accepted. Invalid uploads are still sent and must get a documented refusal; unit tests
# check each one. Form bodies that are not objects are not generated: no form can carry them.
FUZZ_EXAMPLES ?= 200
FUZZ_SEED ?= 20261207

fuzz-api: db
	OBVERSE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) OBVERSE_FUZZ_SEED=$(FUZZ_SEED) $(PY) -m pytest -n 0 -q -s tests/config/test_api_contract.py

bench: models db
	$(PY) -m bench

bench-scale: models db
	$(PY) manage.py bench_scale --sizes 10000,100000,600000 --out var/bench/scale.json

# Load: 200 submissions from 20 clients against gunicorn + a worker on a throw-away database
# (STRESS_ARGS="--submissions 20 --clients 4" for a quick run); figures in var/bench/stress.json.
stress: models db
	$(PY) -m bench.stress $(STRESS_ARGS)

stop-db: install
	$(PY) -m config.embedded_db stop
