"""Hostile input, one parametrized test per class: feeds, arguments, texts, resources, folder trust.

Each case asserts the exact exception type (not a subclass, not a crash inside ONNX Runtime or tokenizers)
and that the message names the argument (or manifest field) at fault. Never imports torch.
"""

from __future__ import annotations

import array
import copy
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from collections import UserString
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from albert_onnx import AlbertEmbedder, ModelFolder, ModelFolderError
from albert_onnx.int8_kernel import u8s8_is_exact
from tests.conftest import need_module


@dataclass
class Env:
    embedder: AlbertEmbedder
    folder: Path
    tmp: Path


@pytest.fixture(scope="module")
def embedder(tiny_folder) -> AlbertEmbedder:
    return AlbertEmbedder.from_pretrained(tiny_folder, threads=1)  # int8: the variant that crashed on 0 rows


@pytest.fixture()
def env(embedder, tiny_folder, tmp_path) -> Env:
    return Env(embedder, tiny_folder, tmp_path)


def check(entry: tuple[Callable[[Env], object], type, str], env: Env) -> None:
    case, expected, match = entry
    with pytest.raises(BaseException) as caught:
        case(env)
    assert type(caught.value) is expected, f"{type(caught.value).__name__}: {caught.value}"
    assert caught.match(match)


# -- feeds (encode_ids) ---------------------------------------------------------------------------------

def ids_mask(ids, mask=None, **extra) -> dict:
    ids = np.asarray(ids)
    return {"input_ids": ids, "attention_mask": np.ones(ids.shape, np.int64) if mask is None else np.asarray(mask), **extra}


GOOD = [[2, 48, 3, 0], [2, 99, 77, 3]]
GOOD_MASK = [[1, 1, 1, 0], [1, 1, 1, 1]]

