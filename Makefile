# languini — the README's two commands are `make quickstart` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
LANGUINI := $(VENV)/bin/languini
# torch and triton are pinned through constraints.txt (see the README's install notes).
STAMP  := $(VENV)/.installed-stamp

.PHONY: install quickstart test test-gpu bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

quickstart: install
	$(LANGUINI) data prepare builtin:stdlib --out data/stdlib --force
	$(LANGUINI) train --family gpt --config nano --data data/stdlib --class cpu-2m --out runs/quickstart --force

test: install
	$(PY) -m pytest -q -p no:cacheprovider

test-gpu: install
	$(PY) -m pytest -q tests/gpu

bench: install
	$(PY) benchmarks/prepare.py
	$(PY) benchmarks/train_cpu.py

clean:
	rm -rf runs data build *.egg-info
