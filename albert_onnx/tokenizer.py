"""The Rust ``tokenizers`` tokenizer from the model folder, checked against the manifest; framing, padding and
un-padding of id rows."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Callable

import numpy as np
from tokenizers import Encoding, Tokenizer

from .model_folder import ModelFolderError, TokenizerSettings

logger = logging.getLogger("albert_onnx")
MAX_TOKENIZER_BYTES = 64 << 20  # ALBERT's is 2.3 MB; refuse to parse anything huge
# The normalizer's first steps (Strip, then WHITESPACE -> " ") turn whitespace into a word boundary before anything
# else sees the text: what str.split() splits at, Unicode White_Space and U+001C-U+001F. A head of a text may end there.
WHITESPACE = r"[\s\x1c-\x1f]+"
_CUT = re.compile("[\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
_CHARS_PER_PIECE = 8  # a first head of 8 characters per wanted piece: STS-B English averages ~4.5
# A head in a whitespace-free run longer than the head's length (CJK, a URL, base64) is cut inside it, at twice that.
# Unigram picks the best segmentation of the whole run, so pieces near an inner cut can differ from the whole
# run's; the head is kept only once the last wanted piece ends _SETTLED characters before the cut, where the two
# segmentations have long agreed (ALBERT's longest piece has 16 characters).
_SETTLED = 256
_MAX_PIECE = 16  # characters in ALBERT's longest piece; a periodic run's segmentation repeats within it


def _lacks_spaced_characters_step(steps: list[dict]) -> bool:
    """Whether the normalizer lacks the Replace (to a space) the export puts right before the Precompiled step, of
    the characters that step turns into spaces: without it, tokenizers' Precompiled replaces a whole grapheme
    cluster ("\ufffd\u034f") by its first character's mapping, losing the mark (export/tokenizer.py, 7)."""
    at = next((index for index, step in enumerate(steps) if step.get("type") == "Precompiled"), None)
    if at is None:
        return False  # no character map: nothing to lose there
    return at == 0 or not (steps[at - 1].get("type") == "Replace" and steps[at - 1].get("content") == " ")


