# Two commands do everything on a fresh machine (Python 3.11, no model hub):
#   make demo   - create .venv, export ../shared/models/albert-base-v2 with random weights, embed a few sentences
#   make test   - create .venv and run the test suite (what .ci/run calls)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SHARED ?= ../shared
MODEL  := build/albert-base-v2

.PHONY: demo test bench bench-quick clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# constraints pin the tested set; torch==2.13.0 resolves to the CPU wheel these machines carry
	$(PY) -m pip install -q -c constraints.txt -e ".[cpu,export,bench,ray,test]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/albert-onnx export $(SHARED)/models/albert-base-v2 --random-weights --overwrite \
		--validation-texts $(SHARED)/data/stsbenchmark/sts-dev.csv -o $(MODEL)
	$(VENV)/bin/albert-onnx info $(MODEL)
	printf 'A man is playing a guitar.\nA man plays the guitar.\nStocks fell sharply on Tuesday.\n' > build/demo.txt
	$(VENV)/bin/albert-onnx embed $(MODEL) --input build/demo.txt --output build/demo.npy
	$(PY) -c "import numpy as np; v = np.load('build/demo.npy'); print('vectors', v.shape); print('cosine matrix (RANDOM weights: not meaningful)'); print(np.round(v @ v.T, 3))"

test: $(VENV)/.installed
	$(PY) -m pytest -q -p no:cacheprovider

bench: $(VENV)/.installed
	$(PY) -m benchmarks --out bench-results

bench-quick: $(VENV)/.installed
	$(PY) -m benchmarks --quick --out bench-results

clean:
	rm -rf build bench-results
