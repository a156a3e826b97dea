# The two set-up commands are `make run` and `make test`; everything else here serves them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test superuser api-key lint format bench-ingest bench-query bench-explore bench-queue bench-retention bench-statsd bench-otlp bench-influx bench-rollups bench-promql bench-storage bench-monitoring bench-roundtrips bench-profile loadtest loadtest-step soak clean

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
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) -m bench.ingest $(ARGS)

bench-query: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) -m bench.query $(ARGS)

bench-explore: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) -m bench.explore $(ARGS)

bench-queue: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) -m bench.async_ingest $(ARGS)

bench-retention: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) -m bench.retention $(ARGS)

bench-statsd: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) -m bench.statsd $(ARGS)

bench-otlp: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) -m bench.otlp $(ARGS)

bench-influx: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) -m bench.influx $(ARGS)

bench-rollups: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) -m bench.rollups $(ARGS)
## PromQL against Debian's prometheus on the same 500 series: 6 h and 30 d dashboards, p95 ratios.
bench-promql: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) -m bench.promql $(ARGS)

## Bytes per point before and after compaction, beside Debian's prometheus; codecs; latency.
bench-storage: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) -m bench.storage $(ARGS)

bench-monitoring: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) -m bench.monitoring $(ARGS)

bench-roundtrips: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) -m bench.roundtrips $(ARGS)

bench-profile: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) -m bench.profiles $(ARGS)

# Optional knobs of the load targets; empty means the script's default.
LOAD_OPTS = $(if $(DURATION),--duration $(DURATION)) $(if $(USERS),--users $(USERS)) $(if $(RATE),--rate $(RATE))

## Load test against gunicorn + a Celery worker, verdict on 10,000 writes/min at p95 < 200 ms: make loadtest [DURATION=2m USERS=60 RATE=11000].
loadtest: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) -m bench.loadtest $(LOAD_OPTS) $(ARGS)

## The highest write rate that keeps p95 under 200 ms: stages of 45 s, 20 more users (3 writes/s each) per stage.
loadtest-step: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) -m bench.loadtest --step $(ARGS)

## Soak test at 10,000 writes/min: errors, RSS growth, connections, queue drain, ledger: make soak [DURATION=30m].
soak: $(STAMP)
	$(PY) -m glowing_fiesta.devstack exec -- $(PY) -m bench.soak $(LOAD_OPTS) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .coverage htmlcov
