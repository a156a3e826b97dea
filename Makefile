# The two set-up commands are `make run` and `make test`; everything else here serves them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test superuser api-key lint format bench-ingest bench-query bench-explore bench-queue bench-retention bench-statsd bench-otlp bench-influx bench-rollups bench-monitoring bench-roundtrips clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

## Serve the API on http://127.0.0.1:8000 with a Celery worker, beat and StatsD on UDP 8125 (Ctrl-C stops all).
run: $(STAMP)
	$(PY) -m glowing_fiesta.devstack run

## Run the whole test suite (coverage must stay at or above 80%).
test: $(STAMP)
	$(PY) -m glowing_fiesta.devstack test -- $(ARGS)

## Create an admin login for /admin/ (on the embedded database when no DATABASE_URL is set).
superuser: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) manage.py createsuperuser

## Create an API key: make api-key NAME=my-service [ARGS="--scopes write --rate-limit 6000"].
api-key: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) manage.py create_api_key $(or $(NAME),local) $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench-ingest: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) bench/ingest.py $(ARGS)

bench-query: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) bench/query.py $(ARGS)

bench-explore: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) bench/explore.py $(ARGS)

bench-queue: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) bench/async_ingest.py $(ARGS)

bench-retention: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) bench/retention.py $(ARGS)

bench-statsd: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) bench/statsd.py $(ARGS)

bench-otlp: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) bench/otlp.py $(ARGS)

bench-influx: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) bench/influx.py $(ARGS)

bench-rollups: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) bench/rollups.py $(ARGS)
bench-monitoring: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) bench/monitoring.py $(ARGS)

bench-roundtrips: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) bench/roundtrips.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .coverage htmlcov
