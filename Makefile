# `make test` builds .venv/ on first use (CPU torch from constraints.txt), then runs lint and the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint format demo bench reproduce clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and exact: an open range would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[all,dev]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest -q

# The main job end to end on emoji stickers built from packaged artwork (docs/demo.md): a few minutes on a CPU.
demo: $(STAMP)
	$(BIN)/mghft demo --out runs/demo

# The paper's two tables from a SER30K folder and a model server (scripts/reproduce.py; DRY=1: plan and estimate):
#   make reproduce SER30K=data/SER30K URL=http://localhost:8000/v1 BACKEND=vllm:Qwen/Qwen2.5-VL-7B-Instruct GPUS=4
reproduce: $(STAMP)
	$(BIN)/python scripts/reproduce.py --ser30k "$(SER30K)" --base-url "$(URL)" --backend "$(BACKEND)" \
		--nproc-per-node $(or $(GPUS),1) $(if $(DRY),--dry-run)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_model.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
