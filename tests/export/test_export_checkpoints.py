"""Checkpoints that do not fit the export: config.json fields transformers acts on, weights the config has no place for,
weights files and vocabularies of other kinds, and paths that are links to nowhere.

Each case was found by an attack (2026-12-08) as a traceback, a message naming no file or field, or (the extra layer
groups) an export that passed every gate with the wrong vectors; each is now one ExportError line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file
from sentencepiece import sentencepiece_model_pb2
from transformers import AlbertConfig, AlbertForSequenceClassification, AlbertModel
from transformers.activations import ACT2FN

from albert_onnx_export import ExportOptions, export_model, to_onnx
from albert_onnx_export.errors import ExportError
from albert_onnx_export.load import TRANSFORMERS_MAJOR, UNEXPORTABLE_ACTIVATIONS, load_albert, read_config
from albert_onnx_export.locate import locate_model
from albert_onnx_export.tokenizer import load_reference_tokenizer
from albert_onnx_export.write import check_output
from tests.conftest import BASE_SOURCE, make_tiny_source, need_shared, run_cli

# Smaller than conftest's TINY_CONFIG (12 layers of 128): these tests build, save and load several models.
SMALL = {"embedding_size": 16, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}


def _source(folder: Path, **changes: object) -> Path:
    """A checkpoint folder with the real vocabulary and a small config (``changes`` on top; None deletes a field)."""
    need_shared()
    make_tiny_source(folder)
    config = {**json.loads((folder / "config.json").read_text()), **SMALL, **changes}
    (folder / "config.json").write_text(json.dumps({key: value for key, value in config.items() if value is not None}))
    return folder


def _config_error(folder: Path) -> str:
    with pytest.raises(ExportError) as caught:
        read_config(str(folder), None)
    return str(caught.value)


def _load_error(folder: Path) -> str:
    with pytest.raises(ExportError) as caught:
        load_albert(str(folder))
    return str(caught.value)


def _saved(folder: Path, model: torch.nn.Module, **config_changes: object) -> Path:
    """``model``'s weights as model.safetensors in a checkpoint folder whose config.json is the small one (plus changes)."""
    model.save_pretrained(folder, safe_serialization=True)
    return _source(folder, **config_changes)


def _small_model(**changes: object) -> AlbertModel:
    """A seeded AlbertModel of albert-base-v2's config made small (plus ``changes``)."""
    need_shared()
    torch.manual_seed(0)
    return AlbertModel(AlbertConfig(**{**json.loads((BASE_SOURCE / "config.json").read_text()), **SMALL, **changes}))


# -- weights the config.json has no place for ---------------------------------------------------------------------------

@pytest.mark.parametrize("saved_with, extra", [
    ("num_hidden_groups", "encoder.albert_layer_groups.1.albert_layers.0.attention.LayerNorm"),
    ("inner_group_num", "encoder.albert_layer_groups.0.albert_layers.1.attention.LayerNorm"),
])
def test_weights_of_layers_the_config_lacks_are_refused(tmp_path, saved_with, extra):
    """Saved with 2 groups (or inner layers), read with a config.json saying 1: transformers dropped the second's 16
    tensors as unexpected, and the export of the first alone passed every gate: silently wrong vectors."""
    folder = _saved(tmp_path / "ckpt", _small_model(**{saved_with: 2}), **{saved_with: 1})
    assert _load_error(folder) == (
        f"{folder / 'model.safetensors'}: holds 16 tensors of the ALBERT model that config.json has no place for (e.g. {extra}.bias, "
        f"{extra}.weight), which would be left out; the config.json does not match these weights: use the config.json saved with them")


def test_a_heads_tensors_are_left_out_without_complaint(tmp_path):
    """A classifier's tensors (and the pooler) are not the model's: such checkpoints export as before."""
    torch.manual_seed(0)
    config = AlbertConfig(**{**json.loads((BASE_SOURCE / "config.json").read_text()), **SMALL})
    loaded = load_albert(str(_saved(tmp_path / "ckpt", AlbertForSequenceClassification(config))))
    assert loaded.pooler and not loaded.random_weights


