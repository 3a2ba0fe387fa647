# Stave: `make run` starts the window, `make test` runs every test.
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: run test install install-test lint-imports bench clean help

help:
	@echo "make run    - set up .venv and start Stave"
	@echo "make test   - set up .venv with test extras and run the whole suite"
	@echo "make bench  - run the benchmarks in bench/ (prints figures)"

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Stave needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -U pip setuptools wheel

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -e .
	@touch $@

# Basic Pitch 0.4 declares TensorFlow and numpy<2 for Linux; its model ships in the
# package and runs on onnxruntime, so install it without its declared deps.
$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PIP) install -e '.[test,transcribe]'
	$(PIP) install --no-deps 'basic-pitch==0.4.0'
	@touch $(VENV)/.installed $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(BIN)/stave gui

lint-imports: install-test
	$(BIN)/lint-imports --no-cache

# pytest's exit 5 means it collected no tests: that is a failure here.
test: install-test lint-imports
	@QT_QPA_PLATFORM=offscreen $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc = 5 ]; then echo "pytest ran no tests: failing" >&2; exit 1; fi; exit $$rc

bench: install-test
	$(PY) bench/throughput.py
	$(PY) bench/scaling.py
	QT_QPA_PLATFORM=offscreen $(PY) bench/gui_responsiveness.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
