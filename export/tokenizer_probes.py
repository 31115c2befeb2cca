"""Texts that exercise each rule of ALBERT's tokenizer: the export compares tokenizer.json with the SentencePiece
reference on them, beside the validation texts, because English validation text never meets most of the rules.

A setting the conversion does not reproduce shows up here, not in the validation texts: ``remove_space: false``
(U+001C between letters), ``keep_accents: true`` (a dotted capital I), a ``byte_fallback`` spiece.model (CJK),
``single_word`` on a special token (one glued to a word).
"""

from __future__ import annotations

import random

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


def probe_texts(count: int = 2000, seed: int = 0) -> list[str]:
    """HARD_CASES and ``count`` seeded random texts: what the export checks tokenizer.json on."""
    return [*HARD_CASES, *random_texts(count, seed)]
