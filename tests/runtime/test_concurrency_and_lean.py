"""One embedder shared by many threads; the runtime imports no torch/transformers/onnx/export code."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from albert_onnx import AlbertEmbedder


def test_eight_threads_match_serial(tiny_folder, sts_texts):
    embedder = AlbertEmbedder.from_pretrained(tiny_folder, variant="int8", device="cpu", threads=1)
    chunks = [sts_texts[i * 12 : (i + 1) * 12] for i in range(16)]

    def work(index: int):
        chunk = chunks[index]
        if index % 3 == 0:
            return embedder.encode(chunk, batch_size=4)
        if index % 3 == 1:
            return np.concatenate([t.vectors for t in embedder.encode_tokens(chunk, batch_size=4)])
        return embedder.encode_ids(embedder.tokenize(chunk), batch_size=4)

    serial = [work(index) for index in range(len(chunks))]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(work, range(len(chunks))))
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)  # batch-invariant and deterministic: threads change nothing


def test_import_and_use_without_heavy_modules(tiny_folder):
    code = (
        "import sys, json\n"
        "from albert_onnx import AlbertEmbedder, arguments, pooling, session, tokenizer\n"
        f"e = AlbertEmbedder.from_pretrained({str(tiny_folder)!r})\n"
        "v = e.encode(['hello world'])\n"
        "e.encode_ids(e.tokenize(['hello world'])); e.encode_tokens('hello'); e.word_vectors(['hello'])\n"
        "print(json.dumps({'shape': v.shape, 'heavy': sorted(m for m in ('torch', 'transformers', 'optimum', 'onnx', 'albert_onnx_export', 'pandas') if m in sys.modules)}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"shape": [1, 128], "heavy": []}
