# One command to set up and serve, one to set up and test (see README.md).
PYTHON ?= python3
VENV := .venv
LS_VENV := .venv-ls
LABEL_STUDIO_VERSION := 1.23.2

.PHONY: serve test lint bench reliability clean compose-tool browser-tool

$(VENV)/.serve-installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[all]"
	touch $@

$(VENV)/.test-installed: pyproject.toml $(VENV)/.serve-installed
	$(VENV)/bin/pip install --quiet -e ".[test]"
	touch $@

# Label Studio lives in its own venv: its pins differ from prelabel's.
$(LS_VENV)/.installed:
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install --quiet --upgrade pip
	$(LS_VENV)/bin/pip install --quiet "label-studio==$(LABEL_STUDIO_VERSION)"
	touch $@

serve: $(VENV)/.serve-installed
	$(VENV)/bin/prelabel serve

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# `docker compose config` lints docker/ without an engine; on Debian as root, install it when missing.
compose-tool:
	@docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || \
		{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		  (DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose >/dev/null || \
		   (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose >/dev/null)); } || \
		{ echo "install docker compose (e.g. apt-get install docker-compose) to lint docker/"; exit 1; }

# Headless Chromium opens the HTML review report in tests/e2e (the figures are checked on screen).
browser-tool:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		  (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null || \
		   (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null)); } || \
		{ echo "install Chromium (e.g. apt-get install chromium) to check the HTML report in a browser"; exit 1; }

test: lint compose-tool browser-tool $(LS_VENV)/.installed
	LABEL_STUDIO_BIN=$(CURDIR)/$(LS_VENV)/bin/label-studio PRELABEL_E2E=required HF_HUB_OFFLINE=1 \
		$(VENV)/bin/python -m pytest

bench: $(VENV)/.test-installed
	$(VENV)/bin/python -m benchmarks.run $(ROWS)

# Fuzzing, 64 concurrent clients, injected faults, SSRF attempts and huge images against `prelabel serve` on loopback.
reliability: $(VENV)/.test-installed
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m benchmarks.reliability $(if $(SEED),--seed $(SEED))

clean:
	rm -rf $(VENV) $(LS_VENV) .pytest_cache .ruff_cache .cache