FEEDS = {
    "list instead of mapping": (lambda e: e.embedder.encode_ids(GOOD), TypeError, r"feeds is a list"),
    "array instead of mapping": (lambda e: e.embedder.encode_ids(np.asarray(GOOD)), TypeError, r"feeds is a ndarray"),
    "no attention_mask": (lambda e: e.embedder.encode_ids({"input_ids": np.asarray(GOOD)}), ValueError, r"feeds has keys \['input_ids'\].*attention_mask"),
    "unknown key": (lambda e: e.embedder.encode_ids({**ids_mask(GOOD, GOOD_MASK), "position_ids": np.asarray(GOOD)}), ValueError, r"drop \['position_ids'\]"),
    "float ids": (lambda e: e.embedder.encode_ids(ids_mask(np.asarray(GOOD, np.float32), GOOD_MASK)), TypeError, r"feeds\['input_ids'\] has dtype float32"),
    "timedelta ids": (lambda e: e.embedder.encode_ids(ids_mask(np.asarray(GOOD).astype("m8[s]"), GOOD_MASK)), TypeError, r"feeds\['input_ids'\] has dtype timedelta64"),
    "None ids": (lambda e: e.embedder.encode_ids({"input_ids": None, "attention_mask": GOOD_MASK}), TypeError, r"feeds\['input_ids'\] has dtype object"),
    "float mask": (lambda e: e.embedder.encode_ids(ids_mask(GOOD, np.asarray(GOOD_MASK, np.float32))), TypeError,
                   r"feeds\['attention_mask'\] has dtype float32; pass a mask of 0/1 integers or bools"),
    "bool ids": (lambda e: e.embedder.encode_ids(ids_mask(np.asarray(GOOD, bool), GOOD_MASK)), TypeError, r"feeds\['input_ids'\] has dtype bool"),
    "bool types": (lambda e: e.embedder.encode_ids(ids_mask(GOOD, GOOD_MASK, token_type_ids=np.zeros((2, 4), bool))), TypeError,
                   r"feeds\['token_type_ids'\] has dtype bool"),
    "object ids": (lambda e: e.embedder.encode_ids(ids_mask(np.asarray(GOOD, object), GOOD_MASK)), TypeError, r"feeds\['input_ids'\] has dtype object"),
    "str types": (lambda e: e.embedder.encode_ids(ids_mask(GOOD, GOOD_MASK, token_type_ids=np.full((2, 4), "0"))), TypeError, r"feeds\['token_type_ids'\] has dtype <U1"),
    "ragged lists": (lambda e: e.embedder.encode_ids({"input_ids": [[2, 3], [2, 5, 3]], "attention_mask": [[1, 1], [1, 1, 1]]}), ValueError, r"feeds\['input_ids'\] is not a rectangular array"),
    "1-D ids": (lambda e: e.embedder.encode_ids(ids_mask([2, 48, 3])), ValueError, r"feeds\['input_ids'\] has shape \(3,\)"),
    "3-D ids": (lambda e: e.embedder.encode_ids(ids_mask(np.full((1, 2, 3), 5))), ValueError, r"feeds\['input_ids'\] has shape \(1, 2, 3\)"),
    "shapes differ": (lambda e: e.embedder.encode_ids(ids_mask(GOOD, [[1, 1, 1]])), ValueError, r"attention_mask \(1, 3\)"),
    "too many columns": (lambda e: e.embedder.encode_ids(ids_mask(np.full((1, 513), 5))), ValueError, r"feeds\['input_ids'\] has 513 columns"),
    "no columns": (lambda e: e.embedder.encode_ids(ids_mask(np.zeros((2, 0), np.int64))), ValueError, r"feeds\['input_ids'\] has 0 columns"),
    "id past the vocabulary": (lambda e: e.embedder.encode_ids(ids_mask([[2, 30000, 3]])), ValueError, r"feeds\['input_ids'\]\[0, 1\]=30000"),
    "negative id": (lambda e: e.embedder.encode_ids(ids_mask([[2, 5, 3], [2, -1, 3]])), ValueError, r"feeds\['input_ids'\]\[1, 1\]=-1"),
    "mask value 2": (lambda e: e.embedder.encode_ids(ids_mask(GOOD, [[1, 1, 2, 0], [1, 1, 1, 1]])), ValueError, r"feeds\['attention_mask'\]\[0, 2\]=2"),
    "token type 2": (lambda e: e.embedder.encode_ids(ids_mask(GOOD, GOOD_MASK, token_type_ids=np.full((2, 4), 2))), ValueError, r"feeds\['token_type_ids'\]\[0, 0\]=2"),
    "mask with a hole": (lambda e: e.embedder.encode_ids(ids_mask(GOOD, [[1, 1, 1, 0], [1, 0, 1, 1]])), ValueError, r"feeds\['attention_mask'\] row 1 is 1011"),
    "row with no token": (lambda e: e.embedder.encode_ids(ids_mask(GOOD, [[1, 1, 1, 0], [0, 0, 0, 0]])), ValueError, r"feeds\['attention_mask'\] row 1 is all 0s"),
}


@pytest.mark.parametrize("name", FEEDS)
def test_hostile_feeds(env, name):
    check(FEEDS[name], env)


def test_empty_lists_are_a_batch_of_no_rows(env):
    assert env.embedder.encode_ids({"input_ids": [], "attention_mask": []}).shape == (0, 128)


def test_token_type_ids_none_means_zeros(env):
    feeds = ids_mask(GOOD, GOOD_MASK)
    np.testing.assert_array_equal(env.embedder.encode_ids({**feeds, "token_type_ids": None}), env.embedder.encode_ids(feeds))


# -- arguments ------------------------------------------------------------------------------------------

def load(**options) -> Callable[[Env], object]:
    return lambda e: AlbertEmbedder.from_pretrained(e.folder, **options)


def on(method: str, *args, **options) -> Callable[[Env], object]:
    return lambda e: getattr(e.embedder, method)(*args, **options)


def link_loop(folder: Path) -> Path:
    (folder / "loop-a").symlink_to("loop-b")
    (folder / "loop-b").symlink_to("loop-a")
    return folder / "loop-a"


@dataclass
class BytesPath:
    """An os.PathLike whose __fspath__ gives bytes (allowed by os.fspath, refused by pathlib)."""

    path: Path

    def __fspath__(self) -> bytes:
        return bytes(self.path)


