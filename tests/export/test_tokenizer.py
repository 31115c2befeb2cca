"""tokenizer.json reproduces the SentencePiece AlbertTokenizer (the export's reference, proven equal to transformers 4.57's
slow one in test_reference_tokenizer.py) id for id; the vocabulary is found offline for size names."""

from __future__ import annotations

import random
import re
import shutil
import unicodedata
from pathlib import Path

import pytest
from tokenizers import normalizers

from albert_onnx_export.errors import ExportError
from albert_onnx_export.reference_tokenizer import ReferenceTokenizer
from albert_onnx_export.tokenizer import ALBERT_SPIECE_SHA256, build_fast_tokenizer, load_reference_tokenizer, mismatches
from tests.conftest import BASE_SOURCE, make_hub_cache, need_shared, run_cli

HARD_CASES = [
    "Héllo Wörld naïve café façade", "ÀÉÎÕÜ ÇÑ Ångström", "1,000,000 people, 3,5 or 12,345.67", "9,9 99,99 999,999,999,",
    "$1,234.56 and €5,00 or £3", "It costs 5,000,", "the [MASK] sat on the mat", "a [MASK]b [MASK] [MASK].", "[MASK]",
    "emoji 😀👍🏽 ok 🤷‍♀️", "中文字符 日本語のテキスト 한국어", "", "   ", "  lots   of   spaces  ", "tab\there\nnewline\r\nend",
    "non\u00a0breaking\u3000ideographic space", "``quoted'' text \"plain\"", "key-board push-ups T-shirt (cfe).",
    "Dr. Smith's 2,000-word essay—really?", "x" * 3000, "word " * 600, "ALL CAPS AND MiXeD", "ﬁ ligature ① ²",
    # control, zero-width and separator characters: a trailing "▁" piece, words glued at U+001C, offsets shifted
    "Hello world\u200b", "Hello world\ufeff", "Hello world \x01", "\x07Hello world", "A m\x1can with a hard hat.",
    "one\x1ftwo\x1ethree\x1dfour", "\u200b\u200b", "\x00\x7f\x9f", "soft\u00adhyphen and \u2581 and \ufffd",
    # marks StripAccents dropped and the reference keeps: the emoji variation selector, keycaps, Indic vowel signs
    "Text\ufe0f.", "Call 1\ufe0f\u20e3 or 2\ufe0f\u20e3", "Brand\u2122\ufe0f", "x\u20ddy", "हिन्दी भाषा", "ภาษาไทย",
]


# Characters that each exercise a rule: whitespace kinds (U+0085: whitespace to Python, kept by SentencePiece), the
# quote pairs, digits and commas (the digit-comma rule), accents (NFKD), case (Greek final sigma, dotted I, ß,
# titlecase digraphs), SentencePiece's user-defined symbols, CJK and emoji (unknown pieces), the special tokens'
# own characters, and the special tokens themselves.
ALPHABET = list("abcXYZ 019,.,-()\"'`£€–") + [" ", "  ", "\t", "\n", "\u00a0", "\u3000", "\x85", "``", "''", "é", "Ö", "ñ",
                                             "a\u0301", "Σ", "ΟΔΟΣ", "İ", "ß", "ǅ", "中", "😀", "ﬁ", "①", "[", "]", "<", ">", "MASK", "mask",
                                             "\x00", "\x01", "\x07", "\x0b", "\x1b", "\x1c", "\x1f", "\x7f", "\x8f", "\x9f", "\u00ad",
                                             "\u200b", "\u200d", "\u2028", "\u2581", "\ufeff", "\ufffd"]
SPECIALS = ["[MASK]", "[CLS]", "[SEP]", "<pad>", "<unk>"]


def random_texts(count: int, seed: int = 0) -> list[str]:
    """Seeded random strings of ALPHABET's items, one in eight a special token."""
    rng = random.Random(seed)
    return ["".join(rng.choice(SPECIALS) if rng.random() < 0.12 else rng.choice(ALPHABET) for _ in range(rng.randint(0, 24)))
            for _ in range(count)]


@pytest.fixture(scope="module")
def tokenizers():
    need_shared()
    reference = ReferenceTokenizer(BASE_SOURCE)
    return reference, build_fast_tokenizer(reference)


def test_every_stsb_sentence(tokenizers, sts_texts):
    slow, fast = tokenizers
    assert len(sts_texts) > 14000
    assert mismatches(slow, fast, sts_texts) == []


def test_hard_cases(tokenizers):
    slow, fast = tokenizers
    assert mismatches(slow, fast, HARD_CASES) == []