def test_weights_the_config_lacks_are_one_line_from_the_cli(tmp_path):
    """Not transformers' paragraph of unused weights ("This IS expected if ...") above the refusal."""
    folder = _saved(tmp_path / "ckpt", _small_model(num_hidden_groups=2), num_hidden_groups=1)
    result = run_cli("export", str(folder), "--variants", "fp32", "-o", str(tmp_path / "out"), check=False)
    assert result.returncode == 2
    *before, line = result.stderr.strip("\n").split("\n")
    assert line.startswith(f"albert-onnx export: error: {folder / 'model.safetensors'}: holds 16 tensors of the ALBERT model")
    assert all("Loading weights" in text for text in before), result.stderr  # transformers 5's progress bar, nothing else
    assert not (tmp_path / "out").exists()


# -- weights files of other kinds ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_tensors() -> dict[str, torch.Tensor]:
    return dict(_small_model().state_dict())


@pytest.mark.parametrize("framework, name", [("tf", "TensorFlow"), ("flax", "Flax")])
def test_a_tensorflow_or_flax_safetensors_file_is_named(tmp_path, small_tensors, framework, name):
    """transformers hands such a file to its TensorFlow or Flax loader: ModuleNotFoundError: No module named 'tensorflow'."""
    folder = _source(tmp_path / "ckpt")
    save_file(small_tensors, folder / "model.safetensors", metadata={"format": framework})
    assert _load_error(folder) == (
        f"{folder / 'model.safetensors'}: a {name}-saved safetensors file (its metadata says format={framework!r}), which the export "
        f"cannot read; convert it to PyTorch safetensors (load it with transformers' from_{framework}=True and save_pretrained), or "
        "pass the checkpoint's PyTorch weights")


@pytest.mark.skipif(TRANSFORMERS_MAJOR >= 5, reason="transformers 5 loads such files as PyTorch tensors")
@pytest.mark.parametrize("metadata, says", [({"format": "weird"}, "says format='weird'"), ({"note": "x"}, "names no format")])
def test_a_safetensors_format_transformers_refuses_names_the_file(tmp_path, small_tensors, metadata, says):
    """transformers' "Incompatible safetensors file. File metadata is not [...] but weird" named no file."""
    folder = _source(tmp_path / "ckpt")
    save_file(small_tensors, folder / "model.safetensors", metadata=metadata)
    assert _load_error(folder) == (
        f"{folder / 'model.safetensors'}: its metadata {says}, none of the formats transformers loads ('pt', 'tf', 'flax', 'mlx'); "
        "the file was not saved by save_pretrained: save the weights again with it, or download the checkpoint again")


@pytest.mark.parametrize("metadata", [None, {"format": "pt"}, {"format": "mlx"},
                                      *([{"note": "x"}, {"format": "weird"}] if TRANSFORMERS_MAJOR >= 5 else [])])
def test_safetensors_files_of_pytorch_tensors_load(tmp_path, small_tensors, metadata):
    folder = _source(tmp_path / "ckpt")
    save_file(small_tensors, folder / "model.safetensors", metadata=metadata)
    assert torch.equal(load_albert(str(folder)).model.pooler.weight, small_tensors["pooler.weight"])


@pytest.mark.parametrize("content, holds", [
    ("tensor", "a Tensor"), ("list", "a list"), ("dict of lists", "a dict with values other than tensors"),
])
def test_a_pytorch_model_bin_without_a_state_dict_is_named(tmp_path, small_tensors, content, holds):
    """A bare tensor or a list, as torch.save(model.parameters()) leaves: AttributeError: 'list' object has no attribute 'items'."""
    folder = _source(tmp_path / "ckpt")
    value = {"tensor": torch.zeros(3), "list": list(small_tensors.values()),
             "dict of lists": {name: [1.0] for name in small_tensors}}[content]
    torch.save(value, folder / "pytorch_model.bin")
    assert _load_error(folder) == (
        f"{folder / 'pytorch_model.bin'}: holds {holds}, not a state dict of tensor names to tensors; the file was not saved from a "
        "model's weights: save them with save_pretrained (or torch.save(model.state_dict())), or use the checkpoint's own weights file")


