"""Locate the checkpoint and its vocabulary: a local folder, a shipped size name or a hub id.

Imports neither torch nor transformers, so the export names a mistyped path at once, before seconds of imports and
before any weights are loaded or downloaded; load.py and tokenizer.py branch on the same answers.
"""

from __future__ import annotations

import errno
import os
from importlib import resources
from pathlib import Path
from typing import Literal

from .errors import ExportError

SHIPPED_SIZES = tuple(
    sorted(p.name[: -len(".json")] for p in resources.files(__package__).joinpath("configs").iterdir() if p.name.endswith(".json"))
)
VOCABULARY = "spiece.model"
# A checkpoint saved in pieces (save_pretrained's max_shard_size): an index mapping each tensor to its shard file
SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# Where a folder or repository holds several, the one transformers loads: safetensors (whole, then sharded) before
# pickles; a stale pytorch_model.bin beside safetensors shards must not win
WEIGHT_CHOICES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")

Where = Literal["folder", "shipped", "hub"]


def shipped_name(source: str) -> str | None:
    """The shipped size config that ``source`` names (``albert-base-v2`` or ``albert/albert-base-v2``), if any."""
    name = source.split("/")[-1]
    return name if name in SHIPPED_SIZES and source in (name, f"albert/{name}") else None


def looks_like_path(source: str) -> bool:
    """True when ``source`` cannot be a hub id (``name`` or ``org/name``), so it was meant as a path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(source)
    except HFValidationError:
        return True
    return False


def locate_model(source: str) -> Where:
    """Where the checkpoint ``source`` is: a local folder with config.json, a shipped size name, or a hub id.

    A local folder wins over a size name or hub id of the same spelling, as in transformers.

    Raises:
        ExportError: A folder without config.json, a file, or a path (not a hub id) where nothing is.
    """
    return _locate(
        source, "config.json",
        missing=f"source={source!r}: folder has no config.json; pass a Hugging Face ALBERT folder or hub id",
        a_file=f"source={source!r} is a file; pass the checkpoint folder that holds config.json",
        broken=f"source={source!r} is a symbolic link that leads nowhere (to a missing path, or round a loop of links); fix the "
               "link, or pass the checkpoint folder itself",
        nowhere=f"source={source!r}: no such folder; pass a folder with config.json, a hub id such as "
                f"albert/albert-base-v2, or a size name ({', '.join(SHIPPED_SIZES)}) with --random-weights")


def local_weights(source: str, where: Where) -> str | None:
    """The weights file (or shard index) in the checkpoint folder ``source``; None for a hub id (fetched later).

    Raises:
        ExportError: A folder without weights, or a bare size name (``albert-base-v2``: a config with no weights).
    """
    if where == "folder":
        for name in WEIGHT_CHOICES:
            if (Path(source) / name).is_file():
                return name
        raise ExportError(f"source={source!r} has no model.safetensors or pytorch_model.bin (nor a sharded checkpoint's "
                          f"{' or '.join(SHARD_INDEXES)}); add the weights, or pass --random-weights to export the architecture "
                          "with seeded random weights")
    if where == "shipped" and shipped_name(source) == source:
        raise ExportError(f"source={source!r} is a size name with no weights; pass --random-weights, or the hub id albert/{source}")
    return None


def locate_vocabulary(source: str) -> Where:
    """Where the vocabulary ``source`` (``--tokenizer``, else the model source) is: a folder with spiece.model, a size name
    (every ALBERT size uses the same spiece.model) or a hub id.

    Raises:
        ExportError: A folder without spiece.model, a file, or a path (not a hub id) where nothing is.
    """
    return _locate(
        source, VOCABULARY,
        missing=f"tokenizer source {source!r} has no spiece.model; pass --tokenizer FOLDER (a folder with spiece.model) "
                "or a hub id that has one",
        a_file=f"tokenizer source {source!r} is a file; pass --tokenizer FOLDER, the folder that holds spiece.model",
        broken=f"tokenizer source {source!r} is a symbolic link that leads nowhere (to a missing path, or round a loop of links); "
               "fix the link, or pass --tokenizer FOLDER, the folder itself",
        nowhere=f"tokenizer source {source!r}: no such folder; pass --tokenizer FOLDER (a folder with spiece.model) "
                "or a hub id such as albert/albert-base-v2")


def _broken_link(path: str) -> bool:
    """Whether ``path``, which does not exist, is a symbolic link (dangling, or in a loop) or lies under a loop of them."""
    try:
        os.stat(path)
    except OSError as error:
        return error.errno == errno.ELOOP or os.path.lexists(path)
    return False


def _locate(source: str, needed: str, *, missing: str, a_file: str, broken: str, nowhere: str) -> Where:
    """A folder holding ``needed``, a shipped size name or a hub id; ExportError with the message that fits otherwise."""
    local = Path(source)
    if local.is_dir():
        if not (local / needed).is_file():
            raise ExportError(missing)
        return "folder"
    if local.exists():
        raise ExportError(a_file)
    if _broken_link(source):  # else taken for a hub id (a link named like one): a network retry, then "could not be fetched"
        raise ExportError(broken)
    if shipped_name(source) is not None:
        return "shipped"
    if looks_like_path(source):
        raise ExportError(nowhere)
    return "hub"