ARGUMENTS = {
    "variant unknown": (load(variant="int4"), ValueError, r"variant='int4'"),
    "variant not str": (load(variant=8), ValueError, r"variant=8"),
    "device unknown": (load(device="tpu"), ValueError, r"device='tpu'"),
    "threads zero": (load(threads=0), ValueError, r"threads=0"),
    "threads string": (load(threads="2"), TypeError, r"threads='2'"),
    "threads float": (load(threads=2.0), TypeError, r"threads=2.0"),
    "verify string": (load(verify="no"), TypeError, r"verify='no'"),
    "spin_wait int": (load(spin_wait=1), TypeError, r"spin_wait=1"),
    "io_binding string": (load(io_binding="yes"), TypeError, r"io_binding='yes'"),
    "folder None": (lambda e: AlbertEmbedder.from_pretrained(None), TypeError, r"folder=None"),
    # found by an attack (2026-12-07): "embedded null byte" and pathlib's TypeError, naming no argument
    "folder with NUL": (lambda e: AlbertEmbedder.from_pretrained(f"{e.folder}\0"), ValueError, r"folder='.*\\x00' holds a NUL character"),
    "folder PathLike of bytes": (lambda e: AlbertEmbedder.from_pretrained(BytesPath(e.folder)), TypeError, r"folder=BytesPath\(.* gives the path as bytes"),
    # found by an attack (2026-12-07): OSError tracebacks where a missing folder was one line
    "folder a loop of links": (lambda e: AlbertEmbedder.from_pretrained(link_loop(e.tmp)), ModelFolderError,
                               r"^folder='.*loop-a': a loop of symbolic links; pass a folder written by `albert-onnx export`$"),
    "folder name too long": (lambda e: AlbertEmbedder.from_pretrained(e.tmp / ("a" * 300)), ModelFolderError,
                             r"^folder='.*aaa': the path or a name in it is too long; pass a folder written by"),
    "ModelFolder.load(None)": (lambda e: ModelFolder.load(None), TypeError, r"folder=None: pass the folder as a str"),
    "ModelFolder.load(bytes)": (lambda e: ModelFolder.load(str(e.folder).encode()), TypeError, r"folder=b'.*': pass the folder as a str"),
    "batch_size negative": (on("encode", ["x"], batch_size=-1), ValueError, r"batch_size=-1"),
    "batch_size zero": (on("encode", ["x"], batch_size=0), ValueError, r"batch_size=0"),
    "batch_size string": (on("encode", ["x"], batch_size="8"), TypeError, r"batch_size='8'"),
    "batch_size bool": (on("encode", ["x"], batch_size=True), TypeError, r"batch_size=True"),
    "normalize string": (on("encode", ["x"], normalize="no"), TypeError, r"normalize='no'"),
    "normalize int": (on("encode", ["x"], normalize=0), TypeError, r"normalize=0"),
    "pooling unknown": (on("encode", ["x"], pooling="sum"), ValueError, r"pooling='sum'"),
    "pooler with layer": (on("encode", ["x"], pooling="pooler", layer=-2), ValueError, r"pooling='pooler'"),
    "long_text unknown": (on("encode", ["x"], long_text="drop"), ValueError, r"long_text='drop'"),
    "layer out of range": (on("encode", ["x"], layer=13), ValueError, r"layer=13"),
    "layer string": (on("encode", ["x"], layer="1"), TypeError, r"layer='1'"),
    "max_length over the model's": (on("encode", ["x"], max_length=513), ValueError, r"max_length=513"),
    "max_length too small": (on("tokenize", ["x"], max_length=2), ValueError, r"max_length=2"),
    "max_length float": (on("encode", ["x"], max_length=64.0), TypeError, r"max_length=64.0"),
    "merge unknown": (on("encode_tokens", ["x"], merge="words"), ValueError, r"merge='words'"),
    "encode_tokens batch_size": (on("encode_tokens", ["x"], batch_size=0), ValueError, r"batch_size=0"),
    "projected string": (on("word_vectors", ["x"], projected="yes"), TypeError, r"projected='yes'"),
    "word_vectors batch_size": (on("word_vectors", ["x"], batch_size=-3), ValueError, r"batch_size=-3"),
    "similarity batch_size": (on("similarity", ["x"], ["y"], batch_size="4"), TypeError, r"batch_size='4'"),
    "encode_ids normalize": (on("encode_ids", ids_mask(GOOD, GOOD_MASK), normalize="yes"), TypeError, r"normalize='yes'"),
    "encode_ids batch_size": (on("encode_ids", ids_mask(GOOD, GOOD_MASK), batch_size=0), ValueError, r"batch_size=0"),
    # ONNX Runtime's own TypeError named neither the embedder nor the way out
    **{f"pickle protocol {protocol}": (lambda e, protocol=protocol: pickle.dumps(e.embedder, protocol), TypeError,
                                      r"^an AlbertEmbedder holds an ONNX Runtime session, which cannot be pickled or deep-copied; "
                                      r"load one in each process with AlbertEmbedder.from_pretrained\('.*'\), or share")
       for protocol in range(pickle.HIGHEST_PROTOCOL + 1)},  # protocol 0 aborted the process (ONNX Runtime's allocation)
    "deepcopy": (lambda e: copy.deepcopy(e.embedder), TypeError, r"^an AlbertEmbedder holds an ONNX Runtime session"),
}


