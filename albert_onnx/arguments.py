"""One set of checks for every public argument (API, CLI and Ray job): types are what they say, or a clear error.

Each check names the argument and the value and says what to pass instead. Bools are real bools (``"no"`` is
not False), counts are real ints (not floats, strings or bools), and text containers are ordered sequences of
str (a set, dict or DataFrame would embed in arbitrary order, or embed keys and column names).
"""

from __future__ import annotations

import os
from collections.abc import Sequence


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def flag(name: str, value: object) -> bool:
    """``value`` if it is a bool.

    Raises:
        TypeError: Anything else, "no" and 0 included.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name}={_shown(value)}: pass True or False")
    return value


def count(name: str, value: object, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` if it is an int (not a bool) in ``[minimum, maximum]``.

    Raises:
        TypeError: Not an int ("8", 8.0 and True included).
        ValueError: Out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}={_shown(value)}: pass an int" + (f" from {minimum} to {maximum}" if maximum is not None else f" >= {minimum}"))
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name}={value}: pass an int {bounds}")
    return value


def choice(name: str, value: object, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``.

    Raises:
        ValueError: Anything else.
    """
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={_shown(value)}: choose one of {', '.join(repr(c) for c in choices)}")
    return value


def max_threads() -> int:
    """The most intra-op threads a session may ask for: 4 per CPU (ONNX Runtime makes one OS thread each)."""
    return 4 * (os.cpu_count() or 1)


def threads(value: object, name: str = "threads") -> int | None:
    """None (one thread per physical core) or a thread count this machine can hold.

    Raises:
        TypeError: Not an int or None.
        ValueError: Below 1 or above :func:`max_threads` (a million threads exhausts memory before it errs).
    """
    if value is None:
        return None
    limit = max_threads()
    try:
        return count(name, value, 1, limit)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{error} (this machine has {os.cpu_count()} CPUs), or None for one per physical core") from None


def texts(value: object, name: str = "texts") -> list[str]:
    """A list of str from one str (one text) or an ordered sequence of str.

    Raises:
        TypeError: Not a str or a sequence (set, dict, DataFrame, generator, bytes, None), or an item that is not
            str, naming its index.
        ValueError: An item that is not valid Unicode (a lone surrogate), naming its index and position.
    """
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray, memoryview)):
        items = list(value)
    else:
        kind = type(value).__name__
        hint = "df[column].tolist()" if kind == "DataFrame" else "sorted(...) or list(...)" if isinstance(value, (set, frozenset, dict)) else "list(...)"
        raise TypeError(f"{name} is a {kind}; pass one str or an ordered sequence of str such as a list (e.g. {hint})")
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"{name}[{index}] is {type(item).__name__} ({_shown(item)}); every item must be str (decode bytes first)")
        if not item.isascii():
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as error:
                raise ValueError(f"{name}[{index}] has a lone surrogate {item[error.start]!r} at character {error.start}, which is "
                                 "not valid Unicode; decode the input with errors='replace' or fix the text") from None
    return items

