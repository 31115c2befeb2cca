# Two commands do everything on a fresh machine (Python 3.11, no model hub):
#   make demo   - create .venv, export ../shared/models/albert-base-v2 with random weights, embed a few sentences
#   make test   - create .venv and run the test suite, then the export tests again under transformers 5 in
#                 .venv-transformers5 (what .ci/run calls)
#   make test-gpu - on a CUDA 13 host: export the test folders with .venv, then run the CUDA tests in .venv-gpu ([gpu])
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SHARED ?= ../shared
MODEL  := build/albert-base-v2
GPU_VENV := .venv-gpu
TF5_VENV := .venv-transformers5
TEST_FOLDERS := build/test-folders

.PHONY: demo test test-gpu bench bench-quick clean

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

# The export's second tested set (transformers 5, which has no slow AlbertTokenizer): no benchmark peers, no Ray;
# matplotlib and psutil for the benchmark harness's test (a GPU host may have transformers 5 and no Optimum)
$(TF5_VENV)/.installed: pyproject.toml constraints-transformers5.txt
	$(PYTHON) -m venv $(TF5_VENV)
	$(TF5_VENV)/bin/python -m pip install -q --upgrade pip
	$(TF5_VENV)/bin/python -m pip install -q -c constraints-transformers5.txt -e ".[cpu,export,test]" matplotlib psutil
	touch $@

test: $(VENV)/.installed $(TF5_VENV)/.installed
	$(PY) -m pytest -q -p no:cacheprovider
	# the proof that the reference tokenizer equals 4.57's slow one ran above (it cannot run under transformers 5), and
	# so did the albert-base-v2 and v1 exports (-m base, sizes) and what an export leaves on disk (-m write_step, the
	# same under any transformers): here the tiny-model exports and the benchmark harness under transformers 5
	$(TF5_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/export tests/benchmarks/test_harness.py::test_harness_writes_table_and_plots \
		--ignore tests/export/test_reference_tokenizer.py \
		-m "not base and not sizes and not write_step"

# onnxruntime and onnxruntime-gpu install the same module: the CUDA tests get a venv of their own, without torch
$(GPU_VENV)/.installed: pyproject.toml constraints.txt constraints-gpu.txt
	$(PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/python -m pip install -q --upgrade pip
	$(GPU_VENV)/bin/python -m pip install -q -c constraints.txt -c constraints-gpu.txt -e ".[gpu,test]"
	touch $@

$(TEST_FOLDERS)/.done: $(VENV)/.installed
	$(PY) -m tests.export_test_folders $(TEST_FOLDERS)
	touch $@

test-gpu: $(GPU_VENV)/.installed $(TEST_FOLDERS)/.done
	ALBERT_ONNX_REQUIRE_CUDA=1 ALBERT_ONNX_TEST_FOLDERS=$(TEST_FOLDERS) $(GPU_VENV)/bin/python -m pytest -q -p no:cacheprovider -m cuda tests/runtime

bench: $(VENV)/.installed
	$(PY) -m benchmarks --out bench-results

bench-quick: $(VENV)/.installed
	$(PY) -m benchmarks --quick --out bench-results

clean:
	rm -rf build bench-results
