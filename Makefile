# Fresh machine:  make run   (set up, then run the default stream)
#                 make test  (set up, then run the test suite)
# DATA_DIR points the run at local GLUE files (Hub layout or glue_data/); without it, $TASKSTREAM_DATA_DIR,
# else the Hugging Face Hub.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= $(TASKSTREAM_DATA_DIR)
RUN_DIR ?= runs/default
# one test process per core (pytest-xdist); the slowest tests are stolen by whichever worker is free
PYTEST_ARGS ?=

.PHONY: setup run test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,ray]"
	touch $@

run: setup
	$(VENV)/bin/taskstream run --run-dir $(RUN_DIR) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

test: setup
	$(VENV)/bin/lint-imports
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -n auto --dist worksteal $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
