"""AlbertEmbedder on the tiny exported model: API, pooling definitions, long texts, variants. Never imports torch.

Invariance across batches lives in test_batch_invariance.py; refusal of bad input in test_hostile.py.
"""

from __future__ import annotations

import base64
import inspect
import json
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from albert_onnx import AlbertEmbedder, PoolingWarning
from tests.conftest import short_cls


@pytest.fixture(scope="module")
def fp32(tiny_folder) -> AlbertEmbedder:
    return AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32", device="cpu", threads=2)


@pytest.fixture(scope="module")
def int8(tiny_folder) -> AlbertEmbedder:
    return AlbertEmbedder.from_pretrained(tiny_folder, threads=2)


def graph_outputs(embedder: AlbertEmbedder, text: str) -> tuple[np.ndarray, np.ndarray]:
    """last_hidden_state (S, H) with [CLS]/[SEP] and pooler_output (H,) of one text, straight from the graph."""
    hidden, pooler = embedder._runner.run(embedder.tokenize([text]), ["last_hidden_state", "pooler_output"])
    return hidden[0], pooler[0]


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
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), vectors, atol=1e-6)


def test_input_order_is_restored(fp32, sts_texts):
    texts = sorted(sts_texts[:20], key=len, reverse=True)
    forward = fp32.encode(texts, batch_size=4)
    backward = fp32.encode(texts[::-1], batch_size=4)[::-1]
    np.testing.assert_array_equal(forward, backward)
    assert len({tuple(row) for row in forward.round(5)}) == len(set(texts))  # rows are not all the same vector


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler", "max"])
def test_each_pooling_is_its_definition(fp32, pooling):
    text = "A man is playing a guitar."
    hidden, pooler = graph_outputs(fp32, text)
    expected = {"mean": hidden.mean(axis=0), "cls": hidden[0], "pooler": pooler, "max": hidden.max(axis=0)}
    np.testing.assert_allclose(fp32.encode([text], pooling=pooling, normalize=False)[0], expected[pooling], atol=1e-6)


def test_poolings_differ(fp32):
    vectors = {p: fp32.encode(["A man is playing a guitar."], pooling=p)[0] for p in ("mean", "cls", "pooler", "max")}
    names = sorted(vectors)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(vectors[a] - vectors[b]).max() > 1e-3, (a, b)


def test_mean_pooling_matches_the_graphs_masked_mean(fp32, sts_texts):
    # the embedder pools in numpy (batch-invariant); the graph's sentence_embedding is the same mean
    feeds = fp32.tokenize(sts_texts[:8])
    (graph,) = fp32._runner.run(feeds, ["sentence_embedding"])
    np.testing.assert_allclose(fp32.encode(sts_texts[:8], normalize=False), graph, atol=1e-6)


def test_layer_choice(fp32):
    last = fp32.encode(["layer test"], layer=-1)
    second = fp32.encode(["layer test"], layer=-2)
    np.testing.assert_array_equal(last, fp32.encode(["layer test"]))
    assert np.abs(last - second).max() > 1e-3
    with pytest.raises(ValueError, match="layer=13"):
        fp32.encode(["x"], layer=13)


def test_empty_inputs(fp32):
    assert fp32.encode([]).shape == (0, 128)
    empty = fp32.encode([""])
    assert empty.shape == (1, 128) and np.isfinite(empty).all()
    assert fp32.encode_tokens([""])[0].vectors.shape == (0, 128)
    assert fp32.word_vectors([]).shape == (0, 32)


def test_single_string_is_one_text(fp32):
    np.testing.assert_array_equal(fp32.encode("one text"), fp32.encode(["one text"]))
    assert fp32.encode("one text").shape == (1, 128)


def test_tuples_and_other_sequences_are_accepted(fp32):
    np.testing.assert_array_equal(fp32.encode(("a b", "c d")), fp32.encode(["a b", "c d"]))


