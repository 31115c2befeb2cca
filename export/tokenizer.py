"""Write tokenizer.json for the Rust ``tokenizers`` library, reproducing the slow SentencePiece AlbertTokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from tokenizers import Regex, Tokenizer, normalizers
from transformers import AlbertTokenizer
from transformers.convert_slow_tokenizer import AlbertConverter

from .errors import ExportError


def load_slow_tokenizer(source: str, revision: str | None = None) -> AlbertTokenizer:
    """Load the reference SentencePiece tokenizer (spiece.model) from a folder or the hub.

    Raises:
        ExportError: The source has no spiece.model.
    """
    local = Path(source)
    if local.is_dir() and not (local / "spiece.model").is_file():
        raise ExportError(
            f"tokenizer source {source!r} has no spiece.model; pass --tokenizer with a folder or hub id that has one"
        )
    return AlbertTokenizer.from_pretrained(source, revision=None if local.is_dir() else revision)


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
    special = {token.content for token in slow.all_special_tokens_extended} | set(slow.all_special_tokens)
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
