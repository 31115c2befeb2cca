"""One set of checks for every public argument (API, CLI and Ray job): types are what they say, or a clear error.

Each check names the argument and the value and says what to pass instead. Bools are real bools (``"no"`` is
not False), counts are real ints (not floats, strings or bools), and text containers are ordered sequences of
str (a set, dict or DataFrame would embed in arbitrary order, or embed keys and column names).
"""

from __future__ import annotations

import array
import json
import numbers
import os
from collections import UserString
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

# The longest file name most filesystems take (ext4, xfs, btrfs, tmpfs: 255 bytes): output names are checked against it.
NAME_MAX = 255
# Choices the API, the CLI and the Ray job share; here, not beside their code, so the CLI's parser needs no onnxruntime
DEVICES = ("auto", "cpu", "cuda")
LONG_TEXT = ("truncate", "window")
# onnxruntime comes with an extra ([cpu] or [gpu]: both install the module onnxruntime, so neither is a plain dependency)
NO_ONNXRUNTIME = ("albert-onnx needs ONNX Runtime, and none is installed: pip install 'albert-onnx[cpu]', or "
                  "'albert-onnx[gpu]' on a CUDA 13 host (never both)")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def flag(name: str, value: object) -> bool:
    """``value`` as a bool if it is one (a NumPy bool too, as counts take NumPy integers).

    Raises:
        TypeError: Anything else, "no" and 0 included.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}={_shown(value)}: pass True or False")
    return bool(value)


def count(name: str, value: object, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int if it is an integer (an int or a NumPy integer, not a bool) in ``[minimum, maximum]``.

    Raises:
        TypeError: Not an integer ("8", 8.0 and True included).
        ValueError: Out of range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # numpy's integers are Integral, its bool is not
        raise TypeError(f"{name}={_shown(value)}: pass an int" + (f" from {minimum} to {maximum}" if maximum is not None else f" >= {minimum}"))
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name}={value}: pass an int {bounds}")
    return value


def optional_flag(name: str, value: object) -> bool | None:
    """``value`` if it is None (the default applies) or a bool.

    Raises:
        TypeError: Anything else.
    """
    if value is not None and not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}={_shown(value)}: pass True, False or None (the default)")
    return None if value is None else bool(value)


def path(name: str, value: object) -> Path:
    """``value`` as a Path if it is a str or an ``os.PathLike``.

    Raises:
        TypeError: Anything else (bytes, None, numbers), or a PathLike whose ``__fspath__`` gives bytes.
        ValueError: A NUL character in it (no file can have that name).
    """
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name}={_shown(value)}: pass the folder as a str or pathlib.Path")
    text = os.fspath(value)
    if not isinstance(text, str):
        raise TypeError(f"{name}={_shown(value)} gives the path as {type(text).__name__}; pass the folder as a str or pathlib.Path")
    if "\0" in text:
        raise ValueError(f"{name}={_shown(text)} holds a NUL character, which no file name can; pass the folder's name")
    return Path(text)


def nonempty_str(name: str, value: object) -> str:
    """``value`` if it is a non-empty str (a column or field name, an address).

    Raises:
        TypeError: Not a str.
        ValueError: The empty string.
    """
    if not isinstance(value, str):
        raise TypeError(f"{name}={_shown(value)}: pass a str")
    if not value:
        raise ValueError(f"{name}='': pass a non-empty name")
    return value


def input_path(name: str, value: object, suffixes: Sequence[str], folder_of: str | None = None) -> Path:
    """``value`` as a Path if it is an existing local file with one of ``suffixes`` (or, with ``folder_of``, a
    folder, which then holds ``folder_of`` files).

    Raises:
        TypeError: Not a str or an ``os.PathLike``.
        ValueError: A URI, a path that does not exist, or a file with another suffix (compared in lower case).
    """
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name}={_shown(value)}: pass the input file as a str or pathlib.Path")
    path = Path(value)
    kinds = ", ".join(suffixes) + (f" file, or a folder of {folder_of} files" if folder_of else " file")
    if "://" in str(value):
        raise ValueError(f"{name}={_shown(str(value))} is a URI; pass a local {kinds} (copy the input to this machine first)")
    if not path.exists():
        raise ValueError(f"{name}={_shown(str(value))} does not exist; pass an existing {kinds}")
    if (path.is_dir() and folder_of is None) or (not path.is_dir() and path.suffix.lower() not in suffixes):
        raise ValueError(f"{name}={_shown(str(value))} is not a {kinds}; pass one (the suffix names the format)")
    return path


def output_folder(name: str, value: object) -> Path:
    """``value`` as a Path if it is a str or ``os.PathLike`` that names a folder or nothing yet (not a file).

    Raises:
        TypeError: Not a str or an ``os.PathLike``.
        ValueError: An existing file (or anything else that is not a folder), or inside one; a NUL character.
    """
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name}={_shown(value)}: pass the output folder as a str or pathlib.Path")
    folder = path(name, value)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{name}={_shown(str(folder))} is a file, not a folder; pass a folder (new or one this job wrote)")
    # the nearest existing parent must be a folder too: making one inside a file fails with "Not a directory"
    above = next((parent for parent in folder.parents if parent.exists()), None)
    if above is not None and not above.is_dir():
        raise ValueError(f"{name}={_shown(str(folder))} is inside {str(above)!r}, which is a file; pass a folder outside it")
    return folder


def choice(name: str, value: object, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``.

    Raises:
        ValueError: Anything else.
    """
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={_shown(value)}: choose one of {', '.join(repr(c) for c in choices)}")
    return value


