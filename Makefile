# Obverse: `make run` (development server + worker) and `make test` (the CI gate) do all the set-up.
SHELL := /bin/bash
PY := .venv/bin/python
PIP := .venv/bin/pip
STAMP := .venv/.installed-$(shell sha256sum requirements.txt | cut -c1-16)
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install models db run test lint bench bench-scale stop-db

install: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install --quiet --upgrade "pip==25.3"
	$(PIP) install --quiet -r requirements.txt
	rm -f .venv/.installed-* && touch $(STAMP)

models: install
	$(PY) -m mlcore.setup_models

# The embedded PostgreSQL (var/pgdata) is only started when DATABASE_URL is unset.
db: install
	@if [ -z "$$DATABASE_URL" ]; then $(PY) -m config.embedded_db start >/dev/null && echo "embedded PostgreSQL: $$($(PY) -m config.embedded_db status)"; fi

run: models db
	$(PY) -m config.run

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

test: models db lint
	DJANGO_SETTINGS_MODULE=config.settings_test $(PY) manage.py check
	DJANGO_SETTINGS_MODULE=config.settings_test $(PY) manage.py makemigrations --check --dry-run
	$(PY) -m pytest

bench: models db
	$(PY) -m config.bench

bench-scale: models db
	$(PY) manage.py bench_scale --sizes 10000,100000,600000 --out var/bench/scale.json

stop-db: install
	$(PY) -m config.embedded_db stop
