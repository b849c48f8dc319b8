# Two commands set everything up on a fresh Debian 12 machine, as root:
#   make demo   snapshot, back up, list and restore on a loop-mounted btrfs (embedded default)
#   make test   the whole test suite on real btrfs, gpg, moto and SeaweedFS
# Both install what they need (apt packages, a virtualenv at .venv) and are safe to re-run.

SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := .venv
VPY := $(VENV)/bin/python
APT_PACKAGES := btrfs-progs libbtrfsutil-dev gnupg pigz gzip zstd python3-venv python3-dev \
	gcc pkg-config util-linux debootstrap systemd-container faketime
PYTEST_ARGS ?=

.PHONY: all deps venv test demo lint typecheck fmt bench install clean

all: test

# apt only when something is missing (checked again when this file changes), so a second run
# costs nothing and needs no network.
deps: .stamp-apt
.stamp-apt: Makefile
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@touch $@

# The virtualenv is rebuilt when pyproject.toml changes.  btrfsutil from PyPI must match the
# system libbtrfsutil (see scripts/btrfsutil-requirement).
venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml scripts/btrfsutil-requirement | .stamp-apt
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip setuptools wheel
	$(VPY) -m pip install -q "$$(scripts/btrfsutil-requirement)" -e '.[test]'
	$(VPY) -c 'import btrfsutil' || { echo "btrfsutil does not import against the system libbtrfsutil; see scripts/btrfsutil-requirement" >&2; exit 1; }
	@touch $@

test: venv
	$(VPY) -m ruff check btrsendd tests bench scripts
	$(VPY) -m ruff format --check btrsendd tests bench scripts
	$(VPY) -m mypy
	$(VPY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VPY) -m ruff check btrsendd tests bench scripts
	$(VPY) -m ruff format --check btrsendd tests bench scripts
	$(VPY) -m mypy

fmt: venv
	$(VPY) -m ruff format btrsendd tests bench scripts
	$(VPY) -m ruff check --fix btrsendd tests bench scripts

demo: venv
	$(VPY) scripts/demo.py

bench: venv
	$(VPY) -m bench

# `make install` (as root): btrsendd in a virtualenv of its own, the command on PATH, the
# unit, and the example configuration (mode 0600, only if there is none yet: an existing
# configuration is never overwritten).  Each destination can be overridden, e.g. for a
# package build.  Then: edit the configuration, `btrsendd check-config`,
# `systemctl enable --now btrsendd` (see README.md, "Running as a service").
INSTALL_VENV ?= /opt/btrsendd
BINDIR ?= /usr/local/bin
UNITDIR ?= /etc/systemd/system
CONFDIR ?= /etc/btrsendd
DOCDIR ?= /usr/local/share/doc/btrsendd

install: .stamp-apt
	test -x $(INSTALL_VENV)/bin/python || $(PYTHON) -m venv $(INSTALL_VENV)
	$(INSTALL_VENV)/bin/python -m pip install -q --upgrade pip
	$(INSTALL_VENV)/bin/python -m pip install -q "$$(scripts/btrfsutil-requirement)" .
	$(INSTALL_VENV)/bin/python -c 'import btrfsutil' || { echo "btrfsutil does not import against the system libbtrfsutil; see scripts/btrfsutil-requirement" >&2; exit 1; }
	install -d $(BINDIR)
	ln -sfn $(INSTALL_VENV)/bin/btrsendd $(BINDIR)/btrsendd
	install -D -m 0644 systemd/btrsendd.service $(UNITDIR)/btrsendd.service
	install -D -m 0644 README.md $(DOCDIR)/README.md
	install -d -m 0700 $(CONFDIR)
	test -e $(CONFDIR)/btrsendd.toml || install -m 0600 config/btrsendd.toml $(CONFDIR)/btrsendd.toml
	if [ -d /run/systemd/system ] && [ "$(UNITDIR)" = /etc/systemd/system ]; then systemctl daemon-reload; fi
	@echo "installed; next: edit $(CONFDIR)/btrsendd.toml, run 'btrsendd check-config', then 'systemctl enable --now btrsendd'"

clean:
	rm -rf $(VENV) .stamp-apt .pytest_cache .mypy_cache .ruff_cache build *.egg-info
