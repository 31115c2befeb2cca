"""The export step against careless and hostile use: what it replaces, what it reads, how it fails.

Each case was seen to go wrong (a deleted folder, a traceback, a message naming nothing) before its fix.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from albert_onnx import AlbertEmbedder, ModelFolderError
from albert_onnx.model_folder import STAMP_KEY, sha256_of
from albert_onnx_export import ExportOptions, export_model, to_onnx
from albert_onnx_export.errors import ExportError
from albert_onnx_export.load import load_albert
from albert_onnx_export.validation_texts import read_texts, validation_set
from albert_onnx_export.write import check_output, staging_folder
from tests.conftest import BASE_SOURCE, make_hub_cache, make_tiny_source, refused_reads, run_cli
from tests.export.test_export import _options


# -- what --overwrite may replace ---------------------------------------------------------------------------

def test_overwrite_refuses_a_folder_that_is_not_a_model_folder(tiny_source, tmp_path):
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match=r"holds notes\.txt, sub, which no export wrote; --overwrite replaces only a model folder"):
        export_model(_options(tiny_source, victim, overwrite=True))
    assert (victim / "notes.txt").read_text() == "mine" and (victim / "sub").is_dir()


def test_overwrite_refuses_model_files_without_an_albert_onnx_manifest(tiny_source, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "model_fp32.onnx").write_bytes(b"someone else's graph")
    (victim / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ExportError, match=r"has no albert-onnx manifest\.json, so it is not a model folder an export wrote"):
        export_model(_options(tiny_source, victim, overwrite=True))
    assert (victim / "model_fp32.onnx").read_bytes() == b"someone else's graph"


@pytest.mark.parametrize("kind", ["folder", "link"])
def test_overwrite_refuses_a_folder_or_link_under_a_model_files_name(tiny_source, tmp_path, kind):
    # found by an attack (2026-12-07): names alone passed, and the notes inside a folder named model_fp16.onnx went
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "manifest.json").write_text(json.dumps({"format": "albert-onnx-model-folder"}))
    (victim / "model_fp32.onnx").write_bytes(b"a graph")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    if kind == "folder":
        shutil.move(mine, victim / "model_fp16.onnx")
    else:
        (victim / "model_fp16.onnx").symlink_to(mine)
    with pytest.raises(ExportError, match=r"holds model_fp16\.onnx, which is not a file an export wrote \(a folder, a link or a "
                                          r"special file\); --overwrite replaces only a model folder"):
        export_model(_options(tiny_source, victim, overwrite=True))
    assert (victim / "model_fp16.onnx" / "notes.txt").read_text() == "mine"
    assert (victim / "model_fp32.onnx").read_bytes() == b"a graph"


@pytest.mark.write_step
def test_overwrite_replaces_an_empty_folder(tiny_source, tmp_path):
    target = tmp_path / "empty"
    target.mkdir()
    export_model(_options(tiny_source, target, overwrite=True, variants=("fp32",)))
    assert (target / "manifest.json").is_file()


def test_overwrite_checks_again_a_folder_that_appeared_during_the_export(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(ExportError, match=r"holds notes\.txt, which no export wrote"):
        with staging_folder(target, overwrite=True) as folder:
            (folder / "manifest.json").write_text("new")
            target.mkdir()  # someone else's folder, made while the export ran
            (target / "notes.txt").write_text("mine")
    assert sorted(os.listdir(tmp_path)) == ["out"] and (target / "notes.txt").read_text() == "mine"



def test_overwrite_never_exchanges_a_file_that_appeared_during_the_export(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(ExportError, match=r"became a file or a link while this export ran; nothing was replaced"):
        with staging_folder(target, overwrite=True) as folder:
            (folder / "manifest.json").write_text("new")
            target.write_text("mine")  # someone's file, made while the export ran
    assert sorted(os.listdir(tmp_path)) == ["out"] and target.read_text() == "mine"


def test_an_empty_output_is_not_the_current_directory(tiny_source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.txt").write_text("precious")
    result = run_cli("export", str(tiny_source), "--random-weights", "-o", "", "--overwrite", check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == ("albert-onnx export: error: argument -o/--output: '' names no folder (it would mean the current "
                                     "directory); pass the model folder to create (see albert-onnx export --help)")
    assert sorted(os.listdir(tmp_path)) == ["mine.txt"]


def test_an_output_under_a_file_is_named(tmp_path):
    """exists() hides ENOTDIR: the check passed, and the export failed after its imports with a bare 'File exists'."""
    (tmp_path / "notes.txt").write_text("mine")
    target = tmp_path / "notes.txt" / "model"
    message = re.escape(f"output={str(target)!r}: {tmp_path / 'notes.txt'} is a file, not a folder; choose a path inside a folder")
    with pytest.raises(ExportError, match=message):
        check_output(target, overwrite=False)
    with pytest.raises(ExportError, match=message):
        with staging_folder(target, overwrite=True):
            pass
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"] and (tmp_path / "notes.txt").read_text() == "mine"


_EXPORT_THEN_LIST_HEAVY_MODULES = """
import sys
from albert_onnx.cli import main
status = main(sys.argv[1:])
print(status, sorted(name for name in ("torch", "transformers", "onnxruntime.transformers") if name in sys.modules))
"""


_MISTAKES = {  # case -> (source, flags, what stderr says); "SRC" is the tiny checkpoint folder (no weights), "TMP" tmp_path
    "exists": ("SRC", ["--random-weights"], "already exists; pass --overwrite"),
    "not-a-model-folder": ("SRC", ["--random-weights", "--overwrite"], "holds notes.txt, which no export wrote"),
    "validation-texts": ("SRC", ["--random-weights", "--overwrite", "--validation-texts", "TMP/typo.csv"], "typo.csv' is not a file"),
    "no-such-source": ("TMP/typo", ["--random-weights", "--overwrite"], "typo': no such folder; pass a folder with config.json"),
    "source-is-a-file": ("SRC/config.json", ["--random-weights", "--overwrite"], "config.json' is a file; pass the checkpoint folder"),
    "source-without-config": ("TMP", ["--random-weights", "--overwrite"], "folder has no config.json"),
    "no-weights": ("SRC", ["--overwrite"], "has no model.safetensors or pytorch_model.bin (nor a sharded checkpoint's "
                   "model.safetensors.index.json or pytorch_model.bin.index.json); add the weights, or pass --random-weights"),
    "size-name-without-weights": ("albert-base-v2", ["--overwrite"], "is a size name with no weights; pass --random-weights"),
    "no-such-tokenizer": ("SRC", ["--random-weights", "--overwrite", "--tokenizer", "TMP/typo"],
                          "tokenizer source 'TMP/typo': no such folder; pass --tokenizer FOLDER"),
    "two-validation-samples": ("SRC", ["--random-weights", "--overwrite", "--validation-samples", "2"],  # one pair: NaN rank agreement
                               "validation_samples=2: pass an int from 8 to 100000"),
    "revision-of-a-folder": ("SRC", ["--random-weights", "--overwrite", "--revision", "v9"],
                             "revision='v9': a revision picks a commit of a hub repository, but source='SRC' is a local folder"),
    "revision-of-a-size-name": ("albert-base-v2", ["--random-weights", "--overwrite", "--revision", "v9"],
                                "but source='albert-base-v2' is a size name; drop --revision"),
    "revision-of-random-official-weights": ("albert/albert-base-v2", ["--random-weights", "--overwrite", "--revision", "v9"],
                                            "but source='albert/albert-base-v2' is a size name; drop --revision"),
    "tokenizer-without-vocabulary": ("SRC", ["--random-weights", "--overwrite", "--tokenizer", "TMP/out"],
                                     "tokenizer source 'TMP/out' has no spiece.model"),
}


@pytest.mark.parametrize("case", list(_MISTAKES))
def test_a_mistake_in_the_flags_is_reported_before_torch_is_imported(tiny_source, tmp_path, case):
    """Seconds of imports (and a hub download, or minutes of loading the weights) must not come before an error the
    flags and a look at the disk show: a mistyped source or --tokenizer path was named only after the imports, and a
    folder without spiece.model only after the model had loaded."""
    out = tmp_path / "out"
    out.mkdir()
    if case == "not-a-model-folder":
        (out / "notes.txt").write_text("mine")
    source, flags, expected = _MISTAKES[case]

    def placed(text: str) -> str:
        return text.replace("SRC", str(tiny_source)).replace("TMP", str(tmp_path))

    result = subprocess.run([sys.executable, "-c", _EXPORT_THEN_LIST_HEAVY_MODULES, "export", placed(source), "-o", str(out),
                             *map(placed, flags)], capture_output=True, text=True, timeout=120)
    assert result.stdout == "2 []\n", (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and placed(expected) in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == (["notes.txt"] if case == "not-a-model-folder" else [])


@pytest.mark.parametrize("locked", ["parent", "folder"])
def test_a_source_this_user_may_not_read_says_so(tiny_source, tmp_path, locked):
    """Permission denied, naming the path, in one line: not "no such folder" or "has no config.json"."""
    source = tmp_path / "locked" / "src"
    shutil.copytree(tiny_source, source)
    denied = source.parent if locked == "parent" else source
    prefix = refused_reads(tmp_path)
    denied.chmod(0)
    try:
        result = subprocess.run([*prefix, sys.executable, "-m", "albert_onnx.cli", "export", str(source), "--random-weights",
                                 "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    finally:
        denied.chmod(0o755)
    shown = source if locked == "parent" else source / "config.json"
    assert (result.returncode, result.stderr) == (2, f"albert-onnx export: error: {shown}: Permission denied\n")


def test_an_output_in_a_folder_where_nothing_can_be_created_names_the_output(tiny_source):
    # /proc takes no new file: the message named the export's internal lock file (found by an attack, 2026-12-07)
    with pytest.raises(ExportError, match=r"^output='/proc/albert-onnx-out': cannot write in /proc \(No such file or directory\); "
                                          r"choose a folder you can write to$"):
        export_model(_options(tiny_source, Path("/proc/albert-onnx-out")))


# -- failures of the machine and of the network --------------------------------------------------------------

def test_a_full_disk_is_one_error_and_leaves_nothing(tiny_source, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # what torch.onnx raised on a 6 MB tmpfs: no file named

    monkeypatch.setattr(to_onnx, "export_fp32", full)
    with pytest.raises(ExportError, match=r"output='.*out': the disk is full \(No space left on device\); nothing was written"):
        export_model(_options(tiny_source, tmp_path / "out"))
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_disk_while_writing_tokenizer_json_is_one_error(tiny_source, tmp_path, monkeypatch):
    """tokenizers' Tokenizer.save raised a bare Exception ("No space left on device (os error 28)"): a traceback."""
    from albert_onnx_export import tokenizer

    build = tokenizer.build_fast_tokenizer

    def build_then_fill_the_disk(reference):
        fast = build(reference)
        (staging,) = [path for path in tmp_path.iterdir() if path.is_dir()]  # the export's staging folder (beside its lock)
        (staging / "tokenizer.json").symlink_to("/dev/full")  # every write there fails with ENOSPC, from the kernel
        return fast

    monkeypatch.setattr(tokenizer, "build_fast_tokenizer", build_then_fill_the_disk)
    with pytest.raises(ExportError, match=r"output='.*out': the disk is full \(No space left on device\); nothing was written"):
        export_model(_options(tiny_source, tmp_path / "out"))
    assert os.listdir(tmp_path) == []


