"""albert-onnx against hostile input and output: every user error is one line and exit status 2, the output file is
written exactly where asked and atomically, a closed stdout ends the command quietly, bugs keep their traceback."""

from __future__ import annotations

import errno
import io
import os
import signal
import stat
import shutil
import subprocess
import sys

import numpy as np
import pytest

from albert_onnx import AlbertEmbedder
from albert_onnx import cli as cli_module
from albert_onnx.cli import NAME_MAX, _temporary_prefix, main
from albert_onnx.session import available_providers
from tests.conftest import refused_reads
from tests.runtime.test_cli import cli, error_line


@pytest.fixture(scope="module")
def fp32(tiny_folder) -> AlbertEmbedder:
    return AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32")


@pytest.fixture()
def texts_file(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("one\ntwo\n")
    return path


def embed(capsys, folder, source, output, *flags: str) -> tuple[int, str, str]:
    return cli(capsys, "embed", str(folder), "--input", str(source), "--output", str(output), "--variant", "fp32", *flags)


# -- output --------------------------------------------------------------------------------------------


def test_output_is_written_exactly_where_asked(tiny_folder, fp32, texts_file, tmp_path, capsys):
    status, _, err = embed(capsys, tiny_folder, texts_file, tmp_path / "vectors.bin")
    assert status == 0 and f"-> {tmp_path / 'vectors.bin'} " in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "vectors.bin"]  # no vectors.bin.npy, no temporary left
    np.testing.assert_allclose(np.load(tmp_path / "vectors.bin"), fp32.encode(["one", "two"]), atol=1e-5)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "vectors.bin").stat().st_mode) == 0o666 & ~umask  # like any new file, not 0600


def test_output_through_a_symbolic_link_keeps_the_link(tiny_folder, texts_file, tmp_path, capsys):
    (tmp_path / "real.npy").write_bytes(b"old")
    (tmp_path / "link.npy").symlink_to(tmp_path / "real.npy")
    assert embed(capsys, tiny_folder, texts_file, tmp_path / "link.npy")[0] == 0
    assert (tmp_path / "link.npy").is_symlink() and np.load(tmp_path / "real.npy").shape == (2, 128)


def test_output_that_is_a_directory_is_one_line(tiny_folder, texts_file, tmp_path, capsys):
    (tmp_path / "x.npy").mkdir()
    status, _, err = embed(capsys, tiny_folder, texts_file, tmp_path / "x.npy")
    assert status == 2 and "x.npy' is a directory; pass the path of a file to write" in error_line(err, "embed")


def test_output_in_a_missing_folder_is_one_line(tiny_folder, texts_file, tmp_path, capsys):
    status, _, err = embed(capsys, tiny_folder, texts_file, tmp_path / "nowhere" / "v.npy")
    assert status == 2 and "nowhere' does not exist" in error_line(err, "embed")


# Found by an attack on the output path (2026-12-05): each of these was reported after all the embedding, named a
# temporary file the user never gave, or wrote where it should not.


def test_an_output_name_of_the_longest_allowed_length_is_written(tiny_folder, texts_file, tmp_path, capsys):
    name = "v" * (NAME_MAX - 4) + ".npy"  # the temporary was .NAME.TOKEN.tmp: 22 bytes over the limit
    assert embed(capsys, tiny_folder, texts_file, tmp_path / name)[0] == 0
    assert np.load(tmp_path / name).shape == (2, 128)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.txt", name])


def test_an_output_name_over_the_limit_is_refused_before_the_work(tiny_folder, texts_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(AlbertEmbedder, "from_pretrained", lambda *a, **k: pytest.fail("the model was loaded"))
    status, _, err = embed(capsys, tiny_folder, texts_file, tmp_path / ("v" * NAME_MAX + ".npy"))
    assert status == 2 and f"the file name is over {NAME_MAX} bytes; pass a shorter one" in error_line(err, "embed")


def test_a_dangling_link_into_a_missing_folder_is_refused_before_the_work(tiny_folder, texts_file, tmp_path, capsys, monkeypatch):
    (tmp_path / "v.npy").symlink_to(tmp_path / "nowhere" / "x.npy")
    monkeypatch.setattr(AlbertEmbedder, "from_pretrained", lambda *a, **k: pytest.fail("the model was loaded"))
    status, _, err = embed(capsys, tiny_folder, texts_file, tmp_path / "v.npy")
    line = error_line(err, "embed")
    assert status == 2 and f"(that is {str(tmp_path / 'nowhere' / 'x.npy')!r}): folder {str(tmp_path / 'nowhere')!r} does not exist" in line
    assert ".tmp" not in line


def test_a_dangling_link_into_an_existing_folder_is_written_through(tiny_folder, texts_file, tmp_path, capsys):
    (tmp_path / "v.npy").symlink_to(tmp_path / "target.npy")
    assert embed(capsys, tiny_folder, texts_file, tmp_path / "v.npy")[0] == 0
    assert (tmp_path / "v.npy").is_symlink() and np.load(tmp_path / "target.npy").shape == (2, 128)


def test_a_loop_of_links_is_refused_and_kept(tiny_folder, texts_file, tmp_path, capsys):
    (tmp_path / "v.npy").symlink_to("v.npy")
    status, _, err = embed(capsys, tiny_folder, texts_file, tmp_path / "v.npy")
    assert status == 2 and "is a loop of symbolic links; remove it or pass another path" in error_line(err, "embed")
    assert (tmp_path / "v.npy").is_symlink()  # was replaced by a regular file


def test_an_output_ending_in_a_separator_is_refused(tiny_folder, texts_file, tmp_path, capsys):
    status, _, err = embed(capsys, tiny_folder, texts_file, f"{tmp_path / 'v.npy'}/")  # wrote a file v.npy
    assert status == 2 and "v.npy/' is a directory; pass the path of a file to write" in error_line(err, "embed")
    assert not (tmp_path / "v.npy").exists()


def test_the_input_is_never_the_output(tiny_folder, texts_file, tmp_path, capsys):
    (tmp_path / "same.txt").symlink_to(texts_file)
    for output in (texts_file, tmp_path / "same.txt"):  # the input file was replaced by the vectors
        status, _, err = embed(capsys, tiny_folder, texts_file, output)
        assert status == 2 and "is the --input file; pass another path, so the texts are kept" in error_line(err, "embed")
    assert texts_file.read_text() == "one\ntwo\n"


@pytest.mark.skipif(not os.path.isdir(f"/proc/{os.getpid()}/fd"), reason="needs Linux's /proc")
def test_dev_stdout_appends_where_stdout_appends(tiny_folder, fp32, texts_file, tmp_path):
    # before: /dev/stdout resolved to run.log, and the vectors were renamed over it: the log's lines were gone
    log = tmp_path / "run.log"
    log.write_bytes(b"an earlier run's line\n")
    for output in ("/dev/stdout", "/proc/self/fd/1"):
        with log.open("ab") as appended:
            result = subprocess.run([sys.executable, "-m", "albert_onnx.cli", "embed", str(tiny_folder), "--input", str(texts_file),
                                     "--output", output, "--variant", "fp32"], stdout=appended, stderr=subprocess.PIPE, text=True)
        assert result.returncode == 0 and "-> stdout" in result.stderr, result.stderr
    data = log.read_bytes()
    prefix = b"an earlier run's line\n"
    assert data.startswith(prefix)
    stream = io.BytesIO(data[len(prefix):])
    for _ in range(2):
        np.testing.assert_allclose(np.load(stream), fp32.encode(["one", "two"]), atol=1e-5)
    assert stream.read() == b""
    # another descriptor of the process is not a file to write (opening it anew would truncate what is behind it)
    result = subprocess.run([sys.executable, "-m", "albert_onnx.cli", "embed", str(tiny_folder), "--input", str(texts_file),
                             "--output", "/dev/stderr", "--variant", "fp32"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == ("albert-onnx embed: error: --output '/dev/stderr' is this process's file descriptor 2, "
                                     "not a file to write; pass a file path, or - for stdout")


@pytest.mark.parametrize("mode", ["r+b", "ab"])  # the shell's 1<> in.txt and >> in.txt
def test_stdout_redirected_to_the_input_file_is_refused(tiny_folder, texts_file, mode):
    for output in ("-", "/dev/stdout"):
        with texts_file.open(mode) as stdout:
            result = subprocess.run([sys.executable, "-m", "albert_onnx.cli", "embed", str(tiny_folder), "--input", str(texts_file),
                                     "--output", output, "--variant", "fp32"], stdout=stdout, stderr=subprocess.PIPE, text=True)
        assert result.returncode == 2 and f"stdout is redirected to the --input file '{texts_file}'" in result.stderr, result.stderr
        assert texts_file.read_text() == "one\ntwo\n"


def test_a_folder_that_is_no_model_folder_is_named_as_such(texts_file, tmp_path, capsys, monkeypatch):
    # before: "--output ... is inside the model folder", and moving the output only led to the real error
    (tmp_path / "project").mkdir()
    status, _, err = embed(capsys, tmp_path / "project", texts_file, tmp_path / "project" / "v.npy")
    assert status == 2 and "folder=" in error_line(err, "embed") and "has no manifest.json" in error_line(err, "embed")
    monkeypatch.chdir(tmp_path / "project")
    status, _, err = embed(capsys, "", texts_file, "v.npy")  # "" is the current folder to Path
    assert status == 2 and "folder='' is empty" in error_line(err, "embed")
    assert sorted(p.name for p in (tmp_path / "project").iterdir()) == []


def test_the_output_is_never_written_into_the_model_folder(copy_of, texts_file, capsys):
    graph = copy_of / "model_fp32.onnx"
    before = graph.read_bytes()
    for output in (graph, copy_of / "vectors.npy"):
        status, _, err = embed(capsys, copy_of, texts_file, output)
        assert status == 2 and "is inside the model folder" in error_line(err, "embed")
    assert graph.read_bytes() == before and not (copy_of / "vectors.npy").exists()


def test_rewriting_an_output_keeps_its_permissions(tiny_folder, texts_file, tmp_path, capsys):
    (tmp_path / "v.npy").write_bytes(b"old")
    (tmp_path / "v.npy").chmod(0o600)
    assert embed(capsys, tiny_folder, texts_file, tmp_path / "v.npy")[0] == 0
    assert stat.S_IMODE((tmp_path / "v.npy").stat().st_mode) == 0o600  # became 0o644: a private file made readable
    assert np.load(tmp_path / "v.npy").shape == (2, 128)


def test_rewriting_keeps_owner_and_drops_setuid(tiny_folder, texts_file, tmp_path, capsys):
    (tmp_path / "v.npy").write_bytes(b"old")
    (tmp_path / "v.npy").chmod(0o4750)
    if os.geteuid() == 0:
        os.chown(tmp_path / "v.npy", 65534, 65534)  # someone else's file: root's rewrite made it root's
    before = (tmp_path / "v.npy").stat()
    assert embed(capsys, tiny_folder, texts_file, tmp_path / "v.npy")[0] == 0
    after = (tmp_path / "v.npy").stat()
    assert stat.S_IMODE(after.st_mode) == 0o750 and (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)


def test_stdin_redirected_from_the_output_is_refused(tiny_folder, tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("one\ntwo\n")
    with path.open("rb") as stdin:
        result = subprocess.run([sys.executable, "-m", "albert_onnx.cli", "embed", str(tiny_folder), "--input", "-", "--output", str(path)],
                                stdin=stdin, stderr=subprocess.PIPE, text=True)
    assert result.returncode == 2 and "is the file redirected to stdin (--input -)" in result.stderr
    assert path.read_text() == "one\ntwo\n"


def test_a_hard_link_to_the_input_may_be_the_output(tiny_folder, texts_file, tmp_path, capsys):
    os.link(texts_file, tmp_path / "other.npy")  # the rename replaces this name only: the input keeps its texts
    assert embed(capsys, tiny_folder, texts_file, tmp_path / "other.npy")[0] == 0
    assert texts_file.read_text() == "one\ntwo\n" and np.load(tmp_path / "other.npy").shape == (2, 128)


def test_a_closed_stderr_keeps_stdout_to_the_vectors(tiny_folder, texts_file):
    result = subprocess.run([sys.executable, "-m", "albert_onnx.cli", "embed", str(tiny_folder), "--input", str(texts_file), "--output", "-",
                             "--variant", "fp32"], stdout=subprocess.PIPE, preexec_fn=lambda: os.close(2))
    assert result.returncode == 0
    vectors = np.load(io.BytesIO(result.stdout))  # the summary line was printed after the array, on stdout
    assert vectors.shape == (2, 128) and len(result.stdout) == 128 + 2 * 128 * 4


@pytest.mark.parametrize("flags, closed, message", [
    (["--output", "-"], "stdout", "--output -: this process has no stdout (it was closed)"),
    (["--input", "-"], "stdin", "--input -: this process has no stdin (it was closed)"),
])
def test_a_closed_stdin_or_stdout_is_one_line(tiny_folder, texts_file, tmp_path, flags, closed, message):
    command = ["embed", str(tiny_folder), "--input", str(texts_file), "--output", str(tmp_path / "v.npy"), *flags]
    script = f"import sys; from albert_onnx.cli import main; sys.exit(main({command!r}))"
    result = subprocess.run([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.close(0 if closed == "stdin" else 1))  # what `<&-` / `>&-` do
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"albert-onnx embed: error: {message}"), result.stderr


@pytest.mark.parametrize("locked", ["folder", "manifest", "graph"])
def test_a_model_folder_this_user_may_not_read_says_so(tiny_folder, tmp_path, locked):
    """Path.is_dir and os.path.lexists answer False on EACCES: a folder one may not enter "has no manifest.json"."""
    command = [*refused_reads(tmp_path), sys.executable, "-m", "albert_onnx.cli", "info", str(tmp_path / "m")]
    shutil.copytree(tiny_folder, tmp_path / "m")
    denied = tmp_path / "m" / {"folder": "", "manifest": "manifest.json", "graph": "model_fp32.onnx"}[locked]
    denied.chmod(0)
    try:
        result = subprocess.run(command, capture_output=True, text=True)
    finally:
        denied.chmod(0o755)
    if locked == "graph":  # info reports the file on its line and goes on with the others
        assert result.returncode == 2 and result.stderr.endswith("fail the loader's checks (shown above); do what each line says, or re-export the folder\n")
        assert f"\n         {denied}: Permission denied\n" in result.stdout
        assert "         model_int8.onnx: size and sha256 match manifest.json\n" in result.stdout
        return
    manifest = tmp_path / "m" / "manifest.json"  # a folder one may not enter: its manifest may not be read
    assert (result.returncode, result.stderr) == (2, f"albert-onnx info: error: {manifest}: Permission denied\n")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_info_into_a_full_disk_is_one_line(tiny_folder):
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "albert_onnx.cli", "info", str(tiny_folder)], stdout=full,
                                stderr=subprocess.PIPE, text=True)
    assert (result.returncode, result.stderr) == (2, "albert-onnx info: error: <stdout>: No space left on device\n")


def test_info_with_a_closed_stdout_is_one_line(tiny_folder):
    script = f"import sys; from albert_onnx.cli import main; sys.exit(main(['info', {str(tiny_folder)!r}]))"
    result = subprocess.run([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.close(1))
    assert (result.returncode, result.stderr) == (2, "albert-onnx info: error: this process has no stdout (it was closed); "
                                                     "redirect it to a file or a pipe\n")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("lines", [2, 100])  # 1 KB (fails in the final flush) and 51 KB (fails in a write)
def test_a_full_disk_is_one_line(tiny_folder, tmp_path, capsys, lines):
    (tmp_path / "in.txt").write_text("text\n" * lines)
    status, _, err = embed(capsys, tiny_folder, tmp_path / "in.txt", "/dev/full")  # every write fails with ENOSPC
    assert status == 2 and error_line(err, "embed") == "albert-onnx embed: error: /dev/full: No space left on device"


def test_a_failed_write_keeps_the_old_file_whole(tiny_folder, texts_file, tmp_path, monkeypatch, capsys):
    old = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(tmp_path / "v.npy", old)

    def half_then_enospc(handle, array):
        handle.write(b"\x93NUMPY half of a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what write() raises: no file name

    monkeypatch.setattr(np, "save", half_then_enospc)
    status, _, err = embed(capsys, tiny_folder, texts_file, tmp_path / "v.npy")
    monkeypatch.undo()
    assert status == 2 and error_line(err, "embed") == f"albert-onnx embed: error: {tmp_path / 'v.npy'}: No space left on device"
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "v.npy"]


def test_a_kill_during_the_write_never_leaves_a_half_file(tiny_folder, texts_file, tmp_path):
    old = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(tmp_path / "v.npy", old)
    code = (
        "import os, signal, numpy as np\n"
        "from albert_onnx.cli import main\n"
        "def half_then_killed(handle, array):\n"
        "    handle.write(b'\\x93NUMPY half of a file'); os.kill(os.getpid(), signal.SIGKILL)\n"
        "np.save = half_then_killed\n"
        f"main(['embed', {str(tiny_folder)!r}, '--input', {str(texts_file)!r}, '--output', {str(tmp_path / 'v.npy')!r}, '--variant', 'fp32'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), old)  # the target is the old file, whole


def test_sigterm_ends_a_command_as_ctrl_c_does(tiny_folder, texts_file, tmp_path):
    # kill, timeout and docker stop send SIGTERM: one line and status 143, the output left as it was (not written)
    code = (
        "import os, signal, time\n"
        "from albert_onnx import AlbertEmbedder\n"
        "from albert_onnx.cli import main\n"
        "def terminated(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGTERM); time.sleep(30)\n"
        "AlbertEmbedder.encode = terminated\n"
        f"raise SystemExit(main(['embed', {str(tiny_folder)!r}, '--input', {str(texts_file)!r}, '--output', {str(tmp_path / 'v.npy')!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=25)
    assert (result.returncode, result.stderr) == (143, "albert-onnx: terminated\n")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.txt"]
    before = signal.getsignal(signal.SIGTERM)
    assert main(["info", str(tiny_folder)]) == 0 and signal.getsignal(signal.SIGTERM) is before  # main() gave the handler back


def test_an_ignored_sigterm_stays_ignored(tiny_folder, texts_file, tmp_path):
    # `trap '' TERM` (or nohup-like wrappers) ignore SIGTERM for the processes they start: main() must not undo that
    code = (
        "import os, signal\n"
        "from albert_onnx import AlbertEmbedder\n"
        "from albert_onnx.cli import main\n"
        "encode = AlbertEmbedder.encode\n"
        "def terminated_then_encode(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGTERM); return encode(*args, **kwargs)\n"
        "AlbertEmbedder.encode = terminated_then_encode\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"raise SystemExit(main(['embed', {str(tiny_folder)!r}, '--input', {str(texts_file)!r}, '--output', {str(tmp_path / 'v.npy')!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "v.npy").shape[0] == 2


def test_a_second_sigterm_does_not_interrupt_the_cleanup_of_the_first():
    # the first SIGTERM raises where the command is; its cleanup (a temporary removed, Ray shut down) then runs to the end
    from albert_onnx.cli import _terminate, _Terminated

    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(_Terminated):
            _terminate(signal.SIGTERM, None)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.parametrize("command", ["info", "embed"])
def test_a_closed_stdout_ends_quietly(tiny_folder, tmp_path, command):
    (tmp_path / "in.txt").write_text("text\n" * 100)  # 51 KB of vectors: more than one write
    args = ["info", str(tiny_folder)] if command == "info" else ["embed", str(tiny_folder), "--input", str(tmp_path / "in.txt"), "--output", "-"]
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head -1` after its line: nobody reads what the command prints
    try:
        result = subprocess.run([sys.executable, "-m", "albert_onnx.cli", *args], stdout=write_end, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (141, "")


def test_a_reader_that_leaves_mid_write_ends_quietly(tiny_folder, tmp_path):
    (tmp_path / "in.txt").write_text("text\n" * 1000)  # 512 KB of vectors, 8 times what the pipe holds
    args = ["embed", str(tiny_folder), "--input", str(tmp_path / "in.txt"), "--output", "-", "--batch-size", "1000"]
    process = subprocess.Popen([sys.executable, "-m", "albert_onnx.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert len(process.stdout.buffer.read(10)) == 10  # the command is now blocked writing into a full pipe
    process.stdout.close()  # like `| head -c 10`
    stderr = process.stderr.read()
    assert (process.wait(), stderr) == (141, "")  # not numpy's "N requested and M written", nor a silent 0


# -- input ---------------------------------------------------------------------------------------------


def test_missing_input_is_one_line(tiny_folder, tmp_path, capsys):
    status, _, err = embed(capsys, tiny_folder, tmp_path / "none.txt", tmp_path / "v.npy")
    assert status == 2 and "none.txt' does not exist" in error_line(err, "embed")


def test_input_that_is_a_directory_says_so(tiny_folder, tmp_path, capsys):
    (tmp_path / "texts").mkdir()
    status, _, err = embed(capsys, tiny_folder, tmp_path / "texts", tmp_path / "v.npy")
    line = error_line(err, "embed")
    assert status == 2 and "texts' is a directory" in line and "does not exist" not in line


def test_parquet_input_without_ray_says_use_ray(tiny_folder, tmp_path, capsys):
    (tmp_path / "in.parquet").write_bytes(b"PAR1")
    status, _, err = embed(capsys, tiny_folder, tmp_path / "in.parquet", tmp_path / "v.npy")
    assert status == 2 and ".parquet is read by --engine ray" in error_line(err, "embed")


def test_jsonl_syntax_error_names_file_and_line(tiny_folder, tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": "no closing quote}\n')
    status, _, err = embed(capsys, tiny_folder, tmp_path / "bad.jsonl", tmp_path / "v.npy")
    assert status == 2 and f"{tmp_path / 'bad.jsonl'}:2: not valid JSON (" in error_line(err, "embed")
    assert not (tmp_path / "v.npy").exists()


def test_deeply_nested_jsonl_names_the_line(tiny_folder, tmp_path, capsys):
    (tmp_path / "deep.jsonl").write_text('{"text": "ok"}\n' + "[" * 100_000 + "\n")
    status, _, err = embed(capsys, tiny_folder, tmp_path / "deep.jsonl", tmp_path / "v.npy")
    assert status == 2 and "deep.jsonl:2: JSON nested too deeply" in error_line(err, "embed")


def test_jsonl_with_a_number_python_will_not_read_names_the_line(tiny_folder, tmp_path, capsys):
    (tmp_path / "big.jsonl").write_text('{"text": "ok"}\n{"text": "a", "n": ' + "1" * 5000 + "}\n")
    status, _, err = embed(capsys, tiny_folder, tmp_path / "big.jsonl", tmp_path / "v.npy")
    assert status == 2 and "big.jsonl:2: JSON that Python will not read (Exceeds the limit (4300 digits)" in error_line(err, "embed")
    assert "set_int_max_str_digits" not in err and not (tmp_path / "v.npy").exists()


def test_a_text_field_is_refused_where_lines_are_the_texts(tiny_folder, tmp_path, capsys, monkeypatch):
    # before: the JSON lines themselves were embedded without a word (cosine 0.95 to the texts' vectors)
    (tmp_path / "records.txt").write_text('{"body": "hello world"}\n')
    status, _, err = embed(capsys, tiny_folder, tmp_path / "records.txt", tmp_path / "v.npy", "--text-field", "body")
    assert status == 2 and f"error: --text-field body: --input '{tmp_path / 'records.txt'}' is read one text per line" in error_line(err, "embed")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"body": "hello world"}\n')))
    status, _, err = embed(capsys, tiny_folder, "-", tmp_path / "v.npy", "--text-field", "body")
    assert status == 2 and "--text-field body: --input - (stdin) is read one text per line" in error_line(err, "embed")
    assert not (tmp_path / "v.npy").exists()
    (tmp_path / "records.csv").write_text("body\nhello world\n")  # fields, but a format read by Ray only: that is the problem
    status, _, err = embed(capsys, tiny_folder, tmp_path / "records.csv", tmp_path / "v.npy", "--text-field", "body")
    assert status == 2 and ".csv is read by --engine ray" in error_line(err, "embed")
    (tmp_path / "records.jsonl").write_text('{"body": "hello world"}\n')  # where there are fields, it picks one
    assert embed(capsys, tiny_folder, tmp_path / "records.jsonl", tmp_path / "v.npy", "--text-field", "body")[0] == 0


def test_jsonl_without_the_field_names_the_line(tiny_folder, tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"body": "no text"}\n')
    status, _, err = embed(capsys, tiny_folder, tmp_path / "bad.jsonl", tmp_path / "v.npy")
    line = error_line(err, "embed")
    assert status == 2 and "bad.jsonl:2: expected an object with a str 'text' field" in line and "--text-field" in line
    for value, shown in (("5", "a number"), ("null", "null"), ('["a"]', "an array"), ("true", "true")):
        (tmp_path / "bad.jsonl").write_text(f'{{"text": "ok"}}\n{{"text": {value}}}\n')  # the field is there: not a text
        status, _, err = embed(capsys, tiny_folder, tmp_path / "bad.jsonl", tmp_path / "v.npy")
        assert (status, error_line(err, "embed")) == (2, f"albert-onnx embed: error: {tmp_path / 'bad.jsonl'}:2: 'text' is {shown}, "
                                                         "not a string; make each 'text' a JSON string")


@pytest.mark.parametrize("source", ["/dev/zero", "-"])
def test_an_input_that_never_ends_is_one_line(tiny_folder, tmp_path, capsys, monkeypatch, source):
    # found by an attack (2026-12-07): /dev/zero read to the end, then a MemoryError traceback
    monkeypatch.setattr(cli_module, "MAX_LOCAL_INPUT_BYTES", 3 << 20)
    zeros = open("/dev/zero", "rb")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(zeros))
    try:
        status, _, err = embed(capsys, tiny_folder, source, tmp_path / "v.npy")
    finally:
        zeros.close()
    shown = "- (stdin)" if source == "-" else repr(source)
    assert status == 2 and error_line(err, "embed").startswith(f"albert-onnx embed: error: --input {shown} holds more than 3 MiB (a device such as /dev/zero")
    assert not (tmp_path / "v.npy").exists()


def test_non_utf8_file_names_file_byte_and_line(tiny_folder, tmp_path, capsys):
    (tmp_path / "latin1.txt").write_bytes("ok\ncaf\u00e9\n".encode("latin-1"))
    status, _, err = embed(capsys, tiny_folder, tmp_path / "latin1.txt", tmp_path / "v.npy")
    assert status == 2 and f"{tmp_path / 'latin1.txt'}: not UTF-8 text: byte 6 (line 2) is 0xe9" in error_line(err, "embed")


def test_non_utf8_stdin_is_named(tiny_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xff\xfe bad\n")))
    status, _, err = embed(capsys, tiny_folder, "-", tmp_path / "v.npy")
    assert status == 2 and "<stdin>: not UTF-8 text: byte 0 (line 1) is 0xff" in error_line(err, "embed")


def test_lone_surrogate_in_jsonl_names_the_line(tiny_folder, tmp_path, capsys):
    (tmp_path / "s.jsonl").write_text('{"text": "fine"}\n{"text": "half \\ud800 a pair"}\n')  # valid JSON, not valid Unicode
    status, _, err = embed(capsys, tiny_folder, tmp_path / "s.jsonl", tmp_path / "v.npy")
    assert status == 2 and "s.jsonl:2: 'text' has a lone surrogate '\\ud800' at character 5" in error_line(err, "embed")


def test_one_text_per_line_whatever_else_the_line_holds(tiny_folder, fp32, tmp_path, capsys):
    texts = ["form\x0cfeed", "line\u2028separator", "", "crlf"]
    (tmp_path / "in.txt").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(texts).encode() + b"\r\n")  # BOM, CRLF
    assert embed(capsys, tiny_folder, tmp_path / "in.txt", tmp_path / "v.npy")[0] == 0
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), fp32.encode(texts), atol=1e-5)


@pytest.mark.skipif("CUDAExecutionProvider" in available_providers(), reason="this onnxruntime has CUDA")
def test_cuda_without_cuda_is_one_line(tiny_folder, texts_file, tmp_path, capsys):
    status, _, err = cli(capsys, "embed", str(tiny_folder), "--input", str(texts_file), "--output", str(tmp_path / "v.npy"), "--device", "cuda")
    assert status == 2 and "install onnxruntime-gpu" in error_line(err, "embed")


@pytest.mark.skipif("CUDAExecutionProvider" in available_providers(), reason="this onnxruntime has CUDA")
def test_device_id_0_under_auto_is_cuda_not_a_quiet_cpu_run(tiny_folder, texts_file, tmp_path, capsys):
    """--device-id 0 equals the default GPU number: it ran on the CPU with rc 0 before (found by an attack)."""
    status, _, err = cli(capsys, "embed", str(tiny_folder), "--input", str(texts_file), "--output", str(tmp_path / "v.npy"),
                         "--device-id", "0")
    assert status == 2 and "so device='auto' means cuda, but onnxruntime" in error_line(err, "embed")
    assert not (tmp_path / "v.npy").exists()


@pytest.mark.parametrize("flags, message", [
    (["--cuda-option", "gpu_mem_limit"], "--cuda-option 'gpu_mem_limit': pass KEY=VALUE, e.g. --cuda-option gpu_mem_limit=8589934592"),
    (["--cuda-option", "=1"], "--cuda-option '=1': pass KEY=VALUE"),
    (["--device", "cpu", "--device-id", "1"], "--device-id/--cuda-option are CUDA settings but --device cpu"),
    (["--device-id", "-1"], "--device-id=-1: pass an int >= 0"),
    (["--engine", "ray", "--device-id", "0"], "--device-id/--cuda-option: only with --engine local"),
])
def test_cuda_flags_are_checked_in_one_line(tiny_folder, texts_file, tmp_path, capsys, flags, message):
    status, _, err = cli(capsys, "embed", str(tiny_folder), "--input", str(texts_file), "--output", str(tmp_path / "v.npy"), *flags)
    assert status == 2 and message in error_line(err, "embed")
    assert not (tmp_path / "v.npy").exists()


# -- bugs are not user errors --------------------------------------------------------------------------


def test_an_unexpected_exception_keeps_its_traceback(tiny_folder, texts_file, tmp_path, monkeypatch):
    def broken(self, texts, **options):
        raise KeyError("a bug")

    monkeypatch.setattr(AlbertEmbedder, "encode", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["embed", str(tiny_folder), "--input", str(texts_file), "--output", str(tmp_path / "v.npy")])


def test_an_os_error_naming_no_file_keeps_its_traceback(tiny_folder, texts_file, tmp_path, monkeypatch):
    def broken(self, texts, **options):
        raise OSError(errno.EIO, "device failure")

    monkeypatch.setattr(AlbertEmbedder, "encode", broken)
    with pytest.raises(OSError, match="device failure"):
        main(["embed", str(tiny_folder), "--input", str(texts_file), "--output", str(tmp_path / "v.npy")])


# -- found by an attack on this CLI: each went wrong before its fix -------------------------------------


def test_input_suffixes_are_read_in_any_case(tiny_folder, fp32, tmp_path, capsys):
    # before: up.JSONL was read as lines of text, and the JSON itself was embedded, with status 0
    (tmp_path / "up.JSONL").write_text('{"text": "a"}\n{"text": "b"}\n')
    assert embed(capsys, tiny_folder, tmp_path / "up.JSONL", tmp_path / "v.npy")[0] == 0
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), fp32.encode(["a", "b"]), atol=1e-6)
    (tmp_path / "up.CSV").write_text("id,text\n1,a\n")
    status, _, err = embed(capsys, tiny_folder, tmp_path / "up.CSV", tmp_path / "w.npy")
    assert status == 2 and ".CSV is read by --engine ray" in error_line(err, "embed")


@pytest.mark.parametrize("name", ["texts.tsv", "texts.text", "notes.2024"])
def test_an_input_suffix_that_names_no_format_is_refused(tiny_folder, tmp_path, capsys, name):
    (tmp_path / name).write_text("one\ttwo\n")
    status, _, err = embed(capsys, tiny_folder, tmp_path / name, tmp_path / "v.npy")
    suffix = os.path.splitext(name)[1]
    assert status == 2 and f"the suffix {suffix!r} names no format this command reads" in error_line(err, "embed")
    assert not (tmp_path / "v.npy").exists()


def test_an_input_without_suffix_is_read_as_lines(tiny_folder, fp32, tmp_path, capsys):
    (tmp_path / "texts").write_text("one\ntwo\n")
    assert embed(capsys, tiny_folder, tmp_path / "texts", tmp_path / "v.npy")[0] == 0
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), fp32.encode(["one", "two"]), atol=1e-6)


def test_temporaries_of_killed_runs_are_removed_and_live_ones_kept(tiny_folder, texts_file, tmp_path, capsys):
    """A killed writer's temporary is unlocked (the kernel dropped its flock); a live writer's is locked."""
    ours, others = _temporary_prefix(tmp_path / "v.npy"), _temporary_prefix(tmp_path / "other.npy")
    dead, live, other = f"{ours}00000000000000aa.tmp", f"{ours}00000000000000bb.tmp", f"{others}00000000000000cc.tmp"
    for name in (dead, live, other):
        (tmp_path / name).write_bytes(b"partial")
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'rb'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)", str(tmp_path / live)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert embed(capsys, tiny_folder, texts_file, tmp_path / "v.npy")[0] == 0
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live, other, "in.txt", "v.npy"])


def test_ctrl_c_ends_quietly_with_130(tiny_folder, texts_file, tmp_path, capsys, monkeypatch):
    from albert_onnx import embedder

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(embedder.AlbertEmbedder, "encode", interrupted)
    status, out, err = embed(capsys, tiny_folder, texts_file, tmp_path / "v.npy")
    assert (status, out, err) == (130, "", "albert-onnx: interrupted\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_behind_stdout_is_one_line(tiny_folder, texts_file):
    with open("/dev/full", "wb") as full:
        result = subprocess.run([sys.executable, "-m", "albert_onnx.cli", "embed", str(tiny_folder), "--input", str(texts_file),
                                 "--output", "-", "--variant", "fp32"], stdout=full, stderr=subprocess.PIPE, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "albert-onnx embed: error: <stdout>: No space left on device", result.stderr
    assert "Traceback" not in result.stderr


def test_truncation_is_counted_once_for_the_whole_input(tiny_folder, tmp_path, capsys):
    # before: one warning per chunk of 8 batches, and Python showed each distinct text once: "2 of 8 texts"
    lines = ["short"] * 48 + ["a long line of many words " * 20] * 16
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    status, _, err = embed(capsys, tiny_folder, tmp_path / "in.txt", tmp_path / "v.npy", "--max-length", "16", "--batch-size", "1")
    assert status == 0
    warned = [line for line in err.splitlines() if "warning" in line]
    assert warned == ["albert-onnx embed: warning: 16 of 64 texts exceeded --max-length 16 tokens and were truncated; "
                      "pass --long-text window to embed whole texts"]


def test_an_unknown_flag_after_a_command_is_that_commands_error(tiny_folder, capsys):
    # argparse named the top parser ("albert-onnx: error") and its --help, which does not list the command's flags
    assert cli(capsys, "info", str(tiny_folder), "extra") == (
        2, "", "albert-onnx info: error: unrecognized arguments: extra (see albert-onnx info --help)\n")
    assert cli(capsys, "export", "src", "-o", "out", "--weights") == (
        2, "", "albert-onnx export: error: unrecognized arguments: --weights (see albert-onnx export --help)\n")


@pytest.mark.parametrize("flag, kind", [("--input", "a file"), ("--output", "a folder")])
def test_a_dash_is_refused_by_the_ray_engine(tiny_folder, tmp_path, capsys, monkeypatch, flag, kind):
    # --output - made a folder named "-" in the working directory; --input - said the file "-" does not exist
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.jsonl").write_text('{"id": 1, "text": "a"}\n')
    paths = {"--input": "in.jsonl", "--output": "out", flag: "-"}
    status, _, err = cli(capsys, "embed", str(tiny_folder), "--engine", "ray", "--input", paths["--input"], "--output", paths["--output"])
    assert (status, error_line(err, "embed")) == (
        2, f"albert-onnx embed: error: {flag} -: stdin and stdout are for --engine local; the Ray job reads input files and writes "
           f"a folder of parquet parts: pass {kind} (./- for one named -)")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.jsonl"]
