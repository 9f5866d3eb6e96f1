# The two commands of the README: `make demo` and `make test`. Both set up .venv on first use.
SHELL := /bin/bash
VENV := .venv
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test lint venv

$(VENV)/.ready: pyproject.toml .ci/constraints.txt .ci/bootstrap
	bash .ci/bootstrap
	touch $@

venv: $(VENV)/.ready

demo: $(VENV)/.ready
	$(VENV)/bin/tagger demo

test: $(VENV)/.ready
	bash .ci/services
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest

lint: $(VENV)/.ready
	$(VENV)/bin/ruff check .