@pytest.mark.parametrize("name", ARGUMENTS)
def test_hostile_arguments(env, name):
    check(ARGUMENTS[name], env)


# -- texts ----------------------------------------------------------------------------------------------

class LyingText(str):
    def isascii(self) -> bool:
        return True


def frame():
    pandas = need_module("pandas")
    return pandas.DataFrame({"text": ["a", "b"]})


TEXTS = {
    "None": (on("encode", None), TypeError, r"texts is a NoneType"),
    "number": (on("encode", 42), TypeError, r"texts is a int"),
    "bytes": (on("encode", b"raw bytes"), TypeError, r"texts is a bytes"),
    "set": (on("encode", {"a", "b"}), TypeError, r"texts is a set.*sorted"),
    "dict": (on("encode", {"a": 1}), TypeError, r"texts is a dict"),
    "generator": (on("encode", (t for t in ["a"])), TypeError, r"texts is a generator.*list\(\.\.\.\)"),
    "DataFrame": (lambda e: e.embedder.encode(frame()), TypeError, r"texts is a DataFrame.*df\[column\]\.tolist\(\)"),
    "array of characters": (on("encode", array.array("w" if sys.version_info >= (3, 13) else "u", "hi")), TypeError,
                            r"texts is an array.array of typecode '[uw]'; pass one str or a list of str \(e.g. array.tounicode\(\)"),
    "UserString": (on("encode", UserString("a whole sentence")), TypeError, r"^texts is a UserString; pass one str \(e.g. str\(text\)\)"),
    # a str subclass whose isascii lies let a lone surrogate reach tokenizers, whose TypeError named no argument
    "lying str subclass": (on("encode", ["ok", LyingText("bad \ud800 text")]), ValueError, r"texts\[1\] has a lone surrogate"),
    "None item": (on("encode", ["ok", None]), TypeError, r"texts\[1\] is NoneType"),
    "bytes item": (on("encode", [b"bytes"]), TypeError, r"texts\[0\] is bytes"),
    "lone surrogate": (on("encode", ["ok", "bad \ud800 text"]), ValueError, r"texts\[1\] has a lone surrogate"),
    "lone surrogate in tokenize": (on("tokenize", ["\udfff"]), ValueError, r"texts\[0\] has a lone surrogate"),
    "encode_tokens item": (on("encode_tokens", ["a", 3]), TypeError, r"texts\[1\] is int"),
    "word_vectors item": (on("word_vectors", ["guitar", 3.5]), TypeError, r"words\[1\] is float"),
    "word_vectors set": (on("word_vectors", {"guitar"}), TypeError, r"words is a set"),
    "similarity a": (on("similarity", {"x"}, ["y"]), TypeError, r"a is a set"),
    "similarity b": (on("similarity", ["x"], ["y", 3]), TypeError, r"b\[1\] is int"),
    "empty word": (on("word_vectors", ["ok", "   "]), ValueError, r"^words\[1\]='   ' has no pieces; pass a word of 1 to 512 pieces$"),
    "tokenize nothing": (on("tokenize", []), ValueError, r"texts is empty"),
}


