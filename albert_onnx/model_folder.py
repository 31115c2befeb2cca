"""Read and verify a model folder written by ``albert-onnx export`` (the contract: manifest.json, format v1)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "albert-onnx-model-folder"
SUPPORTED_VERSIONS = (1,)


class ModelFolderError(ValueError):
    """The folder is missing, malformed, of another format version, or a file fails its size/hash check."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelFolder:
    """A parsed model folder. Use :meth:`load`."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> "ModelFolder":
        """Parse ``path/manifest.json``.

        Raises:
            ModelFolderError: No such folder or manifest, another format, or an unsupported format version.
        """
        folder = Path(path)
        manifest_path = folder / "manifest.json"
        if not manifest_path.is_file():
            raise ModelFolderError(
                f"folder={str(folder)!r} has no manifest.json; pass a folder written by `albert-onnx export`"
            )
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise ModelFolderError(f"{manifest_path}: format={manifest.get('format')!r}, expected {FORMAT!r}")
        if manifest.get("format_version") not in SUPPORTED_VERSIONS:
            raise ModelFolderError(
                f"{manifest_path}: format_version={manifest.get('format_version')!r} is not supported by this "
                f"albert-onnx (supports {SUPPORTED_VERSIONS}); upgrade albert-onnx or re-export the model"
            )
        return cls(folder, manifest)

    @property
    def variants(self) -> dict[str, dict[str, Any]]:
        """Variant name -> its manifest entry (file, size, sha256, devices, fused_ops, validation)."""
        return self.manifest["variants"]

    @property
    def hidden_size(self) -> int:
        return int(self.manifest["model"]["hidden_size"])

    @property
    def embedding_size(self) -> int:
        return int(self.manifest["model"]["embedding_size"])

    @property
    def num_hidden_layers(self) -> int:
        return int(self.manifest["model"]["num_hidden_layers"])

    @property
    def tokenizer(self) -> dict[str, Any]:
        return self.manifest["tokenizer"]

    @property
    def outputs(self) -> list[str]:
        return list(self.manifest["outputs"])

    @property
    def random_weights(self) -> bool:
        return bool(self.manifest["source"]["random_weights"])

    def file(self, name: str) -> Path:
        """Path of a file named by the manifest; plain names only, so nothing resolves outside the folder."""
        if Path(name).name != name or name in ("", ".", ".."):
            raise ModelFolderError(f"{self.path}/manifest.json names file {name!r}; only plain file names are allowed")
        return self.path / name

    def variant_path(self, variant: str) -> Path:
        """The .onnx file of ``variant``.

        Raises:
            ModelFolderError: The folder has no such variant.
        """
        if variant not in self.variants:
            raise ModelFolderError(
                f"variant={variant!r} is not in {self.path} (it has {', '.join(self.variants)}); "
                "choose one of those or re-export with --variants"
            )
        return self.file(self.variants[variant]["file"])

    def verify(self, variant: str) -> None:
        """Check the size and sha256 of the variant's graph and of tokenizer.json against the manifest.

        Raises:
            ModelFolderError: A file is missing or does not match, naming which.
        """
        self.variant_path(variant)  # raises for an unknown variant
        for entry in (self.variants[variant], self.tokenizer):
            path = self.file(entry["file"])
            if not path.is_file():
                raise ModelFolderError(f"{path} is missing; the model folder is incomplete, re-export it")
            size = path.stat().st_size
            if size != entry["size"]:
                raise ModelFolderError(f"{path}: size {size} != {entry['size']} in manifest.json; the file was changed or truncated, re-export")
            digest = _sha256(path)
            if digest != entry["sha256"]:
                raise ModelFolderError(f"{path}: sha256 {digest[:12]}... != {entry['sha256'][:12]}... in manifest.json; the file was changed, re-export")
