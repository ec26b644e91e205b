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
# Two Debian packages, installed once and together (root, as in the CI image and the dev
# container): Chromium for the browser tests (never a Playwright download), and the compose
# client that checks docker-compose.yml (`make lint`, tests/test_compose.py; no engine needed).
	missing=""; \
	command -v chromium >/dev/null || missing="chromium"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	test -z "$$missing" || (apt-get update && apt-get install -y $$missing)
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
