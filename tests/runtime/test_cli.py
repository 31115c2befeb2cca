"""The albert-onnx command: what it imports, its flags, its output. Never imports torch.

Most tests call ``main()`` in this process (fast); a subprocess is used only where a fresh process is the point
(what a command imports, a missing export extra).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import importlib.util
import io
import json
import logging
import subprocess
import sys
import types
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from albert_onnx import AlbertEmbedder, ModelFolderError, int8_kernel, ray_job
from albert_onnx import cli as cli_module
from albert_onnx.cli import build_parser, main
from tests.conftest import ROOT, short_cls

HEAVY = ("torch", "transformers", "onnx", "albert_onnx_export", "optimum", "sentencepiece")


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``albert-onnx *args`` in this process: (exit status, stdout, stderr)."""
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def error_line(err: str, command: str) -> str:
    """The one line of a user error on stderr."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"albert-onnx {command}: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def fp32(tiny_folder) -> AlbertEmbedder:
    return AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32")


# -- what a command imports ----------------------------------------------------------------------------


def test_help_version_info_and_embed_import_nothing_heavy(tiny_folder, tmp_path):
    (tmp_path / "in.txt").write_text("hello world\n")
    code = (
        "import contextlib, io, json, sys\n"
        "from albert_onnx.cli import main\n"
        f"folder, source, output = {str(tiny_folder)!r}, {str(tmp_path / 'in.txt')!r}, {str(tmp_path / 'v.npy')!r}\n"
        "runs = (['--help'], ['--version'], ['export', '--help'], ['embed', '--help'], ['info', folder],\n"
        "        ['embed', folder, '--input', source, '--output', output, '--variant', 'fp32'])\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    codes = [main(argv) for argv in runs]\n"
        f"print(json.dumps({{'codes': codes, 'heavy': sorted(m for m in {HEAVY!r} if m in sys.modules)}}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == {"codes": [0, 0, 0, 0, 0, 0], "heavy": []}
    assert np.load(tmp_path / "v.npy").shape == (1, 128)


def test_export_without_the_extra_says_how_to_install_it_in_one_line(tmp_path):
    extra = ("torch", "transformers", "onnx", "sentencepiece", "safetensors")  # as if only albert-onnx[cpu] were installed
    code = (f"import sys; sys.modules.update(dict.fromkeys({extra!r}))\n"
            "from albert_onnx.cli import main\nsys.exit(main(['export', 'src', '-o', 'out']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    line = error_line(result.stderr, "export")
    assert "needs the export extra: pip install 'albert-onnx[cpu,export]' (import of " in line


def test_a_missing_module_of_our_own_is_a_bug_not_a_missing_extra(tmp_path):
    code = ("import sys; sys.modules['albert_onnx_export.pipeline'] = None\nfrom albert_onnx.cli import main\n"
            "sys.exit(main(['export', 'src', '-o', 'out']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "albert_onnx_export.pipeline" in result.stderr
    assert "pip install" not in result.stderr


# -- export: flags defined here, options built by albert_onnx_export.cli -------------------------------


def _export_options_fields() -> set[str]:
    """ExportOptions' fields, read from export/pipeline.py's source (importing it would import torch)."""
    tree = ast.parse((ROOT / "export" / "pipeline.py").read_text())
    (options,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "ExportOptions"]
    return {node.target.id for node in options.body if isinstance(node, ast.AnnAssign)}


def _fake_export_step(monkeypatch: pytest.MonkeyPatch, run) -> None:
    """Make ``albert_onnx_export.cli`` a stand-in whose run() is ``run`` (no torch)."""
    package = types.ModuleType("albert_onnx_export")
    package.__path__ = []
    monkeypatch.setitem(sys.modules, "albert_onnx_export", package)
    monkeypatch.setitem(sys.modules, "albert_onnx_export.cli", types.SimpleNamespace(run=run))


def test_every_export_flag_reaches_export_options(monkeypatch, capsys):
    """The real export/cli.py run(), with a stand-in pipeline: every ExportOptions field comes from a flag."""
    built = []
    pipeline = types.ModuleType("albert_onnx_export.pipeline")
    pipeline.ExportOptions = lambda **options: options
    pipeline.export_model = built.append
    package = types.ModuleType("albert_onnx_export")
    package.__path__ = [str(ROOT / "export")]
    monkeypatch.setitem(sys.modules, "albert_onnx_export", package)
    monkeypatch.setitem(sys.modules, "albert_onnx_export.pipeline", pipeline)
    spec = importlib.util.spec_from_file_location("albert_onnx_export.cli", ROOT / "export" / "cli.py")
    export_cli = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "albert_onnx_export.cli", export_cli)
    spec.loader.exec_module(export_cli)

    status, _, err = cli(capsys, "export", "src", "-o", "out", "--revision", "r1", "--random-weights", "--seed", "7", "--tokenizer", "tok",
                         "--variants", "fp32,int8", "--hidden-states", "--validation-texts", "v.csv", "--validation-samples", "5",
                         "--overwrite", "--force")
    assert (status, err) == (0, "")
    assert built == [{"source": "src", "output": Path("out"), "revision": "r1", "random_weights": True, "seed": 7, "tokenizer": "tok",
                      "variants": ("fp32", "int8"), "hidden_states": True, "validation_texts": Path("v.csv"),
                      "validation_samples": 5, "overwrite": True, "force": True}]
    assert set(built[0]) == _export_options_fields() - {"providers"}  # providers: Python API only


def test_export_variants_are_checked_before_anything_is_imported(capsys):
    status, _, err = cli(capsys, "export", "src", "-o", "out", "--variants", "fp32,int9")
    assert status == 2
    assert "argument --variants: 'fp32,int9': choose each at most once from fp32,fused,int8,fp16" in error_line(err, "export")


def test_export_progress_shows_third_party_info_does_not(monkeypatch, capsys):
    def run(args: argparse.Namespace) -> int:
        logging.getLogger("albert_onnx_export").info("[1/7] loaded src")
        logging.getLogger("fusion_utils").info("Removed 67 Identity nodes")  # ORT's fusion modules log under bare names
        logging.getLogger("onnxruntime.transformers.optimizer").info("optimizer chatter")
        logging.getLogger("albert_onnx_export").warning("variant 'int8' failed its gate (written because --force)")
        warnings.warn("a TracerWarning\nover two lines")
        return 0

    _fake_export_step(monkeypatch, run)
    # Something (a library, a notebook) configured the root logger at INFO before the command ran.
    root, handler = logging.getLogger(), logging.StreamHandler(sys.stderr)
    monkeypatch.setattr(root, "level", logging.INFO)
    root.addHandler(handler)
    try:
        status, out, err = cli(capsys, "export", "src", "-o", "out")
    finally:
        root.removeHandler(handler)
    assert status == 0
    assert out == "[1/7] loaded src\n"
    assert err.splitlines() == ["albert-onnx export: warning: variant 'int8' failed its gate (written because --force)",
                                "albert-onnx export: warning: a TracerWarning over two lines"]
    assert root.level == logging.INFO and not logging.getLogger("albert_onnx_export").handlers  # restored after the command


def test_export_errors_are_one_line(monkeypatch, capsys):
    class ExportError(ValueError):
        pass

    def run(args: argparse.Namespace) -> int:
        raise ExportError("variant 'int8' failed its gate: cosine 0.9 < 0.995; nothing was written. Pass --force to write it anyway")

    _fake_export_step(monkeypatch, run)
    status, _, err = cli(capsys, "export", "src", "-o", "out")
    assert status == 2
    assert error_line(err, "export").endswith("nothing was written. Pass --force to write it anyway")


# -- flags ---------------------------------------------------------------------------------------------


def test_version(capsys):
    assert cli(capsys, "--version") == (0, f"albert-onnx {metadata.version('albert-onnx')}\n", "")


def test_every_option_of_every_command_has_help():
    parser = build_parser()
    (commands,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    missing = [f"{name} {action.dest}" for name, sub in [("albert-onnx", parser), *commands.choices.items()]
               for action in sub._actions if not action.help or action.help == argparse.SUPPRESS]
    assert missing == []
    assert set(commands.choices) == {"export", "embed", "info"}


def test_usage_errors_are_one_line(tiny_folder, tmp_path, capsys):
    status, _, err = cli(capsys, "embed", str(tiny_folder), "--input", "x.txt", "--output", "v.npy", "--variant", "int9")
    assert status == 2 and "invalid choice: 'int9'" in error_line(err, "embed")
    status, _, err = cli(capsys, "embed", str(tiny_folder), "--input", "x.txt")
    assert status == 2 and "required: --output" in error_line(err, "embed")
    status, _, err = cli(capsys, "embed", str(tiny_folder), "--input", "x.txt", "--output", "v.npy", "--batch-size", "1e3")
    assert status == 2 and "invalid int value: '1e3'" in error_line(err, "embed")


@pytest.mark.parametrize(("flags", "message"), [
    (["--batch-size", "-1"], "--batch-size=-1: pass an int >= 1"),
    (["--batch-size", "0"], "--batch-size=0: pass an int >= 1"),
    (["--threads", "1000000"], "--threads=1000000: pass an int from 1 to"),
    (["--threads", "0"], "--threads=0: pass an int from 1 to"),
    (["--max-length", "2"], "--max-length=2: pass an int >= 3"),
    (["--max-length", "600"], "--max-length=600: pass an int from 3 to 512"),
    (["--engine", "ray", "--actors", "0"], "--actors=0: pass an int >= 1"),
    (["--engine", "ray", "--max-length", "600"], "--max-length=600: pass an int from 3 to 512"),  # it said max_length=600
])
def test_int_flags_are_refused_out_of_range(tiny_folder, tmp_path, capsys, flags, message):
    (tmp_path / "in.txt").write_text("a\nb\n")
    status, _, err = cli(capsys, "embed", str(tiny_folder), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "v.npy"),
                         "--variant", "fp32", *flags)
    assert status == 2 and message in error_line(err, "embed")
    assert not (tmp_path / "v.npy").exists()


# -- embed ---------------------------------------------------------------------------------------------


def test_embed_txt_jsonl_and_stdin(tiny_folder, fp32, tmp_path, sts_texts, monkeypatch, capsys):
    texts = sts_texts[:40]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in texts) + "\n")
    expected = fp32.encode(texts)
    for source in ("in.txt", "in.jsonl"):
        status, out, err = cli(capsys, "embed", str(tiny_folder), "--input", str(tmp_path / source), "--output", str(tmp_path / "v.npy"),
                               "--batch-size", "4", "--variant", "fp32")
        assert (status, out) == (0, "")
        np.testing.assert_allclose(np.load(tmp_path / "v.npy"), expected, atol=1e-5)
        assert f"40 vectors of dim 128 -> {tmp_path / 'v.npy'} (fp32 on cpu)" in err
        assert "40/40" in err  # the progress bar, shown for inputs over 8 batches
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"one\ntwo\n")))
    assert cli(capsys, "embed", str(tiny_folder), "--input", "-", "--output", str(tmp_path / "s.npy"), "--variant", "fp32", "--pooling", "cls")[0] == 0
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), fp32.encode(["one", "two"], pooling="cls"), atol=1e-5)


def test_embed_to_stdout(tiny_folder, fp32, tmp_path, monkeypatch, capsys):
    (tmp_path / "in.txt").write_text("one\ntwo\n")
    stdout = io.TextIOWrapper(io.BytesIO())
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(["embed", str(tiny_folder), "--input", str(tmp_path / "in.txt"), "--output", "-", "--variant", "fp32"]) == 0
    np.testing.assert_allclose(np.load(io.BytesIO(stdout.buffer.getvalue())), fp32.encode(["one", "two"]), atol=1e-5)
    assert not (tmp_path / "-").exists()


def test_embed_with_a_pooling_int8_falls_short_on_warns_in_one_line(copy_of, tmp_path, capsys):
    short_cls(copy_of)
    (tmp_path / "in.txt").write_text("one text\nanother text\n")
    flags = ["embed", str(copy_of), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "v.npy"), "--variant", "int8",
             "--pooling", "cls", "--batch-size", "1"]
    status, _, err = cli(capsys, *flags)
    assert status == 0
    (warning,) = [line for line in err.splitlines() if "warning" in line]
    assert warning.startswith(f"albert-onnx embed: warning: variant 'int8' of {copy_of} is gated on mean pooling; its 'cls' vectors")
    assert np.load(tmp_path / "v.npy").shape == (2, 128)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # python -W error: the warning is an exception, and still one line (a traceback before)
        status, _, err = cli(capsys, *flags)
    assert status == 2 and error_line(err, "embed").endswith(
        "or check int8 against them on your own texts (PoolingWarning, an error under this Python's warnings filter)")


def test_embed_max_length_truncates_with_one_warning_line(tiny_folder, fp32, tmp_path, capsys):
    text = "a long sentence " * 20
    (tmp_path / "in.txt").write_text(text + "\n")
    status, _, err = cli(capsys, "embed", str(tiny_folder), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "v.npy"),
                         "--variant", "fp32", "--max-length", "8", "--no-normalize")
    assert status == 0
    (warning,) = [line for line in err.splitlines() if "warning" in line]  # one line, not warnings' file:line + source
    assert warning == ("albert-onnx embed: warning: 1 of 1 texts exceeded --max-length 8 tokens and were truncated; "
                       "pass --long-text window to embed whole texts")
    assert "embedder.py" not in err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = fp32.encode([text], max_length=8, normalize=False)
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), expected, atol=1e-5)


def test_embed_layer(tiny_folder, plain_folder, fp32, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("one\ntwo\n")
    status, _, _ = cli(capsys, "embed", str(tiny_folder), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "v.npy"),
                       "--variant", "fp32", "--layer", "-2")
    assert status == 0
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), fp32.encode(["one", "two"], layer=-2), atol=1e-5)
    assert not np.allclose(np.load(tmp_path / "v.npy"), fp32.encode(["one", "two"]), atol=1e-3)  # another layer than the last

    status, _, err = cli(capsys, "embed", str(plain_folder), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "w.npy"),
                         "--variant", "fp32", "--layer", "-2")
    assert status == 2 and "has no hidden states; re-export it with --hidden-states" in error_line(err, "embed")
    status, _, err = cli(capsys, "embed", str(tiny_folder), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "w.npy"),
                         "--variant", "fp32", "--layer", "40")
    assert status == 2 and "--layer=40: pass an int from -13 to 12" in error_line(err, "embed")
    assert not (tmp_path / "w.npy").exists()


def test_info(tiny_folder, capsys):
    status, out, err = cli(capsys, "info", str(tiny_folder))
    assert (status, err) == (0, "")
    assert "RANDOM WEIGHTS" in out and "CPUExecutionProvider" in out
    for name in ("fp32", "fused", "int8", "fp16"):
        assert f"\n  {name} " in out
    assert "ops: Attention 12, SkipLayerNormalization 24" in out
    from albert_onnx.int8_kernel import u8s8_is_exact

    assert "uint8 x int8 twin model_int8_u8s8.onnx" in out
    ran = "this twin (uint8 x int8 is exact here)" if u8s8_is_exact() else "model_int8.onnx (uint8 x int8 saturates here)"
    assert f"this CPU runs {ran}\n" in out
    assert "\ntokenizer     tokenizer.json: size and sha256 match manifest.json\n" in out
    # int8 only: the variant gated on mean pooling's centred cosine (fp32 and fused on max |delta|; fp16 not run here)
    metrics = json.loads((tiny_folder / "manifest.json").read_text())["variants"]["int8"]["validation"]["metrics"]
    (poolings,) = [line for line in out.splitlines() if "other poolings" in line]
    assert poolings == ("         other poolings, centred cosine (not gated): " +
                        ", ".join(f"{name} {metrics[f'{name}_centred_cosine_mean']:.4f}" for name in ("cls", "max", "pooler")))
    assert out.count("         model_fp32.onnx: size and sha256 match manifest.json\n") == 1


def test_info_checks_each_file_against_the_manifest(copy_of, capsys):
    """It said PASSED, and nothing else, for a variant whose file was truncated or missing."""
    graph = copy_of / "model_fp32.onnx"
    size = graph.stat().st_size
    graph.write_bytes(graph.read_bytes()[:1000])
    (copy_of / "model_fused.onnx").unlink()
    status, out, err = cli(capsys, "info", str(copy_of))
    assert (status, err) == (2, f"albert-onnx info: error: 2 file(s) of {copy_of} fail the loader's checks (shown above); do what each line says, or re-export the folder\n")
    assert f"\n         {graph}: size 1000 bytes, manifest.json says {size}; the file was changed or truncated: re-export\n" in out
    assert f"\n         {copy_of / 'model_fused.onnx'} is missing; the model folder is incomplete: re-export it\n" in out
    assert "         model_int8.onnx: size and sha256 match manifest.json\n" in out


def test_info_refuses_what_the_loader_refuses_in_a_manifest_whose_files_match(copy_of, capsys):
    """An edited fact in manifest.json: info said every file matched and exited 0, the loader refused the folder."""
    manifest = json.loads((copy_of / "manifest.json").read_text())
    manifest["model"]["hidden_size"] = 256
    (copy_of / "manifest.json").write_text(json.dumps(manifest))
    status, out, err = cli(capsys, "info", str(copy_of))
    assert (status, err) == (2, f"albert-onnx info: error: 5 file(s) of {copy_of} fail the loader's checks (shown above); do what each "
                                "line says, or re-export the folder\n")
    for graph in ("model_fp32.onnx", "model_fused.onnx", "model_int8.onnx", "model_fp16.onnx"):
        assert (f"\n         manifest.json says model.hidden_size=256 but {graph} was exported with 128; the manifest was edited or "
                "belongs to another export: re-export the folder\n") in out
    assert "\ntokenizer     tokenizer.json: size and sha256 match manifest.json\n" in out  # no stamp to check there
    with pytest.raises(ModelFolderError, match=r"manifest.json says model.hidden_size=256 but model_.*\.onnx was exported with 128"):
        AlbertEmbedder(copy_of)  # the loader's own verdict, which info now shares


def test_info_refuses_a_manifest_whose_special_tokens_are_not_the_tokenizers(copy_of, capsys):
    manifest = json.loads((copy_of / "manifest.json").read_text())
    manifest["tokenizer"]["special_tokens"]["cls"] = "<cls>"  # no stamp covers it; the loader's tokenizer check does
    (copy_of / "manifest.json").write_text(json.dumps(manifest))
    status, out, err = cli(capsys, "info", str(copy_of))
    assert status == 2 and err.startswith(f"albert-onnx info: error: 1 file(s) of {copy_of} fail the loader's checks")
    assert (f"\ntokenizer     {copy_of / 'tokenizer.json'}: special token cls ('<cls>') has id None, manifest.json says 2; the "
            "tokenizer belongs to another model: re-export the folder\n") in out
    with pytest.raises(ModelFolderError, match=r"special token cls \('<cls>'\) has id None"):
        AlbertEmbedder(copy_of)


def test_info_on_a_manifest_with_a_400_digit_size_is_one_line(copy_of, capsys):
    """Found by an attack: the size passed the manifest's checks and `info` failed with OverflowError converting it."""
    manifest = json.loads((copy_of / "manifest.json").read_text())
    manifest["variants"]["fp32"]["size"] = 10**400
    (copy_of / "manifest.json").write_text(json.dumps(manifest))
    status, out, err = cli(capsys, "info", str(copy_of))
    line = error_line(err, "info")
    assert status == 2 and "variants.fp32.size must be an integer below 2**63" in line and len(line) < 400


