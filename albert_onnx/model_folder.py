"""The model folder: the contract between ``albert-onnx export`` and the runtime (``manifest.json``, format v2).

This is the one module that reads and writes ``manifest.json``: the export step builds a :class:`Manifest` and
calls :meth:`Manifest.to_json`; the runtime calls :meth:`ModelFolder.load`, which checks every field once and
names the field and the fix when one is wrong. Files are plain names inside the folder, regular files, never
symbolic links.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from . import arguments

FORMAT = "albert-onnx-model-folder"
FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (2,)
MANIFEST = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
MAX_MANIFEST_BYTES = 1 << 20  # a real manifest is ~5 KB; refuse to parse anything huge
# errors of a path itself, not of the file system or permissions: each names what to fix in the path
_PATH_ERRNOS = {errno.ELOOP: "a loop of symbolic links", errno.ENAMETOOLONG: "the path or a name in it is too long"}

Variant = Literal["fp32", "fused", "int8", "fp16"]
VARIANTS: tuple[str, ...] = ("fp32", "fused", "int8", "fp16")
VARIANT_FILES = {name: f"model_{name}.onnx" for name in VARIANTS}
VARIANT_DEVICES = {"fp32": ("cpu", "cuda"), "fused": ("cpu", "cuda"), "int8": ("cpu",), "fp16": ("cuda",)}
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# The fused, int8 and fp16 graphs take the attention mask as one length per row (ReduceSum of the mask), so
# every row must be [CLS] ... [SEP] followed only by padding: 1s then 0s. The runtime re-pads left padding.
PADDING = "right"
SPECIAL_TOKENS = ("pad", "unk", "cls", "sep", "mask")
VALIDATION_STATUSES = ("passed", "failed", "not-validated")
# A reference whose vectors all lie within SPREAD_MIN of their mean (relative distance, averaged) carries no ranking
# to preserve: a centred cosine there measures rounding alone (deep random-weight models; the export's validation)
SPREAD_MIN = 0.05
# Each graph carries, in its ONNX metadata under this key, the manifest facts the runtime computes with (the
# architecture, the tokenizer's length limit and special ids, the outputs, the padding rule). The graph's sha256
# is in the manifest, so with the graph verified an edited manifest cannot pass; without it, a manifest from
# another export still cannot: :meth:`ModelFolder.check_graph_stamp` compares the two at load.
STAMP_KEY = "albert_onnx.manifest_facts"
# The int8 graph's integer GEMMs, as variants.int8.quantization.gemm records them. "u8u8" (uint8 weights around
# 128) is exact on every x86 CPU; int8 graphs without it (albert-onnx before 2026-12-02) multiply uint8 x int8,
# which ONNX Runtime computes with int16 saturation on CPUs without VNNI: wrong vectors, so they are refused.
INT8_GEMM = "u8u8"
# The int8 graph again with uint8 x int8 GEMMs (the same levels, weights as int8): ONNX Runtime's fast path where VNNI
# or AMX run it, loaded only where albert_onnx.int8_kernel finds that product exact (variants.int8.u8s8).
U8S8_FILE = "model_int8_u8s8.onnx"


class ModelFolderError(ValueError):
    """The folder is missing, malformed, of another format version, or a file fails its size/hash check."""


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# The largest integer a manifest holds: sizes in bytes and counts all fit an int64.
INT64_MAX = 2**63 - 1


class _Fields:
    """Typed reads from one JSON object of the manifest; every error names the field's dotted path."""

    def __init__(self, raw: object, path: str, origin: str) -> None:
        self.path, self.origin = path, origin
        if not isinstance(raw, dict):
            raise self.error(path, "a JSON object", raw)
        self.raw: dict[str, Any] = raw

    def error(self, path: str, expected: str, value: object) -> ModelFolderError:
        return ModelFolderError(f"{self.origin}: {path or 'the manifest'} must be {expected}, got {_short(value, 60)} "
                                f"({type(value).__name__}); the folder is damaged or not from this albert-onnx: re-export it")

    def _value(self, key: str, optional: bool) -> tuple[str, object]:
        path = f"{self.path}.{key}" if self.path else key
        if key not in self.raw:
            if optional:
                return path, None
            raise ModelFolderError(f"{self.origin}: field {path!r} is missing; the folder is incomplete or from another "
                                   "albert-onnx version: re-export it")
        return path, self.raw[key]

    def str(self, key: str, optional: bool = False) -> str | None:
        path, value = self._value(key, optional)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise self.error(path, "a string", value)
        return value

    def int(self, key: str, minimum: int = 0, optional: bool = False) -> int | None:
        path, value = self._value(key, optional)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(path, f"an integer >= {minimum}", value)
        if value > INT64_MAX:  # a 400-digit "size" passed, and `info` failed converting it to float
            raise self.error(path, "an integer below 2**63", value)
        return value

    def bool(self, key: str) -> bool:
        path, value = self._value(key, False)
        if not isinstance(value, bool):
            raise self.error(path, "true or false", value)
        return value

    def number(self, key: str) -> float:
        path, value = self._value(key, False)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.error(path, "a finite number", value)
        return float(value)

    def obj(self, key: str) -> "_Fields":
        path, value = self._value(key, False)
        return _Fields(value, path, self.origin)

    def strings(self, key: str) -> list[str]:
        path, value = self._value(key, False)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.error(path, "a list of strings", value)
        return list(value)

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self.str(key)
        if value not in choices:
            raise self.error(f"{self.path}.{key}" if self.path else key, f"one of {', '.join(choices)}", value)
        return value

    def file_name(self, key: str = "file") -> str:
        name = self.str(key)
        if Path(name).name != name or name in ("", ".", "..") or "\\" in name or "\x00" in name:
            raise self.error(f"{self.path}.{key}", "a plain file name inside the folder", name)
        return name

    def sha256(self, key: str = "sha256") -> str:
        value = self.str(key)
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise self.error(f"{self.path}.{key}", "64 lowercase hex digits", value)
        return value

    def mapping(self, key: str, kind: type) -> dict[str, Any]:
        fields = self.obj(key)
        reader = {int: fields.int, str: fields.str, float: fields.number}[kind]
        return {name: reader(name) for name in fields.raw}


