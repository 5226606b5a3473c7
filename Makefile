# The two set-up commands: `make run` and `make test`.
VENV   := .venv
PYTHON := $(VENV)/bin/python
PIP    := $(PYTHON) -m pip --disable-pip-version-check -q

# What the tests need from Debian: a PostgreSQL server the suite starts itself,
# the Chromium that Playwright drives (never a browser download), wrk, the load
# generator of the benchmarks, and valgrind, which counts a request's instructions
# (the benchmarks' smoke runs are part of the suite), and nginx, the reverse proxy
# the proxy-header tests start in front of waitress.
DEBIAN_PACKAGES := postgresql chromium wrk valgrind nginx redis-server

.PHONY: run test bench load install install-test system-packages clean

$(VENV)/bin/python:
	python3 -m venv $(VENV)

install: $(VENV)/bin/python
	$(PIP) install -e . -e ./demo

install-test: $(VENV)/bin/python
	$(PIP) install -e '.[testing]' -e ./demo

run: install
	mkdir -p var
	$(VENV)/bin/alembic -c development.ini upgrade heads
	$(VENV)/bin/session-users development.ini seed-demo
	$(VENV)/bin/pserve development.ini

system-packages:
	@missing=""; for package in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q "ok installed" \
	    || missing="$$missing $$package"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

# axe-core, injected into pages by the accessibility tests (package-lock.json pins it).
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: install-test system-packages node_modules/.installed
	$(VENV)/bin/ruff check src demo tests migrations benchmarks
	$(VENV)/bin/pytest

# Long runs, kept out of `make test` (its smoke versions are in it). Starts its own PostgreSQL.
bench: install-test system-packages
	$(VENV)/bin/python -m benchmarks

# The full load run: 200 clients for 60 s on two app servers, two sweepers, one PostgreSQL.
load: install-test system-packages
	LOAD_SECONDS=60 LOAD_USERS=200 $(VENV)/bin/pytest tests/load -q -s

clean:
	rm -rf $(VENV) var .pytest_cache src/*.egg-info demo/*.egg-info node_modules artifacts build dist demo/build
