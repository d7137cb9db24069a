# The two commands a newcomer needs: `make run` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SRC    := $(wildcard vidstream tests bench)
# Tests use their own Redis database and a key prefix per run; they never flush anything else.
export VIDSTREAM_TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: run test test-fast test-thorough install system-deps redis check lint format typecheck imports bench bench-quick procs sample clean

run: install
	$(BIN)/vidstream dev

# One pytest worker per core: most tests wait on FFmpeg, Whisper or a browser, so two cores
# run the suite in about two thirds of the time (each test keeps its own Redis prefix and ports).
test: install redis check
	$(BIN)/pytest -n auto --dist worksteal --cov --cov-branch --cov-report=term:skip-covered

# The quick loop while you work: no test marked slow (Whisper or FFmpeg end to end, soaks,
# large files), no coverage, lint and types left to `make check`.
test-fast: install redis
	$(BIN)/pytest -n auto --dist worksteal -m "not slow" -p no:cov -q

# The protocol's model check at length: 1,000 new random sequences on every run instead of
# `make test`'s same 60 (about 90 s here). Run it after changing the protocol or its Lua.
test-thorough: install redis
	$(BIN)/pytest --hypothesis-profile=thorough tests/test_protocol_model.py

install: system-deps $(STAMP)

# uv (from PyPI, into the venv) installs the same packages as pip in about 10 s instead of
# 100 on two cores; pip does it if uv cannot be had. Then everything is compiled once, in
# parallel: where PYTHONDONTWRITEBYTECODE is set (as on CI machines here) Python never keeps
# what it compiles, and every process (a role, a CLI command, a Whisper server, a probe) paid
# 1.4 s of its 2.4 s start compiling its imports again; `make test` took 532 s that way.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv \
	  && UV_NATIVE_TLS=1 $(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]' \
	  || $(BIN)/pip install --quiet --disable-pip-version-check --no-compile -e '.[dev]'
	$(BIN)/python -m compileall -q -j0 $(VENV)/lib vidstream > /dev/null || true
	touch $(STAMP)

system-deps:
	@deploy/install-system-deps.sh

# Start a throwaway Redis for the tests when none answers on 127.0.0.1:6379.
redis:
	@if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then :; \
	else echo "starting redis-server on 127.0.0.1:6379 for the tests"; \
	  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
	    --dir /tmp --logfile /tmp/vidstream-test-redis.log; \
	  for i in $$(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done; \
	fi

check: lint typecheck imports

lint:
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)

format:
	$(BIN)/ruff format $(SRC)
	$(BIN)/ruff check --fix $(SRC)

typecheck:
	$(BIN)/mypy

# The layers and no import cycles, as pyproject.toml's [tool.importlinter] contracts say.
imports:
	$(BIN)/lint-imports

# Every benchmark, one after the other (about 70 min on 2 cores): tables printed, JSON written
# under bench/results/. See bench/README.md. `make bench-quick` runs each in its quick mode.
BENCHES := pipeline bus gateway memory notifier compose soak fanout
bench: install redis
	@failed=""; for b in $(BENCHES); do echo "== bench/$$b.py"; \
	  $(BIN)/python bench/$$b.py || failed="$$failed $$b"; done; \
	  if [ -n "$$failed" ]; then echo "benchmarks that stopped early:$$failed"; exit 1; fi

bench-quick: install redis
	@failed=""; for b in $(BENCHES); do echo "== bench/$$b.py --quick"; \
	  $(BIN)/python bench/$$b.py --quick || failed="$$failed $$b"; done; \
	  if [ -n "$$failed" ]; then echo "benchmarks that stopped early:$$failed"; exit 1; fi

# The Procfile's four roles as separate processes (scale one: make procs ARGS="-c transcribe=2").
procs: install
	PATH="$(CURDIR)/$(BIN):$$PATH" VIDSTREAM_AUTH=$${VIDSTREAM_AUTH:-off} $(BIN)/honcho start $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage

# A 10-second sample video with known speech, for trying vidstream out.
sample: system-deps
	@mkdir -p data
	espeak-ng -s 150 -w data/sample.wav "Hello and welcome to vidstream. These words come back as subtitles."
	ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=1280x720:rate=30 -i data/sample.wav \
	  -shortest -c:v libx264 -preset veryfast -pix_fmt yuv420p -c:a aac data/sample.mp4
	@echo "wrote data/sample.mp4"