@pytest.mark.parametrize("name", TEXTS)
def test_hostile_texts(env, name):
    check(TEXTS[name], env)


# -- resources ------------------------------------------------------------------------------------------

def big_manifest(env: Env):
    (env.tmp / "manifest.json").write_text(" " * (2 << 20))
    return AlbertEmbedder.from_pretrained(env.tmp)


def big_tokenizer(env: Env):
    import albert_onnx.tokenizer as tokenizer

    original = tokenizer.MAX_TOKENIZER_BYTES
    tokenizer.MAX_TOKENIZER_BYTES = 1000  # the real cap is 64 MiB; the check is the same
    try:
        return AlbertEmbedder.from_pretrained(env.folder, verify=False)
    finally:
        tokenizer.MAX_TOKENIZER_BYTES = original


RESOURCES = {
    "a million threads": (load(threads=10**6), ValueError, r"threads=1000000: pass an int from 1 to \d+"),
    "a wide batch": (on("encode_ids", ids_mask(np.full((2, 100_000), 5))), ValueError, r"feeds\['input_ids'\] has 100000 columns"),
    "a huge word": (on("word_vectors", ["ok", "word " * 200_000]), ValueError, r"words\[1\]='word word.* has more than 512 pieces; pass a word of 1 to 512 pieces$"),
    "a huge manifest": (big_manifest, ModelFolderError, r"manifest\.json is over 1048576 bytes"),
    "a huge tokenizer.json": (big_tokenizer, ModelFolderError, r"tokenizer\.json is over 1000 bytes"),
}


@pytest.mark.parametrize("name", RESOURCES)
def test_hostile_resources(env, name):
    started = time.perf_counter()
    check(RESOURCES[name], env)
    assert time.perf_counter() - started < 5, "refused, but only after doing the work"


def test_a_huge_batch_size_holds_a_bounded_call(env, monkeypatch):
    """batch_size=10**9 over 100,000 texts held 9.4 GB in one call; each call now holds at most MAX_CALL_TOKENS."""
    from albert_onnx.embedder import MAX_CALL_TOKENS

    shapes = []
    run = env.embedder._runner.run
    monkeypatch.setattr(env.embedder._runner, "run", lambda feeds, outputs: shapes.append(feeds["input_ids"].shape) or run(feeds, outputs))
    texts = [f"text number {i} about guitars" for i in range(3000)]
    vectors = env.embedder.encode(texts, batch_size=10**9)
    assert max(rows * length for rows, length in shapes) <= MAX_CALL_TOKENS
    assert sum(rows for rows, _ in shapes) == len(texts) and len(shapes) < 10
    np.testing.assert_array_equal(vectors[:5], env.embedder.encode(texts[:5]))


TEN_MB = """
import json, resource, sys, time, warnings
from albert_onnx import AlbertEmbedder
embedder = AlbertEmbedder.from_pretrained(sys.argv[1], threads=1)
embedder.encode(["warm up"])
import base64, random
kind = sys.argv[2]
if kind == "base64":  # one whitespace-free run, not periodic: cut inside it
    text = base64.b64encode(random.Random(0).randbytes(8 * 2**20)).decode()[: 10 * 2**20]
else:
    unit = {"spaces": "The quick brown fox jumps over the lazy dog. ", "no-break spaces": "The\u00a0quick\u00a0brown\u00a0fox\u3000"}[kind]
    text = (unit * (10 * 2**20 // len(unit) + 1))[: 10 * 2**20]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    vector = embedder.encode(text)
seconds = time.perf_counter() - started
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"seconds": seconds, "rss_mb": grown, "shape": vector.shape, "warned": len(caught)}))
"""


