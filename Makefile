# Everything a fresh machine needs: `make run` serves the product, `make test` proves it.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

# A Python >= 3.12: $(PYTHON) if given, then python3.13/python3.12 on PATH, then pyenv's.
define find_python
for candidate in "$(PYTHON)" python3.13 python3.12 \
    $$(ls -d "$$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)"/versions/3.*/bin/python3 2>/dev/null | sort -rV); do \
  [ -n "$$candidate" ] || continue; \
  if "$$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
    command -v "$$candidate" || echo "$$candidate"; exit 0; fi; \
done; exit 1
endef

.PHONY: run test test-fast lint audit bench install lock migrate demo static run-distributed clean

$(BIN)/python:
	@py=$$( $(find_python) ) || { echo "error: Python 3.12+ is required. Install it or pass PYTHON=/path/to/python3.12" >&2; exit 1; }; \
	echo "Using $$py ($$($$py --version))"; \
	"$$py" -m venv $(VENV)

# Exactly the lock: every transitive dependency pinned, each file checked against its
# hash. Then requirements.txt must be satisfied with no index at all, so a pin
# changed there without `make lock` fails here instead of installing the old one.
$(VENV)/.installed: requirements.lock requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	@PIP_CONFIG_FILE=/dev/null $(BIN)/pip install --quiet --disable-pip-version-check \
	  --dry-run --no-index --no-deps -r requirements.txt >/dev/null 2>&1 || { \
	  echo "error: requirements.lock does not satisfy requirements.txt; run make lock" >&2; exit 1; }
	touch $@

install: $(VENV)/.installed

# Regenerates requirements.lock from requirements.txt, keeping every pin that still
# fits (LOCK_ARGS=--upgrade, or --upgrade-package NAME, to move them). pip-tools has
# its own virtualenv so the product's holds only what the lock names
# (docs/decisions/0009-dependency-lock.md).
LOCK_TOOLS := $(VENV)/lock-tools
lock: | $(BIN)/python
	@[ -x $(LOCK_TOOLS)/bin/pip-compile ] || { $(BIN)/python -m venv $(LOCK_TOOLS) && \
	  $(LOCK_TOOLS)/bin/pip install --quiet --disable-pip-version-check pip-tools==7.6.2; }
	$(LOCK_TOOLS)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links $(LOCK_ARGS) \
	  --output-file requirements.lock requirements.txt

migrate: install
	$(BIN)/python manage.py migrate --no-input

demo: migrate
	$(BIN)/python manage.py seed_demo

# Hashed, compressed copies and their manifest for WhiteNoise, whatever DEBUG is
# (roadmap_project/staticfiles.py); with DEBUG=0 the pages name them.
static: install
	$(BIN)/python manage.py collectstatic --no-input

# Without a key, the offline provider writes each answer over 8 s, so live content
# can be watched being written (OFFLINE_PROVIDER_DELAY_SECONDS=... to change it).
run: demo static
	$(BIN)/python manage.py recover_stale
	OFFLINE_PROVIDER_DELAY_SECONDS=$${OFFLINE_PROVIDER_DELAY_SECONDS:-8} \
	  $(BIN)/daphne -b $(HOST) -p $(PORT) roadmap_project.asgi:application

test: demo static
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# For development, under a minute: everything but tests/system/ (real daphne, Celery
# workers, the browser), the fuzz, the distributed pass's tests and the in-process
# stress tests. One -m: a second would replace the one in pyproject's addopts, not
# add to it. tests/system/ is not even collected, and Schemathesis' plugin (only its
# fuzz uses it) not loaded, nor Hypothesis' (it imports Hypothesis for its summary):
# importing them takes a couple of seconds. No collectstatic: only the system tests'
# servers read what it writes. Two workers (pytest-xdist), each with its own
# database: most tests wait on threads, sockets or timers, and the other worker runs
# meanwhile (PYTEST_ARGS=-n0 for one process). Bytecode is cached even where
# PYTHONDONTWRITEBYTECODE is set: else each of the three processes compiles the
# project and rewrites the tests' asserts anew, a second or more each.
test-fast: install
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest \
	  -m 'not system and not fuzz and not browser and not distributed and not stress' \
	  --ignore=tests/system -p no:schemathesis -p no:hypothesispytest -n 2 $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/python manage.py spectacular --validate --fail-on-warn --file /dev/null

# Known vulnerabilities of every installed distribution, from PyPI (why not
# pip-audit: .ci/audit_dependencies.py).
audit: install
	$(BIN)/python .ci/audit_dependencies.py

bench: migrate
	@command -v wrk >/dev/null || { echo "Installing wrk (Debian package)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	$(BIN)/python -m bench

run-distributed: install
	$(BIN)/python -m roadmap_project.distributed

clean:
	rm -rf $(VENV) var
