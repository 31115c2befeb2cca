"""tokenizer.json reproduces the SentencePiece AlbertTokenizer id for id."""

from __future__ import annotations

import pytest
from transformers import AlbertTokenizer

from albert_onnx_export.tokenizer import build_fast_tokenizer, mismatches
from tests.conftest import BASE_SOURCE, need_shared

HARD_CASES = [
    "Héllo Wörld naïve café façade", "ÀÉÎÕÜ ÇÑ Ångström", "1,000,000 people, 3,5 or 12,345.67", "9,9 99,99 999,999,999,",
    "$1,234.56 and €5,00 or £3", "It costs 5,000,", "the [MASK] sat on the mat", "a [MASK]b [MASK] [MASK].", "[MASK]",
    "emoji 😀👍🏽 ok 🤷‍♀️", "中文字符 日本語のテキスト 한국어", "", "   ", "  lots   of   spaces  ", "tab\there\nnewline\r\nend",
    "non\u00a0breaking\u3000ideographic space", "``quoted'' text \"plain\"", "key-board push-ups T-shirt (cfe).",
    "Dr. Smith's 2,000-word essay—really?", "x" * 3000, "word " * 600, "ALL CAPS AND MiXeD", "ﬁ ligature ① ²",
]


@pytest.fixture(scope="module")
def tokenizers():
    need_shared()
    slow = AlbertTokenizer.from_pretrained(str(BASE_SOURCE))
    return slow, build_fast_tokenizer(slow)


def test_every_stsb_sentence(tokenizers, sts_texts):
    slow, fast = tokenizers
    assert len(sts_texts) > 14000
    assert mismatches(slow, fast, sts_texts) == []


def test_hard_cases(tokenizers):
    slow, fast = tokenizers
    assert mismatches(slow, fast, HARD_CASES) == []


def test_mask_has_no_extra_piece(tokenizers):
    _, fast = tokenizers
    assert fast.encode("the [MASK] sat").tokens == ["[CLS]", "▁the", "[MASK]", "▁sat", "[SEP]"] or \
        fast.encode("the [MASK] sat").ids[2:4] == [4, fast.token_to_id("▁sat")]
