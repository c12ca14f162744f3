# Two entry points for a fresh machine: `make serve` and `make test`.
# Both install what they need (Debian packages, a venv, the project) and are safe to re-run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := chromium flite sox espeak-ng gcc libc6-dev python3-gst-1.0 gir1.2-gst-plugins-bad-1.0 \
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-nice \
  openssl gstreamer1.0-plugins-ugly redis-server simple-whip-client
SANDBOX := $(shell command -v unshare >/dev/null && unshare -n true 2>/dev/null && echo "unshare -n")

.PHONY: serve test lint typecheck bench bench-quick bench-smoke system-deps clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# The voiceprint weights ship in resemblyzer's wheel; its code (and torch, 550 MB) is not used.
	$(BIN)/pip install --quiet --no-deps resemblyzer==0.1.4
	touch $(STAMP)

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

serve: $(STAMP)
	$(BIN)/finrtc serve

# The suite runs inside a network namespace with only loopback when the machine allows it, so no
# test can reach anything but 127.0.0.1 / ::1.
test: system-deps $(STAMP)
	$(BIN)/ruff check src tests hooks benchmarks
	$(BIN)/mypy
	$(SANDBOX) sh -c 'ip link set lo up 2>/dev/null; $(BIN)/pytest -q'
	$(BIN)/python -m benchmarks.run --smoke

lint: $(STAMP)
	$(BIN)/ruff check src tests hooks benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

bench: system-deps $(STAMP)
	$(BIN)/python -m benchmarks.run

bench-quick: system-deps $(STAMP)
	$(BIN)/python -m benchmarks.run --quick

clean:
	rm -rf $(VENV) finrtc-data .pytest_cache .mypy_cache .ruff_cache
