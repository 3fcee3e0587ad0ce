# languini — the README's two commands are `make quickstart` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
LANGUINI := $(VENV)/bin/languini
# torch and triton are pinned through constraints.txt (see the README's install notes).
STAMP  := $(VENV)/.installed-stamp

.PHONY: install quickstart test test-gpu bench scaling-demo compare-selection clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

quickstart: install
	$(LANGUINI) data prepare builtin:stdlib --out data/stdlib --force
	$(LANGUINI) train --family gpt --config nano --data data/stdlib --class cpu-2m --out runs/quickstart --force

scaling-demo: install
	bash examples/scaling_demo.sh

compare-selection: install
	bash examples/compare_selection.sh

test: install
	$(PY) -m pytest -q -p no:cacheprovider

test-gpu: install
	$(PY) -m pytest -q tests/gpu

bench: install
	$(PY) benchmarks/prepare.py
	$(PY) benchmarks/train_cpu.py
	$(PY) benchmarks/throughput_repeatability.py
	$(PY) benchmarks/fit_speed.py
	$(PY) benchmarks/dedup.py
	$(PY) benchmarks/qlstm_kernel.py

clean:
	rm -rf runs data build *.egg-info
