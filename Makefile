# Every target installs what it needs first, so each works on a fresh machine.
PY        ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
REAL_DATA ?= ../shared/data/isic2019-ham-train

.PHONY: install run test test-slow test-browser browser screenshots bench reference clean

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

run: $(STAMP)
	$(BIN)/skinlesion demo

# the default (fast) suite, then the browser end-to-end test (slow, but part of CI)
test: $(STAMP) browser
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest -m browser

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m "slow"

test-browser: $(STAMP) browser
	$(BIN)/python -m pytest -m browser

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

bench: $(STAMP)
	$(BIN)/python -m skinlesion.bench --out bench/results.json --real-data $(REAL_DATA)
	$(BIN)/python dashboard/bench.py --out bench/results.json

reference: $(STAMP)
	$(BIN)/python -m skinlesion.reference --data $(REAL_DATA) --models-dir models

clean:
	rm -rf $(VENV) .pytest_cache data/cache