def test_info_names_a_missing_twin_on_every_cpu(tiny_folder, copy_of, capsys, monkeypatch):
    folder = copy_of
    (folder / "model_int8_u8s8.onnx").unlink()
    for exact, effect in ((True, "does not load here"), (False, "loads here only from Python with verify=False")):
        monkeypatch.setattr(int8_kernel, "u8s8_is_exact", lambda exact=exact: exact)
        status, out, _ = cli(capsys, "info", str(folder))
        assert status == 2  # the folder is incomplete on every CPU: `info F && deploy` stops
        assert f"\n         {folder}/model_int8_u8s8.onnx is missing; the model folder is incomplete: re-export it (int8 {effect})\n" in out
        assert "this CPU runs" not in out
    (folder / "model_int8_u8s8.onnx").symlink_to(tiny_folder / "model_int8_u8s8.onnx")  # the loader refuses links too
    assert "model_int8_u8s8.onnx is a symbolic link" in cli(capsys, "info", str(folder))[1]
    assert "is a symbolic link" not in cli(capsys, "info", str(tiny_folder))[1]


# -- the Ray engine's flags (run_ray_job itself is stood in for: tests/runtime/test_ray.py runs it) -----


@dataclasses.dataclass
class _RayOptionsBefore:
    """RayJobOptions' fields that the CLI always passes."""

    folder: str
    input: str
    output: Path
    text_field: str = "text"
    id_field: str = "id"
    pooling: str = "mean"
    batch_size: int = 32
    device: str = "auto"
    variant: str = "auto"
    actors: int | None = None
    threads_per_actor: int | None = None
    address: str | None = None
    strict: bool = False


