# Every target installs what it needs first, so each works on a fresh machine.
PY        ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
REAL_DATA ?= ../shared/data/isic2019-ham-train
# the cockpit's port (`make run PORT=8600`); another free one is picked, and printed, when taken
PORT      ?= 8501

.PHONY: install run demo-sample test test-slow test-browser test-scale browser services screenshots bench reference clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned to the wheels this machine keeps on disk (a CUDA build that also runs on CPU);
# then the project with its test extras.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# the demo: the shipped reference model over the shipped sample of real images (data/sample)
run: $(STAMP)
	$(BIN)/skinlesion demo --port $(PORT)

# rebuild data/sample (the reference's test split, original bytes, attribution) from REAL_DATA
demo-sample: $(STAMP)
	$(BIN)/python -m skinlesion.demo_sample --data $(REAL_DATA) --out data/sample

# the default (fast) suite, then the browser end-to-end test (slow, but part of CI)
test: $(STAMP) browser services
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest -m browser

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m "slow"

test-browser: $(STAMP) browser
	$(BIN)/python -m pytest -m browser

# end to end on several processes: PostgreSQL, three `skinlesion serve` behind haproxy, the monitor
# and the dashboard on one database; 32 clients x 20 requests, one replica killed mid-load
test-scale: $(STAMP) services
	$(BIN)/python -m pytest -m slow tests/e2e/test_scale.py

# PostgreSQL (the store tests run on both backends), promtool (deploy/'s rules) and haproxy
# (test-scale): the system's, installed with apt-get where missing and that is possible (root);
# otherwise the tests that need them are skipped and say why
services:
	@{ ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v promtool >/dev/null \
	   && command -v haproxy >/dev/null; } \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	       && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	          --no-install-recommends postgresql prometheus haproxy; } \
	  || echo "postgresql/promtool/haproxy missing and not installable here: their tests are skipped"

# headless Chromium and its driver (the system's): installed with apt-get where they are missing and
# that is possible (root); otherwise the browser test is skipped and says why
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	       && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	          chromium-driver; } \
	  || echo "chromium/chromedriver missing and not installable here: the browser test is skipped"

# a screenshot of each page over the embedded demo (built first if absent or stale) -> docs/screenshots
screenshots: $(STAMP) browser
	$(BIN)/skinlesion demo --build-only
	$(BIN)/python dashboard/screenshots.py --out docs/screenshots

bench: $(STAMP) services
	$(BIN)/python -m skinlesion.bench --out bench/results.json --real-data $(REAL_DATA)
	$(BIN)/python dashboard/bench.py --out bench/results.json
	$(BIN)/python -m skinlesion.store_bench --out bench/store.json

reference: $(STAMP)
	$(BIN)/python -m skinlesion.reference --data $(REAL_DATA) --models-dir models

clean:
	rm -rf $(VENV) .pytest_cache data/cache
