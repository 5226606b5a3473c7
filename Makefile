# The two set-up commands: `make run` and `make test`.
VENV   := .venv
PYTHON := $(VENV)/bin/python
PIP    := $(PYTHON) -m pip --disable-pip-version-check -q

.PHONY: run test install install-test clean

$(VENV)/bin/python:
	python3 -m venv $(VENV)

install: $(VENV)/bin/python
	$(PIP) install -e .

install-test: $(VENV)/bin/python
	$(PIP) install -e '.[testing]'

run: install
	mkdir -p var
	$(VENV)/bin/alembic -c development.ini upgrade head
	$(VENV)/bin/session-users development.ini seed-demo
	$(VENV)/bin/pserve development.ini

test: install-test
	$(VENV)/bin/ruff check src tests migrations
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) var .pytest_cache src/*.egg-info
