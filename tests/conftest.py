"""Shared fixtures: one tiny random ALBERT exported once per session (in a subprocess, so runtime tests never
import torch), the real albert-base-v2 architecture for the tests marked ``base``, and a Hugging Face hub cache
laid out like the real one for the size-name exports (``sizes``; the slow ones, ``slow_size``, run only when
selected: ``pytest -m sizes``)."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
BASE_SOURCE = SHARED / "models" / "albert-base-v2"
STS_DIR = SHARED / "data" / "stsbenchmark"

TINY_CONFIG = {
    "model_type": "albert", "architectures": ["AlbertForMaskedLM"], "vocab_size": 30000, "embedding_size": 32,
    "hidden_size": 128, "num_hidden_layers": 12, "num_attention_heads": 4, "intermediate_size": 256,
    "hidden_act": "gelu_new", "hidden_dropout_prob": 0, "attention_probs_dropout_prob": 0,
    "max_position_embeddings": 512, "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12,
    "num_hidden_groups": 1, "inner_group_num": 1, "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3,
}


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")  # .ci/run sets CI=true


def need_shared() -> None:
    """Skip a test that needs ../shared when it is missing, except in CI, where a missing ../shared fails it."""
    if (BASE_SOURCE / "spiece.model").is_file() and (STS_DIR / "sts-dev.csv").is_file():
        return
    message = f"{SHARED} (albert-base-v2 vocabulary and STS-B) is not beside the project"
    if IN_CI:
        pytest.fail(f"{message}, and CI must run every test (CI=true)")
    pytest.skip(f"{message}; CI always has it")


def need_module(name: str):
    """``pytest.importorskip`` outside CI; in CI (CI=true) a missing module fails instead of skipping."""
    if IN_CI:
        return importlib.import_module(name)
    return pytest.importorskip(name)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the slow size exports unless the -m expression names them (``-m sizes`` runs all eight)."""
    expression = config.getoption("markexpr") or ""
    if "sizes" in expression or "slow_size" in expression:
        return
    skip = pytest.mark.skip(reason="slow size export: run with pytest -m sizes (all eight) or -m slow_size")
    for item in items:
        if "slow_size" in item.keywords:
            item.add_marker(skip)


def run_cli(*args: str, check: bool = True, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``albert-onnx ...`` in a fresh interpreter; ``env`` adds to (or, with None values, removes from) os.environ."""
    child_env = dict(os.environ)
    for name, value in (env or {}).items():
        if value is None:
            child_env.pop(name, None)
        else:
            child_env[name] = value
    result = subprocess.run([sys.executable, "-m", "albert_onnx.cli", *args], capture_output=True, text=True, input=stdin,
                            env=child_env)
    if check and result.returncode != 0:
        raise AssertionError(f"albert-onnx {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def make_tiny_source(folder: Path) -> Path:
    """A local HF-layout folder: tiny config, real vocabulary, no weights."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(TINY_CONFIG))
    for name in ("spiece.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(BASE_SOURCE / name, folder / name)
    return folder


def refused_reads(tmp_path: Path) -> list[str]:
    """A command prefix under which a child process is refused files of mode 0, or a skip where there is none.

    Root reads everything (CI runs as root): there the child runs without the capabilities that let it
    (``setpriv``, util-linux); a probe checks that a read is really refused (inherited capabilities survive it).
    """
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv (util-linux): no way to be refused a read")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    probe = tmp_path / "probe-of-mode-0"
    probe.write_text("x")
    probe.chmod(0)
    refused = subprocess.run([*prefix, sys.executable, "-c", f"open({str(probe)!r})"], capture_output=True, text=True)
    probe.unlink()
    if "PermissionError" not in refused.stderr:
        pytest.skip(f"a child of this process is not refused a file of mode 0 ({refused.stderr.strip()[-120:] or 'it read it'})")
    return prefix


def make_hub_cache(cache: Path, repo: str = "albert/albert-base-v2", spiece: bytes | None = None,
                   extra: dict[str, bytes] | None = None) -> Path:
    """A hub cache like huggingface_hub's: blobs by sha256, a snapshot of relative symlinks, refs/main.

    ``spiece`` defaults to the real vocabulary, copied from ../shared at test time (never committed); ``extra``
    adds more files of the repository (config.json, model.safetensors).
    """
    files = {"spiece.model": (BASE_SOURCE / "spiece.model").read_bytes() if spiece is None else spiece, **(extra or {})}
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    commit = "8e2f239c5f8a2c3d6f6a4e0b1f7d9c2a5b4e3d21"
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        (repo_dir / "blobs" / digest).write_bytes(data)
        (snapshot / name).symlink_to(Path("..") / ".." / "blobs" / digest)
    return cache


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory) -> Path:
    """A hub cache holding only albert/albert-base-v2's spiece.model, as `huggingface-cli download` leaves it."""
    need_shared()
    return make_hub_cache(tmp_path_factory.mktemp("hf") / "hub")


@pytest.fixture(scope="session")
def sts_texts() -> list[str]:
    need_shared()
    texts = []
    for name in ("sts-train.csv", "sts-dev.csv"):
        for line in (STS_DIR / name).read_text(encoding="utf-8").splitlines():
            cells = line.split("\t")
            texts.extend(cells[5:7])
    return texts


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory) -> Path:
    need_shared()
    return make_tiny_source(tmp_path_factory.mktemp("tiny-src") / "albert-tiny")


