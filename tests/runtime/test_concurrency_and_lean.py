"""One embedder shared by many threads; the runtime imports no torch/transformers."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from albert_onnx import AlbertEmbedder


def test_eight_threads_match_serial(tiny_folder, sts_texts):
    embedder = AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32", device="cpu", threads=1)
    chunks = [sts_texts[i * 12 : (i + 1) * 12] for i in range(16)]
    serial = [embedder.encode(chunk, batch_size=4) for chunk in chunks]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda chunk: embedder.encode(chunk, batch_size=4), chunks))
    for a, b in zip(serial, parallel):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_import_and_encode_without_torch(tiny_folder):
    code = (
        "import sys, json\n"
        "from albert_onnx import AlbertEmbedder\n"
        f"e = AlbertEmbedder.from_pretrained({str(tiny_folder)!r})\n"
        "v = e.encode(['hello world'])\n"
        "print(json.dumps({'shape': v.shape, 'heavy': sorted(m for m in ('torch', 'transformers', 'optimum', 'onnx', 'albert_onnx_export') if m in sys.modules)}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"shape": [1, 128], "heavy": []}