def test_random_texts_with_special_tokens(tokenizers):
    """A literal "<unk>" is the unknown token, kept whole as the reference keeps it (it was "▁" "<unk>" before)."""
    reference, fast = tokenizers
    texts = random_texts(5000)
    assert sum("<unk>" in text for text in texts) > 500
    assert mismatches(reference, fast, texts) == []
    assert fast.encode("a <unk> b").tokens == ["[CLS]", "▁a", "<unk>", "▁b", "[SEP]"]


def test_every_code_point_between_letters(tokenizers):
    """Each code point c in "ab{c}cd ef": 1,393 differed before StripAccents was replaced (build_fast_tokenizer, 6)."""
    reference, fast = tokenizers
    points = [point for point in range(0x110000) if not 0xD800 <= point < 0xE000]
    texts = [f"ab{chr(point)}cd ef" for point in points]
    encoded = fast.encode_batch(texts)
    differ = {point for point, text, encoding in zip(points, texts, encoded) if reference.encode(text) != encoding.ids}
    # the one known cause: characters whose NFKD form this Python's Unicode tables and the tokenizers library's
    # disagree on (15 on Python 3.11: U+A7F2-U+A7F4, U+107A5, U+1F16C, U+1FBF0-U+1FBF9)
    nfkd = normalizers.NFKD()
    tables_differ = {point for point in differ if unicodedata.normalize("NFKD", chr(point)) != nfkd.normalize_str(chr(point))}
    assert differ == tables_differ, sorted(map(hex, differ - tables_differ))[:20]


def test_a_mark_after_a_character_the_map_turns_into_a_space_is_kept(tokenizers):
    """Found by an attack (2026-12-07): tokenizers' Precompiled step replaced a whole grapheme cluster by its first
    character's mapping, so "x\ufffd\u034fy" lost the U+034F (an <unk> piece to the reference); build_fast_tokenizer, 7."""
    reference, fast = tokenizers
    spaced = [0x200B, 0x200C, 0x200D, 0x200E, 0x200F, 0x2581, 0xFEFF, 0xFFFD]  # what the character map turns into " "
    marks = [point for point in range(0x20, 0x30000) if not 0xD800 <= point < 0xE000 and not unicodedata.combining(chr(point))
             and unicodedata.category(chr(point)) in ("Mn", "Me", "Mc", "Cf", "Lm", "Sk")]
    marks += [*range(0x1F3FB, 0x1F400), 0xE0020, 0xE007F]  # emoji modifiers and tag characters: grapheme extenders too
    nfkd = normalizers.NFKD()  # the known cause of other differences (test above): left out
    marks = [point for point in marks if unicodedata.normalize("NFKD", chr(point)) == nfkd.normalize_str(chr(point))]
    texts = [text for base in spaced for mark in marks for text in (f"x{chr(base)}{chr(mark)}y", f"{chr(base)}{chr(mark)}")]
    assert len(texts) > 25000
    assert mismatches(reference, fast, texts) == []
    assert fast.encode("x\ufffd\u034fy").tokens == ["[CLS]", "▁x", "▁", "\u034f", "y", "[SEP]"]  # the mark: an unknown piece


def test_dropped_characters_keep_the_offsets(tokenizers):
    """tokenizers' Precompiled step lost the offsets of a text that starts with a character it deletes."""
    _, fast = tokenizers
    base = fast.encode("Hello big world", add_special_tokens=False)
    for prefix in ["\x07", "\x1b\x1b\x1b", "\x7f", " \x01", "\ufeff\x01", "\u200b"]:
        moved = fast.encode(prefix + "Hello big world", add_special_tokens=False)
        assert (moved.ids, moved.offsets) == (base.ids, [(a + len(prefix), b + len(prefix)) for a, b in base.offsets]), prefix


def test_mask_has_no_extra_piece(tokenizers):
    """[MASK] is one token with no "▁" piece before or after it."""
    _, fast = tokenizers
    encoding = fast.encode("the [MASK] sat")
    assert encoding.tokens == ["[CLS]", "▁the", "[MASK]", "▁sat", "[SEP]"]
    assert encoding.ids == [2, fast.token_to_id("▁the"), 4, fast.token_to_id("▁sat"), 3]


# --- where the vocabulary comes from ------------------------------------------------------------------------------

