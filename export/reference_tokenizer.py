"""ALBERT's SentencePiece tokenizer, computed as transformers 4.57's slow ``AlbertTokenizer`` computes it.

The export's reference for ids: tokenizer.json is checked against it, and the PyTorch reference runs on its ids.
transformers 5 has no slow AlbertTokenizer (its AlbertTokenizer is a Rust one, which splits "key-board" as
"▁key - ▁board", unlike SentencePiece), so the export carries its own: ``sentencepiece`` does the pieces, and
this module the rest of what the slow tokenizer did around them (special tokens, lower-casing, whitespace,
accents, ALBERT's digit-comma rule). tests/export/test_reference_tokenizer.py proves it equal to 4.57's slow
tokenizer id for id, on every STS-B sentence, hard cases and the folder layouts this module reads.

What it reads is what the slow tokenizer reads of a folder: spiece.model, tokenizer_config.json, and (when the
config has no ``added_tokens_decoder``, transformers' legacy path) special_tokens_map.json, added_tokens.json and
tokenizer.json's added tokens. Settings that would change ids in ways the runtime's tokenizer.json cannot follow
(added tokens beyond the special tokens, sampling, left truncation) are refused in one line.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sentencepiece

from .errors import ExportError
from .load import one_line, read_json
from .locate import VOCABULARY

SPIECE_UNDERLINE = "▁"
# AlbertTokenizer's defaults, in transformers' SPECIAL_TOKENS_ATTRIBUTES order, which is the order of all_special_tokens
# (it orders the lower-casing pattern's alternatives).
DEFAULT_SPECIALS = {"bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "<unk>", "sep_token": "[SEP]",
                    "pad_token": "<pad>", "cls_token": "[CLS]", "mask_token": "[MASK]"}
SPECIAL_ROLES = ("pad", "unk", "cls", "sep", "mask")  # the ids the runtime needs (the manifest's special_ids)
FLAGS = ("lstrip", "rstrip", "single_word")


@dataclass(frozen=True)
class SpecialToken:
    """A special token and the whitespace flags the slow tokenizer applies around it (transformers' AddedToken)."""

    content: str
    lstrip: bool = False
    rstrip: bool = False
    single_word: bool = False


def _flag(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ExportError(f"{where} is {value!r}; it must be true or false")
    return value


def _token(value: object, where: str, lstrip: bool = False) -> SpecialToken:
    """A special token from a config value: a string (with ``lstrip`` as given), or a serialized AddedToken (a dict
    with "content" and its flags)."""
    if isinstance(value, dict) and "content" in value:
        content, flags = value["content"], [_flag(value.get(flag, False), f"{where}.{flag}") for flag in FLAGS]
    else:
        content, flags = value, [lstrip, False, False]
    if not isinstance(content, str) or not content:
        raise ExportError(f"{where} is {str(value)[:80]!r}; it must be a non-empty string or an object with a \"content\" string")
    return SpecialToken(content, *flags)


def _index(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        raise ExportError(f"{where}: the id {str(value)[:40]!r} is not a non-negative integer; restore the file or remove it")
    return int(value)


class ReferenceTokenizer:
    """ALBERT's slow SentencePiece tokenizer for one vocabulary folder (see the module docstring).

    Attributes:
        vocab_file: The spiece.model path (AlbertConverter reads it).
        name_or_path: Where the vocabulary came from, for the manifest: the folder, or the hub id.
        do_lower_case, remove_space, keep_accents: ALBERT's preprocessing switches, from tokenizer_config.json.
        model_max_length: The config's length limit, or None when it sets none.
        specials: Special tokens by role (``"pad"``, ``"unk"``, ``"cls"``, ``"sep"``, ``"mask"``, ``"bos"``, ``"eos"``).
    """

    def __init__(self, folder: Path, name_or_path: str | None = None) -> None:
        """Read the vocabulary folder.

        Raises:
            ExportError: A damaged file, a setting of the wrong type, or one this reference does not reproduce.
        """
        self.vocab_file = str(folder / VOCABULARY)
        self.name_or_path = str(folder) if name_or_path is None else name_or_path
        try:
            self.sp = sentencepiece.SentencePieceProcessor(model_file=self.vocab_file)
        except (RuntimeError, OSError) as error:
            raise ExportError(f"{self.vocab_file}: not a SentencePiece model ({one_line(error, 120)}); the file is "
                              "damaged: restore it, or pass --tokenizer FOLDER with a good spiece.model") from None
        path = folder / "tokenizer_config.json"
        config = read_json(path) if path.is_file() else {}
        self._check_supported(config, path)
        self.do_lower_case = _flag(config.get("do_lower_case", True), f"{path}: do_lower_case")
        self.remove_space = _flag(config.get("remove_space", True), f"{path}: remove_space")
        self.keep_accents = _flag(config.get("keep_accents", False), f"{path}: keep_accents")
        self.model_max_length = self._max_length(config.get("model_max_length"), path)
        values = {key: config.get(key, DEFAULT_SPECIALS[key]) for key in DEFAULT_SPECIALS}
        # the added tokens as the slow tokenizer holds them: (token, its id, where it was read)
        added: list[tuple[SpecialToken, int, str]] = []
        if "added_tokens_decoder" in config:
            decoder, where = config["added_tokens_decoder"], f"{path}: added_tokens_decoder"
            if not isinstance(decoder, dict):
                raise ExportError(f"{where} is {type(decoder).__name__}, not an object")
            added += [(_token(value, f"{where}[{index!r}]"), _index(index, where), where) for index, value in decoder.items()]
        else:
            values.update(self._legacy_specials(folder / "special_tokens_map.json"))
            added += self._legacy_added(folder)
        for key, value in values.items():
            if value is None:
                raise ExportError(f"{path}: {key} is null; ALBERT needs [CLS], [SEP], <pad>, <unk> and [MASK]: remove the key")
        # The slow tokenizer takes a special token's flags from its added-token entry when there is one, else from its
        # own definition, where AlbertTokenizer makes a plain-string [MASK] eat the spaces on its left.
        entries = {token.content: token for token, _, _ in added}
        self.specials = {}
        for key, value in values.items():
            token = _token(value, f"{path}: {key}", lstrip=key == "mask_token")
            self.specials[key[: -len("_token")]] = entries.get(token.content, token)
        self.all_special = list(dict.fromkeys(token.content for token in self.specials.values()))
        extra = [(token, where) for token, _, where in added if token.content not in self.all_special]
        if extra:
            raise ExportError(f"{extra[0][1]} adds tokens beyond ALBERT's special tokens ({', '.join(repr(t.content) for t, _ in extra[:5])}); "
                              "the export reproduces ALBERT's SentencePiece vocabulary and its special tokens only: export the "
                              "checkpoint without them, or with --tokenizer FOLDER holding the original vocabulary")
        self.ids = {}
        for content in self.all_special:
            index = self.sp.piece_to_id(content)
            if index == self.sp.unk_id() and content != self.sp.id_to_piece(index):
                raise ExportError(f"{path}: the special token {content!r} is not in {self.vocab_file}; use ALBERT's own special "
                                  "tokens ([CLS], [SEP], <pad>, <unk>, [MASK]) or the vocabulary they belong to")
            self.ids[content] = index
        for token, index, where in added:
            if index != self.ids[token.content]:
                raise ExportError(f"{where} gives {token.content!r} the id {index}, but {self.vocab_file} has it as {self.ids[token.content]}; "
                                  "the files belong to different vocabularies: restore the checkpoint's own")
        self.flags = {token.content: token for token in self.specials.values()}
        # The slow tokenizer's lower-casing pass keeps special tokens as they are and lowers every other character
        # on its own (str.lower of one character: "Σ" is always "σ", never the final "ς"; ALBERT's vocabulary has
        # neither, so with it only the special tokens' case shows).
        self._lower_pattern = re.compile("(" + "|".join(map(re.escape, self.all_special)) + ")|(.+?)")
        # transformers' Trie: the longest special token first, leftmost match wins
        self._split_pattern = re.compile("(" + "|".join(map(re.escape, sorted(self.all_special, key=len, reverse=True))) + ")")

    @staticmethod
    def _check_supported(config: dict, path: Path) -> None:
        refused = {
            "additional_special_tokens": lambda v: bool(v),
            "sp_model_kwargs": lambda v: bool(v),
            "split_special_tokens": lambda v: v is not False,
            "truncation_side": lambda v: v != "right",
        }
        for key, bad in refused.items():
            if key in config and bad(config[key]):
                raise ExportError(f"{path}: {key}={str(config[key])[:80]!r} is not supported (the runtime's tokenizer.json "
                                  "reproduces ALBERT's tokenizer with its defaults); remove the key")

    @staticmethod
    def _max_length(value: object, path: Path) -> int | None:
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # transformers writes its "no limit" 1e30 as a float
        if isinstance(value, bool) or not isinstance(value, int) or value < 3:
            raise ExportError(f"{path}: model_max_length is {str(value)[:40]!r}; it must be an integer of at least 3 (512 for ALBERT)")
        return value if value < 10**9 else None

    @staticmethod
    def _legacy_specials(path: Path) -> dict[str, object]:
        if not path.is_file():
            return {}
        data = read_json(path)
        ReferenceTokenizer._check_supported({k: v for k, v in data.items() if k == "additional_special_tokens"}, path)
        return {key: data[key] for key in DEFAULT_SPECIALS if key in data}

    @staticmethod
    def _legacy_added(folder: Path) -> list[tuple[SpecialToken, int, str]]:
        added = []
        path = folder / "added_tokens.json"
        if path.is_file():
            added += [(SpecialToken(str(token)), _index(index, str(path)), str(path)) for token, index in read_json(path).items()]
        path = folder / "tokenizer.json"
        if path.is_file():
            tokens = read_json(path).get("added_tokens", [])
            if not isinstance(tokens, list) or not all(isinstance(token, dict) for token in tokens):
                raise ExportError(f"{path}: added_tokens is not a list of objects; restore the file or remove it")
            added += [(_token(token, f"{path}: added_tokens[{i}]"), _index(token.get("id"), f"{path}: added_tokens[{i}]"), str(path))
                      for i, token in enumerate(tokens)]
        return added

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def id_of(self, role: str) -> int:
        """The id of a special token by role (``"cls"``, ``"sep"``, ``"pad"``, ``"unk"``, ``"mask"``)."""
        return self.ids[self.specials[role].content]

    def convert_tokens_to_ids(self, token: str) -> int:
        """A piece's id (what AlbertConverter asks of the tokenizer it converts)."""
        return self.ids[token] if token in self.ids else self.sp.piece_to_id(token)

    def preprocess(self, text: str) -> str:
        """AlbertTokenizer.preprocess_text: whitespace, quotes, accents, case."""
        if self.remove_space:
            text = " ".join(text.strip().split())
        text = text.replace("``", '"').replace("''", '"')
        if not self.keep_accents:
            text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
        return text.lower() if self.do_lower_case else text

    def _pieces(self, text: str) -> list[str]:
        """AlbertTokenizer._tokenize: SentencePiece, then "9," splits as "9" "," (BERT's digit-comma rule)."""
        pieces = []
        for piece in self.sp.encode(self.preprocess(text), out_type=str):
            if len(piece) > 1 and piece[-1] == "," and piece[-2].isdigit():
                parts = self.sp.encode(piece[:-1].replace(SPIECE_UNDERLINE, ""), out_type=str)
                if piece[0] != SPIECE_UNDERLINE and parts[0][0] == SPIECE_UNDERLINE:
                    parts = parts[1:] if len(parts[0]) == 1 else [parts[0][1:], *parts[1:]]
                pieces += [*parts, piece[-1]]
            else:
                pieces.append(piece)
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """The pieces of ``text``, special tokens kept whole (PreTrainedTokenizer.tokenize in transformers 4.57)."""
        if self.do_lower_case:
            text = self._lower_pattern.sub(lambda m: m.group(1) or m.group(2).lower(), text)
        # transformers' Trie.split: the text cut at each special token, no empty parts (two specials in a row
        # are neighbours, which matters to single_word)
        parts = [part for part in self._split_pattern.split(text) if part]
        for i, part in enumerate(parts):
            if part in self.flags:
                token = self.flags[part]
                left = parts[i - 1] if i > 0 else None
                right = parts[i + 1] if i < len(parts) - 1 else None
                if token.rstrip and right:
                    parts[i + 1] = right.lstrip()
                if token.lstrip and left:
                    parts[i - 1] = left.rstrip()
                if token.single_word and left and left[-1] != " ":
                    parts[i - 1] += part
                    parts[i] = ""
                elif token.single_word and right and right[0] != " ":
                    parts[i + 1] = part + parts[i + 1]
                    parts[i] = ""
        tokens = []
        for part in parts:
            if part:
                tokens += [part] if part in self.flags else self._pieces(part)
        return tokens

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """``[CLS] pieces [SEP]`` ids, the pieces cut to ``max_length - 2`` when a limit is given."""
        ids = [self.convert_tokens_to_ids(token) for token in self.tokenize(text)]
        if max_length is not None:
            ids = ids[: max(max_length - 2, 0)]
        return [self.id_of("cls"), *ids, self.id_of("sep")]

    def encode_batch(self, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
        """Right-padded int64 ``input_ids``, ``attention_mask`` and ``token_type_ids`` (zeros), as the model takes them."""
        rows = [self.encode(text, max_length) for text in texts]
        width = max(len(row) for row in rows)
        ids = np.full((len(rows), width), self.id_of("pad"), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)], mask[i, : len(row)] = row, 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
