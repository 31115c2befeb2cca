"""The export's own reference tokenizer gives transformers 4.57's slow SentencePiece AlbertTokenizer's ids, id for id.

This is the proof that lets the export run under transformers 5 (which has no slow AlbertTokenizer): every STS-B
sentence, the hard cases, seeded random strings, and each folder layout the slow tokenizer reads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import transformers

from albert_onnx_export.errors import ExportError
from albert_onnx_export.reference_tokenizer import ReferenceTokenizer
from tests.conftest import BASE_SOURCE, need_shared
from albert_onnx_export.tokenizer_probes import HARD_CASES, random_texts

if int(transformers.__version__.split(".")[0]) >= 5:
    pytest.skip("the proof needs transformers 4.57's slow AlbertTokenizer; the main test venv has it", allow_module_level=True)

from transformers import AlbertTokenizer  # noqa: E402  (the slow one, in 4.x)

TEXTS = HARD_CASES + random_texts(1500) + ["[MASK][MASK]", " [MASK] ", "x[MASK]y", "[CLS][SEP]", "ΟΔΟΣ", "<pad> <unk>", "a\x85[MASK]"]


def assert_same_ids(folder: Path, texts: list[str] = TEXTS, max_length: int | None = None) -> None:
    slow = AlbertTokenizer.from_pretrained(str(folder))
    ours = ReferenceTokenizer(folder)
    kwargs = {} if max_length is None else {"truncation": True, "max_length": max_length}
    differ = [text for text in texts if slow(text, **kwargs)["input_ids"] != ours.encode(text, max_length)]
    assert differ == [], f"{len(differ)} of {len(texts)} differ, e.g. {differ[:3]!r}"
    assert len(ours) == len(slow)
    assert {role: ours.id_of(role) for role in ("pad", "unk", "cls", "sep", "mask")} == {
        "pad": slow.pad_token_id, "unk": slow.unk_token_id, "cls": slow.cls_token_id, "sep": slow.sep_token_id, "mask": slow.mask_token_id}
    assert ours.model_max_length == (slow.model_max_length if slow.model_max_length < 10**9 else None)
    assert (ours.do_lower_case, ours.keep_accents, ours.remove_space) == (slow.do_lower_case, slow.keep_accents, slow.remove_space)


def folder_with(tmp_path: Path, config: dict | None, **files: object) -> Path:
    """spiece.model, the given tokenizer_config.json (None: none) and other JSON files."""
    need_shared()
    tmp_path.mkdir(parents=True, exist_ok=True)
    shutil.copy(BASE_SOURCE / "spiece.model", tmp_path / "spiece.model")
    if config is not None:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    for name, data in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    return tmp_path


def base_config() -> dict:
    return json.loads((BASE_SOURCE / "tokenizer_config.json").read_text())


def test_every_stsb_sentence(sts_texts):
    need_shared()
    assert len(sts_texts) > 14000
    assert_same_ids(BASE_SOURCE, sts_texts)


@pytest.mark.parametrize("max_length", [3, 8, 64, 512])
def test_truncation(max_length, sts_texts):
    assert_same_ids(BASE_SOURCE, TEXTS + sts_texts[:500], max_length=max_length)


def test_padded_batch_is_the_slow_tokenizers(sts_texts):
    need_shared()
    slow, ours = AlbertTokenizer.from_pretrained(str(BASE_SOURCE)), ReferenceTokenizer(BASE_SOURCE)
    texts = sts_texts[:40] + ["", "[MASK]"]
    theirs = slow(texts, padding=True, truncation=True, max_length=24, return_tensors="np")
    mine = ours.encode_batch(texts, 24)
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert (mine[name] == theirs[name]).all(), name
        assert mine[name].dtype.name == "int64"


@pytest.mark.parametrize("layout", [
    "spiece-only", "keep-space-plain-mask", "no-lower-case", "keep-accents", "keep-space", "no-max-length", "mask-rstrip-single-word",
    "cls-lstrip", "legacy-special-tokens-map", "legacy-added-tokens-json", "legacy-tokenizer-json",
])
def test_folder_layouts(tmp_path, layout):
    config = base_config()
    files: dict[str, object] = {}
    if layout == "spiece-only":
        config = None
    elif layout == "keep-space-plain-mask":
        config = {"remove_space": False}  # a plain-string [MASK] eats the spaces on its left: seen only when they are kept
    elif layout == "no-lower-case":
        config["do_lower_case"] = False
    elif layout == "keep-accents":
        config["keep_accents"] = True
    elif layout == "keep-space":
        config["remove_space"] = False
    elif layout == "no-max-length":
        del config["model_max_length"]
    elif layout == "mask-rstrip-single-word":
        config["added_tokens_decoder"]["4"].update(lstrip=False, rstrip=True, single_word=True)
    elif layout == "cls-lstrip":
        config["added_tokens_decoder"]["2"].update(lstrip=True, rstrip=True)
    else:
        del config["added_tokens_decoder"]
        if layout == "legacy-special-tokens-map":
            files["special_tokens_map"] = {"mask_token": {"content": "[MASK]", "lstrip": False, "rstrip": True}, "cls_token": "[CLS]"}
        elif layout == "legacy-added-tokens-json":
            files["added_tokens"] = {"[MASK]": 4, "[CLS]": 2}
        else:
            files["tokenizer"] = {"added_tokens": [
                {"id": 4, "content": "[MASK]", "single_word": False, "lstrip": False, "rstrip": True, "normalized": False, "special": True},
                {"id": 3, "content": "[SEP]", "single_word": True, "lstrip": True, "rstrip": False, "normalized": False, "special": True}]}
    assert_same_ids(folder_with(tmp_path, config, **files))


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["added_tokens_decoder"].update({"30000": {"content": "<ent>", "special": False}}),
     r"added_tokens_decoder adds tokens beyond ALBERT's special tokens \('<ent>'\)"),
    (lambda c: c.update(additional_special_tokens=["<ent>"]), r"additional_special_tokens=\"\['<ent>'\]\" is not supported"),
    (lambda c: c.update(sp_model_kwargs={"enable_sampling": True}), r"sp_model_kwargs=.* is not supported"),
    (lambda c: c.update(split_special_tokens=True), r"split_special_tokens='True' is not supported"),
    (lambda c: c.update(truncation_side="left"), r"truncation_side='left' is not supported"),
    (lambda c: c.update(mask_token="<mask>") or c.pop("added_tokens_decoder"), r"the special token '<mask>' is not in .*spiece\.model"),
    (lambda c: c.update(mask_token=None), r"mask_token is null"),
    (lambda c: c.update(mask_token="") or c.pop("added_tokens_decoder"), r"mask_token is ''; it must be a non-empty string"),
    (lambda c: c["added_tokens_decoder"].update({"30000": c["added_tokens_decoder"].pop("4")}),
     r"added_tokens_decoder gives '\[MASK\]' the id 30000, but .*spiece\.model has it as 4"),
    (lambda c: c["added_tokens_decoder"].update({"x": c["added_tokens_decoder"].pop("4")}), r"added_tokens_decoder: the id 'x' is not a non-negative integer"),
    (lambda c: c.update(do_lower_case="yes"), r"do_lower_case is 'yes'; it must be true or false"),
    (lambda c: c.update(model_max_length="512"), r"model_max_length is '512'; it must be an integer"),
    (lambda c: c.update(cls_token=7), r"cls_token is '7'; it must be a non-empty string or an object"),
])
def test_settings_it_cannot_reproduce_are_one_line(tmp_path, edit, message):
    config = base_config()
    edit(config)
    folder = folder_with(tmp_path, config)
    with pytest.raises(ExportError, match=message) as caught:
        ReferenceTokenizer(folder)
    assert "\n" not in str(caught.value)
    assert str(folder / "tokenizer_config.json") in str(caught.value)


def test_legacy_added_token_beyond_the_specials_is_refused(tmp_path):
    config = base_config()
    del config["added_tokens_decoder"]
    folder = folder_with(tmp_path, config, added_tokens={"<ent>": 30000})
    with pytest.raises(ExportError, match=r"added_tokens\.json adds tokens beyond ALBERT's special tokens \('<ent>'\)"):
        ReferenceTokenizer(folder)


@pytest.mark.parametrize("name, content", [("tokenizer_config", "{bad"), ("tokenizer_config", "[1]"), ("special_tokens_map", "{")])
def test_damaged_json_is_named(tmp_path, name, content):
    config = base_config()
    del config["added_tokens_decoder"]  # special_tokens_map.json is read only then
    folder = folder_with(tmp_path, config)
    (folder / f"{name}.json").write_text(content)
    with pytest.raises(ExportError, match=rf"^{str(folder / name)}\.json"):
        ReferenceTokenizer(folder)
