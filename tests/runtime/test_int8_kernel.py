"""int8's two GEMM forms: the probe's verdict (natively and on an emulated AVX2-only CPU), which graph the embedder
loads, and that both give the same vectors where each is chosen."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from albert_onnx import embedder as embedder_module
from albert_onnx.embedder import AlbertEmbedder
from albert_onnx.int8_kernel import u8s8_is_exact
from albert_onnx.model_folder import STAMP_KEY, ModelFolderError
from tests.conftest import IN_CI

TEXTS = ["A man is playing a guitar.", "Stocks fell sharply on Tuesday after the central bank raised rates.", "Why?"]
VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}  # ONNX Runtime's uint8 x int8 kernels that add in int32


def _cpu_flags() -> set[str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    line = next((line for line in text.splitlines() if line.startswith("flags")), None)
    return set(line.split(":", 1)[1].split()) if line else None


def _as_avx2_cpu(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``python -c code`` under qemu-x86_64 as an Intel Haswell (AVX2, no AVX-512, no VNNI), whatever this CPU is.

    Skips off x86_64 Linux; without qemu-user it skips, except in CI, which installs it (.ci/run).
    """
    if platform.machine() != "x86_64" or sys.platform != "linux":
        pytest.skip("the AVX2 emulation runs this x86_64 Python under qemu-x86_64")
    if shutil.which("qemu-x86_64") is None:
        if IN_CI:
            pytest.fail("qemu-x86_64 is missing and CI must run every test: apt-get install qemu-user (.ci/run does)")
        pytest.skip("qemu-x86_64 not installed (apt-get install qemu-user)")
    result = subprocess.run(["qemu-x86_64", "-cpu", "Haswell", sys.executable, "-c", code, *args], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_the_verdict_matches_the_cpu_flags():
    """Where the kernel flags are readable: VNNI or AMX means exact, AVX2 without them means saturating."""
    flags = _cpu_flags()
    if flags is None or "avx2" not in flags:
        pytest.skip("no x86 flags in /proc/cpuinfo here (the emulated AVX2 test below still runs on x86_64 Linux)")
    assert u8s8_is_exact() is bool(flags & VNNI_FLAGS), sorted(flags & (VNNI_FLAGS | {"avx2", "avx512f"}))


def test_an_avx2_only_cpu_gets_the_saturating_verdict():
    """The probe's other answer, on any x86_64 host: an emulated Haswell computes uint8 x int8 with vpmaddubsw."""
    result = _as_avx2_cpu("from albert_onnx.int8_kernel import u8s8_is_exact; print(u8s8_is_exact())")
    assert result.stdout.split()[-1] == "False"


def test_each_cpu_gets_the_graph_that_is_exact_there_and_the_same_vectors(tiny_folder, tmp_path):
    """Here (native) and on an emulated AVX2-only CPU: the embedder loads the twin only where the probe allows,
    and the vectors agree, though one side may run uint8 x int8 and the other uint8 x uint8."""
    code = ("import sys, numpy as np\nfrom albert_onnx.embedder import AlbertEmbedder\n"
            "e = AlbertEmbedder.from_pretrained(sys.argv[1], variant='int8', device='cpu', threads=1)\n"
            f"np.save(sys.argv[2], e.encode({TEXTS!r}))\nprint(e.graph.name)\n")
    emulated = _as_avx2_cpu(code, str(tiny_folder), str(tmp_path / "avx2.npy"))
    assert emulated.stdout.split()[-1] == "model_int8.onnx"
    native = AlbertEmbedder.from_pretrained(tiny_folder, variant="int8", device="cpu", threads=1)
    assert native.graph.name == ("model_int8_u8s8.onnx" if u8s8_is_exact() else "model_int8.onnx")
    np.testing.assert_allclose(np.load(tmp_path / "avx2.npy"), native.encode(TEXTS), rtol=0, atol=1e-6)


def test_the_twin_runs_only_where_the_probe_allows(tiny_folder, monkeypatch):
    for exact, graph in ((False, "model_int8.onnx"), (True, "model_int8_u8s8.onnx")):
        monkeypatch.setattr(embedder_module, "u8s8_is_exact", lambda exact=exact: exact)
        assert AlbertEmbedder.from_pretrained(tiny_folder, variant="int8", device="cpu").graph.name == graph
    assert AlbertEmbedder.from_pretrained(tiny_folder, variant="fused", device="cpu").graph.name == "model_fused.onnx"


def _edit_manifest(folder: Path, edit) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest["variants"]["int8"])
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_folder_from_before_the_twin_runs_uint8_x_uint8(copy_of, monkeypatch, caplog):
    """Where the twin would run, a log line says re-exporting makes int8 faster; where it would not, nothing."""
    _edit_manifest(copy_of, lambda int8: int8.pop("u8s8"))
    (copy_of / "model_int8_u8s8.onnx").unlink()
    for exact, hints in ((True, 1), (False, 0)):
        monkeypatch.setattr(embedder_module, "u8s8_is_exact", lambda exact=exact: exact)
        caplog.clear()
        with caplog.at_level("WARNING", logger="albert_onnx"):
            assert AlbertEmbedder.from_pretrained(copy_of, variant="int8", device="cpu").graph.name == "model_int8.onnx"
        assert sum("has no uint8 x int8 twin" in record.getMessage() and "re-export the folder" in record.getMessage()
                   for record in caplog.records) == hints