# ALBERT_ONNX_TEST_FOLDERS=DIR: read the tiny and base folders from DIR/tiny and DIR/base (written by
# `python -m tests.export_test_folders DIR`) instead of exporting them: for a GPU machine without the export extra.
PREPARED = os.environ.get("ALBERT_ONNX_TEST_FOLDERS")


def tiny_export_args(source: Path, out: Path) -> list[str]:
    return ["export", str(source), "--random-weights", "--seed", "1", "--hidden-states",
            "--validation-texts", str(STS_DIR / "sts-dev.csv"), "-o", str(out)]


def base_export_args(out: Path) -> list[str]:
    return ["export", str(BASE_SOURCE), "--random-weights", "--validation-texts", str(STS_DIR / "sts-dev.csv"), "-o", str(out)]


def prepared(name: str) -> Path:
    folder = Path(PREPARED) / name
    if not (folder / "manifest.json").is_file():
        pytest.fail(f"ALBERT_ONNX_TEST_FOLDERS={PREPARED!r} has no {name}/manifest.json; write it with python -m tests.export_test_folders {PREPARED}")
    return folder


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """The tiny model exported once, all four variants, with hidden states."""
    if PREPARED:
        return prepared("tiny")
    need_shared()
    out = tmp_path_factory.mktemp("tiny") / "model"
    run_cli(*tiny_export_args(make_tiny_source(tmp_path_factory.mktemp("tiny-src") / "albert-tiny"), out))
    return out


@pytest.fixture
def copy_of(tiny_folder, tmp_path) -> Path:
    """A writable copy of tiny_folder at tmp_path/model, for tests that damage or edit a folder."""
    target = tmp_path / "model"
    target.mkdir()
    for path in tiny_folder.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def short_cls(folder: Path, centred: float = 0.8, spread: float = 0.2, drop: tuple[str, ...] = ()) -> Path:
    """Edit ``folder``'s manifest so that its int8 cls vectors fell short at export (centred cosine ``centred`` over a
    reference of ``spread``), and remove the variants ``drop``; validation records are not in the graphs' stamp.
    The tiny model's own cls vectors lie within 1% of their mean, where no shortfall is reported."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["variants"]["int8"]["validation"]["metrics"].update(cls_centred_cosine_mean=centred, cls_reference_spread=spread)
    for name in drop:
        (folder / manifest["variants"].pop(name)["file"]).unlink()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="session")
def plain_folder(tiny_source, tmp_path_factory) -> Path:
    """The tiny model exported as fp32 only and without hidden states (what a default export gives)."""
    out = tmp_path_factory.mktemp("plain") / "model"
    run_cli("export", str(tiny_source), "--random-weights", "--seed", "1", "--variants", "fp32", "--validation-samples", "8", "-o", str(out))
    return out


@pytest.fixture(scope="session")
def base_folder(tmp_path_factory) -> Path:
    """albert-base-v2 (real config and vocabulary, seeded random weights), exported once."""
    if PREPARED:
        return prepared("base")
    need_shared()
    out = tmp_path_factory.mktemp("base") / "albert-base-v2"
    result = run_cli(*base_export_args(out))
    (out.parent / "export.log").write_text(result.stdout + result.stderr)
    return out
