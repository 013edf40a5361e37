# Two entry points (see README): `make run` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test setup clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: this exact CPU wheel lies on the machine; any other downloads GBs.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	@echo "The live webcam spotter (python -m realtime.cam) is not built yet (issue #5)."
	@echo "Running offline FGSL inference on the bundled sample video instead, with UNTRAINED weights:"
	@echo "the pipeline is real, the intervals it prints are meaningless until you train (python -m fgsl.train)."
	$(PY) -m fgsl.infer --preset realtime --allow-untrained --videos samples/pyfeat_single_face.mp4 --out runs/sample_pred.csv

test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf $(VENV) runs build *.egg-info
