# moelab — `make demo` and `make test` do all the set-up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Pinned CPU build of torch: an unpinned torch pulls several GB of CUDA wheels.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e ".[dev,ray,lm-eval,hf,logging,megatron]"
	@# Chromium renders the report page in the browser test (skipped with a message without it).
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium unavailable: browser test will skip"
	touch $(STAMP)

demo: setup
	$(BIN)/moelab demo --out runs/demo

test: setup
	$(BIN)/python -m pytest -q -x --timeout=900

clean:
	rm -rf $(VENV) runs
