# The two commands of the README. Both install what they need first (uv, then the locked env).
UV := python3 -m uv

.PHONY: dev test uv

uv:
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv==0.13.8"
	@$(UV) sync --locked --quiet

dev: uv
	$(UV) run --locked export-pipelines dev

test: uv
	$(UV) run --locked pytest
