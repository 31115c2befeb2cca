"""Find ALBERT's SentencePiece vocabulary and write tokenizer.json for the Rust ``tokenizers`` library, reproducing the
SentencePiece AlbertTokenizer (``reference_tokenizer.ReferenceTokenizer``, transformers 4.57's slow one)."""

from __future__ import annotations

import base64
import json
import logging
import os
import unicodedata
from pathlib import Path
from typing import Iterable

from tokenizers import AddedToken, Regex, Tokenizer, normalizers
from transformers.convert_slow_tokenizer import AlbertConverter, import_protobuf

from albert_onnx.model_folder import sha256_of
from albert_onnx.tokenizer import WHITESPACE

from .errors import ExportError
from .load import hub_failure, one_line
from .locate import locate_vocabulary, shipped_name
from .reference_tokenizer import SPECIAL_ROLES, VOCABULARY, ReferenceTokenizer

log = logging.getLogger(__name__)

# Every published ALBERT (base/large/xlarge/xxlarge, v1 and v2) uses this one 30,000-piece SentencePiece model.
ALBERT_SPIECE_SHA256 = "fefb02b667a6c5c2fe27602d28e5fb3428f66ab89c7d6f388e7c8d44a02d0336"
# What the reference reads beside spiece.model, fetched with it from the hub when there
HUB_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.json")


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


def load_reference_tokenizer(source: str, revision: str | None = None, vocab_size: int | None = None,
                             argument: str = "source") -> ReferenceTokenizer:
    """Load the reference SentencePiece tokenizer (spiece.model and the tokenizer settings beside it).

    Where from, in order: ``source`` as a folder (``--tokenizer`` when given, else the model's folder); for a
    published ALBERT (a shipped size name such as ``albert-large-v2`` or ``albert/albert-large-v2``) the Hugging
    Face hub cache, any ALBERT snapshot whose spiece.model has ALBERT's sha256; then the hub.

    Args:
        source: ``--tokenizer`` when given, else the model source.
        revision: Hub revision, for hub ids.
        vocab_size: The model's ``vocab_size``: the vocabulary must fit in its embedding table.
        argument: The option that named ``source``, for messages (``tokenizer`` for --tokenizer).

    Raises:
        ExportError: No spiece.model where it should be, a damaged file, a setting the reference does not reproduce
            (see ReferenceTokenizer), a vocabulary larger than ``vocab_size``, or (offline) nowhere to find it; one
            line naming the file or the id and the fix.
    """
    official = shipped_name(source)
    if locate_vocabulary(source) == "folder":
        found, where = ReferenceTokenizer(Path(source)), f"{Path(source) / VOCABULARY}"
    elif official is not None and (cached := find_cached_vocabulary(official)) is not None:
        found, where = ReferenceTokenizer(cached), f"{cached / VOCABULARY} (Hugging Face cache, sha256 checked)"
    else:
        from transformers.utils import cached_file

        hub_id = f"albert/{official}" if official is not None else source
        try:
            fetched = Path(cached_file(hub_id, VOCABULARY, revision=revision))
            for name in HUB_FILES:  # into the same snapshot folder, where the reference reads them
                cached_file(hub_id, name, revision=revision, _raise_exceptions_for_missing_entries=False)
        except OSError as error:
            if official is None:
                raise hub_failure(source, "its spiece.model", error, argument) from error
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
        found, where = ReferenceTokenizer(fetched.parent, name_or_path=hub_id), f"{hub_id} (hub)"
    _check_unigram(found)
    log.info(f"vocabulary: {where}, {len(found)} tokens")
    if vocab_size is not None and len(found) > vocab_size:
        raise ExportError(f"the vocabulary {where} has {len(found)} tokens but the model's vocab_size is {vocab_size}, so ids "
                          "would index past its embedding table; pass --tokenizer with the vocabulary that belongs to this model")
    return found


