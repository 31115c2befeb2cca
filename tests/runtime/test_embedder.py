"""AlbertEmbedder on the tiny exported model: API, batching, bad input. Never imports torch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from albert_onnx import AlbertEmbedder


@pytest.fixture(scope="module")
def fp32(tiny_folder) -> AlbertEmbedder:
    return AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32", device="cpu", threads=2)


@pytest.fixture(scope="module")
def int8(tiny_folder) -> AlbertEmbedder:
    return AlbertEmbedder.from_pretrained(tiny_folder, threads=2)


def test_auto_picks_int8_on_cpu(int8):
    assert (int8.variant, int8.device) == ("int8", "cpu")
    assert int8.providers == ["CPUExecutionProvider"]
    assert int8.dim == 128 and int8.max_length == 512


def test_encode_shapes_and_normalization(fp32, sts_texts):
    vectors = fp32.encode(sts_texts[:10])
    assert vectors.shape == (10, 128) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    raw = fp32.encode(sts_texts[:10], normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)


def test_batched_equals_one_at_a_time(fp32, sts_texts):
    texts = sts_texts[:40] + ["", "a", sts_texts[100] * 5]
    batched = fp32.encode(texts, batch_size=8)
    single = np.stack([fp32.encode([text])[0] for text in texts])
    assert np.abs(batched - single).max() <= 1e-5


def test_input_order_is_restored(fp32, sts_texts):
    texts = sorted(sts_texts[:20], key=len, reverse=True)
    forward = fp32.encode(texts, batch_size=4)
    backward = fp32.encode(texts[::-1], batch_size=4)[::-1]
    np.testing.assert_allclose(forward, backward, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler", "max"])
def test_poolings_differ_and_are_finite(fp32, pooling):
    vectors = fp32.encode(["A man is playing a guitar.", "Stocks fell."], pooling=pooling)
    assert vectors.shape == (2, 128) and np.isfinite(vectors).all()


def test_mean_pooling_in_graph_matches_numpy_from_tokens(fp32):
    text = "The quick brown fox jumps over the lazy dog."
    graph = fp32.encode([text], normalize=False)[0]
    tokens = fp32.encode_tokens([text])[0].vectors
    # the graph's mean also covers [CLS] and [SEP]; recompute with them from layer -1
    full = fp32.encode([text], normalize=False, layer=-1)[0]
    np.testing.assert_allclose(graph, full, atol=1e-5)
    assert tokens.shape[0] == len(fp32.encode_tokens([text])[0].tokens)


def test_layer_choice(fp32):
    last = fp32.encode(["layer test"], layer=-1)
    second = fp32.encode(["layer test"], layer=-2)
    np.testing.assert_allclose(last, fp32.encode(["layer test"]), atol=1e-5)
    assert not np.allclose(last, second)
    with pytest.raises(ValueError, match="layer=13"):
        fp32.encode(["x"], layer=13)


def test_empty_inputs(fp32):
    assert fp32.encode([]).shape == (0, 128)
    empty = fp32.encode([""])
    assert empty.shape == (1, 128) and np.isfinite(empty).all()
    assert fp32.encode_tokens([""])[0].vectors.shape == (0, 128)


def test_single_string_is_one_text(fp32):
    np.testing.assert_allclose(fp32.encode("one text"), fp32.encode(["one text"]))


@pytest.mark.parametrize("bad, index", [(["ok", None], 1), ([b"bytes"], 0), (["a", "b", 3], 2)])
def test_non_str_items_name_the_index(fp32, bad, index):
    with pytest.raises(TypeError, match=rf"texts\[{index}\]"):
        fp32.encode(bad)


@pytest.mark.parametrize("texts", [None, b"raw bytes", 42])
def test_non_list_inputs(fp32, texts):
    with pytest.raises(TypeError, match="texts must be"):
        fp32.encode(texts)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"pooling": "sum"}, "pooling='sum'"), ({"batch_size": 0}, "batch_size=0"), ({"max_length": 513}, "max_length=513"),
     ({"long_text": "drop"}, "long_text='drop'"), ({"pooling": "pooler", "layer": -2}, "pooler")],
)
def test_bad_arguments(fp32, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fp32.encode(["x"], **kwargs)


def test_long_text_truncation_warns_with_count(fp32):
    long = "word " * 700
    with pytest.warns(UserWarning, match="2 of 3 texts exceeded max_length=512"):
        vectors = fp32.encode([long, "short", long + "more"])
    assert vectors.shape == (3, 128)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fp32.encode(["short"])


def test_long_text_window_covers_the_whole_text(fp32):
    head = "alpha beta gamma " * 60
    text = head + "tail words that only the window mode sees " * 20
    with pytest.warns(UserWarning):
        truncated = fp32.encode([text], max_length=64)
    windowed = fp32.encode([text], max_length=64, long_text="window")
    assert not np.allclose(truncated, windowed, atol=1e-3)
    tokens = fp32.encode_tokens([text], max_length=64, long_text="window")[0]
    assert len(tokens.tokens) == len(fp32._tokenizer.encode([text])[0].ids) == tokens.vectors.shape[0]


def test_encode_tokens_offsets_and_word_merge(fp32):
    text = "The key-board is [MASK] nice"
    pieces = fp32.encode_tokens(text)[0]
    assert pieces.tokens == ["▁the", "▁key", "-", "board", "▁is", "[MASK]", "▁nice"]
    words = fp32.encode_tokens(text, merge="word")[0]
    assert words.tokens == ["The", "key-board", "is", "[MASK]", "nice"]
    assert [text[s:e] for s, e in words.offsets] == words.tokens
    np.testing.assert_allclose(words.vectors[1], pieces.vectors[1:4].mean(axis=0), atol=1e-6)


def test_word_vectors(fp32, int8, tiny_folder):
    static = fp32.word_vectors(["guitar", "keyboard", "guitar"])
    assert static.shape == (3, 32)
    np.testing.assert_array_equal(static[0], static[2])
    assert fp32.word_vectors("guitar", projected=True).shape == (1, 128)
    # same rows from every variant's initializers (int8 to 8 bits)
    np.testing.assert_allclose(int8.word_vectors(["guitar", "keyboard"]), static[:2], atol=2e-3)
    with pytest.raises(ValueError, match=r"words\[1\]"):
        fp32.word_vectors(["ok", "   "])


def test_similarity(fp32):
    scores = fp32.similarity(["a dog runs", "stocks fell"], ["a dog runs", "markets dropped", "x"])
    assert scores.shape == (2, 3)
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_variants_agree(tiny_folder, fp32, sts_texts):
    texts = sts_texts[:16]
    reference = fp32.encode(texts)
    fused = AlbertEmbedder.from_pretrained(tiny_folder, variant="fused", device="cpu").encode(texts)
    quantized = AlbertEmbedder.from_pretrained(tiny_folder, variant="int8").encode(texts)
    assert np.abs(fused - reference).max() < 1e-4
    assert (quantized * reference).sum(axis=1).min() > 0.99


def test_io_binding_matches_plain_run(tiny_folder, fp32, sts_texts):
    bound = AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32", device="cpu", io_binding=True)
    np.testing.assert_allclose(bound.encode(sts_texts[:12]), fp32.encode(sts_texts[:12]), atol=1e-6)


def test_tokenize_then_encode_ids_equals_encode(fp32, sts_texts):
    texts = sts_texts[:20] + ["word " * 700]  # one text longer than 512 tokens: truncated like encode()
    with pytest.warns(UserWarning, match="1 of 21 texts exceeded"):
        feeds = fp32.tokenize(texts)
    assert feeds["input_ids"].shape == (21, 512) and feeds["input_ids"].dtype == np.int64
    assert feeds["attention_mask"][:, 0].all() and (feeds["input_ids"][:, 0] == 2).all()
    with pytest.warns(UserWarning):
        expected = fp32.encode(texts, normalize=False)
    assert np.abs(fp32.encode_ids(feeds) - expected).max() <= 1e-5
    assert np.allclose(np.linalg.norm(fp32.encode_ids(feeds, normalize=True), axis=1), 1, atol=1e-5)


def test_tokenize_and_encode_ids_reject_bad_input(fp32):
    with pytest.raises(ValueError, match="texts is empty"):
        fp32.tokenize([])
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        fp32.tokenize(["ok", 3])
    with pytest.raises(ValueError, match="pass input_ids and attention_mask"):
        fp32.encode_ids({"input_ids": np.ones((1, 4), np.int64)})
    with pytest.raises(ValueError, match="must share one"):
        fp32.encode_ids({"input_ids": np.ones((1, 4), np.int64), "attention_mask": np.ones((1, 5), np.int64)})
