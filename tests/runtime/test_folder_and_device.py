"""Model-folder verification and device/provider choice. Never imports torch."""

from __future__ import annotations

import json
import shutil

import pytest

from albert_onnx import AlbertEmbedder, ModelFolderError
from albert_onnx.session import available_providers


@pytest.fixture()
def copy_of(tiny_folder, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(tiny_folder, target)
    return target


def test_manifest_records_what_the_runtime_needs(tiny_folder):
    manifest = json.loads((tiny_folder / "manifest.json").read_text())
    assert manifest["source"]["random_weights"] is True
    assert set(manifest["variants"]) == {"fp32", "fused", "int8", "fp16"}
    assert manifest["tokenizer"]["special_ids"] == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    assert "hidden_states" in manifest["outputs"]


def test_tampered_graph_is_refused_naming_the_file(copy_of):
    path = copy_of / "model_int8.onnx"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFolderError, match=r"model_int8\.onnx: sha256"):
        AlbertEmbedder.from_pretrained(copy_of)
    AlbertEmbedder.from_pretrained(copy_of, variant="fp32")  # the other files are still fine


def test_truncated_tokenizer_is_refused(copy_of):
    path = copy_of / "tokenizer.json"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelFolderError, match=r"tokenizer\.json: size"):
        AlbertEmbedder.from_pretrained(copy_of)


def test_missing_manifest_and_future_format(copy_of, tmp_path):
    with pytest.raises(ModelFolderError, match="has no manifest.json"):
        AlbertEmbedder.from_pretrained(tmp_path / "nowhere")
    manifest = json.loads((copy_of / "manifest.json").read_text())
    manifest["format_version"] = 99
    (copy_of / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match="format_version=99"):
        AlbertEmbedder.from_pretrained(copy_of)


def test_manifest_file_names_cannot_escape(copy_of):
    manifest = json.loads((copy_of / "manifest.json").read_text())
    manifest["variants"]["int8"]["file"] = "../outside.onnx"
    (copy_of / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match="only plain file names"):
        AlbertEmbedder.from_pretrained(copy_of, variant="int8")


def test_unknown_variant_and_wrong_device(tiny_folder):
    with pytest.raises(ModelFolderError, match="variant='int4'"):
        AlbertEmbedder.from_pretrained(tiny_folder, variant="int4")
    with pytest.raises(ValueError, match="variant='fp16' runs on"):
        AlbertEmbedder.from_pretrained(tiny_folder, variant="fp16", device="cpu")
    with pytest.raises(ValueError, match="device='tpu'"):
        AlbertEmbedder.from_pretrained(tiny_folder, device="tpu")
    with pytest.raises(ValueError, match="threads=0"):
        AlbertEmbedder.from_pretrained(tiny_folder, threads=0)
    with pytest.raises(ValueError, match="spin_wait='no'"):
        AlbertEmbedder.from_pretrained(tiny_folder, spin_wait="no")


@pytest.mark.parametrize("spin_wait, entry", [(True, "1"), (False, "0")])
def test_spin_wait_reaches_the_session(tiny_folder, spin_wait, entry):
    embedder = AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32", threads=2, spin_wait=spin_wait)
    options = embedder._runner.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == entry
    assert options.intra_op_num_threads == 2
    assert embedder.encode(["a b c"]).shape == (1, embedder.dim)


@pytest.mark.skipif("CUDAExecutionProvider" in available_providers(), reason="this machine has CUDA")
def test_cuda_without_provider_fails_loudly(tiny_folder):
    with pytest.raises(RuntimeError, match="install onnxruntime-gpu"):
        AlbertEmbedder.from_pretrained(tiny_folder, device="cuda")


@pytest.mark.skipif("CUDAExecutionProvider" not in available_providers(), reason="needs onnxruntime-gpu and a GPU")
def test_cuda_session_is_really_on_cuda(tiny_folder):
    embedder = AlbertEmbedder.from_pretrained(tiny_folder, device="cuda")
    assert (embedder.device, embedder.variant) == ("cuda", "fp16")
    assert embedder.providers[0] == "CUDAExecutionProvider"
    reference = AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32", device="cpu").encode(["a b c", "guitar"])
    assert (embedder.encode(["a b c", "guitar"]) * reference).sum(axis=1).min() > 0.999
