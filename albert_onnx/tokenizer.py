"""The Rust ``tokenizers`` tokenizer from the model folder, with the [CLS]/[SEP] framing done here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer


class AlbertTokenizer:
    """Tokenize without special tokens or truncation; the embedder frames and windows the pieces itself,
    so one shared instance needs no per-call state (safe across threads)."""

    def __init__(self, path: Path, special_ids: dict[str, int]) -> None:
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.cls_id = int(special_ids["cls"])
        self.sep_id = int(special_ids["sep"])
        self.pad_id = int(special_ids["pad"])

    def encode(self, texts: list[str]) -> list[Encoding]:
        """Encode texts (no special tokens), in parallel in Rust."""
        return self.tokenizer.encode_batch(texts, add_special_tokens=False)

    def frame(self, pieces: np.ndarray) -> np.ndarray:
        """``[CLS] pieces [SEP]`` as int64 ids."""
        return np.concatenate(([self.cls_id], pieces, [self.sep_id])).astype(np.int64)

    def pad(self, sequences: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Pad framed id sequences to the longest one; the ONNX feeds for one batch."""
        length = max(len(seq) for seq in sequences)
        ids = np.full((len(sequences), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(sequences), length), dtype=np.int64)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
