# The two commands of the README. Each sets up .venv by itself on first use (and
# again when requirements.txt or pyproject.toml change).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
# The first Python from 3.11 to 3.14 on the PATH (3.11 first: requirements.txt pins
# torch 2.13, built for 3.11 to 3.14); `make PYTHON=/path/to/python3` overrides.
PYTHON ?= $(shell for p in python3.11 python3.12 python3.13 python3.14 python3; do \
	command -v $$p >/dev/null 2>&1 && \
	$$p -c 'import sys; sys.exit(not (3, 11) <= sys.version_info < (3, 15))' 2>/dev/null && \
	{ echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready
# pip notes about this machine's local package mirrors are not build warnings. The
# braces keep pip's own exit status (pipefail): a failed install stops here.
QUIET_PIP := { grep -v "^WARNING: Location '.*' is ignored" || true; }

.PHONY: test book lab twins clean

$(READY): requirements.txt pyproject.toml
	@test -n "$(PYTHON)" && command -v $(PYTHON) >/dev/null || { \
		echo "No Python 3.11 to 3.14 found. Install one (Debian 12, Ubuntu 24.04:"; \
		echo "sudo apt install python3 python3-venv; older Ubuntu: the deadsnakes PPA;"; \
		echo "macOS: brew install python@3.12; Windows: python.org), or point to it:"; \
		echo "make PYTHON=/path/to/python3"; exit 1; }
	@echo "Using $(PYTHON) ($$($(PYTHON) --version))"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing the pinned environment into $(VENV) ..."
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt 2>&1 | $(QUIET_PIP)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e . 2>&1 | $(QUIET_PIP)
	@touch $(READY)

test: $(READY)  ## lint, types, unit and property tests, notebooks under the smoke profile
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest
	TINYFORMER_PROFILE=smoke $(BIN)/pytest --nbval-lax --nbval-current-env notebooks/

book: $(READY)  ## build the book, executing every changed chapter; any warning fails
	@# The execution cache keys on a chapter's code only: a new library, environment
	@# or profile makes every chapter run again.
	@key=$$(cat src/tinyformer/*.py requirements.txt | sha256sum | cut -c1-16)-$${TINYFORMER_PROFILE:-auto}; \
	if [ "$$(cat _build/.executed-with 2>/dev/null)" != "$$key" ]; then \
		rm -rf _build/.jupyter_cache; mkdir -p _build; echo "$$key" > _build/.executed-with; fi
	$(BIN)/jupyter-book build . --all -W -n --keep-going
	$(BIN)/pytest -q tests/book_html.py  # what a reader sees: figures, math, Colab buttons
	$(BIN)/pytest -q -rs -s tests/book_browser.py  # every changed page in headless Chromium; -rs: why skipped
	@echo "The book is at $(CURDIR)/_build/html/index.html"

lab: $(READY)  ## the chapters in JupyterLab, on .venv's kernel (installed on first use)
	@test -x $(BIN)/jupyter-lab || { echo "Installing JupyterLab into $(VENV) ..."; \
		$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		"jupyterlab>=4,<5" 2>&1 | $(QUIET_PIP); }
	$(BIN)/jupyter lab notebooks/

twins: $(READY)  ## regenerate each chapter's Colab twin from its .md source
	$(BIN)/jupytext --sync notebooks/[0-9]*.md

clean:
	rm -rf _build
