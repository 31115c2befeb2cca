"""Pooling of token vectors into one vector per text, and merging of word pieces."""

from __future__ import annotations

import numpy as np

POOLINGS = ("mean", "cls", "pooler", "max")


def masked_mean(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over real tokens. hidden (B, S, H), mask (B, S) -> (B, H)."""
    weights = mask[..., None].astype(hidden.dtype)
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)


def pool_rows(hidden: np.ndarray, pooling: str) -> np.ndarray:
    """One vector per row of unpadded token vectors (B, S, H) -> (B, H): ``mean``, ``cls`` (first token) or ``max``.

    Pooled in numpy rather than by the graph's ``sentence_embedding``: ONNX Runtime's ReduceSum takes another
    kernel for a batch of one (measured: 3-7e-8 apart), numpy's reduction over axis 1 does not depend on B.
    """
    if pooling == "cls":
        return hidden[:, 0]
    return hidden.max(axis=1) if pooling == "max" else hidden.mean(axis=1)


def combine_windows(vectors: np.ndarray, token_counts: np.ndarray, pooling: str) -> np.ndarray:
    """Pool the per-window vectors of one long text into one vector.

    mean: token-weighted mean (the mean over every token of every window); max: elementwise max;
    cls and pooler: plain mean of the windows' vectors.
    """
    if pooling == "max":
        return vectors.max(axis=0)
    weights = token_counts.astype(np.float64) if pooling == "mean" else np.ones(len(vectors))
    return (vectors * (weights / weights.sum())[:, None]).sum(axis=0).astype(np.float32)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Unit-length rows; an all-zero row stays zero."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def merge_pieces(vectors: np.ndarray, word_ids: list[int]) -> tuple[np.ndarray, list[list[int]]]:
    """Average consecutive pieces that share a word id into one vector per word.

    Returns:
        (n_words, H) vectors and, per word, the piece indices merged into it.
    """
    groups: list[list[int]] = []
    for index, word in enumerate(word_ids):
        if groups and word == word_ids[groups[-1][-1]]:
            groups[-1].append(index)
        else:
            groups.append([index])
    merged = np.stack([vectors[group].mean(axis=0) for group in groups]) if groups else vectors[:0]
    return merged.astype(np.float32), groups
