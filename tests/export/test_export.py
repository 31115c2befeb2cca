"""The export step on the tiny model: fusion, dedup, quantization, gates, atomicity, errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from albert_onnx import AlbertEmbedder
from albert_onnx_export import ExportOptions, export_model
from albert_onnx_export import validate
from albert_onnx_export.errors import ExportError
from albert_onnx_export.load import load_albert
from tests.conftest import STS_DIR, run_cli


def test_fused_op_counts(tiny_folder):
    variants = json.loads((tiny_folder / "manifest.json").read_text())["variants"]
    assert variants["fused"]["fused_ops"]["Attention"] == 12
    assert variants["fused"]["fused_ops"]["SkipLayerNormalization"] == 24
    assert variants["fused"]["fused_ops"]["FastGelu"] == 12
    assert variants["int8"]["fused_ops"]["QAttention"] == 12
    assert variants["fp16"]["fused_ops"]["Attention"] == 12
    graph = onnx.load(str(tiny_folder / "model_fused.onnx")).graph
    assert sum(node.op_type == "Attention" for node in graph.node) == 12


@pytest.mark.parametrize("variant", ["fp32", "fused", "int8", "fp16"])
def test_every_weight_is_stored_once(tiny_folder, variant):
    model = onnx.load(str(tiny_folder / f"model_{variant}.onnx"))
    digests = [hashlib.sha256(onnx.numpy_helper.to_array(t).tobytes()).hexdigest()
               for t in model.graph.initializer if np.prod(t.dims) > 1024]
    assert len(digests) == len(set(digests)), f"{variant}: duplicated weights"


def test_int8_has_no_float_matmul_weights(tiny_folder):
    manifest = json.loads((tiny_folder / "manifest.json").read_text())
    dtypes = manifest["variants"]["int8"]["weight_dtypes"]
    assert set(dtypes) <= {"int8", "uint8"}, dtypes


def test_fp16_keeps_int64_inputs_and_float32_outputs(tiny_folder):
    graph = onnx.load(str(tiny_folder / "model_fp16.onnx")).graph
    assert {i.type.tensor_type.elem_type for i in graph.input} == {onnx.TensorProto.INT64}
    assert {o.type.tensor_type.elem_type for o in graph.output} == {onnx.TensorProto.FLOAT}


def test_gates_recorded_and_passed(tiny_folder):
    variants = json.loads((tiny_folder / "manifest.json").read_text())["variants"]
    assert variants["fp32"]["validation"]["max_abs_diff"] <= 1e-4
    assert variants["fused"]["validation"]["max_abs_diff"] <= 1e-4
    assert variants["int8"]["validation"]["min_cosine"] >= 0.995
    assert variants["fp16"]["validation"]["min_cosine"] >= 0.999
    assert all(v["validation"]["passed"] for v in variants.values())


def test_runtime_matches_pytorch(tiny_source, tiny_folder):
    """End to end: the runtime's mean-pooled vector and static word rows equal PyTorch's."""
    loaded = load_albert(str(tiny_source), random_weights=True, seed=1)
    embedder = AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32", device="cpu")
    from transformers import AlbertTokenizer

    slow = AlbertTokenizer.from_pretrained(str(tiny_source))
    texts = ["A man is playing a guitar.", "", "Héllo 1,000 [MASK] 😀"]
    with torch.inference_mode():
        for text, vector in zip(texts, embedder.encode(texts, normalize=False)):
            enc = slow(text, return_tensors="pt")
            expected = loaded.model(**enc).last_hidden_state[0].mean(0).numpy()
            np.testing.assert_allclose(vector, expected, atol=1e-4)
        ids = slow("guitar", add_special_tokens=False)["input_ids"]
        rows = loaded.model.embeddings.word_embeddings.weight[ids].mean(0).numpy()
    np.testing.assert_allclose(embedder.word_vectors(["guitar"])[0], rows, atol=1e-6)


def _options(source: Path, output: Path, **kw) -> ExportOptions:
    return ExportOptions(source=str(source), output=output, random_weights=True, validation_samples=8, **kw)


def test_existing_output_needs_overwrite(tiny_source, tiny_folder):
    before = (tiny_folder / "manifest.json").read_bytes()
    with pytest.raises(ExportError, match="already exists; pass --overwrite"):
        export_model(_options(tiny_source, tiny_folder), log=lambda _: None)
    assert (tiny_folder / "manifest.json").read_bytes() == before


def test_failed_export_leaves_nothing(tiny_source, tmp_path, monkeypatch):
    """A crash mid-export (here: after the graphs are written) leaves no target and no temp folder."""
    def boom(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(validate, "reference_batches", boom)
    with pytest.raises(KeyboardInterrupt):
        export_model(_options(tiny_source, tmp_path / "out", variants=("fp32",)), log=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_gate_failure_writes_nothing_unless_forced(tiny_source, tmp_path, monkeypatch):
    monkeypatch.setitem(validate.GATES, "int8", ("min_cosine", 1.01))
    with pytest.raises(ExportError, match=r"variant 'int8' failed its gate: min_cosine=0\.99\d+ \(limit 1\.01\); nothing was written"):
        export_model(_options(tiny_source, tmp_path / "out", variants=("fused", "int8")), log=lambda _: None)
    assert list(tmp_path.iterdir()) == []
    export_model(_options(tiny_source, tmp_path / "out", variants=("fused", "int8"), force=True), log=lambda _: None)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["variants"]["int8"]["validation"]["passed"] is False
    assert manifest["variants"]["int8"]["validation"]["forced"] is True
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json", "model_fused.onnx", "model_int8.onnx", "tokenizer.json"]


def test_overwrite_replaces_atomically(tiny_source, tmp_path):
    out = tmp_path / "out"
    export_model(_options(tiny_source, out, variants=("fp32",)), log=lambda _: None)
    export_model(_options(tiny_source, out, variants=("fused",), overwrite=True), log=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert set(json.loads((out / "manifest.json").read_text())["variants"]) == {"fused"}


def test_non_albert_is_refused_by_name(tmp_path):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ExportError, match="is a 'bert' checkpoint, not ALBERT"):
        export_model(_options(tmp_path / "bert", tmp_path / "out"), log=lambda _: None)


def test_missing_weights_suggest_random_weights(tiny_source, tmp_path):
    options = ExportOptions(source=str(tiny_source), output=tmp_path / "out")
    with pytest.raises(ExportError, match="--random-weights"):
        export_model(options, log=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_safetensors_checkpoint_loads(tiny_source, tmp_path):
    loaded = load_albert(str(tiny_source), random_weights=True, seed=3)
    checkpoint = tmp_path / "ckpt"
    loaded.model.save_pretrained(checkpoint, safe_serialization=True)
    again = load_albert(str(checkpoint))
    assert again.weights_file == "model.safetensors" and not again.random_weights
    assert torch.equal(again.model.embeddings.word_embeddings.weight, loaded.model.embeddings.word_embeddings.weight)


def test_bad_variant_name(tiny_source, tmp_path):
    with pytest.raises(ExportError, match="variants='int4'"):
        export_model(_options(tiny_source, tmp_path / "out", variants=("int4",)), log=lambda _: None)


def test_cli_says_random_weights_and_reports_errors(tiny_source, tmp_path):
    result = run_cli("export", str(tiny_source), "--random-weights", "--variants", "fp32", "--validation-samples", "4", "-o", str(tmp_path / "m"))
    assert "RANDOM weights" in result.stdout and "[7/7]" in result.stdout
    result = run_cli("export", str(tiny_source), "--random-weights", "-o", str(tmp_path / "m"), check=False)
    assert result.returncode == 2 and "already exists; pass --overwrite" in result.stderr


def test_shipped_size_configs_build_without_download():
    from albert_onnx_export.load import SHIPPED_SIZES

    assert {"albert-base-v2", "albert-large-v2", "albert-xlarge-v2", "albert-xxlarge-v2", "albert-base-v1"} <= set(SHIPPED_SIZES)
    with pytest.raises(ExportError, match="size name with no weights"):
        load_albert("albert-large-v2")


def test_validation_reads_stsb():
    texts = validate.read_texts(STS_DIR / "sts-dev.csv")
    assert len(texts) == 3000
    sample = validate.sample_texts(texts, 48)
    assert len(sample) == 50 and len({len(t) for t in sample}) > 30
