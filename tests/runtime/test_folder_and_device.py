"""Model-folder verification and device/provider choice. Never imports torch."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from albert_onnx import AlbertEmbedder, ModelFolderError, TruncationWarning
from albert_onnx.session import available_providers
from tests.conftest import run_cli


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


# Found by an attack (2026-12-07): the graph was hashed by path, then opened by path again. A re-export landing in
# between (an atomic exchange of the folder) gave the new model's vectors under the old manifest's hashes: a Ray actor
# starting then passed its check against the job's record and wrote another model's vectors into the job.
def test_a_folder_replaced_while_loading_never_gives_the_new_files_vectors(tiny_source, tmp_path, sts_texts, monkeypatch):
    from albert_onnx import model_folder, session

    texts = sts_texts[:8]
    folder, other = tmp_path / "model", tmp_path / "reexported"  # the same model with other weights (another seed)
    for seed, out in (("1", folder), ("2", other)):
        run_cli("export", str(tiny_source), "--random-weights", "--seed", seed, "--variants", "fp32", "--validation-samples", "8", "-o", str(out))
    expected = AlbertEmbedder.from_pretrained(folder, variant="fp32").encode(texts)
    assert np.abs(AlbertEmbedder.from_pretrained(other, variant="fp32").encode(texts) - expected).max() > 0.01

    def exchange() -> None:
        os.rename(folder, tmp_path / "swap")
        os.rename(other, folder)
        os.rename(tmp_path / "swap", other)

    def exchanging_first(real):
        def wrapper(*args, **kwargs):
            monkeypatch.setattr(target, name, real)  # once
            exchange()
            return real(*args, **kwargs)
        return wrapper

    # the re-export lands just before the session is created: the bytes read and checked before are what runs
    target, name = session.ort, "InferenceSession"
    monkeypatch.setattr(target, name, exchanging_first(session.ort.InferenceSession))
    np.testing.assert_array_equal(AlbertEmbedder.from_pretrained(folder, variant="fp32").encode(texts), expected)
    exchange()  # back
    # it lands just before the graph is read: the bytes read are checked against the manifest read before them
    target, name = model_folder.ModelFolder, "read_file"
    monkeypatch.setattr(target, name, exchanging_first(model_folder.ModelFolder.read_file))
    with pytest.raises(ModelFolderError, match=r"model_fp32\.onnx: sha256 .* in manifest\.json; the file was changed"):
        AlbertEmbedder.from_pretrained(folder, variant="fp32")


# Found in review (2026-12-07): loaded from bytes, ONNX Runtime's error names no file, and a graph newer than this
# onnxruntime (or with a type error) fell through as a raw traceback instead of one line naming the file.
def test_a_graph_this_onnxruntime_cannot_load_is_one_line(copy_of):
    path = copy_of / "model_fp32.onnx"
    data = bytearray(path.read_bytes())
    assert data[:2] == b"\x08\x08"  # ModelProto field 1, ir_version 8
    data[1] = 99
    path.write_bytes(bytes(data))
    manifest = json.loads((copy_of / "manifest.json").read_text())
    manifest["variants"]["fp32"]["sha256"] = hashlib.sha256(data).hexdigest()  # the file is as the manifest says
    (copy_of / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match=r"model_fp32\.onnx: ONNX Runtime cannot load it \(.*IR version.*99.*\); the file is "
                                               r"damaged or not an albert-onnx graph: re-export the folder"):
        AlbertEmbedder.from_pretrained(copy_of, variant="fp32", device="cpu")


def test_a_loaded_embedder_keeps_no_copy_of_the_graph_file(tiny_folder):
    """ONNX Runtime keeps the bytes a session was made from: a second copy of the graph for as long as it lives."""
    import gc
    import tracemalloc

    size = (tiny_folder / "model_fp32.onnx").stat().st_size
    tracemalloc.start()
    try:
        embedder = AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32", device="cpu", threads=1)
        gc.collect()
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak >= size  # the file was read into Python memory once
    assert held < size / 2, f"{held} bytes of Python memory held after loading a {size}-byte graph"
    assert embedder.encode("a b").shape == (1, embedder.dim)


# Found by an attack (2026-12-07): verify=False read a graph of any size whole (a sparse 10 GB file: 6 GiB of RSS,
# then a MemoryError or a bare RuntimeError); ONNX Runtime given the path had refused it at once.
def test_a_huge_graph_is_refused_before_it_is_read(copy_of):
    os.truncate(copy_of / "model_fp32.onnx", 3 << 30)  # sparse: no disk used
    started = time.perf_counter()
    with pytest.raises(ModelFolderError, match=r"model_fp32\.onnx is 3221225472 bytes, more than albert-onnx writes there \(at most "
                                               r"2147483648\); the file was replaced: re-export the folder"):
        AlbertEmbedder.from_pretrained(copy_of, variant="fp32", verify=False)
    assert time.perf_counter() - started < 5


# Found by an attack (2026-12-07): regular_file looked at the path, then the file was opened by name again; a folder
# replaced in between could hand over a FIFO (the load blocked for ever) or a link to /dev/zero (read until out of memory).
def test_files_are_checked_as_opened(tmp_path):
    from albert_onnx.model_folder import open_regular

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to("/dev/zero")
    with pytest.raises(ModelFolderError, match=r"fifo is not a regular file; graph must be a regular file"):
        open_regular(tmp_path / "fifo", "graph")  # O_NONBLOCK: no writer, and still no wait
    with pytest.raises(ModelFolderError, match=r"link is a symbolic link; graph must be a regular file"):
        open_regular(tmp_path / "link", "graph")
    with pytest.raises(ModelFolderError, match=r"gone is missing"):
        open_regular(tmp_path / "gone", "graph")
    (tmp_path / "file").write_bytes(b"abc")
    with open_regular(tmp_path / "file", "graph") as handle:
        assert handle.read() == b"abc"


def test_truncated_tokenizer_is_refused(copy_of):
    path = copy_of / "tokenizer.json"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelFolderError, match=r"tokenizer\.json: size"):
        AlbertEmbedder.from_pretrained(copy_of)


def test_unknown_variant_and_wrong_device(tiny_folder, tmp_path):
    with pytest.raises(ValueError, match="variant='int4': choose one of 'auto', 'fp32', 'fused', 'int8', 'fp16'"):
        AlbertEmbedder.from_pretrained(tiny_folder, variant="int4")
    with pytest.raises(ValueError, match="variant='fp16' runs on"):
        AlbertEmbedder.from_pretrained(tiny_folder, variant="fp16", device="cpu")
    only_fp32 = tmp_path / "model"
    shutil.copytree(tiny_folder, only_fp32)
    manifest = json.loads((only_fp32 / "manifest.json").read_text())
    manifest["variants"] = {"fp32": manifest["variants"]["fp32"]}
    (only_fp32 / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match=r"variant='int8' is not in .* \(it has fp32\)"):
        AlbertEmbedder.from_pretrained(only_fp32, variant="int8")
    assert AlbertEmbedder.from_pretrained(only_fp32, device="cpu").variant == "fp32"  # auto: what the folder has


# -- files that are not what the manifest says, with verify=False (no size or hash check) ----------------

def load_in_subprocess(folder, timeout: float = 60) -> subprocess.CompletedProcess:
    """from_pretrained(verify=False) in a fresh interpreter: a FIFO that got opened would block it forever."""
    code = ("import sys\nfrom albert_onnx import AlbertEmbedder, ModelFolderError\n"
            "try:\n    AlbertEmbedder.from_pretrained(sys.argv[1], variant='fp32', verify=False)\n"
            "except ModelFolderError as error:\n    print('refused:', error)\n")
    return subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name", ["model_fp32.onnx", "tokenizer.json", "manifest.json"])
def test_fifo_is_refused_quickly(copy_of, name):
    (copy_of / name).unlink()
    os.mkfifo(copy_of / name)
    started = time.perf_counter()
    result = load_in_subprocess(copy_of)
    assert time.perf_counter() - started < 30
    assert result.returncode == 0, result.stderr
    assert f"refused: {copy_of / name} is not a regular file" in result.stdout


@pytest.mark.parametrize("name", ["model_fp32.onnx", "tokenizer.json", "manifest.json"])
def test_symlink_is_refused_even_unverified(copy_of, tmp_path, name):
    outside = tmp_path / f"outside-{name}"
    shutil.move(copy_of / name, outside)
    (copy_of / name).symlink_to(outside)  # same bytes, same hash: still refused
    with pytest.raises(ModelFolderError, match=rf"{name} is a symbolic link"):
        AlbertEmbedder.from_pretrained(copy_of, variant="fp32", verify=False)


def edit_tokenizer(folder, edit) -> None:
    path = folder / "tokenizer.json"
    spec = json.loads(path.read_text(encoding="utf-8"))
    edit(spec)
    path.write_text(json.dumps(spec), encoding="utf-8")


def load_edited(folder, edit, caplog) -> tuple[AlbertEmbedder, str]:
    """``folder`` with its tokenizer.json edited, loaded unverified: the embedder and its one warning."""
    edit_tokenizer(folder, edit)
    with caplog.at_level(logging.WARNING, logger="albert_onnx"):
        embedder = AlbertEmbedder.from_pretrained(folder, variant="fp32", verify=False)
    (record,) = caplog.records
    return embedder, record.getMessage()


def add_piece(spec: dict) -> None:
    spec["model"]["vocab"].append(["▁extra", -20.0])


def swap_sep_and_mask(spec: dict) -> None:
    vocab = spec["model"]["vocab"]
    vocab[3], vocab[4] = vocab[4], vocab[3]
    for token in spec["added_tokens"]:
        token["id"] = {3: 4, 4: 3}.get(token["id"], token["id"])


def bad_charsmap(spec: dict) -> None:
    (charsmap,) = [step for step in spec["normalizer"]["normalizers"] if step["type"] == "Precompiled"]
    charsmap["precompiled_charsmap"] = "AAAA"  # tokenizers panics (PanicException, a BaseException) on this


@pytest.mark.parametrize("edit, match", [
    (add_piece, r"tokenizer\.json has ids up to 30000 but manifest\.json says vocab_size=30000"),
    (swap_sep_and_mask, r"tokenizer\.json: special token sep \('\[SEP\]'\) has id 4, manifest\.json says 3"),
    (bad_charsmap, r"tokenizer\.json: tokenizers failed to parse it"),
])
def test_swapped_or_crafted_tokenizer_is_refused_even_unverified(copy_of, edit, match):
    edit_tokenizer(copy_of, edit)
    with pytest.raises(ModelFolderError, match=match):
        AlbertEmbedder.from_pretrained(copy_of, variant="fp32", verify=False)


def test_tokenizer_that_splits_a_literal_unk_is_named(copy_of, caplog):
    """A folder exported before 2026-12-03 has no "<unk>" added token: a literal "<unk>" got its own "▁" piece."""
    assert AlbertEmbedder.from_pretrained(copy_of, variant="fp32", verify=False).tokenize(["a <unk> b"])["input_ids"].shape == (1, 5)
    assert caplog.records == []
    def without_unk(spec):
        spec.update(added_tokens=[token for token in spec["added_tokens"] if token["content"] != "<unk>"])

    embedder, warning = load_edited(copy_of, without_unk, caplog)
    assert warning == (f"{copy_of / 'tokenizer.json'} does not keep '<unk>' whole in a text, as ALBERT's tokenizer does, "
                       "so a text that holds it gets other ids (and vectors) than PyTorch's; re-export the folder "
                       "(texts without it are unaffected)")
    assert embedder.tokenize(["a <unk> b"])["input_ids"].shape == (1, 6)


def test_tokenizer_from_before_the_whitespace_fix_is_named_and_tokenized_whole(copy_of, caplog):
    """A folder exported before 2026-12-06 does not separate words at U+001C-U+001F: heads are not cut there."""
    embedder, warning = load_edited(copy_of, lambda spec: spec["normalizer"]["normalizers"][1]["pattern"].update(Regex=r"\s+"), caplog)
    assert warning == (f"{copy_of / 'tokenizer.json'} was written before 2026-12-06: texts with control, zero-width "
                       "or U+001C-U+001F characters, or marks such as the emoji variation selector U+FE0F, get other "
                       "ids (and vectors) than PyTorch's, and their character offsets can be wrong; re-export the "
                       "folder (other texts are unaffected)")
    # "playin\x1cg" is "playing" to this tokenizer: a head cut at U+001C (128 characters in) ends "▁play" "in"
    with pytest.warns(TruncationWarning):
        ids = embedder.tokenize(["a" + " " * 127 + "playin\x1cg" + " word" * 10], max_length=4)["input_ids"]
    np.testing.assert_array_equal(ids, embedder.tokenize(["a playing"])["input_ids"])


def test_tokenizer_from_before_the_grapheme_fix_is_named(copy_of, caplog):
    """A folder exported before 2026-12-07 loses a mark after U+FFFD, U+2581, U+FEFF or a zero-width character."""
    def drop_step(spec):
        steps = spec["normalizer"]["normalizers"]
        at = [step["type"] for step in steps].index("Precompiled")
        assert steps[at - 1]["content"] == " "
        del steps[at - 1]

    assert AlbertEmbedder.from_pretrained(copy_of, variant="fp32", verify=False).tokenize(["x\ufffd\u034fy"])["input_ids"].shape == (1, 6)
    assert caplog.records == []
    embedder, warning = load_edited(copy_of, drop_step, caplog)
    assert warning == (f"{copy_of / 'tokenizer.json'} was written before 2026-12-07: a zero-width character, U+2581, "
                       "U+FEFF or U+FFFD followed by a mark such as U+034F gets other ids (and vectors) than PyTorch's; "
                       "re-export the folder (other texts are unaffected)")
    assert embedder.tokenize(["x\ufffd\u034fy"])["input_ids"].shape == (1, 5)  # the mark lost, as before the fix


def test_the_grapheme_fix_is_looked_for_right_before_the_character_map():
    from albert_onnx.tokenizer import _lacks_spaced_characters_step as lacks

    assert lacks([{"type": "Replace", "content": ""}, {"type": "Precompiled"}]) is True
    assert lacks([{"type": "Precompiled"}]) is True  # the map first: nothing before it
    assert lacks([{"type": "Replace", "content": " "}, {"type": "Precompiled"}]) is False
    assert lacks([{"type": "NFKD"}, {"type": "Lowercase"}]) is False  # no map, no fix needed


@pytest.mark.parametrize("content, match", [
    (b"{not json", r"tokenizer\.json: not a tokenizer\.json this tokenizers can read"),
    (b"\xff\xfe", r"tokenizer\.json: not a tokenizer\.json this tokenizers can read \(UnicodeDecodeError"),
])
def test_unparsable_tokenizer_is_refused(copy_of, content, match):
    (copy_of / "tokenizer.json").write_bytes(content)
    with pytest.raises(ModelFolderError, match=match):
        AlbertEmbedder.from_pretrained(copy_of, variant="fp32", verify=False)


@pytest.mark.parametrize("corrupt", [
    lambda data, tokenizer: tokenizer,  # another file of the folder
    lambda data, tokenizer: data[: len(data) // 2],  # truncated: INVALID_PROTOBUF
    lambda data, tokenizer: data[:500] + bytes([data[500] ^ 0xFF]) + data[501:],  # parses, invalid: INVALID_ARGUMENT
])
def test_graph_that_is_not_onnx_is_refused_naming_it(copy_of, corrupt):
    graph = copy_of / "model_fp32.onnx"
    graph.write_bytes(corrupt(graph.read_bytes(), (copy_of / "tokenizer.json").read_bytes()))
    with pytest.raises(ModelFolderError, match=r"model_fp32\.onnx: ONNX Runtime cannot load it"):
        AlbertEmbedder.from_pretrained(copy_of, variant="fp32", verify=False)


def test_a_folder_named_like_an_onnx_runtime_error_is_still_damaged(tiny_folder, tmp_path):
    """The folder's name is part of ONNX Runtime's message: "system error number 13" there is no OS error."""
    folder = tmp_path / "system error number 13 bad_alloc"
    shutil.copytree(tiny_folder, folder)
    graph = folder / "model_fp32.onnx"
    graph.write_bytes(graph.read_bytes()[:1000])
    with pytest.raises(ModelFolderError, match=r"model_fp32\.onnx: ONNX Runtime cannot load it"):
        AlbertEmbedder.from_pretrained(folder, variant="fp32", verify=False)


def test_a_folder_named_with_a_space_loads(tiny_folder, tmp_path, monkeypatch):
    shutil.copytree(tiny_folder, tmp_path / " ")
    monkeypatch.chdir(tmp_path)
    assert AlbertEmbedder.from_pretrained(" ", variant="fp32").encode("a").shape == (1, 128)


def test_a_graph_the_system_will_not_open_is_an_os_error_not_a_damaged_file(tiny_folder):
    """ONNX Runtime says "Load model from ... failed:system error number 24" for EMFILE (13 for EACCES)."""
    script = (
        "import os, resource, sys\n"
        "from albert_onnx.session import create_session\n"
        "free = os.open(os.devnull, os.O_RDONLY); os.close(free)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (free, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))  # no fd left\n"
        "try:\n"
        f"    create_session({str(tiny_folder / 'model_fp32.onnx')!r}, 'cpu', threads=1)\n"
        "except OSError as error:\n"
        "    print(type(error).__name__, error.errno, error.filename)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["OSError", "24", str(tiny_folder / "model_fp32.onnx")]


def test_graph_with_other_outputs_is_refused(copy_of):
    manifest = json.loads((copy_of / "manifest.json").read_text())
    manifest["outputs"].append("attentions")
    (copy_of / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match=r"model_fp32\.onnx lacks the outputs \['attentions'\]"):
        AlbertEmbedder.from_pretrained(copy_of, variant="fp32", verify=False)


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


# -- device choice without a GPU: a CUDA provider that is compiled in but does not come up ----------------------

import onnxruntime as ort  # noqa: E402

from albert_onnx import session as session_module  # noqa: E402
from albert_onnx.session import DeviceUnavailable, cuda_options  # noqa: E402

needs_cpu_only_ort = pytest.mark.skipif("CUDAExecutionProvider" in available_providers(), reason="this onnxruntime has CUDA")
# the fixture below makes our provider list claim CUDA while ONNX Runtime's own does not, which it warns about
claimed_cuda = pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available provider names")


@pytest.fixture()
def cuda_that_does_not_come_up(monkeypatch):
    """onnxruntime claims a CUDA provider it does not have, like onnxruntime-gpu on a host without a GPU or cuDNN:
    the session request goes to ONNX Runtime, which ends up on the CPU."""
    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    monkeypatch.setattr(session_module, "_preload_said", None)
    created = []
    real_session = ort.InferenceSession

    def recording(*args, **kwargs):
        created.append(kwargs)
        return real_session(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    return created


@needs_cpu_only_ort
@claimed_cuda
def test_cuda_that_does_not_come_up_is_an_error_not_a_cpu_session(tiny_folder, cuda_that_does_not_come_up, capsys):
    with pytest.raises(DeviceUnavailable, match=r"asked for CUDAExecutionProvider but the session runs on \['CPUExecutionProvider'\]"):
        AlbertEmbedder.from_pretrained(tiny_folder, device="cuda", device_id=1, provider_options={"gpu_mem_limit": 2**30})
    (request,) = cuda_that_does_not_come_up
    assert request["providers"][0] == ("CUDAExecutionProvider", {"device_id": "1", "gpu_mem_limit": str(2**30)})
    assert request["enable_fallback"] == 0  # ONNX Runtime's own retry on CPU (and its stdout banner) is off
    assert capsys.readouterr().out == ""


@needs_cpu_only_ort
@claimed_cuda
def test_auto_uses_cpu_when_cuda_does_not_come_up_and_says_why(tiny_folder, cuda_that_does_not_come_up, caplog):
    with caplog.at_level(logging.INFO, logger="albert_onnx"):
        embedder = AlbertEmbedder.from_pretrained(tiny_folder)
    assert (embedder.device, embedder.variant) == ("cpu", "int8")
    assert "the session runs on ['CPUExecutionProvider']" in embedder.device_reason
    (record,) = [r for r in caplog.records if "device='auto'" in r.getMessage()]
    assert record.levelno == logging.WARNING and "runs on cpu, not cuda" in record.getMessage()
    assert len(cuda_that_does_not_come_up) == 2  # tried CUDA (fp16), then opened the CPU session (int8)


@needs_cpu_only_ort
def test_auto_without_a_cuda_build_says_so_quietly(tiny_folder, caplog):
    with caplog.at_level(logging.DEBUG, logger="albert_onnx"):
        embedder = AlbertEmbedder.from_pretrained(tiny_folder)
    assert embedder.device == "cpu" and "has no CUDAExecutionProvider" in embedder.device_reason
    (record,) = [r for r in caplog.records if "device='auto'" in r.getMessage()]
    assert record.levelno == logging.DEBUG  # a CPU-only install is normal: not a line on every load (nor on stdout)
    assert AlbertEmbedder.from_pretrained(tiny_folder, device="cpu").device_reason is None
    with pytest.raises(ValueError, match=r"variant='fp16' runs on \['cuda'\], not device='cpu', and device='auto' cannot use cuda: "
                                         r"onnxruntime .* has no CUDAExecutionProvider"):
        AlbertEmbedder.from_pretrained(tiny_folder, variant="fp16")


@needs_cpu_only_ort
@claimed_cuda
def test_preload_messages_reach_the_error_not_stdout(tiny_folder, cuda_that_does_not_come_up, monkeypatch, capsys):
    monkeypatch.setattr(ort, "preload_dlls", lambda: print("Failed to load libcudnn.so.9: cannot open shared object file"))
    with pytest.raises(DeviceUnavailable, match=r"preload_dlls\(\) said: Failed to load libcudnn\.so\.9"):
        AlbertEmbedder.from_pretrained(tiny_folder, device="cuda")
    assert capsys.readouterr().out == ""


@needs_cpu_only_ort
@claimed_cuda
def test_auto_with_cuda_settings_means_cuda(tiny_folder, cuda_that_does_not_come_up):
    """A GPU number or provider options say CUDA is meant: under auto too, a CUDA that fails is an error, not a CPU run."""
    with pytest.raises(DeviceUnavailable, match=r"the session runs on \['CPUExecutionProvider'\]"):
        AlbertEmbedder.from_pretrained(tiny_folder, device_id=1)
    with pytest.raises(DeviceUnavailable, match=r"the session runs on \['CPUExecutionProvider'\]"):
        AlbertEmbedder.from_pretrained(tiny_folder, provider_options={"gpu_mem_limit": 2**30})


@needs_cpu_only_ort
@pytest.mark.parametrize("settings", [{"device_id": 1}, {"device_id": 0}, {"provider_options": {}}])
def test_auto_with_cuda_settings_on_a_cpu_only_onnxruntime_is_an_error(tiny_folder, settings):
    """device_id=0 and provider_options={} are CUDA settings too: they equal the defaults, and ran quietly on the CPU."""
    with pytest.raises(DeviceUnavailable, match="CUDA settings, so device='auto' means cuda, but onnxruntime .* has no CUDAExecutionProvider"):
        AlbertEmbedder.from_pretrained(tiny_folder, **settings)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"device": "cpu", "device_id": 1}, ValueError, r"device_id=1 / provider_options=None are CUDA settings but device='cpu'"),
    ({"device": "cpu", "provider_options": {"gpu_mem_limit": 1}}, ValueError, "are CUDA settings but device='cpu'"),
    ({"device": "cpu", "device_id": 0}, ValueError, r"device_id=0 / provider_options=None are CUDA settings but device='cpu'"),
    ({"device": "cpu", "provider_options": {}}, ValueError, r"device_id=None / provider_options=\{\} are CUDA settings but device='cpu'"),
    ({"device_id": -1}, ValueError, r"device_id=-1: pass an int >= 0"),
    ({"device_id": "0"}, TypeError, r"device_id='0': pass an int >= 0"),
    ({"provider_options": {"device_id": 1}}, ValueError, r"provider_options\['device_id'\]: pass device_id=N instead"),
    ({"provider_options": {"gpu_mem_limit": [1]}}, TypeError, r"provider_options\['gpu_mem_limit'\]=\[1\]: pass a str, int, float or bool"),
    ({"provider_options": [("gpu_mem_limit", 1)]}, TypeError, "pass a dict of CUDA provider options"),
])
def test_cuda_settings_are_checked_before_anything_loads(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):  # a folder that does not exist: the settings are refused first
        AlbertEmbedder.from_pretrained(tmp_path / "no-such-folder", **kwargs)


def test_cuda_options_pass_onnx_runtime_keys_as_strings():
    assert cuda_options(2, {"gpu_mem_limit": 2**33, "arena_extend_strategy": "kSameAsRequested", "use_tf32": False}) == {
        "device_id": "2", "gpu_mem_limit": str(2**33), "arena_extend_strategy": "kSameAsRequested", "use_tf32": "0"}


def test_int8_graph_from_a_saturating_export_is_refused(copy_of):
    manifest = json.loads((copy_of / "manifest.json").read_text())
    del manifest["variants"]["int8"]["quantization"]["gemm"]  # what albert-onnx before u8u8 wrote (with no u8s8 twin)
    del manifest["variants"]["int8"]["u8s8"]
    (copy_of / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match=r"uint8 x int8 .* int16 saturation on CPUs without VNNI .* re-export the folder"):
        AlbertEmbedder.from_pretrained(copy_of, device="cpu")
    assert AlbertEmbedder.from_pretrained(copy_of, variant="fused", device="cpu").variant == "fused"


def test_gpu_name_counts_devices_as_cuda_does(monkeypatch, tmp_path):
    """device_id is CUDA's number among CUDA_VISIBLE_DEVICES; nvidia-smi numbers every GPU: the id is mapped."""
    from albert_onnx import hardware

    fake = tmp_path / "nvidia-smi"
    fake.write_text('#!/bin/sh\nfor a; do last="$a"; done\necho "GPU $last, 80 MiB, 1.0"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, GPU-abc")
    assert hardware.gpu_name(0) == "GPU 3 · 80 MiB · 1.0"
    assert hardware.gpu_name(1) == "GPU GPU-abc · 80 MiB · 1.0"
    assert hardware.gpu_name(2) is None  # CUDA sees two devices
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert hardware.gpu_name(5) == "GPU 5 · 80 MiB · 1.0"


def _package_metadata(site, package: str, version: str) -> None:
    """``package`` of ``version`` recorded as installed in ``site``, owning its onnxruntime module."""
    info = site / f"{package.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
    (info / "RECORD").write_text("onnxruntime/__init__.py,,\n")


def _stub_onnxruntime(site, version: str, package: str | None) -> None:
    """A module ``onnxruntime`` of ``version`` in ``site``, installed there as ``package`` (None: no package metadata)."""
    (site / "onnxruntime").mkdir(parents=True)
    (site / "onnxruntime" / "__init__.py").write_text(f'__version__ = "{version}"\n')
    if package is not None:
        _package_metadata(site, package, version)


def _imported_package(*sites) -> str:
    hardware = os.path.join(os.path.dirname(__file__), "..", "..", "albert_onnx", "hardware.py")
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('hardware', sys.argv[1]); "
            "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); print(module.onnxruntime_package())")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, sites))}
    return subprocess.run([sys.executable, "-c", code, hardware], capture_output=True, text=True, env=env, check=True).stdout.strip()