@dataclass(frozen=True)
class FileEntry:
    """A file of the folder with its size and sha256, as checked by :meth:`ModelFolder.verify`."""

    file: str
    size: int
    sha256: str

    @classmethod
    def of(cls, folder: Path, name: str) -> "FileEntry":
        path = folder / name
        return cls(name, path.stat().st_size, sha256_of(path))

    @classmethod
    def read(cls, fields: _Fields) -> "FileEntry":
        return cls(fields.file_name(), fields.int("size"), fields.sha256())


@dataclass(frozen=True)
class Source:
    """Where the weights and the vocabulary came from."""

    model: str
    revision: str | None
    random_weights: bool
    seed: int | None
    weights_file: str | None
    tokenizer: str

    @classmethod
    def read(cls, f: _Fields) -> "Source":
        return cls(f.str("model"), f.str("revision", optional=True), f.bool("random_weights"), f.int("seed", optional=True),
                   f.str("weights_file", optional=True), f.str("tokenizer"))


@dataclass(frozen=True)
class Architecture:
    """The ALBERT config values the runtime and the benchmarks need."""

    model_type: str
    hidden_size: int
    embedding_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    type_vocab_size: int
    max_position_embeddings: int
    hidden_act: str

    @classmethod
    def read(cls, f: _Fields) -> "Architecture":
        sizes = {name: f.int(name, minimum=1) for name in ("hidden_size", "embedding_size", "num_hidden_layers",
                                                            "num_attention_heads", "intermediate_size", "vocab_size",
                                                            "type_vocab_size", "max_position_embeddings")}
        return cls(model_type=f.choice("model_type", ("albert",)), hidden_act=f.str("hidden_act"), **sizes)


@dataclass(frozen=True)
class TokenizerSettings:
    """tokenizer.json and how the runtime frames and pads its ids."""

    file: str
    size: int
    sha256: str
    max_length: int
    do_lower_case: bool
    keep_accents: bool
    remove_space: bool
    special_ids: dict[str, int]
    special_tokens: dict[str, str]

    @property
    def entry(self) -> FileEntry:
        return FileEntry(self.file, self.size, self.sha256)

    @classmethod
    def read(cls, f: _Fields, vocab_size: int) -> "TokenizerSettings":
        entry = FileEntry.read(f)
        ids, tokens = f.mapping("special_ids", int), f.mapping("special_tokens", str)
        for name in SPECIAL_TOKENS:
            if name not in ids or not 0 <= ids[name] < vocab_size:
                raise f.error(f"{f.path}.special_ids.{name}", f"an id from 0 to {vocab_size - 1}", ids.get(name))
            if name not in tokens:
                raise f.error(f"{f.path}.special_tokens.{name}", "the token's text", None)
        return cls(entry.file, entry.size, entry.sha256, f.int("max_length", minimum=3), f.bool("do_lower_case"),
                   f.bool("keep_accents"), f.bool("remove_space"), ids, tokens)