@dataclasses.dataclass
class _RayOptionsAfter(_RayOptionsBefore):
    """RayJobOptions once it has the optional fields."""

    overwrite: bool = False
    max_length: int = 512
    normalize: bool = True
    long_text: str = "truncate"


def _ray_embed(monkeypatch, capsys, options_class: type, *flags: str, folder: str = "m") -> tuple[int, str, list]:
    jobs = []
    monkeypatch.setattr(ray_job, "RayJobOptions", options_class)
    # no Ray here: importing Ray Data under capsys would tie its log handlers to this test's stream, closed after it
    monkeypatch.setattr(cli_module, "_ray_console", contextlib.nullcontext)
    monkeypatch.setattr(ray_job, "run_ray_job", lambda options: jobs.append(options) or {"rows": 3, "shards": 1, "written": 1,
                                                                                          "skipped": 0, "bad_rows": 0})
    status, _, err = cli(capsys, "embed", folder, "--engine", "ray", "--input", "in.parquet", "--output", "out", *flags)
    return status, err, jobs


def test_ray_flags_reach_the_job_options_it_has(tiny_folder, monkeypatch, capsys):
    # --max-length is checked against the folder's limit here, to name the flag: a real folder
    status, err, jobs = _ray_embed(monkeypatch, capsys, _RayOptionsAfter, "--overwrite", "--max-length", "64", "--no-normalize",
                                   "--long-text", "window", "--actors", "2", "--threads", "1", "--strict", "--id-field", "key",
                                   folder=str(tiny_folder))
    assert status == 0 and "3 rows in 1 shards: 1 written, 0 already done, 0 bad rows -> out" in err
    assert jobs == [_RayOptionsAfter(folder=str(tiny_folder), input="in.parquet", output=Path("out"), id_field="key", actors=2, threads_per_actor=1,
                                     strict=True, overwrite=True, max_length=64, normalize=False, long_text="window")]
    status, _, jobs = _ray_embed(monkeypatch, capsys, _RayOptionsAfter)
    assert status == 0 and jobs == [_RayOptionsAfter(folder="m", input="in.parquet", output=Path("out"))]  # max_length: the job's default
    status, _, jobs = _ray_embed(monkeypatch, capsys, _RayOptionsAfter, "--threads", "1000")  # per actor, on the cluster's machines
    assert status == 0 and jobs[0].threads_per_actor == 1000


def test_ray_paths_that_name_nothing_are_refused(monkeypatch, capsys, tmp_path):
    # found by an attack: --output '' wrote _job.json and the parts into the current directory
    monkeypatch.chdir(tmp_path)
    jobs = []
    monkeypatch.setattr(ray_job, "run_ray_job", lambda options: jobs.append(options))
    for flag, paths in (("--output", ("in.parquet", "")), ("--input", ("", "out"))):
        status, _, err = cli(capsys, "embed", "m", "--engine", "ray", "--input", paths[0], "--output", paths[1])
        assert status == 2 and f"error: {flag} '' names no file or folder (it would mean the current directory)" in error_line(err, "embed")
    assert jobs == [] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flags", [["--overwrite"], ["--max-length", "64"], ["--no-normalize"], ["--long-text", "window"]])
def test_ray_flags_the_job_options_lack_are_refused(tiny_folder, monkeypatch, capsys, flags):
    status, err, jobs = _ray_embed(monkeypatch, capsys, _RayOptionsBefore, *flags, folder=str(tiny_folder))
    assert status == 2 and "not supported by this albert_onnx.ray_job" in error_line(err, "embed") and jobs == []


def test_ray_job_options_without_the_new_fields_still_run(monkeypatch, capsys):
    status, _, jobs = _ray_embed(monkeypatch, capsys, _RayOptionsBefore)
    assert status == 0 and jobs == [_RayOptionsBefore(folder="m", input="in.parquet", output=Path("out"))]


def test_engine_flags_are_refused_with_the_other_engine(tiny_folder, tmp_path, monkeypatch, capsys):
    (tmp_path / "in.txt").write_text("a\n")
    status, _, err = cli(capsys, "embed", str(tiny_folder), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "v.npy"),
                         "--strict", "--overwrite", "--actors", "0")
    assert status == 2 and "--actors, --strict, --overwrite: only with --engine ray" in error_line(err, "embed")
    status, err, jobs = _ray_embed(monkeypatch, capsys, _RayOptionsAfter, "--layer", "-2")
    assert status == 2 and "--layer: only with --engine local" in error_line(err, "embed") and jobs == []
    # a .txt input is one text per line with line numbers for ids: a field named for it would be ignored
    for flags in (("--id-field", "key"), ("--text-field", "body", "--id-field", "key")):
        status, _, err = cli(capsys, "embed", str(tiny_folder), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "out"),
                             "--engine", "ray", *flags)
        named = "/".join(flag for flag in flags if flag.startswith("--"))
        assert status == 2 and f"error: {named}: --input '{tmp_path / 'in.txt'}' is read one text per line" in error_line(err, "embed")
    assert not (tmp_path / "out").exists()