def test_onnxruntime_package_is_the_imported_one(tmp_path):
    """The package named is the one whose files hold the imported module, not the first (or any) whose metadata is
    found: as on a GPU host, where the image's CPU build is installed and the GPU build put first on sys.path."""
    gpu, cpu, bare, both = (tmp_path / name for name in ("gpu", "cpu", "bare", "both"))
    _stub_onnxruntime(gpu, "9.9.9", "onnxruntime-gpu")
    _stub_onnxruntime(cpu, "1.0.0", "onnxruntime")
    _stub_onnxruntime(bare, "7.7.7", None)
    assert _imported_package(gpu, cpu) == "('onnxruntime-gpu', '9.9.9')"
    assert _imported_package(cpu, gpu) == "('onnxruntime', '1.0.0')"  # GPU metadata on the path, CPU module imported
    assert _imported_package(bare) == "('onnxruntime', '7.7.7')"  # no package claims it: the module's own version
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "onnxruntime").symlink_to(gpu / "onnxruntime")  # a linked module folder
    for info in gpu.glob("*.dist-info"):
        shutil.copytree(info, tmp_path / "linked" / info.name)
    assert _imported_package(tmp_path / "linked") == "('onnxruntime-gpu', '9.9.9')"
    _stub_onnxruntime(both, "2.0.0", "onnxruntime-gpu")  # both packages installed over each other: the module's version
    _package_metadata(both, "onnxruntime", "1.5.0")
    assert _imported_package(both) == "('onnxruntime-gpu', '2.0.0')"