@dataclass(frozen=True)
class Validation:
    """How a variant compared with the PyTorch reference when it was exported.

    ``gates`` maps a metric to ``{"at_least": x}`` or ``{"at_most": x}``; ``metrics`` holds every number measured.
    """

    status: str
    forced: bool = False
    reason: str | None = None
    provider: str | None = None
    device: str | None = None
    gates: dict[str, dict[str, float]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def read(cls, f: _Fields) -> "Validation":
        gates = {}
        for metric in f.obj("gates").raw:
            bound = f.obj("gates").obj(metric)
            if set(bound.raw) not in ({"at_least"}, {"at_most"}):
                raise bound.error(bound.path, 'an object {"at_least": x} or {"at_most": x}', bound.raw)
            (kind,) = bound.raw
            gates[metric] = {kind: bound.number(kind)}
        status = f.choice("status", VALIDATION_STATUSES)
        # every not-validated record says why (the loader's warning shows it); a null there read "not validated: None"
        return cls(status, f.bool("forced"), f.str("reason", optional=status != "not-validated"),
                   f.str("provider", optional=True), f.str("device", optional=True), gates, f.mapping("metrics", float))


@dataclass(frozen=True)
class U8s8Graph:
    """The int8 graph with uint8 x int8 GEMMs (:data:`U8S8_FILE`), and how it compared with the uint8 x uint8 one
    at export: ``validation`` is passed, or not-validated where the exporting CPU's uint8 x int8 product saturates."""

    file: str
    size: int
    sha256: str
    validation: Validation

    @property
    def entry(self) -> FileEntry:
        return FileEntry(self.file, self.size, self.sha256)

    @classmethod
    def read(cls, f: _Fields) -> "U8s8Graph":
        entry = FileEntry.read(f)
        validation = Validation.read(f.obj("validation"))
        if validation.status == "failed":  # the export refuses to write one that failed: this manifest was edited
            raise f.error(f"{f.path}.validation.status", '"passed" or "not-validated"', validation.status)
        return cls(entry.file, entry.size, entry.sha256, validation)


@dataclass(frozen=True)
class VariantEntry:
    """One ONNX graph of the folder (int8: with its uint8 x int8 twin, ``u8s8``, where the export wrote one)."""

    file: str
    size: int
    sha256: str
    devices: tuple[str, ...]
    fused_ops: dict[str, int]
    validation: Validation
    quantization: dict[str, Any] | None = None
    u8s8: U8s8Graph | None = None

    @property
    def entry(self) -> FileEntry:
        return FileEntry(self.file, self.size, self.sha256)

    @classmethod
    def read(cls, f: _Fields) -> "VariantEntry":
        entry = FileEntry.read(f)
        devices = f.strings("devices")
        if not devices or any(device not in ("cpu", "cuda") for device in devices):
            raise f.error(f"{f.path}.devices", 'a non-empty list of "cpu"/"cuda"', devices)
        quantization = f.obj("quantization").raw if f.raw.get("quantization") is not None else None
        u8s8 = U8s8Graph.read(f.obj("u8s8")) if f.raw.get("u8s8") is not None else None  # absent in folders before 2026-12-02
        if u8s8 is not None and (u8s8.file != U8S8_FILE or (quantization or {}).get("gemm") != INT8_GEMM):
            raise f.error(f"{f.path}.u8s8", f"the uint8 x int8 twin {U8S8_FILE!r} of a {INT8_GEMM} int8 graph", f.raw.get("u8s8"))
        return cls(entry.file, entry.size, entry.sha256, tuple(devices), f.mapping("fused_ops", int),
                   Validation.read(f.obj("validation")), quantization, u8s8)


@dataclass(frozen=True)
class Manifest:
    """Everything ``manifest.json`` records. Build it in the export step; read it with :meth:`from_json`."""

    created: str
    source: Source
    versions: dict[str, str]
    opset: int
    model: Architecture
    outputs: list[str]
    tokenizer: TokenizerSettings
    variants: dict[str, VariantEntry]
    validation_texts: dict[str, Any]
    export: dict[str, Any]
    inputs: list[str] = field(default_factory=lambda: list(INPUTS))
    padding: str = PADDING

    def to_json(self) -> str:
        """The manifest.json text (format and version first)."""
        # allow_nan=False: NaN is not JSON, and from_json refuses it; a non-finite number here is a bug, never a file
        return json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}, indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str, origin: str) -> "Manifest":
        """Parse and check manifest.json text.

        Args:
            text: The file's text.
            origin: The file's path, for messages.

        Raises:
            ModelFolderError: Not JSON, another format or version, or a field of the wrong type, naming it.
        """
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise ModelFolderError(f"{origin}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
                                   "the file is damaged: re-export the folder") from None
        except (ValueError, RecursionError) as error:  # an int of over 4300 digits; arrays nested too deep
            raise ModelFolderError(f"{origin}: not a manifest albert-onnx can read ({str(error)[:100]}); "
                                   "the file is damaged: re-export the folder") from None
        f = _Fields(raw, "", origin)
        if raw.get("format") != FORMAT:
            raise ModelFolderError(f"{origin}: format={raw.get('format')!r}, expected {FORMAT!r}; pass a folder written by `albert-onnx export`")
        version = raw.get("format_version")
        if type(version) is not int or version not in SUPPORTED_VERSIONS:  # 2.0 == 2 and True == 1: not versions
            raise ModelFolderError(f"{origin}: format_version={raw.get('format_version')!r} is not supported by this albert-onnx "
                                   f"(it reads {', '.join(map(str, SUPPORTED_VERSIONS))}); re-export the model with this version")
        model = Architecture.read(f.obj("model"))
        variants_raw = f.obj("variants")
        variants = {}
        for name in variants_raw.raw:
            if name not in VARIANTS:
                raise ModelFolderError(f"{origin}: variants.{name} is not a variant this albert-onnx knows ({', '.join(VARIANTS)}); re-export the folder")
            variants[name] = VariantEntry.read(variants_raw.obj(name))
            if variants[name].file != VARIANT_FILES[name]:  # the export's names: no manifest points one variant at another's graph
                raise ModelFolderError(f"{origin}: variants.{name}.file is {_short(variants[name].file)}, but variant {name!r}'s graph "
                                       f"is always {VARIANT_FILES[name]!r}; the manifest was edited: restore it or re-export the folder")
            if variants[name].devices != VARIANT_DEVICES[name]:  # fp16 listed for cpu ran the CUDA graph on the CPU
                raise ModelFolderError(f"{origin}: variants.{name}.devices is {_short(list(variants[name].devices))}, but variant "
                                       f"{name!r} always runs on {list(VARIANT_DEVICES[name])}; the manifest was edited: restore it "
                                       "or re-export the folder")
            if name != "int8" and variants[name].u8s8 is not None:
                raise ModelFolderError(f"{origin}: variants.{name}.u8s8 is set, but only int8 has a uint8 x int8 twin; the manifest "
                                       "was edited: re-export the folder")
        if not variants:
            raise ModelFolderError(f"{origin}: variants is empty; re-export the folder")
        inputs, outputs = f.strings("inputs"), f.strings("outputs")
        if tuple(inputs) != INPUTS or "sentence_embedding" not in outputs:
            raise ModelFolderError(f"{origin}: inputs {inputs} / outputs {outputs} are not those of an albert-onnx graph; re-export the folder")
        padding = f.choice("padding", (PADDING,))
        tokenizer = TokenizerSettings.read(f.obj("tokenizer"), model.vocab_size)
        if tokenizer.max_length > model.max_position_embeddings:
            raise ModelFolderError(f"{origin}: tokenizer.max_length={tokenizer.max_length} is over model.max_position_embeddings="
                                   f"{model.max_position_embeddings}, the most positions the graph has; the manifest was edited: re-export the folder")
        if model.hidden_size % model.num_attention_heads:
            raise ModelFolderError(f"{origin}: model.hidden_size={model.hidden_size} is not a multiple of model.num_attention_heads="
                                   f"{model.num_attention_heads}; the manifest was edited: re-export the folder")
        return cls(f.str("created"), Source.read(f.obj("source")), f.mapping("versions", str), f.int("opset", minimum=1), model,
                   outputs, tokenizer, variants, f.obj("validation_texts").raw, f.obj("export").raw, inputs, padding)

    def graph_facts(self) -> dict[str, Any]:
        """What every graph of the folder is stamped with (:data:`STAMP_KEY`)."""
        return graph_facts(self.model, self.tokenizer.max_length, self.tokenizer.special_ids, self.outputs, self.padding)