def test_an_offline_tokenizer_hub_id_names_the_tokenizer_option(tiny_source, tmp_path):
    result = run_cli("export", str(tiny_source), "--random-weights", "--tokenizer", "someone/albert-vocab", "-o", str(tmp_path / "out"),
                     check=False, env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache"), "HF_HOME": None})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("albert-onnx export: error: tokenizer='someone/albert-vocab' is not a local folder, and its "
                                    "spiece.model could not be fetched from the Hugging Face hub"), result.stderr
    assert not (tmp_path / "out").exists()


def test_revision_picks_the_models_commit_not_the_tokenizer_repositorys(tiny_source, tmp_path):
    """--revision was passed to --tokenizer's other repository too, where that commit does not exist."""
    cache = make_hub_cache(tmp_path / "hub", "someone/albert-tiny", extra={"config.json": (tiny_source / "config.json").read_bytes()})
    make_hub_cache(cache, "other/albert-vocab")
    vocab = cache / "models--other--albert-vocab"
    model_commit = (vocab / "refs" / "main").read_text()  # make_hub_cache gives every repository the same commit
    other = "0" * 40
    (vocab / "snapshots" / model_commit).rename(vocab / "snapshots" / other)
    (vocab / "refs" / "main").write_text(other)
    out = tmp_path / "out"
    run_cli("export", "someone/albert-tiny", "--revision", model_commit, "--random-weights", "--tokenizer", "other/albert-vocab",
            "--variants", "fp32", "--validation-samples", "8", "-o", str(out),
            env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": None})
    source = json.loads((out / "manifest.json").read_text())["source"]
    assert (source["revision"], source["tokenizer"]) == (model_commit, "other/albert-vocab")


def test_a_revision_of_the_official_weights_is_fetched_not_refused(tmp_path):
    """albert/albert-base-v2 without --random-weights fetches its weights from the hub: --revision picks their commit (it
    was refused as "a size name; drop --revision", so no commit of the official weights could be pinned)."""
    result = run_cli("export", "albert/albert-base-v2", "--revision", "v9", "--tokenizer", str(BASE_SOURCE), "-o", str(tmp_path / "out"), check=False,
                     env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache"), "HF_HOME": None})
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("albert-onnx export: error: source='albert/albert-base-v2': HF_HUB_OFFLINE is set"), result.stderr


def test_an_output_name_too_long_to_stage_beside_is_refused(tiny_source, tmp_path):
    """Found by an attack: a 240-byte name failed after the imports with "File name too long" about the staging lock."""
    result = run_cli("export", str(tiny_source), "--random-weights", "-o", str(tmp_path / ("a" * 229)), check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"albert-onnx export: error: output='{tmp_path / ('a' * 229)}': the folder name is 229 bytes; the "
                                    "export stages beside it under that name plus 27 bytes, so at most 228: pass a shorter name")
    with staging_folder(tmp_path / ("a" * 228), False) as folder:  # the longest that stages: its lock's name is 255 bytes
        (folder / "manifest.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a" * 228]


@pytest.mark.parametrize("texts", [
    [f"The {word} sat on the mat." for word in ("cat", "Cat", "CAT", "cAt", "caT", "CAt", "cAT", "CaT")],  # ALBERT lowercases
    ["word " * 600 + f"ending {i}" for i in range(8)],  # they differ after 512 tokens only
    # 6 as the model sees them; the two long texts built from them (over 700 characters here) must not count
    ["one", "ONE", "two", "TWO", *(f"sentence number {i} of the set " * 10 for i in range(4))],
])
def test_validation_texts_the_model_sees_as_one_are_refused(tiny_source, tmp_path, texts):
    """Found by an attack: eight strings passed the "8 distinct texts" check though the model saw fewer; the gates then
    failed on NaN rank agreement ("pass --force"), or dropped int8's ranking gates as if the weights were random. Refused
    before the weights are loaded (damaged here, so loading them would fail first)."""
    source = tmp_path / "src"
    shutil.copytree(tiny_source, source)
    (source / "model.safetensors").write_bytes(b"not loaded before the texts are checked")
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    with pytest.raises(ExportError, match=r"texts\.txt': the model sees its texts as only [0-9] distinct token sequences within 512 tokens "
                                          r"\(ALBERT lowercases, and truncation drops what differs later\); the gates need at least 8"):
        export_model(ExportOptions(source=str(source), output=tmp_path / "out", variants=("fp32",),
                                   validation_texts=tmp_path / "texts.txt", validation_samples=8))
    assert not (tmp_path / "out").exists()


def test_export_options_take_paths_as_str_or_path(tiny_source, tmp_path):
    """Found by an attack: source=Path(...) raised AttributeError ('split') after the model had loaded, validation_texts as
    a str raised AttributeError ('is_file'), and variants='fp32' became the variants 'f,p,3,2'."""
    from tests.conftest import STS_DIR

    # NumPy integers are counts as ints are (torch's manual_seed refused np.int64 once the check let it through)
    out = export_model(ExportOptions(source=tiny_source, output=str(tmp_path / "out"), random_weights=True, tokenizer=tiny_source,
                                     validation_texts=str(STS_DIR / "sts-dev.csv"), variants=["fp32"], validation_samples=np.int32(8),
                                     seed=np.int64(3)))
    assert out == tmp_path / "out" and (out / "model_fp32.onnx").is_file()
    assert json.loads((out / "manifest.json").read_text())["source"]["seed"] == 3
    for bad, message in ((dict(variants="fp32"), r"variants='fp32': pass a tuple of names"), (dict(source=7), r"source=7: pass a str")):
        with pytest.raises(TypeError, match=message):
            export_model(ExportOptions(**{"source": tiny_source, "output": tmp_path / "again", "random_weights": True, **bad}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_offline_hub_id_with_a_shipped_config_is_one_line(tmp_path):
    # the config ships with the package, so only the weights are missing: transformers raised AttributeError here
    # the vocabulary given (it is read before the weights): what is missing is the weights alone
    result = run_cli("export", "albert/albert-base-v2", "--tokenizer", str(BASE_SOURCE), "-o", str(tmp_path / "out"), check=False,
                     env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache"), "HF_HOME": None})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("albert-onnx export: error: source='albert/albert-base-v2': HF_HUB_OFFLINE is set and the Hugging "
                                    "Face cache has no model.safetensors or model.safetensors.index.json or pytorch_model.bin or "
                                    "pytorch_model.bin.index.json of it")
    assert not (tmp_path / "out").exists()


def _sharded_checkpoint(tiny_source: Path, folder: Path) -> tuple[object, list[str]]:
    """The tiny model saved in pieces (save_pretrained's max_shard_size), with its vocabulary; and its shard names."""
    loaded = load_albert(str(tiny_source), random_weights=True, seed=7)
    loaded.model.save_pretrained(folder, safe_serialization=True, max_shard_size="1MB")
    shutil.copy(tiny_source / "spiece.model", folder / "spiece.model")
    shards = sorted(set(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"].values()))
    assert not (folder / "model.safetensors").exists() and len(shards) >= 2  # what the case is about
    return loaded, shards


def test_a_sharded_checkpoint_loads_from_a_folder(tiny_source, tmp_path):
    """A checkpoint saved in shards was refused: "has no model.safetensors or pytorch_model.bin"."""
    checkpoint = tmp_path / "sharded"
    loaded, shards = _sharded_checkpoint(tiny_source, checkpoint)
    # a stale pickle beside the shards: transformers loads the safetensors shards, and so must the export (an attack
    # found pytorch_model.bin taken first: vectors 2.5 away from the checkpoint's)
    torch.save(load_albert(str(tiny_source), random_weights=True, seed=99).model.state_dict(), checkpoint / "pytorch_model.bin")
    again = load_albert(str(checkpoint))
    assert again.weights_file == "model.safetensors.index.json" and again.random_weights is False
    for (name, mine), (_, theirs) in zip(again.model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(mine, theirs), name

    (checkpoint / shards[-1]).unlink()
    with pytest.raises(ExportError, match=rf"^{re.escape(str(checkpoint / 'model.safetensors.index.json'))} lists {len(shards)} shard "
                                          rf"files and 1 of them are not in {re.escape(str(checkpoint))} \(e\.g\. '{shards[-1]}'\); "
                                          "download the whole checkpoint$"):
        load_albert(str(checkpoint))
    index = json.loads((checkpoint / "model.safetensors.index.json").read_text())
    index["weight_map"]["pooler.bias"] = "../outside.safetensors"  # transformers would read it, outside the checkpoint
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ExportError, match=r"weight_map names '\.\./outside\.safetensors', not a file in the checkpoint folder"):
        load_albert(str(checkpoint))


@pytest.mark.parametrize("damage", ["tensor-missing-from-its-shard", "truncated-shard"])
def test_a_damaged_shard_is_named_in_one_error(tiny_source, tmp_path, damage):
    """Found by an attack: a tensor the index lists but its shard lacks stayed on the meta device under transformers 4.57
    (a RuntimeError traceback), and a truncated shard was reported under the index's name."""
    from safetensors.torch import load_file, save_file

    checkpoint = tmp_path / "sharded"
    _, shards = _sharded_checkpoint(tiny_source, checkpoint)
    index = json.loads((checkpoint / "model.safetensors.index.json").read_text())
    name = sorted(tensor for tensor, shard in index["weight_map"].items() if shard == shards[-1] and "pooler" not in tensor)[0]
    shard = checkpoint / shards[-1]
    if damage == "truncated-shard":
        shard.write_bytes(shard.read_bytes()[:1000])
        message = rf"^{re.escape(str(shard))}: not a valid safetensors file \("
    else:
        tensors = load_file(shard)
        del tensors[name]
        save_file(tensors, shard, metadata={"format": "pt"})
        message = rf"the weights lack 1 tensors of the ALBERT model config\.json describes \(e\.g\. {re.escape(name)}\)"
    with pytest.raises(ExportError, match=message):
        load_albert(str(checkpoint))


@pytest.mark.parametrize("damage", ["truncated", "empty", "not-a-zip"])
def test_a_damaged_pytorch_model_bin_is_one_error(tiny_source, tmp_path, damage):
    """transformers 5 let torch.load's errors through (a truncated zip: RuntimeError, an empty file as an interrupted
    download leaves: EOFError, a file that is no zip: KeyError): tracebacks."""
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    shutil.copy(tiny_source / "config.json", checkpoint / "config.json")
    weights = checkpoint / "pytorch_model.bin"
    torch.save(load_albert(str(tiny_source), random_weights=True).model.state_dict(), weights)  # transformers 5 saves no .bin
    weights.write_bytes({"truncated": weights.read_bytes()[:1000], "empty": b"", "not-a-zip": b"e" * 1000}[damage])
    with pytest.raises(ExportError, match=rf"^{re.escape(str(weights))}: "):
        load_albert(str(checkpoint))


def test_pytorch_model_bin_shards_load_and_an_empty_one_is_named(tiny_source, tmp_path):
    """A sharded .bin checkpoint (older transformers' default) loads; an empty shard was a traceback (EOFError)."""
    from safetensors.torch import load_file

    checkpoint = tmp_path / "sharded"
    loaded, shards = _sharded_checkpoint(tiny_source, checkpoint)
    index = json.loads((checkpoint / "model.safetensors.index.json").read_text())
    for shard in shards:  # the same tensors as pickled shards, under a .bin index (transformers 5 writes no .bin)
        torch.save(load_file(checkpoint / shard), checkpoint / shard.replace(".safetensors", ".bin"))
        (checkpoint / shard).unlink()
    index["weight_map"] = {name: shard.replace(".safetensors", ".bin") for name, shard in index["weight_map"].items()}
    (checkpoint / "model.safetensors.index.json").unlink()
    (checkpoint / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    again = load_albert(str(checkpoint))
    assert again.weights_file == "pytorch_model.bin.index.json" and again.pooler
    assert torch.equal(again.model.pooler.weight, loaded.model.pooler.weight)
    last = checkpoint / shards[-1].replace(".safetensors", ".bin")
    last.write_bytes(b"")
    with pytest.raises(ExportError, match=rf"^{re.escape(str(last))}: could not be loaded"):
        load_albert(str(checkpoint))


def test_a_sharded_hub_checkpoint_exports_offline_from_the_cache(tiny_source, tmp_path):
    checkpoint = tmp_path / "sharded"
    loaded, shards = _sharded_checkpoint(tiny_source, checkpoint)
    names = ["config.json", "model.safetensors.index.json", *shards]
    partial = make_hub_cache(tmp_path / "partial", "someone/albert-sharded",
                             extra={name: (checkpoint / name).read_bytes() for name in names[:-1]})
    out = tmp_path / "out"
    result = run_cli("export", "someone/albert-sharded", "--variants", "fp32", "--validation-samples", "8", "-o", str(out), check=False,
                     env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(partial), "HF_HOME": None})
    assert result.returncode == 2
    assert result.stderr.startswith("albert-onnx export: error: source='someone/albert-sharded': 1 shards its model.safetensors.index.json "
                                    f"lists could not be fetched from the Hugging Face hub or found in its cache (e.g. {shards[-1]})"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert not out.exists()

    cache = make_hub_cache(tmp_path / "hub", "someone/albert-sharded", extra={name: (checkpoint / name).read_bytes() for name in names})
    run_cli("export", "someone/albert-sharded", "--variants", "fp32", "--validation-samples", "8", "-o", str(out),
            env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": None})
    assert json.loads((out / "manifest.json").read_text())["source"]["weights_file"] == "model.safetensors.index.json"
    embedder = AlbertEmbedder.from_pretrained(out, variant="fp32")
    text = "The same weights, from shards."
    ids = embedder.tokenize(text)
    with torch.inference_mode():
        hidden = loaded.model(**{name: torch.from_numpy(value) for name, value in ids.items()}).last_hidden_state[0]
    torch.testing.assert_close(torch.from_numpy(embedder.encode(text, normalize=False)[0]), hidden.mean(0), atol=1e-4, rtol=0)


def test_a_hub_id_exports_offline_from_the_cache(tiny_source, tmp_path):
    """The hub path users with internet take, run from a cache laid out as huggingface_hub leaves it."""
    loaded = load_albert(str(tiny_source), random_weights=True, seed=5)
    checkpoint = tmp_path / "checkpoint"
    loaded.model.save_pretrained(checkpoint, safe_serialization=True)
    files = {"config.json": (tiny_source / "config.json").read_bytes(), "model.safetensors": (checkpoint / "model.safetensors").read_bytes()}
    cache = make_hub_cache(tmp_path / "hub", "someone/albert-tiny", extra=files)
    out = tmp_path / "out"
    run_cli("export", "someone/albert-tiny", "--variants", "fp32", "--validation-samples", "8", "-o", str(out),
            env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": None})
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["model"] == "someone/albert-tiny" and manifest["source"]["random_weights"] is False
    assert manifest["source"]["weights_file"] == "model.safetensors"
    text = "The same weights, exported from the hub cache."
    vector = AlbertEmbedder.from_pretrained(out, variant="fp32").encode(text, normalize=False)[0]
    ids = AlbertEmbedder.from_pretrained(out, variant="fp32").tokenize(text)
    with torch.inference_mode():
        hidden = loaded.model(**{name: torch.from_numpy(value) for name, value in ids.items()}).last_hidden_state[0]
    torch.testing.assert_close(torch.from_numpy(vector), hidden.mean(0), atol=1e-4, rtol=0)


def test_a_missing_tokenizer_folder_is_named(tiny_source, tmp_path):
    with pytest.raises(ExportError, match=r"tokenizer source '/no/such/vocabulary': no such folder; pass --tokenizer FOLDER"):
        export_model(_options(tiny_source, tmp_path / "out", tokenizer="/no/such/vocabulary"))


# -- what the validation texts may be -------------------------------------------------------------------------

def test_validation_csv_without_sts_pairs_says_what_it_needs(tmp_path):
    path = tmp_path / "texts.csv"
    path.write_text("id,text\n1,A man plays guitar.\n")
    with pytest.raises(ExportError, match=r"holds no STS-B sentence pairs \(tab-separated, the sentences in columns 6 and 7\)"):
        read_texts(path)


@pytest.mark.parametrize("name", ["texts.json", "texts.parquet", "texts"])
def test_validation_file_of_another_format_is_refused(tmp_path, name):
    path = tmp_path / name
    path.write_text('[{"text": "a"}]')
    with pytest.raises(ExportError, match=re.escape(f"the suffix {path.suffix!r} names no format this reads")):
        read_texts(path)


@pytest.mark.parametrize("name", ["pairs.csv", "pairs.TSV", "texts.txt", "texts.jsonl"])
@pytest.mark.parametrize("lines_before", [0, 2000])
def test_a_validation_file_that_is_not_utf8_is_named_with_the_offset_in_the_file(tmp_path, name, lines_before):
    """The STS-B path read the pairs without the check the other formats had: a codec message that named no file; and
    the offset was the decoder's, within its chunk (wrong past about 8 KB)."""
    path = tmp_path / name
    good = b'{"text": "A man plays music."}\n'  # a text in each format (a csv row of one column, which is skipped)
    bad = b"x\tx\tx\tx\t1.0\tA man plays.\t\xff\xfe guitar\n"
    path.write_bytes(good * lines_before + bad)
    offset = len(good) * lines_before + bad.index(b"\xff")
    with pytest.raises(ExportError) as caught:
        validation_set(path, 8)
    assert str(caught.value) == f"validation_texts={str(path)!r} is not UTF-8 text (invalid start byte at byte {offset})"


@pytest.mark.parametrize("line, message", [
    ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply; each line must be an object with a 'text' field"),  # was RecursionError
    ('{"text": "ab\\ud800c"}', "'text' has a lone surrogate '\\ud800' at character 2, which is not valid Unicode; fix the text"),
    ('{"text": 1}', "'text' is a number, not a string; make each 'text' a JSON string"),
    ('{"body": "A man plays."}', "expected an object with a str 'text' field; each line must be an object with a \"text\" string"),
    ('{"text": ', "not valid JSON (Expecting value at column 10)"),
])
def test_a_bad_jsonl_line_is_named_as_the_cli_names_it(tmp_path, line, message):
    """The validation texts are read by the CLI's JSONL reader (arguments.jsonl_texts), which knew these cases."""
    path = tmp_path / "texts.jsonl"
    path.write_text('{"text": "A man plays."}\n' + line + "\n")
    with pytest.raises(ExportError) as caught:
        validation_set(path, 8)
    assert str(caught.value) == f"{path}:2: {message}"


def test_an_oversized_csv_field_is_named(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("x\tx\tx\tx\t1.0\tA man plays.\tA man plays music.\n" + "x\t" * 5 + "y" * 200_000 + "\tz\n")
    with pytest.raises(ExportError, match=re.escape(f"{path}:2: not an STS-B row (field larger than field limit (131072)); ")):
        validation_set(path, 8)


@pytest.mark.parametrize("name, content, distinct", [
    ("one.txt", "A man is playing a guitar.\n", 1),  # passed int8 with the ranking gates silently dropped
    ("two.txt", "A man is playing a guitar.\nStocks fell.\n", 2),  # one pair: rank agreement NaN, int8 "failed"
    ("seven.txt", "".join(f"text number {i}\n" for i in range(7)) * 3, 7),
    ("pairs.csv", "x\tx\tx\tx\t1.0\tA man plays.\tA man plays music.\n" * 5, 2),
])
def test_a_validation_file_with_too_few_distinct_texts_is_refused(tmp_path, name, content, distinct):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ExportError) as caught:
        validation_set(path, 96)
    assert str(caught.value) == (f"validation_texts={str(path)!r} holds {distinct} distinct texts; the gates compare pairs of texts "
                                 "and need at least 8: pass a file with more (or leave --validation-texts out for the built-in sentences)")


def test_eight_distinct_texts_are_enough(tmp_path):
    path = tmp_path / "eight.txt"
    path.write_text("".join(f"text number {i}\n" for i in range(8)))
    assert len(validation_set(path, 96).pairs) == 28


def test_validation_suffix_is_read_in_any_case(tmp_path):
    path = tmp_path / "texts.JSONL"
    path.write_text('{"text": "first"}\n{"text": "second"}\n')
    assert read_texts(path) == ["first", "second"]


# -- the graphs carry the manifest's facts --------------------------------------------------------------------

def _rehash(manifest: dict, folder: Path, variant: str) -> None:
    """Give ``variant``'s manifest entry the size and sha256 of its graph in ``folder`` (edited in place), so that
    only the graph's stamp can tell."""
    graph = folder / manifest["variants"][variant]["file"]
    manifest["variants"][variant].update(size=graph.stat().st_size, sha256=sha256_of(graph))


def test_every_graph_is_stamped_with_the_manifests_facts(tiny_folder):
    manifest = json.loads((tiny_folder / "manifest.json").read_text())
    for name, entry in manifest["variants"].items():
        stamp = {prop.key: prop.value for prop in onnx.load(str(tiny_folder / entry["file"]), load_external_data=False).metadata_props}
        facts = json.loads(stamp[STAMP_KEY])
        assert facts["model"] == manifest["model"], name
        assert facts["max_length"] == manifest["tokenizer"]["max_length"] and facts["special_ids"] == manifest["tokenizer"]["special_ids"]
        assert facts["outputs"] == manifest["outputs"] and facts["padding"] == "right"
        assert facts["file"] == entry["file"], name


def test_a_graph_copied_into_another_graphs_place_is_refused_with_verify_false(tiny_folder, copy_of):
    """The fp16 or fused graph under model_fp32.onnx: the same facts, but its stamp names its own file."""
    folder = copy_of
    for other in ("model_fp16.onnx", "model_fused.onnx"):
        (folder / "model_fp32.onnx").write_bytes((tiny_folder / other).read_bytes())
        with pytest.raises(ModelFolderError, match=rf"^model_fp32\.onnx was exported as '{re.escape(other)}', another graph of the "
                                                   r"folder; the file was replaced: re-export the folder$"):
            AlbertEmbedder.from_pretrained(folder, variant="fp32", verify=False)


@pytest.mark.parametrize("key", ["file", "gemm", "padding", "model"])
def test_a_hostile_stamp_value_is_cut_short_in_the_error(copy_of, key):
    """A megabyte of text in a stamp field of the fused graph (hashes updated to match): one short line."""
    folder = copy_of
    graph = onnx.load(str(folder / "model_fused.onnx"))
    stamp = next(prop for prop in graph.metadata_props if prop.key == STAMP_KEY)
    facts = json.loads(stamp.value)
    # model: a megabyte-long key inside a field the manifest compares key by key
    stamp.value = json.dumps({**facts, key: {**facts["model"], "x" * 1_000_000: 1} if key == "model" else "x" * 1_000_000})
    onnx.save(graph, str(folder / "model_fused.onnx"))
    manifest = json.loads((folder / "manifest.json").read_text())
    _rehash(manifest, folder, "fused")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError) as caught:
        AlbertEmbedder.from_pretrained(folder, variant="fused", device="cpu")
    message = str(caught.value)
    assert len(message) < 400  # first: a regex over a megabyte-long message would take minutes to fail
    assert re.fullmatch(r"(model_fused\.onnx|manifest\.json) .*xxxx\.\.\..*re-export the folder", message), message


def test_a_graph_without_the_stamp_is_refused_even_with_matching_hashes(copy_of):
    folder = copy_of
    graph = onnx.load(str(folder / "model_fp32.onnx"))
    del graph.metadata_props[:]
    onnx.save(graph, str(folder / "model_fp32.onnx"))
    manifest = json.loads((folder / "manifest.json").read_text())
    _rehash(manifest, folder, "fp32")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match=r"model_fp32\.onnx carries no 'albert_onnx\.manifest_facts' metadata"):
        AlbertEmbedder.from_pretrained(folder, variant="fp32")


def test_a_manifest_from_another_export_is_refused(tiny_folder, plain_folder, tmp_path):
    """plain_folder's manifest (no hidden states) beside tiny_folder's graph: the hashes are updated, the stamp differs."""
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("model_fp32.onnx", "tokenizer.json"):
        (folder / name).write_bytes((tiny_folder / name).read_bytes())
    manifest = json.loads((plain_folder / "manifest.json").read_text())
    _rehash(manifest, folder, "fp32")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match=r"manifest\.json says outputs=.* but model_fp32\.onnx was exported with"):
        AlbertEmbedder.from_pretrained(folder, variant="fp32")


def test_a_config_asking_for_tuples_exports(tmp_path):
    """Found by an attack: return_dict=false or torchscript=true (ordinary HF config keys) made the export wrapper
    fail with AttributeError: 'tuple' object has no attribute 'last_hidden_state'; chunk_size_feed_forward made a
    graph of the trace's length (or transformers' error naming no argument)."""
    source = make_tiny_source(tmp_path / "src")
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "return_dict": False, "torchscript": True, "chunk_size_feed_forward": 4}))
    run_cli("export", str(source), "--random-weights", "--variants", "fp32", "--validation-samples", "8", "-o", str(tmp_path / "m"))
    assert json.loads((tmp_path / "m" / "manifest.json").read_text())["variants"]["fp32"]["validation"]["status"] == "passed"