def test_numpy_integers_are_counts_as_ints_are(tiny_folder, fp32, sts_texts):
    # such as lengths.max(): refused as "pass an int" before (found by an attack, 2026-12-07)
    texts = sts_texts[:300]  # more than 255 rows: uint8 arithmetic on batch_size would wrap
    np.testing.assert_array_equal(fp32.encode(texts, batch_size=np.uint8(200), max_length=np.int8(16), layer=np.int8(-2)),
                                  fp32.encode(texts, batch_size=200, max_length=16, layer=-2))
    tokens = fp32.encode_tokens(texts, batch_size=np.int8(100), max_length=np.uint8(8))
    assert [t.tokens for t in tokens] == [t.tokens for t in fp32.encode_tokens(texts, max_length=8)]
    np.testing.assert_array_equal(fp32.encode_ids(fp32.tokenize(texts, max_length=np.uint8(16)), batch_size=np.uint8(200)),
                                  fp32.encode(texts, max_length=16, normalize=False))
    words = ["guitar", "piano"] * 150
    np.testing.assert_array_equal(fp32.word_vectors(words, batch_size=np.uint8(200)), fp32.word_vectors(words))
    assert AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32", threads=np.int64(1))._runner.session.get_session_options() \
        .intra_op_num_threads == 1
    with pytest.raises(TypeError, match=r"^batch_size=np.True_: pass an int >= 1$"):  # numpy's bool is no count
        fp32.encode(texts, batch_size=np.True_)
    # ... but it is a flag, as a bool is (refused as "pass True or False" before; found by a README check, 2026-12-08)
    np.testing.assert_array_equal(fp32.encode(texts[:4], normalize=np.False_), fp32.encode(texts[:4], normalize=False))
    np.testing.assert_array_equal(fp32.word_vectors(["guitar"], projected=np.True_), fp32.word_vectors(["guitar"], projected=True))
    loaded = AlbertEmbedder(tiny_folder, variant="fp32", verify=np.True_, spin_wait=np.False_, io_binding=np.False_)
    assert loaded._runner.io_binding is False


def test_the_constructor_loads_a_folder_as_from_pretrained_does(tiny_folder, fp32):
    # AlbertEmbedder("folder") is the first thing users type (fastembed, sentence-transformers): it said "missing 5
    # required positional arguments"
    built = AlbertEmbedder(tiny_folder, variant="fp32", device="cpu", threads=1)
    assert (built.variant, built.device, built.device_reason, built.graph.name) == ("fp32", "cpu", None, "model_fp32.onnx")
    texts = ["the constructor", "and from_pretrained give one vector"]
    np.testing.assert_array_equal(built.encode(texts), fp32.encode(texts))
    auto = AlbertEmbedder(str(tiny_folder))
    assert (auto.variant, auto.device) == ("int8", "cpu")
    assert auto.device_reason is not None  # device='auto' without a GPU: the reason it runs on the CPU
    with pytest.raises(ValueError, match=r"^variant='fp33'"):
        AlbertEmbedder(tiny_folder, variant="fp33")


def test_from_pretrained_takes_the_constructors_arguments():
    # spelled out in both for help() and type checkers: a default or a keyword changed in one only would show here
    constructor = list(inspect.signature(AlbertEmbedder.__init__).parameters.values())[1:]  # without self
    assert list(inspect.signature(AlbertEmbedder.from_pretrained).parameters.values()) == constructor