def _read(path: Path, data: bytes | None = None) -> tuple[Tokenizer, bool]:
    """The tokenizer, and whether it tokenizes each whitespace-separated word on its own (see ``encode``).

    A tokenizer.json written before 2026-12-06 (``\\s+`` where WHITESPACE is now) is read with a warning and
    tokenized whole: it does not separate words at U+001C-U+001F, so a head cut there would not be exact.
    """
    if data is None:
        with path.open("rb") as handle:
            data = handle.read(MAX_TOKENIZER_BYTES + 1)
    if len(data) > MAX_TOKENIZER_BYTES:
        raise ModelFolderError(f"{path} is over {MAX_TOKENIZER_BYTES} bytes; not a tokenizer.json written by albert-onnx: re-export the folder")
    try:
        text = data.decode("utf-8")
        tokenizer = Tokenizer.from_str(text)
        spec = json.loads(text)
        steps = (spec.get("normalizer") or {}).get("normalizers") or []
        spaces = {"type": "Replace", "pattern": {"Regex": WHITESPACE}, "content": " "} in steps
        if {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "} in steps or {"type": "StripAccents"} in steps:
            logger.warning("%s was written before 2026-12-06: texts with control, zero-width or U+001C-U+001F characters, "
                           "or marks such as the emoji variation selector U+FE0F, get other ids (and vectors) than "
                           "PyTorch's, and their character offsets can be wrong; re-export the folder (other texts are "
                           "unaffected)", path)
        elif _lacks_spaced_characters_step(steps):
            logger.warning("%s was written before 2026-12-07: a zero-width character, U+2581, U+FEFF or U+FFFD followed by a "
                           "mark such as U+034F gets other ids (and vectors) than PyTorch's; re-export the folder (other "
                           "texts are unaffected)", path)
        pre = spec.get("pre_tokenizer") or {}
        return tokenizer, spaces and pre.get("type") == "Metaspace" and pre.get("split") is True
    except Exception as error:
        raise ModelFolderError(f"{path}: not a tokenizer.json this tokenizers can read ({type(error).__name__}: "
                               f"{str(error)[:200]}); the file is damaged: re-export the folder") from error
    except BaseException as error:
        # tokenizers panics on some malformed fields (e.g. precompiled_charsmap); pyo3's PanicException
        # derives from BaseException, so `except Exception` misses it. Anything else (Ctrl-C) goes on up.
        if type(error).__name__ != "PanicException":
            raise
        raise ModelFolderError(f"{path}: tokenizers failed to parse it ({str(error)[:200]}); the file is damaged: "
                               "re-export the folder") from error


class AlbertTokenizer:
    """Tokenize without special tokens or truncation; the embedder frames and windows the pieces itself,
    so one shared instance needs no per-call state (safe across threads)."""

    def __init__(self, path: Path, settings: TokenizerSettings, vocab_size: int, data: bytes | None = None) -> None:
        """Load ``path`` (or its bytes ``data``, already read) and check that it is the manifest's tokenizer.

        Raises:
            ModelFolderError: The file cannot be parsed, it has more ids than ``vocab_size``, or its special-token
                ids differ from manifest.json (a tokenizer.json from another model), even when sizes and hashes are
                not verified (another model's tokenizer with fewer ids and the same special ids is then not caught).
        """
        self.tokenizer, self._word_by_word = _read(path, data)
        # the ids it can produce, added tokens included (get_vocab_size(True) undercounts: measured 30000 for 30001)
        size = max(self.tokenizer.get_vocab(with_added_tokens=True).values(), default=-1) + 1
        # fewer is allowed, as at export: a checkpoint may pad its embedding table past the vocabulary (30008 rows)
        if size > vocab_size:
            raise ModelFolderError(f"{path} has ids up to {size - 1} but manifest.json says vocab_size={vocab_size}; "
                                   "the tokenizer belongs to another model: re-export the folder")
        for name, token_id in settings.special_ids.items():
            token = settings.special_tokens.get(name)
            found = None if token is None else self.tokenizer.token_to_id(token)
            if found != token_id:
                raise ModelFolderError(f"{path}: special token {name} ({token!r}) has id {found}, manifest.json says "
                                       f"{token_id}; the tokenizer belongs to another model: re-export the folder")
        whole = {token.content for token in self.tokenizer.get_added_tokens_decoder().values() if token.special}
        loose = [token for token in settings.special_tokens.values() if token not in whole]
        if loose:
            # Folders exported before 2026-12-03 lack "<unk>" there: a literal "<unk>" (as in WikiText) became "▁" "<unk>".
            logger.warning("%s does not keep %s whole in a text, as ALBERT's tokenizer does, so a text that holds it gets other "
                           "ids (and vectors) than PyTorch's; re-export the folder (texts without it are unaffected)",
                           path, " or ".join(map(repr, loose)))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.cls_id = settings.special_ids["cls"]
        self.sep_id = settings.special_ids["sep"]
        self.pad_id = settings.special_ids["pad"]

    def encode(self, texts: list[str], limit: int | None = None) -> list[Encoding]:
        """Encode texts (no special tokens), in parallel in Rust.

        Args:
            texts: The texts.
            limit: Only the first ``limit`` pieces are wanted. Each text is then tokenized through a head,
                grown until it gives more than ``limit`` pieces or is the whole text. A head ends before
                whitespace where it can, and is exact there: the normalizer turns whitespace into one space
                and the Metaspace pre-tokenizer splits there, so each word is tokenized on its own and the
                head's pieces are the whole text's first pieces. A head cut inside
                a long whitespace-free run is kept only if its last wanted piece ends ``_SETTLED`` characters
                before the cut (raw and normalized) and its wanted pieces stay the same when the cut moves by
                characters the normalizer keeps (see ``_settled``); else
                the text is tokenized whole (a periodic run: 10 MB of "a" took 7 s), and so is a text whose kept
                pieces span it all (a run of characters the vocabulary lacks is one <unk> piece however long it
                is: 10 MB of CJK gives 2 pieces). The settling test is a heuristic, checked on every fuzzed and
                hand-made case (tests/runtime/test_embedder.py), not a proof. Every text is tokenized whole if
                tokenizer.json lacks that normalizer step or splitting pre-tokenizer.

        Returns:
            One Encoding per text: of the text, or of a head with more than ``limit`` pieces.
        """
        if limit is None or not self._word_by_word:
            return self.tokenizer.encode_batch(texts, add_special_tokens=False)
        results: list[Encoding | None] = [None] * len(texts)
        pending, chars = list(range(len(texts))), max(limit, 16) * _CHARS_PER_PIECE
        unsettled: set[int] = set()  # texts whose run did not settle: tokenized whole
        while pending:
            heads = [(texts[index], True) if index in unsettled else _head(texts[index], chars) for index in pending]
            encodings = self.tokenizer.encode_batch([head for head, _ in heads], add_special_tokens=False)
            inside = [(index, head, encoding) for index, (head, at_space), encoding in zip(pending, heads, encodings)
                      if not at_space and len(encoding.ids) > limit and encoding.offsets[limit - 1][1] <= len(head) - _SETTLED]
            settled = self._settled(texts, inside, limit)
            unsettled.update(index for index, _, _ in inside if index not in settled)
            for index, (head, at_space), encoding in zip(pending, heads, encodings):
                whole = len(head) == len(texts[index])
                if whole or (at_space and len(encoding.ids) > limit) or index in settled:
                    results[index] = encoding
            pending = [index for index in pending if results[index] is None]
            chars *= 4
        return results

    def _settled(self, texts: list[str], inside: list[tuple[int, str, Encoding]], limit: int) -> set[int]:
        """Of heads cut inside a whitespace-free run, the texts whose first ``limit`` pieces stay the same when the cut
        moves by 1 to ``_MAX_PIECE`` - 1 characters. Unigram's segmentation of a periodic run ("aaaa...") depends on the
        run's length modulo the piece lengths (measured: "a" * n starts "▁aaa" or "▁a" by n % 3), so a head is kept
        only where that length no longer matters.

        Both are measured in normalized characters too: where the normalizer drops the characters around the cut
        ("a" + "\\x01" * 19 repeated, or combining accents), moving it changed nothing and proved nothing (a head's first
        piece differed from the whole text's), so such a text is tokenized whole."""
        normalize = self.tokenizer.normalizer.normalize_str
        ends = [encoding.offsets[limit - 1][1] for _, _, encoding in inside]  # of the last wanted pieces
        inside = [(index, head, encoding) for (index, head, encoding), end in zip(inside, ends)
                  if _grows(normalize, texts[index][end : len(head) + _MAX_PIECE - 1], len(head) - end)]
        if not inside:
            return set()
        moved = [texts[index][: len(head) + shift] for index, head, _ in inside for shift in range(1, _MAX_PIECE)]
        others = self.tokenizer.encode_batch(moved, add_special_tokens=False)
        settled = set()
        for number, (index, _, encoding) in enumerate(inside):
            wanted = encoding.ids[:limit]
            if all(other.ids[:limit] == wanted for other in others[number * (_MAX_PIECE - 1) : (number + 1) * (_MAX_PIECE - 1)]):
                settled.add(index)
        return settled

    def frame(self, pieces: np.ndarray) -> np.ndarray:
        """``[CLS] pieces [SEP]`` as int64 ids."""
        return np.concatenate(([self.cls_id], pieces, [self.sep_id])).astype(np.int64)

    def pad(self, sequences: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Right-pad framed id sequences to the longest one, as the graph's feeds."""
        length = max(len(seq) for seq in sequences)
        ids = np.full((len(sequences), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(sequences), length), dtype=np.int64)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def word_numbers(text: str, offsets: list[tuple[int, int]]) -> list[int]:
    """For each piece (its character span in ``text``), the number of the whitespace-separated word it belongs to.

    Words are separated by whitespace as in ``text.split()`` (Unicode White_Space and U+001C–U+001F): a piece
    starts a new word when whitespace lies between it and the previous piece or opens its own span (a "▁" piece
    spans the space it stands for). So a special token inside a word ("[MASK]x") stays in it, and so do characters
    after which the tokenizer itself starts a new "▁" piece without whitespace (U+200B, U+FEFF).
    """
    numbers, word, previous = [], -1, None
    for start, end in offsets:
        if previous is None or _CUT.search(text, previous, max(start, previous)) or (end > start and _CUT.match(text, start)):
            word += 1
        numbers.append(word)
        previous = end
    return numbers


def word_spans(text: str, offsets: list[tuple[int, int]], groups: list[list[int]], complete: bool) -> list[tuple[int, int]]:
    """The character span of each word (``groups`` of piece indices), without the whitespace around it.

    A word starts after the whitespace before its first piece and ends at the whitespace after its last piece, so
    characters the normalizer dropped (a combining accent, a control character) stay in it; the last word ends at
    its last piece unless ``complete`` (no piece of the text was cut off).
    """
    spans: list[tuple[int, int]] = []
    for number, group in enumerate(groups):
        start, end = offsets[group[0]][0], offsets[group[-1]][1]
        while start < end and _CUT.match(text, start):  # a "▁" piece's span starts with the space it stands for
            start += 1
        after = spans[-1][1] if spans else 0
        while start > after and not _CUT.match(text, start - 1):  # the first word's pieces start after what the
            start -= 1  # normalizer dropped before them ("``" of "``Hello", a control character, a combining accent)
        if number + 1 < len(groups) or complete:
            stop = offsets[groups[number + 1][0]][0] if number + 1 < len(groups) else len(text)
            gap = _CUT.search(text, end, max(stop, end))
            end = gap.start() if gap else max(stop, end)
        spans.append((start, end))
    return spans


def _grows(normalize: Callable[[str], str], tail: str, cut: int) -> bool:
    """Whether ``tail`` (from the end of the last wanted piece to ``_MAX_PIECE`` - 1 characters past the cut at
    ``cut``) normalizes to ``_SETTLED`` characters or more before the cut, and to more with each character after it
    (measured on the run's last ``_MAX_PIECE`` characters before the cut onwards: one long normalization, not 16)."""
    if len(normalize(tail[:cut])) < _SETTLED:
        return False
    window = tail[cut - _MAX_PIECE :]  # inside the run: the raw margin before the cut is _SETTLED characters or more
    lengths = [len(normalize(window[: _MAX_PIECE + shift])) for shift in range(_MAX_PIECE)]
    return all(a < b for a, b in zip(lengths, lengths[1:]))


def _head(text: str, chars: int) -> tuple[str, bool]:
    """``text`` up to the first whitespace at or after ``chars`` characters, or, where the next whitespace is
    further than ``2 * chars`` (or there is none), up to ``2 * chars`` characters; and whether it ends at whitespace
    (or is the whole text)."""
    if len(text) <= chars:
        return text, True
    cut = _CUT.search(text, chars, 2 * chars + 1)
    if cut is not None:
        return text[: cut.start()], True
    return (text, True) if len(text) <= 2 * chars else (text[: 2 * chars], False)


def unpad(ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each row's real tokens and token types, from right-padded (1s then 0s) or left-padded (0s then 1s) rows.

    Args:
        ids, mask, types: int64 arrays of one (rows, columns) shape; mask values 0/1.

    Returns:
        Per row, its ids and its token types without padding.

    Raises:
        ValueError: A row with no real token, or a mask with holes (naming the row).
    """
    lengths = mask.sum(axis=1)
    empty = np.flatnonzero(lengths == 0)
    if len(empty):
        raise ValueError(f"feeds['attention_mask'] row {empty[0]} is all 0s; every row needs at least one real token: drop the row")
    starts = np.where(mask[:, 0] == 1, 0, mask.shape[1] - lengths)
    columns = np.arange(mask.shape[1])
    padded = (columns >= starts[:, None]) & (columns < (starts + lengths)[:, None])
    holes = np.flatnonzero((padded != (mask == 1)).any(axis=1))
    if len(holes):
        row = int(holes[0])
        shown = "".join(map(str, mask[row, :40])) + ("..." if mask.shape[1] > 40 else "")
        raise ValueError(f"feeds['attention_mask'] row {row} is {shown}: each row must be 1s then 0s (right padding) or "
                         "0s then 1s (left padding), with no holes; pass the rows as a tokenizer pads them")
    spans = list(zip(starts.tolist(), (starts + lengths).tolist()))
    return [ids[row, a:b] for row, (a, b) in enumerate(spans)], [types[row, a:b] for row, (a, b) in enumerate(spans)]
