"""Find ALBERT's SentencePiece vocabulary and write tokenizer.json for the Rust ``tokenizers`` library, reproducing the
slow SentencePiece AlbertTokenizer."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable

import sentencepiece
from tokenizers import Regex, Tokenizer, normalizers
from transformers import AlbertTokenizer
from transformers.convert_slow_tokenizer import AlbertConverter

from albert_onnx.model_folder import sha256_of

from .errors import ExportError
from .load import looks_like_path, hub_failure, one_line, read_json, shipped_name

log = logging.getLogger(__name__)

# Every published ALBERT (base/large/xlarge/xxlarge, v1 and v2) uses this one 30,000-piece SentencePiece model.
ALBERT_SPIECE_SHA256 = "fefb02b667a6c5c2fe27602d28e5fb3428f66ab89c7d6f388e7c8d44a02d0336"
VOCABULARY = "spiece.model"
JSON_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


def hub_cache() -> Path:
    """The Hugging Face hub cache folder, from the environment as it is now.

    Read at call time, not from ``huggingface_hub.constants`` (fixed when it was imported), with the same order:
    HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub.
    """
    env = os.environ
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if cache:
        return Path(cache).expanduser()
    home = env.get("HF_HOME") or str(Path(env.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface")
    return Path(home).expanduser() / "hub"


def find_cached_vocabulary(name: str) -> Path | None:
    """A hub-cache snapshot folder whose spiece.model is ALBERT's published vocabulary (checked by sha256).

    Looks at ``albert/<name>`` first, then any ``albert/albert-*`` repository, then the older ids without the
    ``albert/`` organisation (``models--albert-base-v2``): all sizes share the file, so any copy will do.
    """
    cache = hub_cache()
    if not cache.is_dir():
        return None
    repos = [cache / f"models--albert--{name}"] + sorted(cache.glob("models--albert--albert-*")) + sorted(cache.glob("models--albert-*"))
    seen = set()
    for repo in repos:
        if repo in seen:
            continue
        seen.add(repo)
        for candidate in sorted(repo.glob(f"snapshots/*/{VOCABULARY}")):
            if candidate.is_file() and sha256_of(candidate) == ALBERT_SPIECE_SHA256:
                return candidate.parent
    return None


def _check_folder(folder: Path) -> None:
    """Name the damaged file before transformers fails on it with a message that does not."""
    try:
        sentencepiece.SentencePieceProcessor(model_file=str(folder / VOCABULARY))
    except (RuntimeError, OSError) as error:
        raise ExportError(f"{folder / VOCABULARY}: not a SentencePiece model ({one_line(error, 120)}); the file is damaged: "
                          "restore it, or pass --tokenizer FOLDER with a good spiece.model") from None
    for name in JSON_FILES:
        if (folder / name).is_file():
            read_json(folder / name)


def _from_folder(folder: Path) -> AlbertTokenizer:
    _check_folder(folder)
    return AlbertTokenizer.from_pretrained(str(folder))


def load_slow_tokenizer(source: str, revision: str | None = None, vocab_size: int | None = None) -> AlbertTokenizer:
    """Load the reference SentencePiece tokenizer (spiece.model).

    Where from, in order: ``source`` as a folder (``--tokenizer`` when given, else the model's folder); for a
    published ALBERT (a shipped size name such as ``albert-large-v2`` or ``albert/albert-large-v2``) the Hugging
    Face hub cache, any ALBERT snapshot whose spiece.model has ALBERT's sha256; then the hub.

    Args:
        source: ``--tokenizer`` when given, else the model source.
        revision: Hub revision, for hub ids.
        vocab_size: The model's ``vocab_size``: the vocabulary must fit in its embedding table.

    Raises:
        ExportError: No spiece.model where it should be, a damaged file, a vocabulary larger than ``vocab_size``,
            or (offline) nowhere to find it; one line naming the file or the id and the fix.
    """
    local = Path(source)
    official = shipped_name(source)
    if local.is_dir():
        if not (local / VOCABULARY).is_file():
            raise ExportError(f"tokenizer source {source!r} has no spiece.model; pass --tokenizer FOLDER (a folder with "
                              "spiece.model) or a hub id that has one")
        slow, where = _from_folder(local), f"{local / VOCABULARY}"
    elif local.exists():
        raise ExportError(f"tokenizer source {source!r} is a file; pass --tokenizer FOLDER, the folder that holds spiece.model")
    elif official is None and looks_like_path(source):
        raise ExportError(f"tokenizer source {source!r}: no such folder; pass --tokenizer FOLDER (a folder with spiece.model) "
                          "or a hub id such as albert/albert-base-v2")
    elif official is not None and (cached := find_cached_vocabulary(official)) is not None:
        slow, where = _from_folder(cached), f"{cached / VOCABULARY} (Hugging Face cache, sha256 checked)"
    else:
        from transformers.utils import cached_file

        hub_id = f"albert/{official}" if official is not None else source
        try:
            # Fetch (or find) spiece.model first: offline, AlbertTokenizer.from_pretrained fails later with
            # "Either model_file or model_proto must be specified", which names neither the file nor the fix.
            fetched = Path(cached_file(hub_id, VOCABULARY, revision=revision))
        except OSError as error:
            if official is None:
                raise hub_failure(source, "its spiece.model", error) from error
            raise ExportError(
                f"no vocabulary for {source!r}: ALBERT's spiece.model (sha256 {ALBERT_SPIECE_SHA256[:12]}...) is not in the "
                f"Hugging Face cache ({hub_cache()}) and the hub could not be reached ({one_line(str(error).splitlines()[0], 120)}); "
                "pass --tokenizer FOLDER (a folder with spiece.model; every ALBERT size uses the same one) or run once online"
            ) from error
        if official is not None and (digest := sha256_of(fetched)) != ALBERT_SPIECE_SHA256:
            # find_cached_vocabulary skipped this copy: transformers' cache holds a file that is not ALBERT's vocabulary
            raise ExportError(f"{fetched}: spiece.model of {hub_id} has sha256 {digest[:12]}..., not ALBERT's "
                              f"{ALBERT_SPIECE_SHA256[:12]}...; the cached copy is damaged: delete it and run once online, "
                              "or pass --tokenizer FOLDER (a folder with spiece.model)")
        _check_folder(fetched.parent)
        slow, where = AlbertTokenizer.from_pretrained(hub_id, revision=revision), f"{hub_id} (hub)"
    log.info(f"vocabulary: {where}, {len(slow)} tokens")
    if vocab_size is not None and len(slow) > vocab_size:
        raise ExportError(f"the vocabulary {where} has {len(slow)} tokens but the model's vocab_size is {vocab_size}, so ids "
                          "would index past its embedding table; pass --tokenizer with the vocabulary that belongs to this model")
    return slow


def build_fast_tokenizer(slow: AlbertTokenizer) -> Tokenizer:
    """Convert with transformers' AlbertConverter, then fix the two places where it differs from the slow one.

    1. The converter registers SentencePiece's user-defined symbols (``( ) " - . – £ €``) as added tokens, so
       the Rust tokenizer cuts the text there and prepends "▁" to the next piece ("key-board" -> "▁board");
       SentencePiece does not. They stay in the Unigram vocabulary with score 0, where Viterbi picks them
       as SentencePiece does. (Measured: 2,428 of 14,516 STS-B/hard-case texts differed before this fix.)
    2. The slow tokenizer strips and collapses all whitespace (``remove_space``) before SentencePiece; the
       converted normalizer only collapses runs of spaces, leaving a trailing "▁" for "text. ".
    """
    tokenizer = AlbertConverter(slow).converted()
    # Items are AddedToken or, for a folder with only spiece.model (a hub-cache snapshot), plain str.
    special = {str(getattr(token, "content", token)) for token in slow.all_special_tokens_extended} | set(slow.all_special_tokens)
    spec = json.loads(tokenizer.to_str())
    spec["added_tokens"] = [tok for tok in spec["added_tokens"] if tok["special"] or tok["content"] in special]
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Strip(), normalizers.Replace(Regex(r"\s+"), " "), tokenizer.normalizer]
    )
    return tokenizer


def mismatches(slow: AlbertTokenizer, fast: Tokenizer, texts: Iterable[str]) -> list[str]:
    """Texts whose ids (with [CLS]/[SEP]) differ between the slow reference and the Rust tokenizer."""
    return [text for text in texts if slow(text)["input_ids"] != fast.encode(text).ids]


def tokenizer_settings(slow: AlbertTokenizer, max_position_embeddings: int) -> dict[str, object]:
    """The settings the runtime needs, for the manifest."""
    max_length = min(int(slow.model_max_length), max_position_embeddings) if slow.model_max_length < 10**9 else max_position_embeddings
    return {
        "max_length": max_length,
        "do_lower_case": bool(slow.do_lower_case),
        "keep_accents": bool(slow.keep_accents),
        "remove_space": bool(slow.remove_space),
        "special_ids": {
            "pad": slow.pad_token_id,
            "unk": slow.unk_token_id,
            "cls": slow.cls_token_id,
            "sep": slow.sep_token_id,
            "mask": slow.mask_token_id,
        },
        "special_tokens": {
            "pad": slow.pad_token,
            "unk": slow.unk_token,
            "cls": slow.cls_token,
            "sep": slow.sep_token,
            "mask": str(slow.mask_token),
        },
    }
