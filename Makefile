# Two commands set everything up:
#   make run    the service on embedded defaults (SQLite, filesystem broker, ./var)
#   make test   the whole test suite against this machine's PostgreSQL and Redis
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[worker,dev]'
# The browser tests drive Debian's Chromium (never a Playwright download); installing
# the package needs root, as in the CI image and the dev container.
	command -v chromium || (apt-get update && apt-get install -y chromium)
# Debian's compose client checks docker-compose.yml (`make lint`, tests/test_compose.py);
# it needs no Docker engine.
	command -v docker-compose || (apt-get update && apt-get install -y docker-compose)
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/stillhouse dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	docker-compose -f docker-compose.yml config -q

test: $(STAMP) lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/train_overhead.py

clean:
	rm -rf $(VENV) var
