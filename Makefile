# The two commands of the README. Both install what they need first (uv, then the locked env);
# the tests also need Debian's chromium (browser tests of the Dagster UI), curl and jq (the
# README's HTTP API example, replayed by a test).
UV := python3 -m uv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: dev test uv test-tools

uv:
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv==0.13.8"
	@$(UV) sync --locked --quiet
	@.venv/bin/python -m compileall -q export_pipelines   # the venv is compiled by uv (pyproject: compile-bytecode)

test-tools:
	@command -v chromium >/dev/null 2>&1 && command -v curl >/dev/null 2>&1 && command -v jq >/dev/null 2>&1 || { \
		echo "installing Debian's chromium, curl and jq for the tests ..."; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium curl jq >/dev/null; }

dev: uv
	$(UV) run --locked export-pipelines dev

test: uv test-tools
	$(UV) run --locked pytest
