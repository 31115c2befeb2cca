"""A text's vector is the same alone, in any batch, in any order and at any padding, for every CPU variant.

The embedder sends ONNX Runtime only sequences of one exact length per call, and pools in numpy, so the
vectors are bit-identical (measured max |delta| 0.0 on fp32, fused and int8; before grouping, padded batches
gave 3e-8 to 6e-8). The documented contract is <= 1e-6; these tests hold the code to what it achieves.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from albert_onnx import AlbertEmbedder
from albert_onnx import embedder as embedder_module

BATCH_SIZES = (3, 16, 64, 200)


def cpu_variants(folder) -> list[str]:
    manifest = json.loads((folder / "manifest.json").read_text())
    return [name for name, entry in manifest["variants"].items() if "cpu" in entry["devices"]]


@pytest.fixture(scope="module", params=["fp32", "fused", "int8"])
def embedder(request, tiny_folder) -> AlbertEmbedder:
    assert request.param in cpu_variants(tiny_folder)
    return AlbertEmbedder.from_pretrained(tiny_folder, variant=request.param, device="cpu", threads=2)


@pytest.fixture(scope="module")
def texts(sts_texts) -> list[str]:
    return sts_texts[:200]


def shuffled(count: int, seed: int) -> list[int]:
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return order


def test_every_cpu_variant_is_covered(tiny_folder):
    assert sorted(cpu_variants(tiny_folder)) == ["fp32", "fused", "int8"]


def test_encode_alone_equals_any_batch(embedder, texts):
    alone = np.stack([embedder.encode(text, normalize=False)[0] for text in texts])
    for seed, batch_size in enumerate(BATCH_SIZES):
        order = shuffled(len(texts), seed)
        mixed = embedder.encode([texts[i] for i in order], batch_size=batch_size, normalize=False)
        np.testing.assert_array_equal(mixed, alone[order], err_msg=f"{embedder.variant}, batch_size={batch_size}")


@pytest.mark.filterwarnings("ignore::albert_onnx.PoolingWarning")  # int8's cls and pooler: test_embedder.py checks it
@pytest.mark.parametrize("pooling", ["cls", "max", "pooler"])
def test_other_poolings_alone_equal_any_batch(embedder, texts, pooling):
    subset = texts[:40]
    alone = np.stack([embedder.encode(text, pooling=pooling)[0] for text in subset])
    order = shuffled(len(subset), 7)
    np.testing.assert_array_equal(embedder.encode([subset[i] for i in order], pooling=pooling, batch_size=8), alone[order])


def test_window_mode_alone_equals_batched(embedder, texts):
    long_texts = [" ".join(texts[i : i + 12]) for i in range(0, 60, 6)]  # several 64-token windows each
    mixed = [text for pair in zip(long_texts, texts[:10]) for text in pair]  # windowed and single-window texts interleaved
    alone = np.stack([embedder.encode(text, max_length=64, long_text="window")[0] for text in mixed])
    np.testing.assert_array_equal(embedder.encode(mixed, max_length=64, long_text="window", batch_size=5), alone)


def left_padded(feeds: dict[str, np.ndarray], width: int) -> dict[str, np.ndarray]:
    """The same rows moved to the right end of ``width`` columns (padding first), pad id 0."""
    rows = len(feeds["input_ids"])
    out = {name: np.zeros((rows, width), np.int64) for name in feeds}
    lengths = feeds["attention_mask"].sum(axis=1)
    for row, length in enumerate(lengths):
        for name in feeds:
            out[name][row, width - length :] = feeds[name][row, :length]
    return out


def right_padded(feeds: dict[str, np.ndarray], width: int) -> dict[str, np.ndarray]:
    """The same rows padded with more 0 columns on the right."""
    columns = feeds["input_ids"].shape[1]
    return {name: np.pad(array, ((0, 0), (0, width - columns))) for name, array in feeds.items()}


def test_encode_ids_ignores_padding_and_batch(embedder, texts):
    alone = np.stack([embedder.encode_ids(embedder.tokenize(text)) for text in texts])[:, 0]
    np.testing.assert_array_equal(alone, embedder.encode(texts, normalize=False))
    for seed, batch_size in enumerate(BATCH_SIZES):
        order = shuffled(len(texts), seed)
        feeds = embedder.tokenize([texts[i] for i in order])
        width = feeds["input_ids"].shape[1] + 9  # wider than the longest row: padding on every row
        for name, padded in (("right", right_padded(feeds, width)), ("left", left_padded(feeds, width))):
            vectors = embedder.encode_ids(padded, batch_size=batch_size)
            np.testing.assert_array_equal(vectors, alone[order], err_msg=f"{embedder.variant}, {name}, batch_size={batch_size}")


def test_encode_tokens_alone_equal_any_batch(embedder, texts):
    subset = texts[:60]
    alone = [embedder.encode_tokens(text)[0].vectors for text in subset]
    order = shuffled(len(subset), 3)
    mixed = embedder.encode_tokens([subset[i] for i in order], batch_size=7)
    for position, index in enumerate(order):
        np.testing.assert_array_equal(mixed[position].vectors, alone[index])


def test_word_vectors_alone_equal_any_batch(embedder, texts):
    words = sorted({word for text in texts[:50] for word in text.split()})
    order = shuffled(len(words), 5)
    for projected in (False, True):
        alone = np.stack([embedder.word_vectors(word, projected=projected)[0] for word in words])
        mixed = embedder.word_vectors([words[i] for i in order], projected=projected, batch_size=13)
        np.testing.assert_array_equal(mixed, alone[order])


def test_no_call_holds_padding(embedder, texts, monkeypatch):
    calls = []
    run = embedder._runner.run

    def spy(feeds, outputs):
        calls.append({name: array.copy() for name, array in feeds.items()})
        return run(feeds, outputs)

    monkeypatch.setattr(embedder._runner, "run", spy)
    embedder.encode(texts, batch_size=16)
    embedder.encode_tokens(texts[:30], batch_size=16)
    embedder.word_vectors(["guitar", "keyboard", "a"], batch_size=16)
    embedder.encode_ids(left_padded(embedder.tokenize(texts[:30]), 80), batch_size=16)
    assert calls
    for feeds in calls:
        assert feeds["attention_mask"].all(), "a call held padding"
        assert len(feeds["input_ids"]) <= 16
    assert sum(len(feeds["input_ids"]) for feeds in calls) == len(texts) + 30 + 3 + 30  # each sequence once


# Found by an attack (2026-12-07): similarity() was encode(a) @ encode(b).T, whose BLAS sums in an order set by the
# shapes: a pair's score moved by up to 5e-7 with the other texts, and similarity(t, t) reached 1.0000004 (arccos NaN).
def test_similarity_of_a_pair_ignores_the_other_texts(embedder, texts):
    subset = texts[:30]
    full = embedder.similarity(subset, subset)
    assert full.dtype == np.float32 and full.shape == (30, 30)
    assert np.abs(full).max() <= 1.0 and np.diag(full).min() >= 0.999
    np.testing.assert_array_equal(full, full.T)
    for start in range(0, 30, 7):
        np.testing.assert_array_equal(embedder.similarity(subset[start : start + 3], subset[5:11]), full[start : start + 3, 5:11])
    alone = np.array([[embedder.similarity(a, b)[0, 0] for b in subset[:5]] for a in subset[:5]])
    np.testing.assert_array_equal(alone, full[:5, :5])
    np.testing.assert_allclose(full, embedder.encode(subset) @ embedder.encode(subset).T, atol=2e-6)


def test_similarity_is_the_same_in_any_batch_where_the_product_is_not(tiny_folder, monkeypatch):
    """A BLAS product's rounding moves with the shapes (in float64 by ~1e-16; in float32 it moved scores by 5e-7).
    Stood in for here by a product off by up to 8e-13, differently for each shape and position: scores that close to
    a float32 rounding boundary are summed again alone, so every score is still the same in any batch."""
    embedder = AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32", device="cpu", threads=1)
    vectors = np.random.default_rng(0).standard_normal((200, embedder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    monkeypatch.setattr(embedder, "encode", lambda texts, **options: vectors[[int(text) for text in texts]])

    def shaky(x, y):
        where = np.arange(x.shape[0] * y.shape[0]).reshape(x.shape[0], y.shape[0])
        return x @ y.T + 8e-13 * np.cos(where * 0.7 + x.shape[0] + 3 * y.shape[0])

    monkeypatch.setattr(embedder_module, "_dot", shaky)
    monkeypatch.setattr(embedder_module, "SIMILARITY_BLOCK", 1000)  # 5 rows of 200 scores per block: 40 blocks
    texts = [str(i) for i in range(200)]
    full = embedder.similarity(texts, texts)
    np.testing.assert_array_equal(embedder.similarity(texts[::-1], texts[::-1]), full[::-1, ::-1])
    np.testing.assert_array_equal(embedder.similarity(texts[1:], texts[:-1]), full[1:, :-1])
    np.testing.assert_array_equal(embedder.similarity(texts[7:9], texts[100:190]), full[7:9, 100:190])
    exact = np.clip(vectors.astype(np.float64) @ vectors.astype(np.float64).T, -1, 1).astype(np.float32)
    np.testing.assert_allclose(full, exact, rtol=0, atol=1e-7)
