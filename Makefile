# The two commands of the README. Both install what they need first (uv, then the locked env);
# the tests also need Debian's chromium for the browser tests of the Dagster UI.
UV := python3 -m uv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: dev test uv chromium

uv:
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv==0.13.8"
	@$(UV) sync --locked --quiet

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser tests ..."; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

dev: uv
	$(UV) run --locked export-pipelines dev

test: uv chromium
	$(UV) run --locked pytest
