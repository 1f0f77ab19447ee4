# make demo   -- the whole pipeline on the embedded default backbone: a small SYNTHETIC dataset unless DATA=...
# make test   -- the test suite
# Both create the virtual environment first (pip takes torch/torchvision from this machine's disk).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?=
NAME := $(if $(DATA),$(notdir $(abspath $(DATA))),synthetic)
ROOT := $(if $(DATA),$(DATA),data/synthetic)
OUT := artifacts/$(NAME)

.PHONY: demo test venv clean-demo

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

demo: venv
	@if [ -z "$(DATA)" ] && [ ! -f data/synthetic/trainset/trainset_true.csv ]; then \
		echo "== no DATA given: generating a SYNTHETIC dataset in data/synthetic (not patient data)"; \
		$(PY) -m lymphocytosis.synthetic data/synthetic; fi
	@echo "== dataset: $(ROOT) $(if $(DATA),,(SYNTHETIC))"
	$(PY) extract.py --root $(ROOT) --out $(OUT)/embeddings.h5
	$(PY) model.py cv --embeddings $(OUT)/embeddings.h5 --json $(OUT)/cv.json
	$(PY) model.py fit --embeddings $(OUT)/embeddings.h5
	$(PY) model.py predict --embeddings $(OUT)/embeddings.h5
	$(PY) model.py report --embeddings $(OUT)/embeddings.h5
	@echo "== done$(if $(DATA),, on SYNTHETIC data): outputs in $(OUT)/ (report: $(OUT)/report/index.html)"

test: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

clean-demo:
	rm -rf data/synthetic artifacts/synthetic