def test_a_changed_twin_is_refused_on_every_cpu(copy_of, monkeypatch):
    """verify checks the twin wherever it runs, and also where it does not: the folder is damaged either way."""
    twin = copy_of / "model_int8_u8s8.onnx"
    data = bytearray(twin.read_bytes())
    data[-100] ^= 1
    twin.write_bytes(bytes(data))
    for exact in (False, True):
        monkeypatch.setattr(embedder_module, "u8s8_is_exact", lambda exact=exact: exact)
        with pytest.raises(ModelFolderError, match=r"model_int8_u8s8\.onnx: sha256 .* the file was changed: re-export"):
            AlbertEmbedder.from_pretrained(copy_of, variant="int8", device="cpu")


@pytest.mark.parametrize("edit, match", [
    (lambda int8: int8["u8s8"].update(file="model_fp32.onnx"), r"variants\.int8\.u8s8 must be the uint8 x int8 twin 'model_int8_u8s8\.onnx'"),
    (lambda int8: int8["u8s8"]["validation"].update(status="failed"), r"variants\.int8\.u8s8\.validation\.status must be \"passed\" or \"not-validated\""),
    (lambda int8: int8["quantization"].update(gemm="u8s8"), r"variants\.int8\.u8s8 must be the uint8 x int8 twin"),
    (lambda int8: int8["u8s8"].update(sha256="x"), r"variants\.int8\.u8s8\.sha256 must be 64 lowercase hex digits"),
])
def test_an_edited_twin_entry_is_named(copy_of, edit, match):
    _edit_manifest(copy_of, edit)
    with pytest.raises(ModelFolderError, match=match):
        AlbertEmbedder.from_pretrained(copy_of, variant="fused", device="cpu")


def test_a_twin_entry_on_another_variant_is_named(copy_of):
    manifest = json.loads((copy_of / "manifest.json").read_text())
    manifest["variants"]["fp32"].update(u8s8=manifest["variants"]["int8"]["u8s8"], quantization={"gemm": "u8u8"})
    (copy_of / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match=r"variants\.fp32\.u8s8 is set, but only int8 has a uint8 x int8 twin"):
        AlbertEmbedder.from_pretrained(copy_of, variant="fp32", device="cpu")


def test_a_graph_copied_over_the_other_is_caught_by_its_stamp_without_verify(copy_of, monkeypatch):
    """verify=False skips the hashes; each int8 graph's stamp still names its product, so the saturating twin copied
    over model_int8.onnx (or the reverse) is refused wherever it would run."""
    main, twin = copy_of / "model_int8.onnx", copy_of / "model_int8_u8s8.onnx"
    original = main.read_bytes()
    for exact, target, source in ((False, main, twin), (True, twin, main)):
        target.write_bytes(source.read_bytes())
        monkeypatch.setattr(embedder_module, "u8s8_is_exact", lambda exact=exact: exact)
        with pytest.raises(ModelFolderError, match=rf"^{re.escape(target.name)} was exported as {re.escape(repr(source.name))}, "
                                                   "another graph of the folder; the file was replaced: re-export the folder$"):
            AlbertEmbedder.from_pretrained(copy_of, variant="int8", device="cpu", verify=False)
        main.write_bytes(original)