def optional_choice(name: str, value: object, choices: Sequence[str]) -> str | None:
    """``value`` if it is None or one of ``choices``.

    Raises:
        ValueError: Anything else.
    """
    if value is not None and (not isinstance(value, str) or value not in choices):
        raise ValueError(f"{name}={_shown(value)}: pass None or one of {', '.join(repr(c) for c in choices)}")
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
    elif isinstance(value, array.array):  # a Sequence, but of characters (typecode 'u'): each would be a text
        fix = " (e.g. array.tounicode() for one text)" if value.typecode in ("u", "w") else ""
        raise TypeError(f"{name} is an array.array of typecode {value.typecode!r}; pass one str or a list of str{fix}")
    elif isinstance(value, UserString):  # a Sequence of one-character strings, as array('u') is
        raise TypeError(f"{name} is a {type(value).__name__}; pass one str (e.g. str(text)) or a list of str")
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray, memoryview)):
        items = list(value)
    else:
        kind = type(value).__name__
        hint = "df[column].tolist()" if kind == "DataFrame" else "sorted(...) or list(...)" if isinstance(value, (set, frozenset, dict)) else "list(...)"
        raise TypeError(f"{name} is a {kind}; pass one str or an ordered sequence of str such as a list (e.g. {hint})")
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"{name}[{index}] is {type(item).__name__} ({_shown(item)}); every item must be str (decode bytes first)")
        if type(item) is not str:  # a subclass may override isascii/encode (and so pass a lone surrogate on): its plain text
            item = items[index] = str.__str__(item)
        if not item.isascii():
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as error:
                raise ValueError(f"{name}[{index}] has a lone surrogate {item[error.start]!r} at character {error.start}, which is "
                                 "not valid Unicode; decode the input with errors='replace' or fix the text") from None
    return items


def jsonl_texts(name: str, lines: Iterable[str], field: str, fix: str) -> list[str]:
    """``field`` of the JSON object on each non-blank line (the CLI's --input and the export's validation texts).

    Args:
        name: The file, as the errors name it (``name:line``).
        lines: The file's lines, decoded.
        field: The key that holds each text.
        fix: What to do about a line without a str ``field``, ending that error.

    Raises:
        ValueError: A line is not JSON, nested too deeply for json, not an object with a str ``field``, or its text
            has a lone surrogate (a "\\ud800" escape: valid JSON, not valid Unicode).
    """
    texts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = json_line(line, f"{name}:{number}", f"each line must be an object with a {field!r} field")
        if not isinstance(record, dict) or field not in record:
            raise ValueError(f"{name}:{number}: expected an object with a str {field!r} field; {fix}")
        if not isinstance(record[field], str):  # the field is there: say what it holds instead of a text
            raise ValueError(f"{name}:{number}: {field!r} is {json_type(record[field])}, not a string; make each {field!r} a "
                             "JSON string")
        text = record[field]
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as error:
                raise ValueError(f"{name}:{number}: {field!r} has a lone surrogate {text[error.start]!r} at character "
                                 f"{error.start}, which is not valid Unicode; fix the text") from None
        texts.append(text)
    return texts