def graph_facts(model: Architecture, max_length: int, special_ids: dict[str, int], outputs: list[str],
                padding: str = PADDING) -> dict[str, Any]:
    """The manifest facts the runtime computes with, as stamped into every graph under :data:`STAMP_KEY`."""
    return {"model": asdict(model), "max_length": max_length, "special_ids": dict(special_ids), "outputs": list(outputs),
            "padding": padding}


def _cut(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters: a hostile manifest or stamp must not make a megabyte-long error line."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _short(value: object, limit: int = 200) -> str:
    return _cut(repr(value), limit)


def _check_size(path: Path, size: int, entry: FileEntry) -> None:
    if size != entry.size:
        raise ModelFolderError(f"{path}: size {size} bytes, manifest.json says {entry.size}; the file was changed or truncated: re-export")


def _check_digest(path: Path, digest: str, entry: FileEntry) -> None:
    if digest != entry.sha256:
        raise ModelFolderError(f"{path}: sha256 {digest[:12]}... != {entry.sha256[:12]}... in manifest.json; the file was changed: re-export")


_LINK_ERRNOS = {errno.ELOOP, errno.EMLINK, getattr(errno, "EFTYPE", errno.ELOOP)}


def open_regular(path: Path, what: str) -> BinaryIO:
    """``path`` opened for reading if it is a regular file, checked on the open file: a folder replaced after
    :func:`regular_file` looked (an ``export --overwrite`` landing) cannot slip in a FIFO, which would block the read,
    or a link to /dev/zero.

    Raises:
        ModelFolderError: Missing, a link, a directory, a FIFO or another special file.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        descriptor = os.open(path, flags)
    except FileNotFoundError:
        raise _missing(path) from None
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:
            raise _too_long(path) from None
        if error.errno in _LINK_ERRNOS:  # O_NOFOLLOW met a link (Linux, macOS: ELOOP; FreeBSD: EMLINK; NetBSD: EFTYPE)
            raise _a_link(path, what) from None
        if error.errno == errno.ENXIO:  # a socket
            raise _not_regular(path, what) from None
        raise
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise _not_regular(path, what)
    return os.fdopen(descriptor, "rb")


def regular_file(path: Path, what: str) -> Path:
    """``path`` if it is a regular file and not a symbolic link.

    Raises:
        ModelFolderError: Missing, a link, a directory, a FIFO or another special file.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise _missing(path) from None
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:
            raise _too_long(path) from None
        raise
    if stat.S_ISLNK(mode):
        raise _a_link(path, what)
    if not stat.S_ISREG(mode):
        raise _not_regular(path, what)
    return path


def _missing(path: Path) -> ModelFolderError:
    return ModelFolderError(f"{path} is missing; the model folder is incomplete: re-export it")


def _too_long(path: Path) -> ModelFolderError:
    return ModelFolderError(f"{path}: the path is too long for this system ({len(os.fsencode(path))} bytes); move the model "
                            "folder to a shorter path")


def _a_link(path: Path, what: str) -> ModelFolderError:
    return ModelFolderError(f"{path} is a symbolic link; {what} must be a regular file inside the model folder (copy the file instead)")


def _not_regular(path: Path, what: str) -> ModelFolderError:
    return ModelFolderError(f"{path} is not a regular file; {what} must be a regular file (re-export the folder)")


@dataclass(frozen=True)
class ModelFolder:
    """A checked model folder. Use :meth:`load`."""

    path: Path
    manifest: Manifest

    @classmethod
    def load(cls, path: str | Path) -> "ModelFolder":
        """Read and check ``path/manifest.json``.

        Raises:
            ModelFolderError: No such folder or manifest, or a manifest that fails its checks (naming the field).
            TypeError, ValueError: ``path`` is not a str or PathLike, or holds a NUL character.
            OSError: The folder or its manifest may not be read (permission denied), naming it.
        """
        if isinstance(path, str) and path == "":  # Path("") is ".": an unset variable would load the working folder
            raise ModelFolderError(f"folder={path!r} is empty; pass the folder written by `albert-onnx export`")
        folder = arguments.path("folder", path)
        # os.stat, not Path.is_dir/exists: those answer False for a folder this user may not enter ("does not exist")
        try:
            is_folder = stat.S_ISDIR(os.stat(folder).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            raise ModelFolderError(f"folder={str(folder)!r} does not exist; pass a folder written by `albert-onnx export`") from None
        except OSError as error:
            if error.errno not in _PATH_ERRNOS:  # permission denied stays an OSError naming the folder
                raise
            raise ModelFolderError(f"folder={str(folder)!r}: {_PATH_ERRNOS[error.errno]}; pass a folder written by "
                                   "`albert-onnx export`") from None
        if not is_folder:
            raise ModelFolderError(f"folder={str(folder)!r} is not a folder; pass a folder written by `albert-onnx export`")
        manifest_path = folder / MANIFEST
        try:
            os.lstat(manifest_path)
        except FileNotFoundError:
            raise ModelFolderError(f"folder={str(folder)!r} has no {MANIFEST}; pass a folder written by `albert-onnx export`") from None
        except OSError as error:
            if error.errno != errno.ENAMETOOLONG:
                raise
            raise _too_long(manifest_path) from None
        regular_file(manifest_path, MANIFEST)  # by path first: where there is no O_NOFOLLOW (Windows), a link is still refused
        with open_regular(manifest_path, MANIFEST) as handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            raise ModelFolderError(f"{manifest_path} is over {MAX_MANIFEST_BYTES} bytes; not a manifest written by albert-onnx")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ModelFolderError(f"{manifest_path}: not UTF-8 text (byte {error.start}); the file is damaged: re-export the folder") from None
        return cls(folder, Manifest.from_json(text, str(manifest_path)))

    @property
    def variants(self) -> dict[str, VariantEntry]:
        return self.manifest.variants

    @property
    def model(self) -> Architecture:
        return self.manifest.model

    @property
    def tokenizer(self) -> TokenizerSettings:
        return self.manifest.tokenizer

    def file(self, name: str) -> Path:
        """Path of a file of the folder, which must be a regular file (not a link, FIFO or directory).

        Raises:
            ModelFolderError: The file is missing or not a regular file.
        """
        return regular_file(self.path / name, name)

    def variant_path(self, variant: str, u8s8: bool = False) -> Path:
        """The .onnx file of ``variant`` (``u8s8``: the int8 graph's uint8 x int8 twin).

        Raises:
            ModelFolderError: The folder has no such variant or twin, or its file is not a regular file.
        """
        if variant not in self.variants:
            raise ModelFolderError(
                f"variant={variant!r} is not in {self.path} (it has {', '.join(self.variants)}); "
                "choose one of those or re-export with --variants"
            )
        if not u8s8:
            return self.file(self.variants[variant].file)
        twin = self.variants[variant].u8s8
        if twin is None:
            raise ModelFolderError(f"variant={variant!r} of {self.path} has no uint8 x int8 graph (written for int8 since 2026-12-02); "
                                   "re-export the folder")
        return self.file(twin.file)

    def check_pooling(self, pooling: str, given: str) -> None:
        """Refuse the ``pooler`` pooling for a folder exported from a checkpoint without ALBERT's pooler head.

        Args:
            pooling: The pooling asked for.
            given: How the caller spelled it, for the message (``pooling='pooler'``, ``--pooling pooler``).

        Raises:
            ValueError: ``pooler`` asked of a folder with no ``pooler_output``, naming the poolings that work.
        """
        if pooling == "pooler" and "pooler_output" not in self.manifest.outputs:
            raise ValueError(f"{given}: {self.path} has no pooler head (its checkpoint was saved without one, as AlbertForMaskedLM, "
                             "...ForTokenClassification and ...ForQuestionAnswering save it); pick mean, cls or max")

    def pooling_shortfall(self, variant: str, pooling: str) -> str | None:
        """Why ``pooling`` of ``variant`` falls short of what the variant's gate asked of mean pooling at export, or None.

        The gates measure mean pooling. Export also records the centred cosine of the ``cls``, ``max`` and ``pooler``
        vectors (``<pooling>_centred_cosine_mean``): these read one row, or one value per dimension, so no averaging over
        tokens hides int8's per-token error. None where the variant has no centred-cosine gate (fp32 and fused are
        gated on max |delta|; a degenerate reference, see the export's validation), where that pooling's reference
        vectors lie within :data:`SPREAD_MIN` of their mean, or where the folder predates the record.
        """
        check = self.variants[variant].validation
        limit = check.gates.get("centred_cosine_mean", {}).get("at_least")
        value = check.metrics.get(f"{pooling}_centred_cosine_mean")
        spread = check.metrics.get(f"{pooling}_reference_spread", 0.0)
        # below SPREAD_MIN the reference's vectors sit so near their mean that the centred cosine measures rounding alone
        if pooling == "mean" or limit is None or value is None or value >= limit or spread < SPREAD_MIN:
            return None
        exact = [name for name in ("fused", "fp32") if name in self.variants and name != variant]
        instead = (f"load variant {' or '.join(repr(name) for name in exact)} for {pooling} vectors" if exact else
                   "re-export the folder with --variants fused (or fp32) for them")
        return (f"variant {variant!r} of {self.path} is gated on mean pooling; its {pooling!r} vectors were further from PyTorch fp32 "
                f"at export (centred cosine {value:.4f}, below the {limit} that mean pooling had to reach; mean gave "
                f"{check.metrics.get('centred_cosine_mean', float('nan')):.4f}): {instead}, or check {variant} against them on "
                "your own texts")

    def check_int8_gemm(self, variant: str) -> None:
        """Refuse an int8 graph whose GEMMs are not :data:`INT8_GEMM` (they saturate on AVX2-only CPUs).

        Raises:
            ModelFolderError: ``variant`` is int8 and its quantization record lacks ``"gemm": "u8u8"``.
        """
        quantization = self.variants[variant].quantization or {}
        if variant == "int8" and quantization.get("gemm") != INT8_GEMM:
            raise ModelFolderError(f"{self.path}: its int8 graph multiplies uint8 x int8 (gemm={quantization.get('gemm')!r}, written by an "
                                   "older albert-onnx), which ONNX Runtime computes with int16 saturation on CPUs without VNNI (wrong "
                                   "vectors); re-export the folder with this albert-onnx, or load variant='fused'")

    def check_session(self, variant: str, outputs: list[str], metadata: dict[str, str], u8s8: bool = False) -> None:
        """Check a loaded graph against manifest.json: every output it lists, and the graph's stamp (see
        :meth:`check_graph_stamp`); what the loader and ``info`` both ask of a graph.

        Args:
            variant: The variant whose graph was loaded.
            outputs: The session's output names.
            metadata: The graph's ONNX metadata (``session.get_modelmeta().custom_metadata_map``).
            u8s8: The graph loaded was the int8 graph's uint8 x int8 twin.

        Raises:
            ModelFolderError: An output is missing, or the stamp differs from the manifest.
        """
        missing = set(self.manifest.outputs) - set(outputs)
        if missing:
            raise ModelFolderError(f"{self.variant_path(variant, u8s8)} lacks the outputs {sorted(missing)} that manifest.json lists; "
                                   "re-export the folder")
        self.check_graph_stamp(variant, metadata, u8s8)

    def check_graph_stamp(self, variant: str, metadata: dict[str, str], u8s8: bool = False) -> None:
        """Check that ``variant``'s graph was exported with the facts manifest.json states (see :data:`STAMP_KEY`).

        Args:
            variant: The variant whose graph was loaded.
            metadata: The graph's ONNX metadata (``session.get_modelmeta().custom_metadata_map``).
            u8s8: The graph loaded was the int8 graph's uint8 x int8 twin.

        Raises:
            ModelFolderError: The graph has no stamp, or one that differs from the manifest, naming the first
                field that differs and both values.
        """
        path = self.path / (self.variants[variant].u8s8.file if u8s8 else self.variants[variant].file)
        text = metadata.get(STAMP_KEY)
        if text is None:
            raise ModelFolderError(f"{path} carries no {STAMP_KEY!r} metadata, so nothing shows it belongs to this manifest.json; "
                                   "it was replaced or written by another tool: re-export the folder")
        try:
            stamp = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
            raise ModelFolderError(f"{path}: its {STAMP_KEY!r} metadata is not JSON; the file is damaged: re-export the folder") from None
        expected = self.manifest.graph_facts()
        if not isinstance(stamp, dict):
            stamp = {}
        placed = stamp.get("file")  # since 2026-12-03; older graphs lack it
        if placed is not None and placed != path.name:
            raise ModelFolderError(f"{path.name} was exported as {_short(placed)}, another graph of the folder; the file was "
                                   "replaced: re-export the folder")
        # int8 graphs name their product's types since the twin came: whatever the manifest holds, the saturating
        # uint8 x int8 graph must not run in another graph's place (verify=False skips the hashes that would tell)
        found = stamp.get("gemm")
        if variant != "int8" and found is not None:
            raise ModelFolderError(f"{path.name} was exported as an int8 graph (gemm={_short(found)}), not as variant {variant!r}'s graph; "
                                   "the file was replaced: re-export the folder")
        if variant == "int8" and (found is not None or self.variants[variant].u8s8 is not None):  # else: from before the twin
            wanted = "u8s8" if u8s8 else INT8_GEMM
            if found != wanted:
                raise ModelFolderError(f"{path.name} was exported with gemm={_short(found)}, not the {wanted!r} that its place "
                                       "calls for; the file was replaced or the manifest edited: re-export the folder")
        for key, value in expected.items():
            found = stamp.get(key)
            if isinstance(value, dict) and isinstance(found, dict):
                fields = [(f"{key}.{name}", value[name], found.get(name)) for name in value] + [
                    (f"{key}.{name}", None, found[name]) for name in found if name not in value]
            else:
                fields = [(key, value, found)]
            for name, want, got in fields:
                if want != got:
                    where = "tokenizer." + name if name in ("max_length", "special_ids") or name.startswith("special_ids.") else name
                    raise ModelFolderError(f"{MANIFEST} says {_cut(where)}={_short(want)} but {path.name} was exported with {_short(got)}; the manifest "
                                           "was edited or belongs to another export: re-export the folder")

    def verify(self, variant: str) -> None:
        """Check the size and sha256 of the variant's graphs (int8: its uint8 x int8 twin too, when the folder has one)
        and of tokenizer.json against the manifest.

        Raises:
            ModelFolderError: A file is missing, not a regular file, or does not match, naming which.
        """
        self.variant_path(variant)  # raises, naming the variants the folder has
        twin = self.variants[variant].u8s8
        for entry in (self.variants[variant].entry, *([twin.entry] if twin else []), self.tokenizer.entry):
            self.check_file(entry)

    def check_file(self, entry: FileEntry) -> None:
        """Check one file's size and sha256 against its manifest entry.

        Raises:
            ModelFolderError: The file is missing, not a regular file, or does not match, naming it.
        """
        path = self.file(entry.file)
        with open_regular(path, entry.file) as handle:
            _check_size(path, os.fstat(handle.fileno()).st_size, entry)
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        _check_digest(path, digest, entry)

    def read_file(self, entry: FileEntry, verify: bool, most: int) -> bytes:
        """One file's bytes, read once; with ``verify``, checked against its manifest entry.

        What is checked is what is used. A check by path and a second open to load would let a folder replaced in
        between (an ``export --overwrite`` landing) give another model's vectors under this manifest's hashes.

        Args:
            entry: The file, as the manifest lists it.
            verify: Check its size (before reading) and sha256 against the manifest.
            most: A file larger than this is refused before it is read, verified or not (a graph over protobuf's
                2 GiB could not load anyway).

        Raises:
            ModelFolderError: The file is missing, not a regular file, larger than ``most``, or (``verify``) does not
                match, naming it.
        """
        path = self.file(entry.file)
        with open_regular(path, entry.file) as handle:
            size = os.fstat(handle.fileno()).st_size
            if verify:
                _check_size(path, size, entry)
            if size > most:
                raise ModelFolderError(f"{path} is {size} bytes, more than albert-onnx writes there (at most {most}); the file "
                                       "was replaced: re-export the folder")
            data = handle.read(size + 1)  # + 1: a file that grew since is not cut short (read(most) would allocate it all)
        if verify:
            _check_digest(path, hashlib.sha256(data).hexdigest(), entry)
        return data