def _check_unigram(reference: ReferenceTokenizer) -> None:
    """Refuse a SentencePiece model trained as BPE, words or characters: ALBERT's is a Unigram model, the only kind the
    runtime's tokenizer.json is built for (AlbertConverter raised a bare Exception, with a traceback, for words and
    characters, and a BPE model passed or failed the id comparison by chance of the validation texts).

    Raises:
        ExportError: Another model type, naming the file.
    """
    proto = import_protobuf().ModelProto()
    proto.ParseFromString(reference.sp.serialized_model_proto())
    kind = proto.trainer_spec.model_type
    if kind != proto.trainer_spec.UNIGRAM:
        raise ExportError(f"{reference.vocab_file}: a SentencePiece model of type {proto.trainer_spec.ModelType.Name(kind)}, but "
                          "ALBERT's vocabulary is a UNIGRAM model, the only type the export reproduces in tokenizer.json; pass "
                          "--tokenizer FOLDER with the UNIGRAM spiece.model this checkpoint was trained with")


def build_fast_tokenizer(reference: ReferenceTokenizer) -> Tokenizer:
    """Convert with transformers' AlbertConverter, then fix the places where it differs from the reference.

    1. The converter registers SentencePiece's user-defined symbols (``( ) " - . – £ €``) as added tokens, so
       the Rust tokenizer cuts the text there and prepends "▁" to the next piece ("key-board" -> "▁board");
       SentencePiece does not. They stay in the Unigram vocabulary with score 0, where Viterbi picks them
       as SentencePiece does. (Measured: 2,428 of 14,516 STS-B/hard-case texts differed before this fix.)
    2. The slow tokenizer strips and collapses all whitespace (``remove_space``: what ``str.split`` splits at, so
       U+001C-U+001F too, which the Rust regex's \\s lacks) before SentencePiece; the converted normalizer only
       collapses runs of spaces, leaving a trailing "▁" for "text. ", and SentencePiece's character map deletes
       U+001C-U+001F ("m\\x1can" was "▁man", the reference's "▁m" "▁an").
    3. SentencePiece strips the spaces its character map leaves at either end (U+200B and U+FEFF become spaces;
       control characters are deleted): a final Strip. Without it "text\\u200b" ended in a "▁" piece.
    4. The characters the character map deletes are deleted by a Replace just before it: ``tokenizers``' Precompiled
       step lost the offsets of a text that starts with one ("\\x07Hello world" put "hello" at 0-5, not 1-6, which
       merged words in ``merge="word"``). (Measured, the U+001C-U+001F part of 2 with 3 and 4: 6,989 of 20,000
       seeded random texts with control, zero-width and separator characters differed from the reference; none after.)
    5. The slow tokenizer keeps every special token whole where the text holds it; the converter adds only the
       control symbols and [MASK], so a literal "<unk>" (as in WikiText) became "▁" "<unk>" with its own "▁"
       piece. (Measured: 4,140 of 20,000 seeded random texts with special tokens differed, each one holding "<unk>".)
       Left as is: the slow tokenizer lower-cases the text before it looks for special tokens, so "<UNK>" is its
       unknown token too; here it is ordinary pieces.
    6. The reference drops the characters ``unicodedata.combining`` marks after NFKD; the converter's StripAccents
       drops others too (Indic vowel signs, U+034F, the emoji variation selector U+FE0F: "Text\\ufe0f." and the
       keycap "1\\ufe0f\\u20e3" lost a piece), and its Unicode tables are not Python's. A Replace of exactly this
       Python's combining characters takes its place. (Measured, each code point c in "ab{c}cd ef": 1,393 differed
       from the reference, 15 after: U+A7F2-U+A7F4, U+107A5, U+1F16C and U+1FBF0-U+1FBF9, whose NFKD forms
       Python 3.11's tables have and tokenizers' lack.)
    7. The characters the character map turns into a space (U+200B-U+200F, U+2581, U+FEFF, U+FFFD) are turned into
       one by a Replace just before it too: ``tokenizers``' Precompiled step looks up a whole grapheme cluster of
       under 6 bytes and, when its first character is in the map, replaces the whole cluster, so the mark after
       it was lost ("x\ufffd\u034fy" gave "▁x" "▁" "y", the reference "▁x" "▁" "<unk>" "y"). SentencePiece maps
       one character at a time. (Measured, each of these 8 before each mark, format or modifier character
       that is not Python-combining, alone and between letters: 84 of 27,632 texts differed, none after.)
    """
    tokenizer = AlbertConverter(reference).converted()
    special = set(reference.all_special)
    spec = json.loads(tokenizer.to_str())
    spec["added_tokens"] = [tok for tok in spec["added_tokens"] if tok["special"] or tok["content"] in special]
    steps = []
    for step in spec["normalizer"]["normalizers"]:
        if step["type"] == "StripAccents":  # 6.
            steps.append({"type": "Replace", "pattern": {"Regex": _character_class(_combining())}, "content": ""})
            continue
        if step["type"] == "Precompiled":  # 4. and 7.
            for content, points in _mapped_by(step).items():
                steps.append({"type": "Replace", "pattern": {"Regex": _character_class(points)}, "content": content})
        steps.append(step)
    spec["normalizer"]["normalizers"] = steps
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    kept = {tok["content"] for tok in spec["added_tokens"]}
    tokenizer.add_special_tokens([AddedToken(content, normalized=False, special=True) for content in reference.all_special if content not in kept])
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Strip(), normalizers.Replace(Regex(WHITESPACE), " "), tokenizer.normalizer, normalizers.Strip()]
    )
    return tokenizer


