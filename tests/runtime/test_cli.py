"""The albert-onnx embed / info commands. Never imports torch."""

from __future__ import annotations

import json

import numpy as np

from albert_onnx import AlbertEmbedder
from tests.conftest import run_cli


def test_embed_txt_jsonl_and_stdin(tiny_folder, tmp_path, sts_texts):
    texts = sts_texts[:300]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in texts) + "\n")
    expected = AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32").encode(texts)
    for source in ("in.txt", "in.jsonl"):
        result = run_cli("embed", str(tiny_folder), "--input", str(tmp_path / source), "--output", str(tmp_path / "v.npy"), "--batch-size", "16", "--variant", "fp32")
        vectors = np.load(tmp_path / "v.npy")
        assert vectors.shape == (300, 128)
        np.testing.assert_allclose(vectors, expected, atol=1e-5)
        assert "300 vectors of dim 128" in result.stderr
        assert "text/s" in result.stderr or "it/s" in result.stderr  # tqdm bar for long inputs
    run_cli("embed", str(tiny_folder), "--input", "-", "--output", str(tmp_path / "s.npy"), "--variant", "fp32", "--pooling", "cls", stdin="one\ntwo\n")
    assert np.load(tmp_path / "s.npy").shape == (2, 128)


def test_embed_errors_are_clear(tiny_folder, tmp_path):
    result = run_cli("embed", str(tiny_folder), "--input", str(tmp_path / "none.txt"), "--output", str(tmp_path / "v.npy"), check=False)
    assert result.returncode == 2 and "does not exist" in result.stderr
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"body": "no text"}\n')
    result = run_cli("embed", str(tiny_folder), "--input", str(tmp_path / "bad.jsonl"), "--output", str(tmp_path / "v.npy"), check=False)
    assert result.returncode == 2 and "bad.jsonl:2" in result.stderr and "--text-field" in result.stderr
    assert not (tmp_path / "v.npy").exists()


def test_info(tiny_folder):
    out = run_cli("info", str(tiny_folder)).stdout
    assert "RANDOM WEIGHTS" in out and "CPUExecutionProvider" in out
    for name in ("fp32", "fused", "int8", "fp16"):
        assert f"  {name}" in out
    assert "Attention 12" in out and "QAttention 12" in out