# -- config.json fields transformers acts on -----------------------------------------------------------------------------

_PRUNED = ("(it maps a layer index, 0 to 0 for num_hidden_groups x inner_group_num layers, to the heads removed, 0 to 1, leaving "
           "each layer one; albert-base-v2: {})")
_LOADING_FIELDS = {
    # case -> (field, value, what the message says of it); each was a traceback (the exception after the arrow)
    "bitsandbytes": ("quantization_config", {"quant_method": "bitsandbytes", "load_in_8bit": True},  # -> ImportError
                     "quantization_config={'quant_method': 'bitsandbytes', 'loa... (dict) marks a quantized checkpoint, which the "
                     "export cannot read: export from the unquantized checkpoint"),
    "gptq": ("quantization_config", {"quant_method": "gptq", "bits": 4},  # -> NameError
             "quantization_config={'quant_method': 'gptq', 'bits': 4} (dict) marks a quantized checkpoint, which the export cannot "
             "read: export from the unquantized checkpoint"),
    "string": ("quantization_config", "8bit",  # -> AttributeError
               "quantization_config='8bit' (str) marks a quantized checkpoint, which the export cannot read: export from the "
               "unquantized checkpoint"),
    **({"null": ("quantization_config", None, "quantization_config=null, which transformers cannot read: delete the field")}
       if TRANSFORMERS_MAJOR < 5 else {}),  # transformers 5 reads it
    "dtype": ("torch_dtype", "float17",  # -> AttributeError: module 'torch' has no attribute 'float17'
              "torch_dtype='float17' is not a torch dtype name: use the dtype the weights were saved in, e.g. 'float32' (or delete "
              "the field)"),
    "head out of range": ("pruned_heads", {"0": [5]},  # -> IndexError
                          f"pruned_heads={{'0': [5]}} (dict): layer '0' lists [5] (list), not head indexes from 0 to 1 {_PRUNED}"),
    "negative head": ("pruned_heads", {"0": [-1]},  # pruned the last head, silently
                      f"pruned_heads={{'0': [-1]}} (dict): layer '0' lists [-1] (list), not head indexes from 0 to 1 {_PRUNED}"),
    "layer out of range": ("pruned_heads", {"7": [0]},  # -> IndexError
                           f"pruned_heads={{'7': [0]}} (dict): layer '7' is not an index from 0 to 0 {_PRUNED}"),
    "every head": ("pruned_heads", {"0": [0, 1]},  # -> RuntimeError mid-export
                   f"pruned_heads={{'0': [0, 1]}} (dict): layer '0' would lose all its 2 heads {_PRUNED}"),
    "a list": ("pruned_heads", [1, 2],  # -> AttributeError: 'list' object has no attribute 'items'
               f"pruned_heads=[1, 2] (list): a list, not an object {_PRUNED}"),
    "xielu": ("hidden_act", "xielu",  # -> UnsupportedOperatorError after 72 KB of traced graph on stderr
              "hidden_act='xielu' has no ONNX export (opset 17) in torch; ALBERT's own are 'gelu_new' (v2) and 'gelu' (v1)"),
}


@pytest.mark.parametrize("case", list(_LOADING_FIELDS))
def test_config_fields_transformers_fails_on_are_refused(tmp_path, case):
    field, value, says = _LOADING_FIELDS[case]
    folder = _source(tmp_path / "src")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, field: value}))  # null kept: _source drops None
    origin = folder / "config.json"
    assert _config_error(folder) == f"{origin} is not a usable ALBERT config: {says}; fix these fields in {origin}"


