# Slicehub build and test entry points. `make help` lists them.
#
# The venv is made from the system Python on purpose: a venv made from a per-user Python (pyenv in
# root's home, mode 700) cannot be run by the Unix users that single-user servers switch to.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

BASE_PYTHON ?= /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
PIP := $(PY) -m pip -q --disable-pip-version-check
NPM_FLAGS := --no-audit --no-fund --loglevel=error
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: help venv node_modules postgres slurm ldap chromium demo slurm-demo test lint format bench clean

help:
	@echo "make venv          $(VENV) from $(BASE_PYTHON), with slicehub[test] installed editable"
	@echo "make node_modules  configurable-http-proxy from package-lock.json"
	@echo "make postgres      Debian's PostgreSQL 15 installed, running, slicehub/slicehub_test ready"
	@echo "make slurm         Debian's Slurm (+ slurmdbd accounting) on this machine, GPU slices as GRES"
	@echo "make ldap          Debian's OpenLDAP (slapd) on 127.0.0.1:3389 with the sign-in tests' directory"
	@echo "make chromium      Debian's Chromium for the browser tests (never a downloaded browser)"
	@echo "make labextension  rebuild the JupyterLab extension (labextension/ -> slicehub/extensions/labextension)"
	@echo "make demo          a local hub on http://127.0.0.1:8000 (python -m slicehub.cli demo)"
	@echo "make slurm-demo    the hub on http://127.0.0.1:8000 with servers as jobs on that Slurm"
	@echo "make test          postgres, slurm, ldap, then ruff check + contracts + pytest (PYTEST_ARGS='-m \"not integration\"' etc.)"
	@echo "make contracts     the architecture contracts: which room may import which (import-linter)"
	@echo "make lint          ruff check + ruff format --check"
	@echo "make format        ruff format + ruff check --fix"
	@echo "make bench         every bench/*.py with the venv's python (BENCH_ARGS passed to each)"
	@echo "make clean         remove the venv, node_modules, caches and benchmark work dirs"

venv: $(VENV_STAMP)
	@:

# Re-installs only when its inputs are newer than the stamp; the stamp lives inside the venv,
# so deleting the venv forces a rebuild. The venv is also the single-user environment the demo's
# and the tests' servers run in: it gets the single-user image's pinned requirements (all but
# the `# gpu-only` lines) and the GPU kernelspec, so the image's recipe is what the tests run.
SINGLEUSER_REQS := images/singleuser/requirements.txt
KERNELSPEC := images/kernelspec/slicehub-gpu
SERVER_EXT_CONFIG := slicehub/extensions/jupyter_config/slicehub.json
LAB_OVERRIDES := slicehub/extensions/jupyter_config/overrides.json
LABEXT_BUILT := slicehub/extensions/labextension
LABEXT_DEST := $(VENV)/share/jupyter/labextensions/@slicehub/status
$(VENV_STAMP): pyproject.toml $(SINGLEUSER_REQS) $(KERNELSPEC)/kernel.json $(SERVER_EXT_CONFIG) \
		$(LAB_OVERRIDES) \
		$(LABEXT_BUILT)/package.json
	@test -x $(PY) || $(BASE_PYTHON) -m venv $(VENV)
	@echo "pip install -e '.[test]' into $(VENV)"
	@$(PIP) install -e '.[test]'
	@echo "pip install -r $(SINGLEUSER_REQS) (without its gpu-only lines)"
	@grep -v '# gpu-only' $(SINGLEUSER_REQS) > $(VENV)/singleuser-requirements.txt
	@$(PIP) install -r $(VENV)/singleuser-requirements.txt
	@$(VENV)/bin/jupyter kernelspec install $(KERNELSPEC) --sys-prefix >/dev/null 2>&1
	@# an editable install skips pyproject's data-files (a wheel has them): the server extension
	@install -D -m 644 $(SERVER_EXT_CONFIG) $(VENV)/etc/jupyter/jupyter_server_config.d/slicehub.json
	@install -D -m 644 $(LAB_OVERRIDES) $(VENV)/share/jupyter/lab/settings/overrides.json
	@# and the prebuilt JupyterLab extension (file names change with each build: start clean)
	@rm -rf $(LABEXT_DEST)
	@install -D -m 644 -t $(LABEXT_DEST) $(LABEXT_BUILT)/package.json $(LABEXT_BUILT)/install.json
	@install -D -m 644 -t $(LABEXT_DEST)/static $(LABEXT_BUILT)/static/*
	@# and the deployment's files, linked so that edits to hub_config/ count at once
	@mkdir -p $(VENV)/share/slicehub && ln -sfn $(CURDIR)/hub_config $(VENV)/share/slicehub/hub_config
	@touch $@

node_modules: $(NODE_STAMP)
	@:

$(NODE_STAMP): package.json $(wildcard package-lock.json)
	@if [ -f package-lock.json ]; then \
		echo "npm ci"; npm ci $(NPM_FLAGS); \
	else \
		echo "npm install (no package-lock.json yet)"; npm install $(NPM_FLAGS); \
	fi
	@test -x node_modules/.bin/configurable-http-proxy
	@touch $@

# Installs and starts PostgreSQL when missing (needs root; CI runs as root) and prints its URL.
# Outside CI a machine that cannot (exit 3: not root, no apt) goes on: the postgres tests then skip,
# saying why. In CI, or for any other failure, it stops here.
postgres:
	@status=0; scripts/postgres.sh || status=$$?; \
	if [ $$status -eq 3 ] && [ -z "$${CI:-}" ]; then \
		echo "postgres: not available here; the postgres tests will skip"; \
	else \
		exit $$status; \
	fi

# Installs, configures and starts the two-node test Slurm (scripts/slurm.sh), with accounting
# (slurmdbd + MariaDB: the reconcile tests need sacct). Exit 3 outside CI (not root, no apt): the
# slurm tests then skip, saying why.
slurm:
	@status=0; scripts/slurm.sh start --accounting >/dev/null || status=$$?; \
	if [ $$status -eq 3 ] && [ -z "$${CI:-}" ]; then \
		echo "slurm: not available here; the slurm tests will skip"; \
	else \
		exit $$status; \
	fi

# Installs, loads and starts the sign-in tests' OpenLDAP directory (scripts/ldap.sh: its own slapd
# on 127.0.0.1:3389, suffix dc=slicehub,dc=test, state in /var/lib/slicehub-ldap). Exit 3 outside
# CI (not root, no apt): the ldap tests then skip, saying why.
ldap:
	@status=0; scripts/ldap.sh start >/dev/null || status=$$?; \
	if [ $$status -eq 3 ] && [ -z "$${CI:-}" ]; then \
		echo "ldap: not available here; the ldap tests will skip"; \
	else \
		exit $$status; \
	fi

# The hub with hub_config/slurm-site.toml: every server a Slurm job on the test cluster. The demo
# projects' accounts are made first (accounting enforces associations). Its own data dir.
slurm-demo: export PATH := $(CURDIR)/node_modules/.bin:$(CURDIR)/$(VENV)/bin:$(PATH)
slurm-demo: venv node_modules slurm
	@for account in demo-lab vision-group; do \
		scripts/slurm.sh ensure-account $$account && scripts/slurm.sh ensure-user root $$account; \
	done
	eval "$$(scripts/slurm.sh env)"; \
	SLICEHUB_SITE=$(CURDIR)/hub_config/slurm-site.toml SLICEHUB_DATA_DIR=$(CURDIR)/.data/slurm \
		$(PY) -m slicehub.cli demo

demo: export PATH := $(CURDIR)/node_modules/.bin:$(CURDIR)/$(VENV)/bin:$(PATH)
demo: venv node_modules
	$(PY) -m slicehub.cli demo

# Installs Debian's Chromium for the browser tests when missing (never a downloaded browser). Exit
# 3 outside CI (not root, no apt): the browser tests then skip, saying why.
chromium:
	@status=0; scripts/chromium.sh >/dev/null || status=$$?; \
	if [ $$status -eq 3 ] && [ -z "$${CI:-}" ]; then \
		echo "chromium: not available here; the browser tests will skip"; \
	else \
		exit $$status; \
	fi

test: postgres slurm ldap chromium venv node_modules labextension-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-logo --no-cache
	$(PY) -m pytest $(PYTEST_ARGS)

# The architecture contracts in pyproject.toml's [tool.importlinter] (run from here: the private
# names contract type is tests/contracts.py). --no-cache: the graph takes 0.1 s, and no cache dir
# is left in the checkout.
.PHONY: contracts
contracts: venv
	$(VENV)/bin/lint-imports --no-logo --no-cache

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: venv node_modules
	@shopt -s nullglob; failed=""; for script in bench/[!_]*.py; do \
		echo "== $$script"; $(PY) "$$script" $(BENCH_ARGS) || failed="$$failed $$script"; \
	done; \
	if [ -n "$$failed" ]; then echo "failed:$$failed"; exit 1; fi

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache .hypothesis .bench-data build dist \
		.screenshots $(LABEXT_SRC)/node_modules $(LABEXT_SRC)/lib $(LABEXT_SRC)/build-test
	find . -path ./.git -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -prune \
		-exec rm -rf {} +

# The JupyterLab extension @slicehub/status (TypeScript in labextension/): the status-bar item,
# the session panel with Extend, the warning notifications. npm installs from its lock file, the
# pure module's tests run under node's test runner, then jupyter-builder (from the venv) writes
# the prebuilt extension to slicehub/extensions/labextension. That output is committed (~35 KB), so
# `pip install` needs no node: run this after changing labextension/ and commit the result.
LABEXT_SRC := labextension
LABEXT_STAMP := $(LABEXT_SRC)/node_modules/.installed

.PHONY: labextension
labextension: export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
labextension: venv $(LABEXT_STAMP)
	cd $(LABEXT_SRC) && npm test
	cd $(LABEXT_SRC) && npm run build
	@du -sh --apparent-size slicehub/extensions/labextension

# Its TypeScript unit tests (node's test runner), which `make test` runs too.
.PHONY: labextension-test
labextension-test: $(LABEXT_STAMP)
	cd $(LABEXT_SRC) && npm test --silent

$(LABEXT_STAMP): $(LABEXT_SRC)/package.json $(LABEXT_SRC)/package-lock.json
	cd $(LABEXT_SRC) && npm ci $(NPM_FLAGS)
	@touch $@