def test_a_missing_twin_is_named(copy_of, monkeypatch):
    (copy_of / "model_int8_u8s8.onnx").unlink()
    for exact, verify in ((True, False), (False, True)):
        monkeypatch.setattr(embedder_module, "u8s8_is_exact", lambda exact=exact: exact)
        with pytest.raises(ModelFolderError, match=r"model_int8_u8s8\.onnx is missing; the model folder is incomplete: re-export it"):
            AlbertEmbedder.from_pretrained(copy_of, variant="int8", device="cpu", verify=verify)
    monkeypatch.setattr(embedder_module, "u8s8_is_exact", lambda: False)  # not needed where it does not run
    assert AlbertEmbedder.from_pretrained(copy_of, variant="int8", device="cpu", verify=False).graph.name == "model_int8.onnx"


@pytest.mark.parametrize("damage, says", [
    (None, r"is missing: reinstall albert-onnx \(its wheel ships the file\)"),
    (3000, "does not load (.*INVALID_PROTOBUF.*): reinstall albert-onnx"),
    (0, "does not load (.*No graph was found in the protobuf.*): reinstall albert-onnx"),
    ("model_fp32.onnx", r"has the inputs \[\('attention_mask', 'tensor\(int64\)'\), .*\], not rows \(uint8\) and row_scale \(float\): "
                        "another file was installed in its place: reinstall albert-onnx"),
    ("retyped", r"has the inputs \[\('row_scale', 'tensor\(float\)'\), \('rows', 'tensor\(float\)'\)\], not rows \(uint8\) and "
                r"row_scale \(float\): another file was installed in its place: reinstall albert-onnx"),
])
def test_a_missing_or_damaged_probe_is_one_line_naming_the_fix(tiny_folder, tmp_path, damage, says):
    """A vendored install without the package's data file, with a truncated or empty one, or with another graph in
    its place: `albert-onnx info` says what is wrong, no traceback."""
    probe = tmp_path / "probe.onnx"
    if damage == "retyped":  # the probe's input names, other types
        pytest.importorskip("onnx")
        from onnx import TensorProto, helper

        inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("rows", "row_scale")]
        graph = helper.make_graph([helper.make_node("Mul", ["rows", "row_scale"], ["product"])], "retyped", inputs,
                                  [helper.make_tensor_value_info("product", TensorProto.FLOAT, None)])
        probe.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString())
    elif isinstance(damage, str):  # a graph of the folder installed under the probe's name
        probe.write_bytes((tiny_folder / damage).read_bytes())
    elif damage is not None:
        from albert_onnx.int8_kernel import PROBE_FILE
        probe.write_bytes(PROBE_FILE.read_bytes()[:damage])
    code = ("import sys\nfrom pathlib import Path\nfrom albert_onnx import int8_kernel, cli\n"
            "int8_kernel.PROBE_FILE = Path(sys.argv[2])\nsys.exit(cli.main(['info', sys.argv[1]]))\n")
    result = subprocess.run([sys.executable, "-c", code, str(tiny_folder), str(probe)], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert re.fullmatch(rf"albert-onnx info: error: {re.escape(str(probe))}: albert-onnx's uint8 x int8 probe graph {says}",
                        result.stderr.strip()), result.stderr


def test_a_probe_the_os_cannot_open_is_not_called_damaged():
    """Out of file descriptors (EMFILE): the OS's reason, not "reinstall" (the file is fine)."""
    code = ("import os, resource\nfrom albert_onnx import int8_kernel\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\nfds = []\n"
            "try:\n    while True: fds.append(os.open(os.devnull, os.O_RDONLY))\nexcept OSError: pass\n"
            "try:\n    int8_kernel._probe()\nexcept OSError as error:\n    print(error.errno, error)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"24 \[Errno 24\] albert-onnx's uint8 x int8 probe graph could not be opened: Too many open files: '.*u8s8_probe\.onnx'",
                        result.stdout.strip()), result.stdout


def test_a_twin_not_compared_at_export_warns_where_it_runs(copy_of, monkeypatch):
    """A folder exported on an AVX2-only CPU holds a twin that was loaded but never run; a VNNI/AMX CPU that runs it
    says so. Where the twin does not run, nothing is said."""
    _edit_manifest(copy_of, lambda int8: int8["u8s8"]["validation"].update(
        status="not-validated", reason="this CPU's uint8 x int8 product saturates", metrics={}))
    monkeypatch.setattr(embedder_module, "u8s8_is_exact", lambda: True)
    with pytest.warns(UserWarning, match=r"model_int8_u8s8\.onnx of .*, the uint8 x int8 form of int8 that this CPU runs, was not "
                      r"compared with model_int8\.onnx at export .* re-export the folder on a CPU with VNNI or AMX"):
        AlbertEmbedder.from_pretrained(copy_of, variant="int8", device="cpu")
    monkeypatch.setattr(embedder_module, "u8s8_is_exact", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert AlbertEmbedder.from_pretrained(copy_of, variant="int8", device="cpu").graph.name == "model_int8.onnx"


def _without_file_stamp(graph: Path) -> bytes:
    """The graph as exported before 2026-12-03: its stamp names its product (gemm) but not its file."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(graph))
    stamp = next(prop for prop in model.metadata_props if prop.key == STAMP_KEY)
    stamp.value = json.dumps({key: value for key, value in json.loads(stamp.value).items() if key != "file"})
    return model.SerializeToString()


@pytest.mark.parametrize("stamped", ["with its file name", "as before 2026-12-03"])
def test_the_twin_copied_into_another_graphs_place_is_refused_whatever_the_manifest_says(copy_of, monkeypatch, stamped):
    """verify=False and a manifest without the twin (a folder from before it) or a twin in the fused slot: the
    stamp alone still stops the saturating graph from running where uint8 x uint8 or fp32 is expected, and the
    error says a file was replaced (the manifest is untouched)."""
    twin, int8 = copy_of / "model_int8_u8s8.onnx", copy_of / "model_int8.onnx"
    if stamped == "as before 2026-12-03":
        twin.write_bytes(_without_file_stamp(twin))
        int8.write_bytes(_without_file_stamp(int8))
        (copy_of / "model_fp32.onnx").write_bytes(_without_file_stamp(copy_of / "model_fp32.onnx"))
        placed = {"fused": r"as an int8 graph \(gemm='u8s8'\), not as variant 'fused''s graph; the file was replaced",
                  "int8": r"with gemm='u8s8', not the 'u8u8' that its place calls for; the file was replaced or the manifest edited",
                  "twin": r"with gemm=None, not the 'u8s8' that its place calls for; the file was replaced or the manifest edited"}
    else:
        placed = {"fused": r"as 'model_int8_u8s8\.onnx', another graph of the folder; the file was replaced",
                  "int8": r"as 'model_int8_u8s8\.onnx', another graph of the folder; the file was replaced",
                  "twin": r"as 'model_fp32\.onnx', another graph of the folder; the file was replaced"}
    monkeypatch.setattr(embedder_module, "u8s8_is_exact", lambda: False)
    (copy_of / "model_fused.onnx").write_bytes(twin.read_bytes())
    with pytest.raises(ModelFolderError, match=rf"^model_fused\.onnx was exported {placed['fused']}: re-export the folder$"):
        AlbertEmbedder.from_pretrained(copy_of, variant="fused", device="cpu", verify=False)
    saved = twin.read_bytes()
    twin.write_bytes((copy_of / "model_fp32.onnx").read_bytes())  # where the twin runs, fp32 under its name
    monkeypatch.setattr(embedder_module, "u8s8_is_exact", lambda: True)
    with pytest.raises(ModelFolderError, match=rf"^model_int8_u8s8\.onnx was exported {placed['twin']}: re-export the folder$"):
        AlbertEmbedder.from_pretrained(copy_of, variant="int8", device="cpu", verify=False)
    monkeypatch.setattr(embedder_module, "u8s8_is_exact", lambda: False)
    _edit_manifest(copy_of, lambda int8: int8.pop("u8s8"))
    int8.write_bytes(saved)
    with pytest.raises(ModelFolderError, match=rf"^model_int8\.onnx was exported {placed['int8']}: re-export the folder$"):
        AlbertEmbedder.from_pretrained(copy_of, variant="int8", device="cpu", verify=False)


def _probe_in_child(queue) -> None:
    from albert_onnx.int8_kernel import u8s8_is_exact as probe
    queue.put(probe())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork: POSIX only")
def test_a_fork_while_another_thread_probes_does_not_hang_the_child():
    """The child of a fork taken while the probe's lock is held (another thread probing: multiprocessing's fork, a
    preforking server) gets a lock of its own and its own verdict."""
    import multiprocessing

    from albert_onnx import int8_kernel

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    with int8_kernel._lock:  # what a probing thread holds at the moment of the fork
        child = context.Process(target=_probe_in_child, args=(queue,))
        child.start()
    child.join(timeout=120)
    hung = child.is_alive()
    if hung:
        child.kill()
    assert not hung, "the forked child waited on the lock it inherited held"
    assert (child.exitcode, queue.get(timeout=10)) == (0, u8s8_is_exact())