def test_a_pooling_a_variant_falls_short_on_is_warned_once(copy_of, fp32):
    int8 = AlbertEmbedder(short_cls(copy_of), variant="int8", threads=1)
    with pytest.warns(PoolingWarning) as caught:
        int8.encode(["one text"], pooling="cls")
    assert [(str(w.message), Path(w.filename).name) for w in caught] == [(
        f"variant 'int8' of {copy_of} is gated on mean pooling; its 'cls' vectors were further from PyTorch fp32 at export "
        f"(centred cosine 0.8000, below the 0.99 that mean pooling had to reach; mean gave "
        f"{int8.folder.variants['int8'].validation.metrics['centred_cosine_mean']:.4f}): load variant 'fused' or 'fp32' for cls "
        "vectors, or check int8 against them on your own texts", "test_embedder.py")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        int8.encode(["another text", "and a third"], pooling="cls", batch_size=1)  # once per embedder: said already
        int8.encode(["one text"])  # mean: what the gate measured
        int8.encode(["one text"], pooling="max")  # measured within the gate
        fp32.encode(["one text"], pooling="cls")  # fp32's cls vectors matched PyTorch at export
    fresh = AlbertEmbedder(copy_of, variant="int8", threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as an error, on every call: it was marked said before it was raised, so only once
        for _ in range(2):
            with pytest.raises(PoolingWarning, match="its 'cls' vectors"):
                fresh.encode(["one text"], pooling="cls")


def test_a_pooling_shortfall_is_not_reported_where_it_measures_rounding_alone_or_names_what_the_folder_has(copy_of):
    # a reference within SPREAD_MIN of its mean: the centred cosine measures rounding (the tiny model's own cls: 0.6%)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AlbertEmbedder(short_cls(copy_of, spread=0.01), variant="int8").encode(["one text"], pooling="cls")
    only_int8 = AlbertEmbedder(short_cls(copy_of, drop=("fp32", "fused")), variant="int8")
    with pytest.warns(PoolingWarning, match=r"\): re-export the folder with --variants fused \(or fp32\) for them, or check int8"):
        only_int8.encode(["one text"], pooling="cls")


def test_long_text_truncation_warns_with_count(fp32):
    long = "word " * 700
    with pytest.warns(UserWarning, match="2 of 3 texts exceeded max_length=512") as caught:
        vectors = fp32.encode([long, "short", long + "more"])
    assert vectors.shape == (3, 128)
    with pytest.warns(UserWarning, match="1 of 1 texts exceeded") as through_similarity:
        fp32.similarity([long], ["short"])
    # each names this file's line, not albert_onnx's (similarity reaches the warning through encode: it named embedder.py)
    assert [Path(w.filename).name for w in [*caught, *through_similarity]] == ["test_embedder.py"] * 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fp32.encode(["short", "word " * 510])  # exactly 510 pieces + [CLS] [SEP]: fits, no warning


def test_long_text_window_covers_the_whole_text(fp32):
    head = "alpha beta gamma " * 60
    text = head + "tail words that only the window mode sees " * 20
    with pytest.warns(UserWarning):
        truncated = fp32.encode([text], max_length=64)
    windowed = fp32.encode([text], max_length=64, long_text="window")
    assert np.abs(truncated - windowed).max() > 1e-3
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
    hidden, _ = graph_outputs(fp32, text)
    np.testing.assert_array_equal(pieces.vectors, hidden[1:-1])  # [CLS] and [SEP] left out, nothing else


def test_word_merge_gives_the_whitespace_separated_words(fp32, sts_texts):
    texts = sts_texts[:3000]
    merged = fp32.encode_tokens(texts, merge="word")
    assert [result.tokens for result in merged] == [text.split() for text in texts]
    for text, result in zip(texts[:200], merged):
        assert [text[start:end] for start, end in result.offsets] == result.tokens


@pytest.mark.parametrize("text, words", [
    ("[MASK]x and y[MASK]", ["[MASK]x", "and", "y[MASK]"]),  # the tokenizer's word ids split these off
    ("cafe\u0301 e\u0301", ["cafe\u0301", "e\u0301"]),  # the combining accent the normalizer drops stays in its word
    (" lead\u00a0no-break\ttab ", ["lead", "no-break", "tab"]),
    ("hello\u200bworld", ["hello\u200bworld"]),  # not whitespace, as for str.split(), though the tokenizer starts a piece
    ("a m\x1can", ["a", "m", "an"]),  # U+001C-U+001F are whitespace to str.split() and to ALBERT's tokenizer
    ("\x07Hello world", ["\x07Hello", "world"]),  # the dropped control character put "hello" at 0-5 and merged both words
    ("\x1b\x1b\x1bHello big world", ["\x1b\x1b\x1bHello", "big", "world"]),
    ("``Hello,'' he said.", ["``Hello,''", "he", "said."]),  # the first word started after one dropped backtick
    ("\u0301Hello world", ["\u0301Hello", "world"]),
    ("Hello world\u200b", ["Hello", "world\u200b"]),  # no trailing "▁" piece of its own
    ("a \u200b b", ["a", "b"]),  # a word the tokenizer makes no piece of has no vector
])
def test_word_merge_follows_the_words(fp32, text, words):
    assert fp32.encode_tokens(text, merge="word")[0].tokens == words


def test_word_vectors(fp32, int8):
    static = fp32.word_vectors(["guitar", "keyboard", "guitar"])
    assert static.shape == (3, 32)
    np.testing.assert_array_equal(static[0], static[2])
    assert np.abs(static[0] - static[1]).max() > 1e-3
    assert fp32.word_vectors("guitar", projected=True).shape == (1, 128)
    # same rows from every variant's initializers (int8 to 8 bits)
    np.testing.assert_allclose(int8.word_vectors(["guitar", "keyboard"]), static[:2], atol=2e-3)
    with pytest.raises(ValueError, match=r"words\[1\]"):
        fp32.word_vectors(["ok", "   "])


def test_similarity(fp32):
    scores = fp32.similarity(["a dog runs", "stocks fell"], ["a dog runs", "markets dropped", "x"])
    assert scores.shape == (2, 3)
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(scores, fp32.encode(["a dog runs", "stocks fell"]) @ fp32.encode(["a dog runs", "markets dropped", "x"]).T, atol=1e-6)
    assert fp32.similarity("a", "b", pooling="cls").shape == (1, 1)


def centred_cosine(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Row cosine after subtracting the reference's mean vector: random-weight ALBERT vectors share one large
    common direction, so raw cosine stays above ~0.9 even between different texts."""
    centre = reference.mean(axis=0)
    a, b = vectors - centre, reference - centre
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_variants_agree(tiny_folder, fp32, sts_texts):
    texts = sts_texts[:64]
    reference = fp32.encode(texts, normalize=False)
    fused = AlbertEmbedder.from_pretrained(tiny_folder, variant="fused", device="cpu").encode(texts, normalize=False)
    quantized = AlbertEmbedder.from_pretrained(tiny_folder, variant="int8").encode(texts, normalize=False)
    assert np.abs(fused - reference).max() < 1e-4
    agreement = centred_cosine(quantized, reference)
    assert agreement.mean() >= 0.95 and agreement.min() >= 0.85  # the export's int8 gate is mean >= 0.95
    # the metric can fail: the same vectors paired with the wrong texts score far lower
    assert centred_cosine(np.roll(quantized, 1, axis=0), reference).mean() < 0.5


def test_io_binding_matches_plain_run(tiny_folder, fp32, sts_texts):
    bound = AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32", device="cpu", io_binding=True)
    assert bound._runner.io_binding and not fp32._runner.io_binding
    np.testing.assert_array_equal(bound.encode(sts_texts[:12]), fp32.encode(sts_texts[:12]))


def test_tokenize_then_encode_ids_equals_encode(fp32, sts_texts):
    texts = sts_texts[:20] + ["word " * 700]  # one text longer than 512 tokens: truncated like encode()
    with pytest.warns(UserWarning, match="1 of 21 texts exceeded"):
        feeds = fp32.tokenize(texts)
    assert feeds["input_ids"].shape == (21, 512) and feeds["input_ids"].dtype == np.int64
    assert feeds["attention_mask"][:, 0].all() and (feeds["input_ids"][:, 0] == 2).all()
    with pytest.warns(UserWarning):
        expected = fp32.encode(texts, normalize=False)
    np.testing.assert_array_equal(fp32.encode_ids(feeds), expected)
    np.testing.assert_allclose(np.linalg.norm(fp32.encode_ids(feeds, normalize=True), axis=1), 1, atol=1e-5)


def test_encode_ids_accepts_other_integer_dtypes_and_lists(fp32):
    feeds = fp32.tokenize(["a man plays", "a guitar"])
    expected = fp32.encode_ids(feeds)
    as_int32 = {name: array.astype(np.int32) for name, array in feeds.items()}
    np.testing.assert_array_equal(fp32.encode_ids(as_int32), expected)
    as_lists = {name: array.tolist() for name, array in feeds.items() if name != "token_type_ids"}
    np.testing.assert_array_equal(fp32.encode_ids(as_lists), expected)
    # a bool mask (ids != pad, torch's mask.bool()) marks real tokens with True
    np.testing.assert_array_equal(fp32.encode_ids({**feeds, "attention_mask": feeds["attention_mask"].astype(bool)}), expected)


def test_encode_ids_with_no_rows_is_empty_like_encode(fp32, int8):
    for embedder in (fp32, int8):  # the int8 graph crashed the process (SIGFPE) on a 0-row batch
        empty = {"input_ids": np.zeros((0, 7), np.int64), "attention_mask": np.zeros((0, 7), np.int64)}
        result = embedder.encode_ids(empty)
        assert result.shape == (0, 128) and result.dtype == np.float32


def test_token_types_reach_the_graph(fp32):
    feeds = fp32.tokenize(["first segment second segment"])
    types = np.zeros_like(feeds["token_type_ids"])
    types[0, 3:] = 1
    assert np.abs(fp32.encode_ids({**feeds, "token_type_ids": types}) - fp32.encode_ids(feeds)).max() > 1e-4


def hard_long_texts(sts_texts: list[str]) -> dict[str, str]:
    joined = " ".join(sts_texts[:2000])
    return {
        "STS-B joined": joined,
        "no whitespace": "abcdefghij" * 3000,
        "CJK, no spaces": "我们今天去公园散步然后吃饭" * 800,
        "CJK with spaces": " ".join(["我们今天去公园", "散步然后吃饭"] * 800),
        "many spaces": (" " * 37).join(sts_texts[:300]),
        "tabs, newlines, odd spaces": "\t\n".join(sts_texts[:200]).replace(" the ", "\u00a0the\u3000 ").replace(" a ", " \u200ba\x1c "),
        "leading whitespace": " " * 20_000 + joined,
        "accents and combining marks": " ".join("cafe\u0301 naïve Ünïcödé" for _ in range(2000)),
        "special tokens and quotes": " ".join("``quoted'' [MASK] key-board [MASK]x" for _ in range(1500)),
        "one long word then text": "x" * 9_000 + " " + joined,
        "a periodic run": "ab" * 12_000 + "a",
        "a periodic run, one longer": "ab" * 12_000 + "ab",
        "a run of one letter": "a" * 20_001,
        "base64, no whitespace": base64.b64encode(random.Random(1).randbytes(30_000)).decode(),
        "a URL in text": joined[:3000] + " https://example.com/" + "x1y2z3" * 2000 + "/index.html " + joined,
        # runs whose characters around a cut the normalizer drops: moving the cut changed nothing (found by an attack)
        "a run with control characters": ("a" + "\x01" * 19) * 600,
        "a run with combining accents": ("a" + "\u0301" * 19) * 600,
        "a run with both": ("a" + "\x7f\u0301" * 19) * 600,
    }


@pytest.mark.parametrize("limit", [510, 62, 6])
def test_truncation_keeps_exactly_the_whole_texts_first_pieces(fp32, sts_texts, limit):
    tokenizer = fp32._tokenizer
    cases = hard_long_texts(sts_texts)
    texts = list(cases.values()) + sts_texts[:3000]  # short STS-B texts: many cut points at small limits
    whole = tokenizer.encode(texts)
    heads = tokenizer.encode(texts, limit=limit)
    for text, full, head in zip(texts, whole, heads):
        name = next((key for key, value in cases.items() if value is text), text[:40])
        assert head.ids[:limit] == full.ids[:limit], name
        assert (len(head.ids) > limit) == (len(full.ids) > limit), name
        assert head.offsets[:limit] == full.offsets[:limit] and head.word_ids[:limit] == full.word_ids[:limit], name
    # the bound is real: a long text with whitespace is tokenized only in part, and so is a run that is not periodic
    assert len(heads[0].ids) < len(whole[0].ids) // 4
    run = list(cases).index("base64, no whitespace")
    assert len(heads[run].ids) < len(whole[run].ids) // 2


def test_truncated_encode_equals_whole_text_ids(fp32, sts_texts):
    texts = list(hard_long_texts(sts_texts).values())
    whole = fp32._tokenizer.encode(texts)
    framed = [fp32._tokenizer.frame(np.asarray(encoding.ids[:62], np.int64)) for encoding in whole]
    expected = fp32.encode_ids(fp32._tokenizer.pad(framed))
    over = sum(len(encoding.ids) > 62 for encoding in whole)
    assert over >= len(texts) - 2
    with pytest.warns(UserWarning, match=f"{over} of {len(texts)} texts exceeded max_length=64"):
        np.testing.assert_array_equal(fp32.encode(texts, max_length=64, normalize=False), expected)


def test_no_heads_when_words_are_not_tokenized_apart(tiny_folder, tmp_path, sts_texts):
    # with a pre-tokenizer that does not split at spaces, a head's pieces could differ: the whole text is used
    folder = tmp_path / "model"
    shutil.copytree(tiny_folder, folder)
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    spec["pre_tokenizer"]["split"] = False
    (folder / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    tokenizer = AlbertEmbedder.from_pretrained(folder, variant="fp32", verify=False)._tokenizer
    text = " ".join(sts_texts[:500])
    whole = tokenizer.encode([text])[0]
    assert len(whole.ids) > 1000 and tokenizer.encode([text], limit=62)[0].ids == whole.ids
