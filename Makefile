# voicegw — the README's quick start is `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK=1

.PHONY: run test bench deps sysdeps clean check-config

$(BIN)/python:
	$(PY) -m venv $(VENV)

# a C compiler builds the resampler's filter (voicegw/audio/_fir.c) and the caller frame's helpers
# (voicegw/_fastwire.c); without one, their Python references run
$(STAMP): pyproject.toml setup.py voicegw/audio/_fir.c voicegw/_fastwire.c | $(BIN)/python
	@command -v cc >/dev/null || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get install -y -q gcc libc6-dev >/dev/null) || echo "no C compiler: the resampler runs on numpy, caller frames on the Python references"
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $(STAMP)

deps: $(STAMP)

# system packages the tests use (PostgreSQL, Chromium, espeak-ng, sox)
sysdeps:
	bash deploy/sysdeps.sh

run: $(STAMP)
	VOICEGW_DEV_MODE=$${VOICEGW_DEV_MODE:-1} $(BIN)/voicegw serve --host $${VOICEGW_HOST:-127.0.0.1} --port $${VOICEGW_PORT:-8080}

test: $(STAMP) sysdeps
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