def _clear_hub_env(monkeypatch) -> None:
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "HF_HOME"])
def test_size_name_finds_the_vocabulary_in_the_hub_cache(tmp_path, monkeypatch, tokenizers, variable):
    """albert-large-v2 has no spiece.model of its own here; albert-base-v2's cached copy (same sha256) is used."""
    need_shared()
    home = tmp_path / "hf"
    cache = make_hub_cache(home / "hub")
    _clear_hub_env(monkeypatch)
    monkeypatch.setenv(variable, str(cache if variable == "HF_HUB_CACHE" else home))
    found = load_reference_tokenizer("albert-large-v2", vocab_size=30000)
    blob = cache / "models--albert--albert-base-v2" / "blobs" / ALBERT_SPIECE_SHA256
    assert Path(found.vocab_file).resolve() == blob.resolve()
    reference, _ = tokenizers
    assert [found.encode(text) for text in HARD_CASES] == [reference.encode(text) for text in HARD_CASES]
    # a snapshot has no tokenizer_config.json: the Rust tokenizer built from it must still match
    assert mismatches(reference, build_fast_tokenizer(found), HARD_CASES) == []


def test_source_folder_comes_before_the_cache(tmp_path, monkeypatch):
    need_shared()
    _clear_hub_env(monkeypatch)
    monkeypatch.setenv("HF_HUB_CACHE", str(make_hub_cache(tmp_path / "hub")))
    folder = tmp_path / "own"
    folder.mkdir()
    shutil.copy(BASE_SOURCE / "spiece.model", folder / "spiece.model")
    assert Path(load_reference_tokenizer(str(folder)).vocab_file) == folder / "spiece.model"


def _export_offline(tmp_path: Path, cache: Path):
    return run_cli("export", "albert-base-v2", "--random-weights", "--variants", "fp32", "-o", str(tmp_path / "out"), check=False,
                   env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_HOME": None})


def test_no_vocabulary_offline_is_one_line(tmp_path):
    """The cache holds only another file named spiece.model (wrong sha256: not used) and the hub is off."""
    need_shared()
    cache = make_hub_cache(tmp_path / "hub", "albert/albert-large-v1", spiece=(BASE_SOURCE / "spiece.model").read_bytes() + b"\0")
    result = _export_offline(tmp_path, cache)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert re.match(r"albert-onnx export: error: no vocabulary for 'albert-base-v2': ALBERT's spiece\.model \(sha256 fefb02b667a6\.\.\.\) "
                    rf"is not in the Hugging Face cache \({re.escape(str(cache))}\) and the hub could not be reached", result.stderr)
    assert "pass --tokenizer FOLDER (a folder with spiece.model" in result.stderr and "run once online" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub"]


def test_damaged_cached_vocabulary_is_named(tmp_path):
    """transformers' own cache lookup would take a damaged albert/albert-base-v2 spiece.model: the sha256 check refuses it."""
    need_shared()
    cache = make_hub_cache(tmp_path / "hub", spiece=(BASE_SOURCE / "spiece.model").read_bytes()[:-10])
    result = _export_offline(tmp_path, cache)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    snapshot_file = next(cache.glob("models--albert--albert-base-v2/snapshots/*/spiece.model"))
    assert result.stderr.startswith(f"albert-onnx export: error: {snapshot_file}: spiece.model of albert/albert-base-v2 has sha256 ")
    assert "the cached copy is damaged: delete it and run once online" in result.stderr


def test_folder_without_spiece_model(tmp_path):
    with pytest.raises(ExportError, match=r"has no spiece\.model; pass --tokenizer FOLDER"):
        load_reference_tokenizer(str(tmp_path))


def test_damaged_spiece_model_is_named(tmp_path):
    (tmp_path / "spiece.model").write_bytes(b"not a model" * 10)
    with pytest.raises(ExportError, match=rf"^{re.escape(str(tmp_path / 'spiece.model'))}: not a SentencePiece model"):
        load_reference_tokenizer(str(tmp_path))


def test_damaged_tokenizer_config_is_named(tmp_path):
    need_shared()
    shutil.copy(BASE_SOURCE / "spiece.model", tmp_path / "spiece.model")
    (tmp_path / "tokenizer_config.json").write_text("{bad")
    with pytest.raises(ExportError, match=rf"^{re.escape(str(tmp_path / 'tokenizer_config.json'))}: not valid JSON \(line 1, column 2"):
        load_reference_tokenizer(str(tmp_path))


def test_vocabulary_larger_than_the_model(tmp_path):
    need_shared()
    with pytest.raises(ExportError, match=r"has 30000 tokens but the model's vocab_size is 1000"):
        load_reference_tokenizer(str(BASE_SOURCE), vocab_size=1000)