def test_a_valid_pruned_heads_exports(tmp_path):
    folder = _source(tmp_path / "src", pruned_heads={"0": [0]})
    out = export_model(ExportOptions(source=str(folder), output=tmp_path / "out", random_weights=True, validation_samples=8,
                                     variants=("fp32",)))
    assert json.loads((out / "manifest.json").read_text())["variants"]["fp32"]["validation"]["status"] == "passed"


def test_the_unexportable_activations_are_transformers_activations():
    assert set(UNEXPORTABLE_ACTIVATIONS) <= set(ACT2FN)  # a name transformers dropped would refuse nothing


def test_an_operator_torch_cannot_export_is_one_error(tmp_path):
    """What check_config does not know (here its refused hidden_act, built directly) fails in one line, not a traceback."""
    model = _small_model(hidden_act="xielu", vocab_size=100).eval()
    model.config._attn_implementation = "eager"
    with pytest.raises(ExportError) as caught:
        to_onnx.export_fp32(model, tmp_path / "model.onnx", hidden_states=False)
    assert str(caught.value) == ("torch cannot export this model to ONNX opset 17 (Exporting the operator 'aten::expm1' to ONNX opset "
                                 "version 17 is not supported); check config.json's hidden_act='xielu' and its other non-standard fields")


# transformers 5 builds a config with any problem_type (AlbertModel never reads it): nothing to refuse there
TRANSFORMERS_4 = pytest.mark.skipif(TRANSFORMERS_MAJOR >= 5, reason="transformers 5 does not check problem_type")


@pytest.mark.parametrize("changes, field", [
    ({"id2label": {"x": "POS"}}, "the field id2label={'x': 'POS'} (dict): invalid literal for int() with base 10: 'x'"),
    ({"num_labels": "two"}, "the field num_labels='two' (str): 'str' object cannot be interpreted as an integer"),
    pytest.param({"problem_type": "bad"}, "the field problem_type='bad' (str): The config parameter `problem_type` was not "
                 "understood: received bad but only 'regression', 'single_label_classification' and 'multi_label_classification' ar...",
                 marks=TRANSFORMERS_4),
    pytest.param({"num_labels": "two", "problem_type": "bad"}, "a field: The config parameter `problem_type` was not understood: "
                 "received bad but only 'regression', 'single_label_classification' and 'multi_label_classification' ar...",
                 marks=TRANSFORMERS_4),
])
def test_config_fields_transformers_cannot_read_are_named(tmp_path, changes, field):
    """transformers' ValueError or TypeError was printed as it was ("invalid literal for int() with base 10: 'x'"): no file,
    no field."""
    folder = _source(tmp_path / "src", **changes)
    origin = folder / "config.json"
    assert _config_error(folder) == f"{origin}: transformers cannot read {field}; fix it in {origin}, or restore the file from the checkpoint's source"


# -- vocabularies of other kinds -----------------------------------------------------------------------------------------

def _vocabulary(folder: Path, pieces: int | None = None, model_type: str | None = None) -> Path:
    """ALBERT's spiece.model rewritten into ``folder``: cut to its first ``pieces`` (the special tokens are ids 0-4), or
    marked as trained with another ``model_type``."""
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((BASE_SOURCE / "spiece.model").read_bytes())
    if pieces is not None:
        del proto.pieces[pieces:]
        proto.trainer_spec.vocab_size = pieces
    if model_type is not None:
        proto.trainer_spec.model_type = getattr(sentencepiece_model_pb2.TrainerSpec, model_type)
    (folder / "spiece.model").write_bytes(proto.SerializeToString())
    return folder