def _code_points() -> Iterable[int]:
    """Every code point but the surrogates (no text holds them)."""
    return (point for point in range(0x110000) if not 0xD800 <= point < 0xE000)


def _mapped_by(precompiled: dict[str, str]) -> dict[str, list[int]]:
    """The code points the Precompiled step (SentencePiece's character map) deletes (under "") or turns into a space
    (under " "): each run between two letters (2 s for all of Unicode)."""
    charsmap = normalizers.Precompiled(base64.b64decode(precompiled["precompiled_charsmap"]))
    mapped: dict[str, list[int]] = {"": [], " ": []}
    for point in _code_points():
        content = charsmap.normalize_str(f"a{chr(point)}b")[1:-1]
        if content in mapped:
            mapped[content].append(point)
    return {content: points for content, points in mapped.items() if points}


def _combining() -> list[int]:
    """The code points the reference drops after NFKD: ``unicodedata.combining`` (this Python's Unicode tables)."""
    return [point for point in _code_points() if unicodedata.combining(chr(point))]


def _character_class(points: list[int]) -> str:
    """A regex character class (Oniguruma's ``\\x{...}`` syntax) of ``points``, in ranges."""
    ranges: list[list[int]] = []
    for point in points:
        if ranges and ranges[-1][1] == point - 1:
            ranges[-1][1] = point
        else:
            ranges.append([point, point])
    return "[" + "".join(f"\\x{{{a:x}}}" + (f"-\\x{{{b:x}}}" if b > a else "") for a, b in ranges) + "]"


def mismatches(reference: ReferenceTokenizer, fast: Tokenizer, texts: Iterable[str]) -> list[str]:
    """Texts whose ids (with [CLS]/[SEP]) differ between the reference and the Rust tokenizer."""
    return [text for text in texts if reference.encode(text) != fast.encode(text).ids]


def tokenizer_settings(reference: ReferenceTokenizer, max_position_embeddings: int) -> dict[str, object]:
    """The settings the runtime needs, for the manifest."""
    limit = reference.model_max_length
    return {
        "max_length": max_position_embeddings if limit is None else min(limit, max_position_embeddings),
        "do_lower_case": reference.do_lower_case,
        "keep_accents": reference.keep_accents,
        "remove_space": reference.remove_space,
        "special_ids": {role: reference.id_of(role) for role in SPECIAL_ROLES},
        "special_tokens": {role: reference.specials[role].content for role in SPECIAL_ROLES},
    }
