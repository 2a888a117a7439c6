# Two set-up commands (see README): `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
APT    := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)

.PHONY: run test bench soak fuzz chaos install install-test system-deps typecheck clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# Debian packages the test suite starts itself (it never uses a running service):
# redis-server (and redis-cli, which joins the test Redis Cluster), and Chromium for the real-browser tests (Playwright drives
# Debian's /usr/bin/chromium; it never downloads a browser of its own).
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v redis-cli >/dev/null || missing="$$missing redis-tools"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then $(APT) update -q && DEBIAN_FRONTEND=noninteractive $(APT) install -y -q $$missing; fi

run: install
	$(BIN)/presence-server serve --dev

test: install-test system-deps
	$(BIN)/python -m pytest -q
	$(BIN)/mypy

# Every scenario in bench/ (python -m bench.<name>) at its default size; each
# rewrites its own section of docs/benchmarks.md. Installs the bench extra
# (matplotlib, py-spy) and, from Debian's packages, Prosody (the storm's XMPP
# comparison) and redis-server (the signaling scenario's Redis engine) when
# missing; a scenario says in the doc what it could not run, and why.
bench: install
	@[ $(VENV)/.installed-bench -nt pyproject.toml ] || { $(BIN)/pip install -q -e '.[bench]' && touch $(VENV)/.installed-bench; }
	@missing=""; \
	command -v prosody >/dev/null || missing="$$missing prosody"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then $(APT) update -q && DEBIAN_FRONTEND=noninteractive $(APT) install -y -q $$missing \
		|| echo "could not install$$missing: the scenarios that need them say so in docs/benchmarks.md"; fi
	@set -e; for f in bench/[!_]*.py; do m=$$(basename $$f .py); [ $$m = soak ] && continue; echo "== bench.$$m"; $(BIN)/python -m bench.$$m; done

# The soak (docs/reliability.md, section 6): ten minutes of steady mixed traffic, memory and
# descriptors judged flat. Not in `make bench`'s loop: it alone would lengthen it by ten minutes.
soak: install
	@[ $(VENV)/.installed-bench -nt pyproject.toml ] || { $(BIN)/pip install -q -e '.[bench]' && touch $(VENV)/.installed-bench; }
	$(BIN)/python -m bench.soak --minutes $(or $(MINUTES),10)

# Fuzzing (docs/reliability.md, section 1): the Hypothesis suite of tests/fuzz once, then every
# coverage-guided atheris harness for FUZZ_SECONDS each; prints and records per parser the inputs
# tried, crashes and corpus size, and rewrites that section. Installs the fuzz extra (atheris).
FUZZ_SECONDS ?= 60
fuzz: install-test
	@[ $(VENV)/.installed-fuzz -nt pyproject.toml ] || { $(BIN)/pip install -q -e '.[fuzz]' && touch $(VENV)/.installed-fuzz; }
	$(BIN)/python -m tests.fuzz.run --seconds $(FUZZ_SECONDS)

# The fault suite at a moderate size (tests/chaos): CHAOS_ROUNDS rounds of every
# fault on real processes and a real Redis; writes the figures into the faults
# section of docs/reliability.md. `make test` runs one round and writes nothing.
CHAOS_ROUNDS ?= 5
chaos: install-test system-deps
	$(BIN)/python -m tests.chaos --rounds $(CHAOS_ROUNDS) --write

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache
