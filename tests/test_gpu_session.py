"""tools/gpu_session.sh, the GPU host's side, on this machine: pieces received one call at a time, and pieces that do
not make the wheel stopped in one line before anything is installed (the download and the GPU itself are not here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "gpu_session.sh"


def _copy(tmp_path: Path) -> Path:
    """A repository copy as the device tool makes it: the script, and the carried pieces under .gpu/."""
    repo = tmp_path / "repo"
    (repo / "tools").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "tools")
    return repo


def _run(repo: Path, tmp_path: Path, *verbs: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "STAGE": str(tmp_path / "stage"), "OUT": str(tmp_path / "out")}
    return subprocess.run(["bash", str(repo / "tools" / "gpu_session.sh"), *verbs], capture_output=True, text=True, env=env)


def test_pieces_arrive_one_call_at_a_time_and_a_wrong_set_is_refused(tmp_path):
    repo = _copy(tmp_path)
    parts = repo / ".gpu" / "parts"
    for name, data in (("part-aa", b"first"), ("part-ab", b"second")):  # each call carries one piece
        shutil.rmtree(parts, ignore_errors=True)
        parts.mkdir(parents=True)
        (parts / name).write_bytes(data)
        done = _run(repo, tmp_path, "receive")
        assert done.returncode == 0, done.stderr
    assert "holds: part-aa part-ab; still to come: part-ac part-ad part-ae" in done.stdout
    done = _run(repo, tmp_path, "test")
    assert done.returncode == 2
    assert "the pieces in" in done.stderr and "do not make onnxruntime_gpu-1.31.1" in done.stderr and "part-aa part-ab" in done.stderr
    assert not (tmp_path / "stage" / "site").exists()  # nothing installed from a wrong wheel


def test_a_cold_host_a_forgotten_carry_and_an_unknown_verb_are_one_line(tmp_path):
    repo = _copy(tmp_path)
    cold = _run(repo, tmp_path, "bench")
    assert cold.returncode == 2 and "no pieces in" in cold.stderr and "host went cold" in cold.stderr
    forgotten = _run(repo, tmp_path, "receive")  # no piece carried with this call
    assert forgotten.returncode == 2 and "this call carried no piece" in forgotten.stderr
    (repo / ".gpu" / "parts").mkdir(parents=True)
    (repo / ".gpu" / "parts" / "part-ab").write_bytes(b"second")  # part-aa was lost with a host gone cold
    lost = _run(repo, tmp_path, "receive")
    assert lost.returncode == 2 and "has part-ab but not part-aa" in lost.stderr and "again from part-aa" in lost.stderr
    unknown = _run(repo, tmp_path, "deploy")
    assert unknown.returncode == 2 and "unknown verb 'deploy'" in unknown.stderr
