"""Build the model folder in a temporary sibling and move it into place only when complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import onnx

from albert_onnx.model_folder import MANIFEST, Manifest

from .errors import ExportError


def check_external_data(path: Path) -> None:
    """Refuse a graph whose external-data locations would point outside its folder.

    Raises:
        ExportError: A tensor's location is absolute or climbs out with "..".
    """
    model = onnx.load(str(path), load_external_data=False)
    folder = path.parent.resolve()
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key != "location":
                continue
            target = (folder / entry.value).resolve()
            if Path(entry.value).is_absolute() or folder not in target.parents:
                raise ExportError(f"{path.name}: initializer {tensor.name!r} points to {entry.value!r}, outside the model folder")


@contextlib.contextmanager
def staging_folder(target: Path, overwrite: bool) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; on success it replaces ``target`` in one rename.

    A crash or kill leaves at most a ``.<name>.tmp-*`` folder, never a half-written ``target``.

    Raises:
        ExportError: ``target`` exists and ``overwrite`` is False, or it is a file.
    """
    target = target.resolve()
    if target.exists() and not target.is_dir():
        raise ExportError(f"output={str(target)!r} is a file; pass a folder path")
    if target.exists() and not overwrite:
        raise ExportError(f"output={str(target)!r} already exists; pass --overwrite to replace it, or choose another folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the finished folder gets normal permissions
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, retired / "folder")
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, target)


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write manifest.json (last, so its presence means the folder is complete), checked by the runtime's own reader."""
    text = manifest.to_json()
    Manifest.from_json(text, f"{folder / MANIFEST} (as written)")  # the writer never emits what the reader refuses
    (folder / MANIFEST).write_text(text, encoding="utf-8")
