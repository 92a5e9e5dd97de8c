# The two commands of the README:
#   make run    set up and run sbc in the foreground on etc/sbc.ini
#   make test   set up and run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= etc/sbc.ini

.PHONY: run test lint bench venv

$(BIN)/twistd: setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

venv: $(BIN)/twistd

var/tls/server.pem: | $(BIN)/twistd
	$(BIN)/python -m sbc.app.devcert var/tls

run: venv var/tls/server.pem
	exec $(BIN)/twistd --pidfile= -n sbc --config $(CONFIG)

test: venv var/tls/server.pem
	./scripts/install-test-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: venv
	$(BIN)/python bench/parser.py
