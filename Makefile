# Every target installs what it needs first, so each works on a fresh machine.
PY        ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
REAL_DATA ?= ../shared/data/isic2019-ham-train

.PHONY: install run test test-slow bench reference clean

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

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m "slow"

bench: $(STAMP)
	$(BIN)/python -m skinlesion.bench --out bench/results.json --real-data $(REAL_DATA)
	$(BIN)/python dashboard/bench.py --out bench/results.json

reference: $(STAMP)
	$(BIN)/python -m skinlesion.reference --data $(REAL_DATA) --models-dir models

clean:
	rm -rf $(VENV) .pytest_cache data/cache