def json_type(value: object) -> str:
    """A parsed JSON value's type as JSON names it (``null``, ``a number``, ...), for the errors."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return {int: "a number", float: "a number", list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


def json_line(line: str, where: str, shape: str) -> object:
    """One JSON Lines record, parsed.

    Args:
        line: The line, decoded.
        where: ``file:line``, starting each error.
        shape: What each line must be, ending the errors that are not about the syntax.

    Raises:
        ValueError: Not JSON, nested too deeply for json, or a number Python will not convert (over 4300 digits).
    """
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
    except RecursionError:  # json's answer to "[[[[..." thousands deep
        raise ValueError(f"{where}: JSON nested too deeply; {shape}") from None
    except ValueError as error:  # valid JSON that Python will not convert: an integer of over 4300 digits
        raise ValueError(f"{where}: JSON that Python will not read ({str(error).split(';')[0][:120]}); {shape}") from None


FEEDS = ("input_ids", "attention_mask", "token_type_ids")


def _first_bad(array: np.ndarray, bad: np.ndarray, name: str, expected: str) -> None:
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}[{row}, {column}]={array[row, column]}: {expected}")


def token_feeds(value: object, vocab_size: int, type_vocab_size: int, max_length: int,
                name: str = "feeds") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """input_ids, attention_mask and token_type_ids (zeros when absent) as int64 arrays of one 2-D shape.

    Only the real tokens (mask 1) are range-checked: padding positions never reach the graph.

    Args:
        value: A mapping with ``input_ids`` and ``attention_mask`` and optionally ``token_type_ids``.
        vocab_size: Ids must be in ``[0, vocab_size)``.
        type_vocab_size: Token types must be in ``[0, type_vocab_size)``.
        max_length: The most columns a batch may have.
        name: The argument's name, for messages.

    Returns:
        ``(input_ids, attention_mask, token_type_ids)``, int64, shape (rows, columns).

    Raises:
        TypeError: Not a mapping, or an array that is not of an integer dtype (floats, objects, str; bools but a
            bool attention_mask, whose True marks a real token).
        ValueError: A missing or unknown key, an array that is not 2-D, shapes that differ, no or too many
            columns, a mask value other than 0/1, or an id or token type out of range (naming row and column).
    """
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} is a {type(value).__name__}; pass a dict with input_ids and attention_mask arrays, "
                        "such as tokenize() returns")
    keys = sorted(str(key) for key in value)
    missing = [key for key in FEEDS[:2] if key not in value]
    unknown = [key for key in keys if key not in FEEDS]
    if missing or unknown:
        raise ValueError(f"{name} has keys {keys}: pass input_ids and attention_mask (token_type_ids optional)"
                         + (f"; drop {unknown}" if unknown else ""))
    arrays = {}
    for key in FEEDS:
        if key not in value or (key == "token_type_ids" and value[key] is None):  # None: absent, zeros
            continue
        raw = value[key]
        if isinstance(raw, (list, tuple)) and not raw:  # [] is a batch of no rows (numpy would call it float64)
            arrays[key] = np.zeros((0, 0), np.int64)
            continue
        try:
            array = np.asarray(raw)
        except (TypeError, ValueError) as error:  # ragged nested lists
            raise ValueError(f"{name}[{key!r}] is not a rectangular array ({error}); pad the rows to one length") from None
        if key == "attention_mask" and array.dtype.kind == "b":  # ids != pad, mask.bool(): True is a real token
            array = array.astype(np.int64)
        if array.dtype.kind not in "iu":  # numpy counts timedelta64 as an integer type: it is not token ids
            what = "a mask of 0/1 integers or bools" if key == "attention_mask" else "integer ids"
            raise TypeError(f"{name}[{key!r}] has dtype {array.dtype}; pass {what} (int64, as tokenize() returns): "
                            "floats and objects are refused, not rounded")
        if array.ndim != 2:
            raise ValueError(f"{name}[{key!r}] has shape {array.shape}; pass a 2-D (rows, tokens) array")
        arrays[key] = array
    ids, mask = arrays["input_ids"], arrays["attention_mask"]
    types = arrays.get("token_type_ids", np.zeros(ids.shape, dtype=np.int64))
    if mask.shape != ids.shape or types.shape != ids.shape:
        raise ValueError(f"{name}: input_ids {ids.shape}, attention_mask {mask.shape} and token_type_ids {types.shape} "
                         "must have one shape; pass the arrays of one batch")
    if ids.shape[1] > max_length or (len(ids) and ids.shape[1] < 1):
        raise ValueError(f"{name}['input_ids'] has {ids.shape[1]} columns; pass 1 to {max_length} tokens per row "
                         f"(the model's limit; tokenize() truncates to it)")
    _first_bad(mask, (mask != 0) & (mask != 1), f"{name}['attention_mask']", "pass 1 for a real token and 0 for padding")
    real = mask == 1
    _first_bad(ids, real & ((ids < 0) | (ids >= vocab_size)), f"{name}['input_ids']",
               f"not a token id of this model (0 to {vocab_size - 1}); tokenize with this model's tokenizer (tokenize())")
    _first_bad(types, real & ((types < 0) | (types >= type_vocab_size)), f"{name}['token_type_ids']",
               f"pass token types from 0 to {type_vocab_size - 1} (zeros for one segment)")
    return ids.astype(np.int64), mask.astype(np.int64), types.astype(np.int64)