@pytest.mark.parametrize("model_type", ["WORD", "CHAR", "BPE"])
def test_a_spiece_model_that_is_not_unigram_is_refused(tmp_path, model_type):
    """WORD and CHAR: a bare "Exception: You're trying to run a `Unigram` model but you're file was trained with a different
    algorithm" from transformers' converter; BPE passed or failed the id comparison by chance of the texts."""
    folder = _vocabulary(_source(tmp_path / "src"), model_type=model_type)
    with pytest.raises(ExportError) as caught:
        load_reference_tokenizer(str(folder))
    assert str(caught.value) == (
        f"{folder / 'spiece.model'}: a SentencePiece model of type {model_type}, but ALBERT's vocabulary is a UNIGRAM model, the only "
        "type the export reproduces in tokenizer.json; pass --tokenizer FOLDER with the UNIGRAM spiece.model this checkpoint was "
        "trained with")


def test_a_vocabulary_smaller_than_the_traced_ids_exports(tmp_path):
    """The fp32 graph was traced with albert-base-v2 ids up to 2292: IndexError: index out of range in self for a custom
    vocabulary of fewer ids. The graph keeps its dynamic batch and sequence axes."""
    folder = _vocabulary(_source(tmp_path / "src", vocab_size=1000), pieces=1000)
    out = export_model(ExportOptions(source=str(folder), output=tmp_path / "out", random_weights=True, validation_samples=8,
                                     variants=("fp32",)))
    session = ort.InferenceSession(str(out / "model_fp32.onnx"), providers=["CPUExecutionProvider"])
    ids = np.array([[2, 999, 10, 20, 3], [2, 7, 3, 0, 0], [2, 3, 0, 0, 0]], dtype=np.int64)
    hidden, = session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64),
                                                  "token_type_ids": np.zeros_like(ids)})
    assert hidden.shape == (3, 5, SMALL["hidden_size"])


# -- paths that are links to nowhere -------------------------------------------------------------------------------------

def _links(tmp_path: Path) -> None:
    (tmp_path / "loopA").symlink_to("loopB")
    (tmp_path / "loopB").symlink_to("loopA")
    (tmp_path / "dangling").symlink_to(tmp_path / "no-such-folder")


@pytest.mark.parametrize("source", ["loopA", "./loopA", "loopA/sub", "dangling"])
def test_a_source_that_is_a_link_to_nowhere_is_named(tmp_path, monkeypatch, source):
    """Spelled like a hub id, it was one: a network retry, then "could not be fetched from the Hugging Face hub"."""
    _links(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExportError) as caught:
        locate_model(source)
    assert str(caught.value) == (f"source={source!r} is a symbolic link that leads nowhere (to a missing path, or round a loop of "
                                 "links); fix the link, or pass the checkpoint folder itself")
    with pytest.raises(ExportError, match=r"^tokenizer source 'dangling' is a symbolic link that leads nowhere .*, or pass --tokenizer FOLDER"):
        load_reference_tokenizer("dangling")


@pytest.mark.parametrize("output", ["loopA", "loopA/sub"])
def test_an_output_in_a_loop_of_links_is_named(tmp_path, output):
    """RuntimeError: Symlink loop from '.../loopA' (Path.resolve)."""
    _links(tmp_path)
    with pytest.raises(ExportError) as caught:
        check_output(tmp_path / output, overwrite=False)
    assert str(caught.value) == (f"output={str(tmp_path / output)!r}: its path runs into a loop of symbolic links; remove or fix the "
                                 "links, or choose another folder")


def test_an_output_in_a_loop_of_links_is_one_line_from_the_cli(tmp_path):
    _links(tmp_path)
    result = run_cli("export", str(make_tiny_source(tmp_path / "src")), "--random-weights", "-o", str(tmp_path / "loopA"), check=False)
    assert result.returncode == 2
    assert result.stderr == (f"albert-onnx export: error: output={str(tmp_path / 'loopA')!r}: its path runs into a loop of symbolic "
                             "links; remove or fix the links, or choose another folder\n")
    assert sorted(os.listdir(tmp_path)) == ["dangling", "loopA", "loopB", "src"]
