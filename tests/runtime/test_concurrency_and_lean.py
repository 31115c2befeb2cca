"""One embedder shared by many threads; the runtime imports no torch/transformers/onnx/export code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


def _run_with_only(tmp_path: Path, modules: list[str], code: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a Python that has albert_onnx and only ``modules`` of this venv's packages (``-S`` leaves its
    site-packages out): an install without an extra."""
    import importlib

    import albert_onnx

    site = tmp_path / "site"
    site.mkdir()
    for name in modules:
        package = Path(importlib.import_module(name).__file__).parent
        for path in package.parent.glob(f"{package.name}*"):  # the package, its .libs and dist-info
            (site / path.name).symlink_to(path)
    (site / "albert_onnx").symlink_to(Path(albert_onnx.__file__).parent)
    return subprocess.run([sys.executable, "-S", "-c", code, *args], capture_output=True, text=True,
                          env={"PYTHONPATH": str(site), "PATH": os.environ["PATH"]})


def test_installed_without_onnxruntime_says_how_to_install_it(tmp_path):
    """`pip install albert-onnx` with neither [cpu] nor [gpu]: a traceback ending in "No module named 'onnxruntime'"
    before; now the CLI says so in one line and the API names the extra."""
    code = ("import sys\nfrom albert_onnx import cli\nstatus = cli.main(sys.argv[1:])\n"
            "try:\n    from albert_onnx import AlbertEmbedder\nexcept ModuleNotFoundError as error:\n    print(error)\nsys.exit(status)\n")
    result = _run_with_only(tmp_path, ["numpy", "tokenizers", "tqdm"], code, "info", str(tmp_path))
    fix = "albert-onnx needs ONNX Runtime, and none is installed: pip install 'albert-onnx[cpu]', or 'albert-onnx[gpu]' on a CUDA 13 host (never both)"
    assert (result.returncode, result.stderr, result.stdout) == (2, f"albert-onnx info: error: {fix}\n", f"{fix}\n")


def test_a_ray_job_without_the_ray_extra_says_how_to_install_it(tiny_folder, tmp_path):
    """[cpu] without [ray]: `embed --engine ray` was a traceback ending in "No module named 'pyarrow'"."""
    source = tmp_path / "corpus.jsonl"
    source.write_text('{"id": 1, "text": "a b"}\n')
    code = ("import sys\nfrom albert_onnx import cli, ray_job\nstatus = cli.main(sys.argv[1:])\n"
            "try:\n    ray_job.run_ray_job(ray_job.RayJobOptions(folder=sys.argv[2], input=sys.argv[5], output=sys.argv[7]))\n"
            "except ModuleNotFoundError as error:\n    print(error)\nsys.exit(status)\n")
    result = _run_with_only(tmp_path, ["numpy", "tokenizers", "tqdm", "onnxruntime"], code, "embed", str(tiny_folder), "--engine", "ray",
                            "--input", str(source), "--output", str(tmp_path / "out"))
    fix = "the Ray job needs the ray extra, and ray and pyarrow are not installed: pip install 'albert-onnx[cpu,ray]'"
    assert (result.returncode, result.stderr, result.stdout) == (2, f"albert-onnx embed: error: {fix}\n", f"{fix}\n")
    assert not (tmp_path / "out").exists()
