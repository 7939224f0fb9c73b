# Every target that runs something first makes sure .venv exists and holds the
# project; scripts/setup.sh does nothing when that is already the case.
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= config.ini

.PHONY: setup test test-freeswitch lint run demo bench clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# The real-switch suite (tests/freeswitch) against the FreeSWITCH at ICALL_FREESWITCH
# (host:port[:password]; by default the lab switch, README "On a real FreeSWITCH"). It needs
# the switch to itself while it runs. Without the variable, `make test` skips it.
ICALL_FREESWITCH ?= 127.0.0.1:8021:ClueCon
test-freeswitch: setup
	ICALL_FREESWITCH=$(ICALL_FREESWITCH) $(PY) -m pytest -m freeswitch tests/freeswitch $(PYTEST_ARGS)

# ruff, then mypy on the packages (its settings are in pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check actors ivr storage service fakeswitch bench tests
	$(VENV)/bin/mypy actors ivr storage service fakeswitch

# The checkout's own database folder, as systemd's StateDirectory is the service's
# (with [database] url empty, icall uses $STATE_DIRECTORY, else /var/lib/icall).
run: setup
	STATE_DIRECTORY=$${STATE_DIRECTORY:-$(CURDIR)/state} $(VENV)/bin/icall run --config $(CONFIG)

demo: setup
	$(VENV)/bin/icall demo

clean:
	rm -rf $(VENV) build *.egg-info
