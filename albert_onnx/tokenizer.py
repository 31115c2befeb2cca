"""The Rust ``tokenizers`` tokenizer from the model folder, checked against the manifest; framing, padding and
un-padding of id rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from .model_folder import ModelFolderError, TokenizerSettings

MAX_TOKENIZER_BYTES = 64 << 20  # ALBERT's is 2.3 MB; refuse to parse anything huge
# Where a head of a text may end: ASCII whitespace, which the normalizer turns into a word boundary (\s+ -> " ")
_CUT = re.compile(r"[ \t\n\r\f\v]")
_CHARS_PER_PIECE = 8  # a first head of 8 characters per wanted piece: STS-B English averages ~4.5


def _read(path: Path) -> tuple[Tokenizer, bool]:
    """The tokenizer, and whether it tokenizes each whitespace-separated word on its own (see ``encode``)."""
    with path.open("rb") as handle:
        data = handle.read(MAX_TOKENIZER_BYTES + 1)
    if len(data) > MAX_TOKENIZER_BYTES:
        raise ModelFolderError(f"{path} is over {MAX_TOKENIZER_BYTES} bytes; not a tokenizer.json written by albert-onnx: re-export the folder")
    try:
        text = data.decode("utf-8")
        tokenizer = Tokenizer.from_str(text)
        spec = json.loads(text)
        steps = (spec.get("normalizer") or {}).get("normalizers") or []
        spaces = {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "} in steps
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

    def __init__(self, path: Path, settings: TokenizerSettings, vocab_size: int) -> None:
        """Load ``path`` and check that it is the manifest's tokenizer.

        Raises:
            ModelFolderError: The file cannot be parsed, or its vocabulary size or special-token ids differ
                from manifest.json (a tokenizer.json from another model), even when sizes and hashes are not
                verified.
        """
        self.tokenizer, self._word_by_word = _read(path)
        # the ids it can produce, added tokens included (get_vocab_size(True) undercounts: measured 30000 for 30001)
        size = max(self.tokenizer.get_vocab(with_added_tokens=True).values(), default=-1) + 1
        if size != vocab_size:
            raise ModelFolderError(f"{path} has ids up to {size - 1} but manifest.json says vocab_size={vocab_size}; "
                                   "the tokenizer belongs to another model: re-export the folder")
        for name, token_id in settings.special_ids.items():
            token = settings.special_tokens.get(name)
            found = None if token is None else self.tokenizer.token_to_id(token)
            if found != token_id:
                raise ModelFolderError(f"{path}: special token {name} ({token!r}) has id {found}, manifest.json says "
                                       f"{token_id}; the tokenizer belongs to another model: re-export the folder")
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.cls_id = settings.special_ids["cls"]
        self.sep_id = settings.special_ids["sep"]
        self.pad_id = settings.special_ids["pad"]

    def encode(self, texts: list[str], limit: int | None = None) -> list[Encoding]:
        """Encode texts (no special tokens), in parallel in Rust.

        Args:
            texts: The texts.
            limit: Only the first ``limit`` pieces are wanted. Each text is then tokenized through a head that
                ends before whitespace, grown until it gives more than ``limit`` pieces or is the whole text,
                so the work is bounded by what is kept. Exact: the normalizer turns whitespace into one space
                and the Metaspace pre-tokenizer splits there, so each word is tokenized on its own and a head's
                pieces are the whole text's first pieces. A text with no whitespace is tokenized whole, and so is
                every text if tokenizer.json lacks that normalizer step or splitting pre-tokenizer.

        Returns:
            One Encoding per text: of the text, or of a head with more than ``limit`` pieces.
        """
        if limit is None or not self._word_by_word:
            return self.tokenizer.encode_batch(texts, add_special_tokens=False)
        results: list[Encoding | None] = [None] * len(texts)
        pending, chars = list(range(len(texts))), max(limit, 16) * _CHARS_PER_PIECE
        while pending:
            heads = [_head(texts[index], chars) for index in pending]
            encodings = self.tokenizer.encode_batch(heads, add_special_tokens=False)
            for index, head, encoding in zip(pending, heads, encodings):
                if len(encoding.ids) > limit or len(head) == len(texts[index]):
                    results[index] = encoding
            pending = [index for index in pending if results[index] is None]
            chars *= 4
        return results

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


def _head(text: str, chars: int) -> str:
    """``text`` up to the first cut point at or after ``chars`` characters (all of it if there is none)."""
    if len(text) <= chars:
        return text
    cut = _CUT.search(text, chars)
    return text if cut is None else text[: cut.start()]


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
