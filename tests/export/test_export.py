"""The export step on the tiny model: fusion, dedup, quantization, gates, atomicity and kills, config checks, errors."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from albert_onnx import AlbertEmbedder
from albert_onnx.model_folder import ModelFolder
from albert_onnx_export import ExportOptions, export_model, validate, validation_texts
from albert_onnx_export.reference_tokenizer import ReferenceTokenizer
from albert_onnx_export.errors import ExportError
from albert_onnx_export.load import TRANSFORMERS_MAJOR, check_config, load_albert
from albert_onnx_export.locate import SHIPPED_SIZES
from albert_onnx_export.write import staging_folder
from tests.conftest import STS_DIR, TINY_CONFIG, make_tiny_source, run_cli

LAYERS = TINY_CONFIG["num_hidden_layers"]


def _ops(path: Path) -> collections.Counter:
    return collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_fused_op_counts(tiny_folder):
    variants = json.loads((tiny_folder / "manifest.json").read_text())["variants"]
    for name in ("fused", "fp16"):
        fused = variants[name]["fused_ops"]
        assert (fused["Attention"], fused["SkipLayerNormalization"], fused["FastGelu"]) == (LAYERS, 2 * LAYERS, LAYERS), name
    assert _ops(tiny_folder / "model_fused.onnx")["Attention"] == LAYERS
    int8 = _ops(tiny_folder / "model_int8.onnx")
    # per-token int8: each Attention becomes an int8 QKV projection + fp32 MultiHeadAttention, never QAttention
    assert (int8["MultiHeadAttention"], int8["SkipLayerNormalization"], int8["FastGelu"]) == (LAYERS, 2 * LAYERS, LAYERS)
    assert (int8["QAttention"], int8["Attention"]) == (0, 0)


@pytest.mark.parametrize("variant", ["fp32", "fused", "int8", "fp16"])
def test_every_weight_is_stored_once(tiny_folder, variant):
    model = onnx.load(str(tiny_folder / f"model_{variant}.onnx"))
    digests = [hashlib.sha256(onnx.numpy_helper.to_array(t).tobytes()).hexdigest()
               for t in model.graph.initializer if np.prod(t.dims) > 1024]
    assert len(digests) == len(set(digests)), f"{variant}: duplicated weights"


def test_int8_weights_are_int8(tiny_folder):
    """Every weight product in the int8 graph is MatMulIntegerToFloat on int8 levels (stored as uint8 around 128, a
    uint8 x uint8 product: see export/quantize.py); no float MatMul is left."""
    model = onnx.load(str(tiny_folder / "model_int8.onnx"))
    inits = {init.name: init for init in model.graph.initializer}
    ops = collections.Counter(node.op_type for node in model.graph.node)
    assert ops["MatMul"] == ops["Gemm"] == 0
    products = [node for node in model.graph.node if node.op_type == "MatMulIntegerToFloat"]
    quantization = json.loads((tiny_folder / "manifest.json").read_text())["variants"]["int8"]["quantization"]
    rewritten = quantization["rewritten"]
    # each rewritten MatMul/Gemm gives one product and each Attention at least one (its QKV projection)
    assert len(products) >= rewritten["MatMul"] + rewritten["Attention"] + rewritten["Gemm"]
    assert rewritten["Attention"] == LAYERS and rewritten["MatMul"] > 0
    assert {inits[node.input[1]].data_type for node in products} == {onnx.TensorProto.UINT8}
    word = [node for node in model.graph.node if node.op_type == "Gather" and node.input[0] in inits
            and tuple(inits[node.input[0]].dims) == (TINY_CONFIG["vocab_size"], TINY_CONFIG["embedding_size"])]
    assert [inits[node.input[0]].data_type for node in word] == [onnx.TensorProto.INT8]
    assert quantization["name"] == "per-token" and quantization["batch_invariant"] is True


def test_fp16_keeps_int64_inputs_and_float32_outputs(tiny_folder):
    graph = onnx.load(str(tiny_folder / "model_fp16.onnx")).graph
    assert {i.type.tensor_type.elem_type for i in graph.input} == {onnx.TensorProto.INT64}
    assert {o.type.tensor_type.elem_type for o in graph.output} == {onnx.TensorProto.FLOAT}


def test_fp16_constants_are_finite_in_half_precision(tiny_folder):
    """The masked-score value and every fp16 constant must be finite in fp16: float32's minimum, which the fusion
    writes as Attention's mask_filter_value, is -inf there (0 * -inf = NaN in a kernel that multiplies by the mask)."""
    from onnx import helper, numpy_helper

    graph = onnx.load(str(tiny_folder / "model_fp16.onnx")).graph
    values = [helper.get_attribute_value(a) for n in graph.node if n.op_type == "Attention" for a in n.attribute if a.name == "mask_filter_value"]
    assert len(values) == LAYERS and all(np.isfinite(np.float16(v)) and v <= -1e4 for v in values), values
    halves = [numpy_helper.to_array(i) for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert halves and all(np.isfinite(h).all() for h in halves)


def test_gates_recorded_and_passed(tiny_folder):
    """Each validated variant passed every gate it records, and the numbers really are within them."""
    variants = json.loads((tiny_folder / "manifest.json").read_text())["variants"]
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert variants["fp16"]["validation"]["status"] == ("passed" if cuda else "not-validated")
    for name in ("fp32", "fused", "int8"):
        check = variants[name]["validation"]
        assert check["status"] == "passed" and check["forced"] is False, name
        assert set(check["gates"]) == set(validate.GATES[name]), name
        for metric, bound in check["gates"].items():
            value = check["metrics"][metric]
            if "at_least" in bound:
                assert value >= bound["at_least"], (name, metric, value)
            else:
                assert value <= bound["at_most"], (name, metric, value)
    assert variants["fp32"]["validation"]["metrics"]["hidden_max_abs_diff"] <= 1e-4
    assert variants["fused"]["validation"]["metrics"]["hidden_max_abs_diff"] <= 1e-4
    assert variants["int8"]["validation"]["metrics"]["centred_cosine_mean"] >= 0.95


def test_manifest_names_the_onnxruntime_that_validated(monkeypatch):
    """The imported onnxruntime, by package: on a GPU host both builds can be installed, and metadata alone named the
    CPU one (here, the venv's onnxruntime) while the GPU one ran the gates."""
    from albert_onnx_export import pipeline

    monkeypatch.setattr(pipeline, "onnxruntime_package", lambda: ("onnxruntime-gpu", "9.9.9"))
    versions = pipeline._versions()
    assert versions["onnxruntime-gpu"] == "9.9.9" and "onnxruntime" not in versions


def test_runtime_matches_pytorch(tiny_source, tiny_folder):
    """End to end: the runtime's mean-pooled vector and static word rows equal PyTorch's."""
    loaded = load_albert(str(tiny_source), random_weights=True, seed=1)
    embedder = AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32", device="cpu")
    reference = ReferenceTokenizer(tiny_source)
    texts = ["A man is playing a guitar.", "", "Héllo 1,000 [MASK] 😀 <unk>", "A m\x1can in a hat\u200b", "\x07Hi\x00 there\ufeff"]
    with torch.inference_mode():
        for text, vector in zip(texts, embedder.encode(texts, normalize=False)):
            enc = reference.encode_batch([text], 512)
            expected = loaded.model(**{name: torch.from_numpy(value) for name, value in enc.items()}).last_hidden_state[0].mean(0).numpy()
            np.testing.assert_allclose(vector, expected, atol=1e-4)
        ids = reference.encode("guitar")[1:-1]
        rows = loaded.model.embeddings.word_embeddings.weight[ids].mean(0).numpy()
    np.testing.assert_allclose(embedder.word_vectors(["guitar"])[0], rows, atol=1e-6)


def test_an_embedding_table_larger_than_the_vocabulary_loads(tiny_source, tmp_path):
    """A checkpoint may pad its table past the vocabulary; the export allowed it and the runtime refused the folder."""
    padded = tmp_path / "padded"
    shutil.copytree(tiny_source, padded)
    (padded / "config.json").write_text(json.dumps({**TINY_CONFIG, "vocab_size": 30008}))
    export_model(_options(padded, tmp_path / "m", variants=("fp32",)))
    embedder = AlbertEmbedder.from_pretrained(tmp_path / "m", variant="fp32")
    assert embedder.encode(["A man is playing a guitar."]).shape == (1, TINY_CONFIG["hidden_size"])


def _options(source: Path, output: Path, **kw) -> ExportOptions:
    return ExportOptions(source=str(source), output=output, random_weights=True, validation_samples=8, **kw)


def test_existing_output_needs_overwrite(tiny_source, tiny_folder):
    before = (tiny_folder / "manifest.json").read_bytes()
    with pytest.raises(ExportError, match="already exists; pass --overwrite"):
        export_model(_options(tiny_source, tiny_folder))
    assert (tiny_folder / "manifest.json").read_bytes() == before


def test_failed_export_leaves_nothing(tiny_source, tmp_path, monkeypatch):
    """A crash mid-export (here: after the graphs are written) leaves no target, no temp folder and no lock file."""
    def boom(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(validate, "reference", boom)
    with pytest.raises(KeyboardInterrupt):
        export_model(_options(tiny_source, tmp_path / "out", variants=("fp32",)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.write_step
def test_gate_failure_writes_nothing_unless_forced(tiny_source, tmp_path, monkeypatch):
    monkeypatch.setitem(validate.GATES, "int8", {"centred_cosine_mean": ("at_least", 1.01)})
    with pytest.raises(ExportError, match=r"variant 'int8' failed its gate: centred_cosine_mean=0\.9\d+ \(>= 1\.01 required\); "
                                          r"nothing was written"):
        export_model(_options(tiny_source, tmp_path / "out", variants=("fused", "int8")))
    assert list(tmp_path.iterdir()) == []
    export_model(_options(tiny_source, tmp_path / "out", variants=("fused", "int8"), force=True))
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["variants"]["int8"]["validation"]["status"] == "failed"
    assert manifest["variants"]["int8"]["validation"]["forced"] is True
    assert manifest["variants"]["fused"]["validation"]["status"] == "passed"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json", "model_fused.onnx", "model_int8.onnx", "model_int8_u8s8.onnx",
                                                                    "tokenizer.json"]


@pytest.mark.write_step
def test_overwrite_replaces_atomically(tiny_source, tmp_path):
    out = tmp_path / "out"
    export_model(_options(tiny_source, out, variants=("fp32",)))
    export_model(_options(tiny_source, out, variants=("fused",), overwrite=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert set(json.loads((out / "manifest.json").read_text())["variants"]) == {"fused"}


# --- kills: real SIGKILLs in child processes at chosen points, then the next use of the parent folder -----------------

_KILL_BETWEEN_RENAMES = """
import os, signal, sys
from pathlib import Path
from albert_onnx_export import write
target = Path(sys.argv[1]).resolve()
write._exchange = lambda a, b: False  # as on a system without an atomic exchange (macOS, NFS, old kernels)
real_rename = os.rename
def rename(src, dst):
    if Path(dst) == target:  # the rename that installs the new folder: the old one is already moved away
        os.kill(os.getpid(), signal.SIGKILL)
    real_rename(src, dst)
os.rename = os.replace = rename
with write.staging_folder(target, overwrite=True) as folder:
    (folder / "manifest.json").write_text("new")
"""

_KILL_AFTER_EXCHANGE = """
import os, signal, sys
from pathlib import Path
from albert_onnx_export import write
real_exchange = write._exchange
def exchange(a, b):
    if not real_exchange(a, b):
        sys.exit(3)  # this filesystem has no atomic exchange
    os.kill(os.getpid(), signal.SIGKILL)  # swapped, old folder not yet deleted
write._exchange = exchange
with write.staging_folder(Path(sys.argv[1]), overwrite=True) as folder:
    (folder / "manifest.json").write_text("new")
"""

_HOLD_STAGING = """
import os, sys, time
from pathlib import Path
from albert_onnx_export import write
with write.staging_folder(Path(sys.argv[1]), overwrite=False) as folder:
    (folder / "model_fp32.onnx").write_bytes(os.urandom(1 << 20))
    print(folder, flush=True)
    time.sleep(600)
"""

_KILL_MID_EXPORT = """
import os, signal, sys
from albert_onnx_export import optimize
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # after tokenizer.json and the fp32 graph are written
optimize.optimize_fused = killed
from albert_onnx.cli import main
main(sys.argv[1:])
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


OLD_MANIFEST = '{"format": "albert-onnx-model-folder", "note": "old"}'  # --overwrite replaces only model folders


def _old_model_folder(path: Path) -> None:
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(OLD_MANIFEST)
    (path / "model_fp32.onnx").write_bytes(b"old weights")


def _first_line(process: subprocess.Popen, timeout: float = 180) -> str:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "child did not report its staging folder in time"
    return process.stdout.readline().strip()


def test_overwrite_killed_between_renames_is_restored(tmp_path):
    """Killed after moving the old folder away and before installing the new one: the next use puts the old one back."""
    out = tmp_path / "out"
    _old_model_folder(out)
    child = _python(_KILL_BETWEEN_RENAMES, str(out))
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert not out.exists()  # the state the issue reported: the model is only in .out.old-*
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.old-")]
    with pytest.raises(ExportError, match="already exists; pass --overwrite"):
        with staging_folder(out, overwrite=False):
            pass
    assert (out / "manifest.json").read_text() == OLD_MANIFEST and (out / "model_fp32.onnx").read_bytes() == b"old weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_overwrite_killed_after_atomic_exchange(tmp_path):
    """Where the OS swaps in one step, a kill right after it leaves the new folder in place; the old one is cleaned."""
    out = tmp_path / "out"
    _old_model_folder(out)
    child = _python(_KILL_AFTER_EXCHANGE, str(out))
    if child.returncode == 3:
        pytest.skip("no renameat2(RENAME_EXCHANGE) on this filesystem")
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert (out / "manifest.json").read_text() == "new"
    left = [p for p in tmp_path.iterdir() if p.name != "out"]
    assert any(p.is_dir() and (p / "manifest.json").read_text() == OLD_MANIFEST for p in left)
    with staging_folder(tmp_path / "other", overwrite=False) as folder:
        (folder / "manifest.json").write_text("other")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "out"]
    assert (out / "manifest.json").read_text() == "new"


def test_dead_exports_are_cleaned_and_live_ones_kept(tmp_path):
    """Staging folders of killed exports go at the next use of the folder; a live concurrent export's stay."""
    live = subprocess.Popen([sys.executable, "-c", _HOLD_STAGING, str(tmp_path / "a")], stdout=subprocess.PIPE, text=True)
    dead = subprocess.Popen([sys.executable, "-c", _HOLD_STAGING, str(tmp_path / "b")], stdout=subprocess.PIPE, text=True)
    try:
        live_staging, dead_staging = Path(_first_line(live)), Path(_first_line(dead))
        dead.send_signal(signal.SIGKILL)
        dead.wait(timeout=60)
        assert dead_staging.is_dir()  # what a kill leaves
        with staging_folder(tmp_path / "c", overwrite=False) as folder:
            (folder / "manifest.json").write_text("c")
        assert not dead_staging.exists() and not Path(f"{dead_staging}.lock").exists()
        assert (live_staging / "model_fp32.onnx").stat().st_size == 1 << 20 and Path(f"{live_staging}.lock").is_file()
        live.send_signal(signal.SIGKILL)
        live.wait(timeout=60)
        with pytest.raises(ExportError, match="already exists"):  # any use settles the dead, even one that fails
            with staging_folder(tmp_path / "c", overwrite=False):
                pass
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
    finally:
        for child in (live, dead):
            if child.poll() is None:
                child.kill()
                child.wait()


def test_leftovers_of_an_older_version(tmp_path, caplog):
    """Before lock files: a folder lost in .out.old-*/folder is put back; an unlocked staging folder is named, not deleted
    (nothing can tell whether its export still runs)."""
    _old_model_folder(tmp_path / ".out.old-k2j4_x9" / "folder")  # what tempfile.mkdtemp + the old rename left
    (tmp_path / ".out.tmp-8fh3_1q").mkdir()
    (tmp_path / ".out.tmp-8fh3_1q" / "model_fp32.onnx").write_bytes(b"\0" * 2_000_000)
    with caplog.at_level("WARNING", logger="albert_onnx_export"):
        with pytest.raises(ExportError, match="already exists"):
            with staging_folder(tmp_path / "out", overwrite=False):
                pass
    assert (tmp_path / "out" / "manifest.json").read_text() == OLD_MANIFEST
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.tmp-8fh3_1q", "out"]
    assert "left alone in" in caplog.text and ".out.tmp-8fh3_1q (2.0 MB)" in caplog.text and "delete them by hand" in caplog.text


def test_a_users_folder_that_looks_like_an_old_leftover_is_not_moved(tmp_path, caplog):
    """Found by an attack: any .NAME.old-*/folder beside the output was renamed to NAME (a user's photos included)."""
    photos = tmp_path / ".photos.old-2024" / "folder"
    photos.mkdir(parents=True)
    (photos / "a.jpg").write_bytes(b"x")
    (tmp_path / ".notes.old-k2j4_x9" / "folder").mkdir(parents=True)
    (tmp_path / ".notes.old-k2j4_x9" / "folder" / "manifest.json").write_text('{"format": "someone-else"}')
    with caplog.at_level("WARNING", logger="albert_onnx_export"):
        with staging_folder(tmp_path / "out", overwrite=False) as staging:
            (staging / "manifest.json").write_text(OLD_MANIFEST)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.old-k2j4_x9", ".photos.old-2024", "out"]
    assert (photos / "a.jpg").read_bytes() == b"x" and "restored" not in caplog.text


@pytest.mark.write_step
def test_killed_export_then_rerun_leaves_only_the_model(tiny_source, tmp_path):
    """A real export SIGKILLed mid-way, then run again: one complete model folder and nothing else."""
    out = tmp_path / "m"
    child = _python(_KILL_MID_EXPORT, "export", str(tiny_source), "--random-weights", "--validation-samples", "8", "-o", str(out))
    assert child.returncode == -signal.SIGKILL, child.stderr
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and left[0].startswith(".m.tmp-") and left[1] == left[0] + ".lock"
    assert (tmp_path / left[0] / "model_fp32.onnx").is_file()
    export_model(_options(tiny_source, out, variants=("fp32",)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert set(ModelFolder.load(out).variants) == {"fp32"}


# --- config checks ------------------------------------------------------------------------------------------------

def _config_folder(tmp_path: Path, config: object) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("change, message", [
    ({"num_hidden_layers": -1}, r"num_hidden_layers=-1 must be from 1 to 256 \(albert-base-v2: 12\)"),
    ({"num_hidden_layers": 0}, r"num_hidden_layers=0 must be from 1 to 256"),
    ({"hidden_size": "768"}, r"hidden_size='768' \(str\) must be an integer >= 1"),
    ({"num_attention_heads": 12.0}, r"num_attention_heads=12\.0 must be an integer >= 1"),
    ({"intermediate_size": True}, r"intermediate_size=True \(bool\) must be an integer"),
    ({"hidden_size": 130}, r"hidden_size=130 must be divisible by num_attention_heads=4"),
    ({"hidden_act": "gelu_nwe"}, r"hidden_act='gelu_nwe' \(str\) must be one of transformers' activations"),
    ({"max_position_embeddings": 4}, r"max_position_embeddings=4 must be from 8 to 65536"),
    ({"vocab_size": 10**12}, r"vocab_size=1000000000000 must be from 1 to 1000000"),
    ({"max_position_embeddings": 10**9}, r"max_position_embeddings=1000000000 must be from 8 to 65536"),
    ({"pad_token_id": 30000}, r"pad_token_id=30000 must be an id from 0 to vocab_size-1=29999"),
    ({"num_hidden_groups": 13}, r"num_hidden_groups=13 must be <= num_hidden_layers=12"),
    ({"layer_norm_eps": 0}, r"layer_norm_eps=0 must be in \(0\.0, 1\.0\]"),
    ({"position_embedding_type": "relative_key"}, r"position_embedding_type='relative_key' \(str\) must be 'absolute'"),
    ({"vocab_size": None}, r"vocab_size=None \(NoneType\) must be an integer"),
])
def test_bad_config_field_is_named(tmp_path, change, message):
    folder = _config_folder(tmp_path, {**TINY_CONFIG, **change})
    with pytest.raises(ExportError, match=rf"^{re.escape(str(folder / 'config.json'))} is not a usable ALBERT config: {message}.*fix these fields"):
        load_albert(str(folder), random_weights=True)


def test_more_inner_layers_than_a_group_holds(tmp_path):
    """num_hidden_layers=2 in 2 groups of 2 inner layers: transformers 4.x raised IndexError mid-export (its head mask has
    layers // groups entries per group); transformers 5 runs it, and the export must then pass its gates."""
    folder = make_tiny_source(tmp_path / "src")  # the vocabulary beside it
    (folder / "config.json").write_text(json.dumps({**TINY_CONFIG, "num_hidden_layers": 2, "num_hidden_groups": 2, "inner_group_num": 2}))
    if TRANSFORMERS_MAJOR < 5:
        with pytest.raises(ExportError, match=r"inner_group_num=2 is more than num_hidden_layers / num_hidden_groups = 1, which "
                                              r"transformers 4\.[0-9.]+ cannot run \(transformers 5 can\); fix these fields"):
            load_albert(str(folder), random_weights=True)
        return
    out = tmp_path / "out"
    run_cli("export", str(folder), "--random-weights", "--variants", "fp32", "--validation-samples", "8", "-o", str(out))
    assert ModelFolder.load(out).variants["fp32"].validation.status == "passed"


def test_config_of_only_model_type_lists_every_missing_field(tmp_path):
    """transformers would fill in its defaults (hidden 4096): every architecture field must be given instead."""
    folder = _config_folder(tmp_path, {"model_type": "albert"})
    with pytest.raises(ExportError) as caught:
        load_albert(str(folder), random_weights=True)
    for name in ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "type_vocab_size", "max_position_embeddings", "hidden_act"):
        assert f"{name} is missing" in str(caught.value)


def test_several_bad_fields_in_one_error(tmp_path):
    folder = _config_folder(tmp_path, {**TINY_CONFIG, "num_hidden_layers": -1, "hidden_size": "128"})
    with pytest.raises(ExportError, match=r"hidden_size='128' \(str\) must be an integer >= 1.*; num_hidden_layers=-1 must be from 1 to 256"):
        load_albert(str(folder), random_weights=True)


def test_non_albert_is_refused_by_name(tmp_path):
    folder = _config_folder(tmp_path, {"model_type": "bert"})
    with pytest.raises(ExportError, match="is a 'bert' checkpoint, not ALBERT"):
        export_model(_options(folder, tmp_path / "out"))


def test_config_without_model_type(tmp_path):
    folder = _config_folder(tmp_path, {k: v for k, v in TINY_CONFIG.items() if k != "model_type"})
    with pytest.raises(ExportError, match="has no model_type"):
        load_albert(str(folder), random_weights=True)


def test_shipped_size_configs():
    assert set(SHIPPED_SIZES) == {f"albert-{size}-{version}" for size in ("base", "large", "xlarge", "xxlarge") for version in ("v1", "v2")}
    from importlib import resources

    for name in SHIPPED_SIZES:
        check_config(json.loads(resources.files("albert_onnx_export").joinpath("configs", f"{name}.json").read_text()), name)
    with pytest.raises(ExportError, match="size name with no weights"):
        load_albert("albert-large-v2")


# --- one-line errors for bad sources -------------------------------------------------------------------------------

def test_missing_weights_suggest_random_weights(tiny_source, tmp_path):
    options = ExportOptions(source=str(tiny_source), output=tmp_path / "out")
    with pytest.raises(ExportError, match="--random-weights"):
        export_model(options)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("source", ["./no/such/folder", "/no/such/folder", "../nope"])
def test_missing_local_path(source):
    with pytest.raises(ExportError, match=rf"^source='{source}': no such folder; pass a folder with config\.json"):
        load_albert(source, random_weights=True)


@pytest.mark.parametrize("text, message", [
    ('{"model_type": "albert",', r"not valid JSON \(line 1, column 25: Expecting property name"),
    ("[1, 2]", r"holds a JSON list, not an object"),
    (b"\xff\xfe{}", r"not UTF-8 text \(byte 0\)"),
])
def test_damaged_config_json_is_named(tmp_path, text, message):
    folder = tmp_path / "src"
    folder.mkdir()
    config = folder / "config.json"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ExportError, match=rf"^{re.escape(str(config))}: {message}"):
        load_albert(str(folder), random_weights=True)


class _Payload:
    """Pickles as a call to os.system: what a malicious pytorch_model.bin carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _checkpoint(tiny_source: Path, folder: Path) -> Path:
    """A checkpoint folder with the tiny config and its vocabulary (read before the weights), for weights to be added."""
    folder.mkdir()
    for name in ("config.json", "spiece.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tiny_source / name, folder / name)
    return folder


def test_malicious_pickle_is_refused_in_one_line(tiny_source, tmp_path):
    folder = _checkpoint(tiny_source, tmp_path / "evil")
    marker = tmp_path / "payload-ran"
    torch.save({"embeddings.word_embeddings.weight": _Payload(marker)}, folder / "pytorch_model.bin")
    result = run_cli("export", str(folder), "-o", str(tmp_path / "out"), check=False)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"albert-onnx export: error: {folder / 'pytorch_model.bin'}: torch.load(weights_only=True) refused it")
    assert "GLOBAL posix.system" in result.stderr and "model.safetensors from a source you trust" in result.stderr
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil"]


@pytest.mark.parametrize("damage, message", [
    ("truncated", r"not a valid safetensors file \(Error while deserializing header"),
    ("lfs", r"is a Git LFS pointer, not the weights; run `git lfs pull`"),
    ("mismatch", r"the weights do not fit config\.json \(3 tensors have other shapes, e\.g\. encoder\.albert_layer_groups\.0\.albert_layers\.0\.ffn\.bias\); "),
    ("missing", r"the weights lack 1 tensors of the ALBERT model config\.json describes \(e\.g\. pooler\.weight\), which would keep random values"),
    # found by an attack: a NaN row passed every gate (no validation text used it) and gave NaN vectors at run time
    ("nonfinite", r"tensor embeddings\.word_embeddings\.weight holds NaN or infinity \(first at index \[5, 0\]\); the checkpoint is damaged"),
])
def test_damaged_weights_are_named(tiny_source, tmp_path, damage, message):
    folder = _checkpoint(tiny_source, tmp_path / "ckpt")
    weights = folder / "model.safetensors"
    if damage == "lfs":
        weights.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 123\n")
    else:
        load_albert(str(tiny_source), random_weights=True).model.save_pretrained(folder, safe_serialization=True)
        if damage == "truncated":
            weights.write_bytes(weights.read_bytes()[:1000])
        elif damage in ("missing", "nonfinite"):
            from safetensors.torch import load_file, save_file

            tensors = load_file(weights)
            if damage == "missing":
                del tensors["pooler.weight"]
            else:
                tensors["embeddings.word_embeddings.weight"][5] = float("nan")
            save_file(tensors, weights, metadata={"format": "pt"})
        else:
            (folder / "config.json").write_text(json.dumps({**TINY_CONFIG, "intermediate_size": 512}))
    with pytest.raises(ExportError, match=rf"^{re.escape(str(weights))}:? {message}"):
        load_albert(str(folder))


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_a_weight_stored_as_integers(tiny_source, tmp_path, kind):
    """Found by an attack: under transformers 4.x the file loads but load_state_dict raised a RuntimeError traceback
    ("Only Tensors of floating point ... can require gradients"); transformers 5 loads the stored values as floats."""
    from safetensors.torch import load_file, save_file

    folder = _checkpoint(tiny_source, tmp_path / "ckpt")
    load_albert(str(tiny_source), random_weights=True).model.save_pretrained(folder, safe_serialization=True)
    weights = folder / "model.safetensors"
    tensors = load_file(weights)
    tensors["embeddings.LayerNorm.weight"] = torch.full_like(tensors["embeddings.LayerNorm.weight"], 3, dtype=torch.int64)
    if kind == "bin":
        weights.unlink()
        weights = folder / "pytorch_model.bin"
        torch.save(tensors, weights)
    else:
        save_file(tensors, weights, metadata={"format": "pt"})
    if TRANSFORMERS_MAJOR < 5:
        stored = "I64" if kind == "safetensors" else "int64"
        with pytest.raises(ExportError, match=rf"^{re.escape(str(weights))}: tensor embeddings\.LayerNorm\.weight is stored as {stored}, "
                                              "but ALBERT's weights are floating point"):
            load_albert(str(folder))
        return
    weight = load_albert(str(folder)).model.embeddings.LayerNorm.weight
    assert weight.dtype == torch.float32 and bool((weight == 3).all())


def test_weights_that_overflow_are_refused_even_with_force(tiny_source, tmp_path):
    """Found by an attack: finite but huge weights pass the NaN check, the graph outputs NaN, and --force wrote the folder
    (the guard looked at the recorded metrics, from which the non-finite ones had been dropped)."""
    from safetensors.torch import load_file, save_file

    folder = _checkpoint(tiny_source, tmp_path / "ckpt")
    load_albert(str(tiny_source), random_weights=True).model.save_pretrained(folder, safe_serialization=True)
    tensors = load_file(folder / "model.safetensors")
    tensors["embeddings.LayerNorm.weight"] = torch.full_like(tensors["embeddings.LayerNorm.weight"], 3e38)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ExportError, match=r"^variant 'fp32' computes [0-9]+ NaN or inf values on the validation texts .*, so it "
                                          r"is not written, even with --force$"):
        export_model(ExportOptions(source=str(folder), output=tmp_path / "out", variants=("fp32", "fused"), force=True,
                                   validation_samples=8))
    assert not (tmp_path / "out").exists()


def test_offline_hub_id_in_one_line(tmp_path):
    result = run_cli("export", "someone/albert-finetuned", "-o", str(tmp_path / "out"), check=False,
                     env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache")})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("albert-onnx export: error: source='someone/albert-finetuned' is not a local folder, "
                                    "and its config.json could not be fetched from the Hugging Face hub")
    assert "unset HF_HUB_OFFLINE" in result.stderr


def test_safetensors_checkpoint_loads(tiny_source, tmp_path):
    loaded = load_albert(str(tiny_source), random_weights=True, seed=3)
    checkpoint = tmp_path / "ckpt"
    loaded.model.save_pretrained(checkpoint, safe_serialization=True)
    again = load_albert(str(checkpoint))
    assert again.weights_file == "model.safetensors"
    assert again.random_weights is False
    assert torch.equal(again.model.embeddings.word_embeddings.weight, loaded.model.embeddings.word_embeddings.weight)


def test_a_checkpoint_without_the_pooler_head_exports_without_pooler_output(tiny_source, tmp_path):
    """AlbertForMaskedLM (and ...ForTokenClassification, ...ForQuestionAnswering) save no pooler: the export refused such
    a checkpoint as incomplete ("use the checkpoint's complete weights file"). Now its folder simply has no pooler_output."""
    from transformers import AlbertConfig, AlbertForMaskedLM

    from albert_onnx_export.load import randomize_weights

    checkpoint = _checkpoint(tiny_source, tmp_path / "mlm")
    torch.manual_seed(0)
    mlm = AlbertForMaskedLM(AlbertConfig(**TINY_CONFIG))
    assert mlm.albert.pooler is None  # what the case is about: this head's ALBERT has no pooler
    randomize_weights(mlm.albert, seed=5)
    mlm.save_pretrained(checkpoint, safe_serialization=True)

    out = tmp_path / "out"
    exported = run_cli("export", str(checkpoint), "-o", str(out), "--validation-samples", "8", "--variants", "fp32,fused,int8")
    assert "no pooler head in the checkpoint" in exported.stdout
    # the head is built absent, so transformers does not report pooler.weight as newly initialised ("TRAIN this model")
    assert "pooler.weight" not in exported.stderr, exported.stderr
    folder = ModelFolder.load(out)
    assert folder.manifest.outputs == ["last_hidden_state", "sentence_embedding", "word_embeddings", "projected_word_embeddings"]
    for name, entry in folder.variants.items():
        assert entry.validation.status == "passed", name
        assert "pooler_max_abs_diff" not in entry.validation.gates, name
        session = ort.InferenceSession(str(out / entry.file), providers=["CPUExecutionProvider"])
        assert [node.name for node in session.get_outputs()] == folder.manifest.outputs, name

    # the trained weights, not a random init: the vectors are the masked-LM model's own
    embedder = AlbertEmbedder.from_pretrained(out, variant="fp32", device="cpu")
    enc = ReferenceTokenizer(checkpoint).encode_batch(["A man is playing a guitar."], 512)
    with torch.inference_mode():
        expected = mlm.albert(**{name: torch.from_numpy(value) for name, value in enc.items()}).last_hidden_state[0].mean(0).numpy()
    np.testing.assert_allclose(embedder.encode(["A man is playing a guitar."], normalize=False)[0], expected, atol=1e-4)
    with pytest.raises(ValueError, match=rf"^pooling='pooler': {re.escape(str(out))} has no pooler head .*; pick mean, cls or max$"):
        embedder.encode(["A man is playing a guitar."], pooling="pooler")
    assert embedder.encode(["A man"], pooling="cls").shape == (1, TINY_CONFIG["hidden_size"])
    (tmp_path / "in.txt").write_text("A man is playing a guitar.\n")
    result = run_cli("embed", str(out), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "v.npy"),
                     "--pooling", "pooler", check=False)
    assert result.returncode == 2
    assert result.stderr.startswith(f"albert-onnx embed: error: --pooling pooler: {out} has no pooler head"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "v.npy").exists()
    result = run_cli("embed", str(out), "--engine", "ray", "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "ray"),
                     "--pooling", "pooler", check=False)
    assert result.returncode == 2
    assert result.stderr.startswith(f"albert-onnx embed: error: --pooling pooler: {out} has no pooler head"), result.stderr
    assert not (tmp_path / "ray").exists()

    # the pooler's two tensors are absent by design: another missing tensor is the one counted and named
    from safetensors.torch import load_file, save_file

    tensors = load_file(checkpoint / "model.safetensors")
    del tensors["albert.embeddings.LayerNorm.bias"]
    save_file(tensors, checkpoint / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ExportError, match=r"the weights lack 1 tensors of the ALBERT model config\.json describes \(e\.g\. "
                                          r"embeddings\.LayerNorm\.bias\)"):
        load_albert(str(checkpoint))


@pytest.mark.parametrize("head, pooler", [("AlbertForPreTraining", True), ("AlbertForSequenceClassification", True),
                                          ("AlbertForMaskedLM", False)])
@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_a_head_models_checkpoint_keeps_exactly_the_pooler_it_stored(tiny_source, tmp_path, head, pooler, weights):
    """Head models store ALBERT's tensors under "albert.": the pooler is read from the file's names without that prefix
    (the model is built with the head exactly where the checkpoint has it)."""
    import transformers

    from albert_onnx_export.load import randomize_weights

    torch.manual_seed(0)
    model = getattr(transformers, head)(transformers.AlbertConfig(**TINY_CONFIG))
    randomize_weights(model.albert, seed=3)
    checkpoint = _checkpoint(tiny_source, tmp_path / "ckpt")
    if weights == "model.safetensors":
        model.save_pretrained(checkpoint, safe_serialization=True)
    else:  # transformers 5 writes no .bin
        torch.save(model.state_dict(), checkpoint / weights)
    loaded = load_albert(str(checkpoint))
    assert loaded.weights_file == weights
    assert loaded.pooler is pooler and (loaded.model.pooler is not None) is pooler
    if pooler:
        assert torch.equal(loaded.model.pooler.weight, model.albert.pooler.weight)
    assert torch.equal(loaded.model.embeddings.word_embeddings.weight, model.albert.embeddings.word_embeddings.weight)


def test_an_fp16_checkpoint_loads_as_fp32(tiny_source, tmp_path):
    """transformers 5 kept the checkpoint's dtype: model_fp32.onnx came out fp16 and failed its gate (found by an attack)."""
    loaded = load_albert(str(tiny_source), random_weights=True, seed=3)
    checkpoint = tmp_path / "ckpt"
    loaded.model.half().save_pretrained(checkpoint, safe_serialization=True)
    again = load_albert(str(checkpoint))
    assert {param.dtype for param in again.model.parameters()} == {torch.float32}
    assert torch.equal(again.model.embeddings.word_embeddings.weight, loaded.model.embeddings.word_embeddings.weight.float())


def test_bad_variant_name(tiny_source, tmp_path):
    with pytest.raises(ExportError, match="variants='int4'"):
        export_model(_options(tiny_source, tmp_path / "out", variants=("int4",)))


@pytest.mark.write_step
def test_cli_says_random_weights_and_reports_errors(tiny_source, tmp_path):
    result = run_cli("export", str(tiny_source), "--random-weights", "--variants", "fp32", "--validation-samples", "8", "-o", str(tmp_path / "m"))
    assert "RANDOM weights" in result.stdout and "[7/7]" in result.stdout
    result = run_cli("export", str(tiny_source), "--random-weights", "-o", str(tmp_path / "m"), check=False)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "already exists; pass --overwrite" in result.stderr


def test_validation_set_from_stsb():
    texts = validation_texts.read_texts(STS_DIR / "sts-dev.csv")
    assert len(texts) == 3000
    vset = validation_texts.validation_set(STS_DIR / "sts-dev.csv", 48)
    assert len(vset.texts) == 48 + 2 and len(vset.pairs) == 24  # 24 whole pairs, plus two long texts built from them
    assert len({len(t) for t in vset.texts}) > 30
    assert vset.pairs == [(2 * i, 2 * i + 1) for i in range(24)]


def test_few_stsb_pairs_rank_all_pairs_of_distinct_texts(tmp_path):
    """8 samples from an STS-B file were 4 whole pairs: one swapped neighbour gave Spearman 0.8, failing int8's 0.995.
    Ranking all pairs among their texts instead counted a shared sentence's pairs several times (a swap: 0.93)."""
    vset = validation_texts.validation_set(STS_DIR / "sts-dev.csv", 8)
    assert len(set(vset.texts[:8])) == 8 and vset.pairs == [(i, j) for i in range(8) for j in range(i + 1, 8)]
    shared = tmp_path / "shared.csv"  # seven pairs, all with "A cat is here."
    shared.write_text("".join(f"x\tx\tx\tx\t1.0\tA cat is here.\t{word} is here.\n" for word in "BCDEFGH"))
    vset = validation_texts.validation_set(shared, 8)
    assert sorted(vset.texts[:8]) == sorted({"A cat is here.", *(f"{word} is here." for word in "BCDEFGH")})
    assert len(vset.pairs) == 28


@pytest.mark.parametrize("platform, maxrss", [("linux", 3 * 1024**2), ("darwin", 3 * 1024**3)])
def test_peak_rss_reads_ru_maxrss_in_the_platforms_unit(monkeypatch, platform, maxrss):
    from albert_onnx_export import pipeline

    # 3 GiB peak: ru_maxrss counts KiB on Linux and bytes on macOS
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(pipeline.resource, "getrusage", lambda who: collections.namedtuple("Usage", "ru_maxrss")(maxrss))
    assert pipeline._peak_rss_mb() == 3 * 1024
