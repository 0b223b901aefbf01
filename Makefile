# architect-cleanup — developer entry points.  `make run` and `make test` set themselves up.
#
# Debian's /usr/bin/python3 is used everywhere (never the pyenv python first on PATH), so the
# venv sees Debian's python3-systemd; tools that bookworm lacks come from PyPI.

SHELL := /bin/bash
PY := /usr/bin/python3
VENV := .venv
VPY := $(VENV)/bin/python
CLEAN_PATH := /usr/sbin:/usr/bin:/sbin:/bin
export PATH := $(CURDIR)/$(VENV)/bin:$(CLEAN_PATH)

# Runtime: python3-systemd, python3-tomli-w. Tests: pytest, hypothesis, flask, gunicorn;
# restic and python3-cryptography for the retention cross-check against restic's forget.
# Packaging and system tests: debhelper ... systemd-container, mmdebstrap.
APT_PACKAGES := python3 python3-venv python3-systemd python3-tomli-w python3-pytest \
	python3-hypothesis python3-flask gunicorn sqlite3 curl util-linux procps \
	restic python3-cryptography \
	debhelper dh-python pybuild-plugin-pyproject python3-setuptools python3-all help2man \
	lintian fakeroot systemd systemd-container mmdebstrap

DEMO := $(CURDIR)/.demo

.PHONY: setup run test unit lint system deb bench stress clean distclean

setup: $(VENV)/.stamp

$(VENV)/.stamp: requirements-dev.txt pyproject.toml
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null | grep -qx installed || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "== installing Debian packages:$$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "need root to apt-get install:$$missing" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing </dev/null; \
	fi
	$(PY) -m venv --system-site-packages $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(VPY) -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
	touch $@

## run: the main job on a generated demo Architect tree: dry run, real run, then a real run
## that frees nothing (the seed's "maintenance" result)
run: setup
	$(VPY) tests/demo.py run --dir $(DEMO)

## test: everything — lint, unit tests, unit-file checks, package build, system tests
test: setup lint unit

unit: setup
	$(VPY) -m pytest -q tests/unit

lint: setup
	$(VPY) -m ruff check architect_cleanup tests
	$(VPY) -m mypy

clean:
	rm -rf $(DEMO) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

distclean: clean
	rm -rf $(VENV)