@pytest.mark.parametrize("kind", ["spaces", "no-break spaces", "base64"])
def test_ten_megabyte_text_costs_what_is_kept(tiny_folder, kind):
    # before: the whole text was tokenized, then truncated: 10-18 s and +1.25 GB RSS (11 s with no-break spaces).
    # A periodic whitespace-free run ("aaa...") or one of characters the vocabulary lacks is still read whole, to be
    # exact: see AlbertTokenizer.encode and test_embedder.test_truncation_keeps_exactly_the_whole_texts_first_pieces.
    result = subprocess.run([sys.executable, "-c", TEN_MB, str(tiny_folder), kind], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["shape"] == [1, 128] and report["warned"] == 1
    assert report["seconds"] < 1.0, report
    assert report["rss_mb"] < 100, report


# -- folder trust (manifest.json) -----------------------------------------------------------------------

def with_manifest(edit: Callable[[dict], object]) -> Callable[[Env], object]:
    """Write ``edit(manifest)`` as the manifest.json of an empty folder and load it (no other file is reached)."""

    def case(env: Env):
        manifest = json.loads((env.folder / "manifest.json").read_text())
        (env.tmp / "manifest.json").write_text(json.dumps(edit(manifest)))
        return AlbertEmbedder.from_pretrained(env.tmp, verify=False)

    return case


def with_text(text: str | bytes) -> Callable[[Env], object]:
    def case(env: Env):
        path = env.tmp / "manifest.json"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return AlbertEmbedder.from_pretrained(env.tmp, verify=False)

    return case


def setter(path: str, value: object) -> Callable[[dict], dict]:
    """An edit that sets the dotted ``path`` to ``value`` (KeyError: deletes it)."""
    *parents, last = path.split(".")

    def edit(manifest: dict) -> dict:
        node = manifest
        for key in parents:
            node = node[key]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
        return manifest

    return edit


def edited_copy(edit: Callable[[dict], object]) -> Callable[[Env], object]:
    """Copy the whole folder, apply ``edit`` to its manifest.json and load it with verify=True: the graphs and
    tokenizer.json pass their hash checks, so only the graph's stamp can tell the manifest was edited."""

    def case(env: Env):
        for path in env.folder.iterdir():
            (env.tmp / path.name).write_bytes(path.read_bytes())
        manifest = json.loads((env.folder / "manifest.json").read_text())
        (env.tmp / "manifest.json").write_text(json.dumps(edit(manifest)))
        return AlbertEmbedder.from_pretrained(env.tmp)

    return case


# the file that runs: int8's uint8 x int8 twin where this CPU computes that product exactly (albert_onnx/int8_kernel.py)
INT8_FILE = re.escape("model_int8_u8s8.onnx" if u8s8_is_exact() else "model_int8.onnx")
STAMP = r"manifest\.json says {} but " + INT8_FILE + r" was exported with {}; the manifest was edited"

FOLDER = {
    "hidden_size edited": (edited_copy(setter("model.hidden_size", 64)), ModelFolderError, STAMP.format("model.hidden_size=64", "128")),
    "hidden_size huge": (edited_copy(setter("model.hidden_size", 4 * 10**12)), ModelFolderError, STAMP.format(r"model.hidden_size=4000000000000", "128")),
    "layers edited": (edited_copy(setter("model.num_hidden_layers", 20)), ModelFolderError, STAMP.format("model.num_hidden_layers=20", "12")),
    "embedding_size edited": (edited_copy(setter("model.embedding_size", 16)), ModelFolderError, STAMP.format("model.embedding_size=16", "32")),
    "type_vocab_size edited": (edited_copy(setter("model.type_vocab_size", 5)), ModelFolderError, STAMP.format("model.type_vocab_size=5", "2")),
    "max_length edited": (edited_copy(setter("tokenizer.max_length", 300)), ModelFolderError, STAMP.format("tokenizer.max_length=300", "512")),
    "max_length past the positions": (edited_copy(setter("tokenizer.max_length", 2000)), ModelFolderError,
                                      r"tokenizer\.max_length=2000 is over model\.max_position_embeddings=512"),
    "positions edited with it": (edited_copy(lambda m: setter("tokenizer.max_length", 2000)(setter("model.max_position_embeddings", 2000)(m))),
                                 ModelFolderError, STAMP.format("model.max_position_embeddings=2000", "512")),
    "outputs edited": (edited_copy(lambda m: {**m, "outputs": [o for o in m["outputs"] if o != "hidden_states"]}), ModelFolderError,
                       r"manifest\.json says outputs=\[.*\] but " + INT8_FILE + r" was exported with \["),
    "heads not dividing hidden": (edited_copy(setter("model.num_attention_heads", 3)), ModelFolderError,
                                  r"model\.hidden_size=128 is not a multiple of model\.num_attention_heads=3"),
    "a list": (with_manifest(lambda m: [m]), ModelFolderError, r"the manifest must be a JSON object, got \[.*\(list\)"),
    "null": (with_manifest(lambda m: None), ModelFolderError, r"the manifest must be a JSON object, got None"),
    "a string": (with_manifest(lambda m: "manifest"), ModelFolderError, r"the manifest must be a JSON object, got 'manifest'"),
    "no model": (with_manifest(setter("model", KeyError)), ModelFolderError, r"field 'model' is missing"),
    "no variants": (with_manifest(setter("variants", KeyError)), ModelFolderError, r"field 'variants' is missing"),
    "no tokenizer sha256": (with_manifest(setter("tokenizer.sha256", KeyError)), ModelFolderError, r"field 'tokenizer\.sha256' is missing"),
    "size as a string": (with_manifest(setter("tokenizer.size", "2272383")), ModelFolderError, r"tokenizer\.size must be an integer >= 0, got '2272383'"),
    "a 400-digit size": (with_manifest(setter("variants.fp32.size", 10**400)), ModelFolderError,
                         r"variants\.fp32\.size must be an integer below 2\*\*63, got 10{50,}\.\.\. \(int\)"),
    "vocab_size as a string": (with_manifest(setter("model.vocab_size", "30000")), ModelFolderError, r"model\.vocab_size must be an integer >= 1"),
    "variants as a list": (with_manifest(setter("variants", [])), ModelFolderError, r"variants must be a JSON object, got \[\]"),
    "validation as a list": (with_manifest(setter("variants.int8.validation", [])), ModelFolderError, r"variants\.int8\.validation must be a JSON object"),
    "special_ids as a string": (with_manifest(setter("tokenizer.special_ids", "x")), ModelFolderError, r"tokenizer\.special_ids must be a JSON object"),
    "special id out of range": (with_manifest(setter("tokenizer.special_ids.mask", 30000)), ModelFolderError, r"tokenizer\.special_ids\.mask must be an id from 0 to 29999"),
    "random_weights as a string": (with_manifest(setter("source.random_weights", "yes")), ModelFolderError, r"source\.random_weights must be true or false"),
    "devices as a string": (with_manifest(setter("variants.fp32.devices", "cpu")), ModelFolderError, r"variants\.fp32\.devices must be a list of strings"),
    "escaping file name": (with_manifest(setter("variants.int8.file", "../outside.onnx")), ModelFolderError, r"variants\.int8\.file must be a plain file name"),
    "a 500,000-character file name": (with_manifest(setter("variants.fp32.file", "a" * 500_000)), ModelFolderError,
                                      r"variants\.fp32\.file is 'a{196}\.\.\., but variant 'fp32''s graph is always 'model_fp32\.onnx'"),
    "fp16 listed for the cpu": (with_manifest(setter("variants.fp16.devices", ["cpu", "cuda"])), ModelFolderError,  # found by an attack
                                r"variants\.fp16\.devices is \['cpu', 'cuda'\], but variant 'fp16' always runs on \['cuda'\]; the "
                                r"manifest was edited"),
    "a variant pointed at another's graph": (with_manifest(setter("variants.int8.file", "model_fp32.onnx")), ModelFolderError,
                                             r"variants\.int8\.file is 'model_fp32\.onnx', but variant 'int8''s graph is always "
                                             r"'model_int8\.onnx'; the manifest was edited: restore it or re-export the folder$"),
    "not-validated without a reason": (with_manifest(setter("variants.fp16.validation.reason", None)), ModelFolderError,
                                       r"variants\.fp16\.validation\.reason must be a string, got None"),
    "future format_version": (with_manifest(setter("format_version", 99)), ModelFolderError, r"format_version=99 is not supported"),
    "format_version 2.0": (with_manifest(setter("format_version", 2.0)), ModelFolderError, r"format_version=2\.0 is not supported"),
    "other format": (with_manifest(setter("format", "onnx")), ModelFolderError, r"format='onnx'"),
    "invalid JSON": (with_text('{\n  "format": "albert-onnx-model-folder",\n  oops\n}'), ModelFolderError, r"manifest\.json: not valid JSON \(line 3"),
    "not UTF-8": (with_text(b'{"format": "\xff"}'), ModelFolderError, r"manifest\.json: not UTF-8 text"),
    "nested too deep": (with_text("[" * 100_000 + "]" * 100_000), ModelFolderError, r"manifest\.json: not a manifest albert-onnx can read"),
    "a 5000-digit number": (with_text('{"format_version": ' + "9" * 5000 + "}"), ModelFolderError, r"manifest\.json: not a manifest albert-onnx can read"),
    "no manifest": (lambda e: AlbertEmbedder.from_pretrained(e.tmp), ModelFolderError, r"has no manifest\.json"),
    "no folder": (lambda e: AlbertEmbedder.from_pretrained(e.tmp / "nowhere"), ModelFolderError, r"folder='.*nowhere' does not exist"),
    "empty folder name": (lambda e: AlbertEmbedder.from_pretrained(""), ModelFolderError, r"folder='' is empty; pass the folder"),
}


@pytest.mark.parametrize("name", FOLDER)
def test_hostile_folder(env, name):
    check(FOLDER[name], env)


def test_a_variant_forced_past_its_gate_warns_when_loaded(env):
    def failed(manifest: dict) -> dict:
        manifest["variants"]["int8"]["validation"].update(status="failed", forced=True)
        return manifest

    with pytest.warns(UserWarning, match=r"variant 'int8' of .* FAILED its accuracy gate at export and was written only because of --force") as caught:
        edited_copy(failed)(env)
    with pytest.warns(UserWarning, match=r"FAILED its accuracy gate") as constructed:
        AlbertEmbedder(env.tmp)  # the same folder, through the constructor: one frame fewer inside albert_onnx
    # attributed to the caller's line (here in edited_copy, then this test), not to albert_onnx's insides
    assert [Path(w.filename).name for w in [*caught, *constructed]] == ["test_hostile.py"] * 2


def test_a_graph_whose_path_is_too_long_is_one_line(tiny_folder, tmp_path, monkeypatch):
    # the folder and its manifest within PATH_MAX (4096 with the NUL), its graph past it: an OSError traceback before
    monkeypatch.chdir(tmp_path)
    length = len(os.fsencode(tmp_path))
    while length < 4081 - 201:  # relative mkdirs: each name is short, only the absolute path is long
        os.mkdir("d" * 200)
        os.chdir("d" * 200)
        length += 201
    name = "m" * (4081 - length - 1)
    os.mkdir(name)
    os.chdir(name)
    for file in tiny_folder.iterdir():
        shutil.copyfile(file, file.name)
    folder = Path(os.getcwd())
    assert len(os.fsencode(folder / "manifest.json")) == 4095
    with pytest.raises(ModelFolderError, match=r"/model_fp32\.onnx: the path is too long for this system \(4097 bytes\); "
                                               r"move the model folder to a shorter path$"):
        AlbertEmbedder.from_pretrained(folder, variant="fp32", device="cpu")


def test_a_shallow_copy_shares_the_session_and_embeds_alike(env):
    copied = copy.copy(env.embedder)
    assert copied is not env.embedder and copied._runner is env.embedder._runner
    np.testing.assert_array_equal(copied.encode(["a b c"]), env.embedder.encode(["a b c"]))


def test_a_passed_variant_loads_without_a_warning(env):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AlbertEmbedder.from_pretrained(env.folder)


def test_truncation_warning_survives_pickling():
    """Ray actors and multiprocessing workers send warnings-turned-errors back to the parent by pickle."""

    from albert_onnx import TruncationWarning

    warning = pickle.loads(pickle.dumps(TruncationWarning(3, 10, 8, "pass long_text='window'")))
    assert (warning.truncated, warning.total, warning.max_length) == (3, 10, 8)
    assert str(warning) == "3 of 10 texts exceeded max_length=8 tokens and were truncated; pass long_text='window'"
