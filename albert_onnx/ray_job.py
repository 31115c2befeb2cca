"""Corpus-scale embedding on Ray Data: input -> fixed shards -> one actor pool of AlbertEmbedders -> parquet.

Reading. The driver reads the input itself, in order: .jsonl/.json/.csv/.txt with Python, parquet with pyarrow
(a folder's files in sorted order). Ray Data's readers break what this job promises: ``read_json`` goes
through pandas, which turns the id "007" into 7 and ints next to a null into floats and drops lone surrogates,
and a folder of parquet files comes back in the order its read tasks finish. Reading here gives every row a
stable ordinal (its position in the input), so shard k is always rows ``[k * shard_rows, (k + 1) * shard_rows)``,
in that order; only the shards still to do are put into Ray's object store.

Resuming. Shard k is written to ``part-{k:06d}.parquet`` through a temporary name and a rename, so a finished
file is a finished shard. ``_job.json`` records what makes the vectors (:func:`_fingerprint`) before the first
part is written; a rerun resumes only that same job, skipping finished shards, and refuses any other in one line
(``overwrite=True`` restarts, removing the old job's files only once it has a part of its own to write). The
unfinished shards go through one ``map_batches`` over one actor pool (each actor loads the model once); the
driver writes a shard as soon as its last row is back, so a kill loses at most the shards in flight, and every row
lands in exactly one part. A run holds an exclusive ``flock`` on ``_job.lock`` in the output folder from before it
reads ``_job.json`` to its end, so a second job on the same output is refused instead of mixing its parts into the
first one's.

Rows. Ids keep the input's type: int or str as written in jsonl/json, the column's type in parquet, int in csv
when every id is a plain integer (else str), 0-based line numbers (int) for txt. A missing id, ids of two types
and a repeated id stop the job before anything is embedded: the output is looked up by id. A bad text (missing,
not a str, not valid Unicode) is kept with a null vector and its reason in ``error``, and logged as a warning
on the "albert_onnx" logger; with ``strict`` the first bad row stops the job instead.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import importlib.util
import json
import logging
import os
import re
import signal
import socket
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

try:
    import fcntl
except ImportError:  # Windows: no flock, so two jobs on one output are not told apart there
    fcntl = None  # type: ignore[assignment]

from . import __version__, arguments
from .embedder import LONG_TEXT, PoolingWarning, TruncationWarning, no_variant_for, resolve_variant
from .model_folder import VARIANTS, ModelFolder, ModelFolderError, sha256_of
from .pooling import POOLINGS
from .session import DEVICES, cuda_missing_reason, resolve_device

if TYPE_CHECKING:  # pyarrow comes with the ray extra: imported where it is used, so the CLI loads without it
    import pyarrow as pa

logger = logging.getLogger("albert_onnx")

INPUT_SUFFIXES = (".jsonl", ".json", ".csv", ".txt", ".parquet")
JOB_FILE = "_job.json"
LOCK_FILE = "_job.lock"
JOB_FORMAT = "albert-onnx-ray-job"
JOB_FORMAT_VERSION = 1
STAMP_KEY = b"albert_onnx_job"  # a part's parquet metadata: _job_stamp() of the job that wrote it
_PART = re.compile(r"part-(\d{6,})\.parquet")  # every spelling a job's files may have (see _job_files)
_ORD, _SHARD = "__albert_onnx_row", "__albert_onnx_shard"  # row ordinal in the input, shard index
_TRUNCATED = "__albert_onnx_truncated"  # an actor batch's count of truncated texts, on its first row (0 elsewhere)
_LOGGED_BAD_ROWS = 20  # each bad row is in the parts' error column; the log names the first ones
_BOM = b"\xef\xbb\xbf"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the colours of Ray's tracebacks


@dataclass
class RayJobOptions:
    """One corpus job. :func:`run_ray_job` checks every field before Ray starts (``device='auto'`` with
    onnxruntime-gpu starts it first, to count the cluster's GPUs).

    Attributes:
        folder: Model folder written by ``albert-onnx export``.
        input: A .jsonl, .json, .csv, .txt or .parquet file, or a folder of .parquet files (read in sorted order).
        output: Folder for ``part-*.parquet`` and ``_job.json``: created, or resumed if it holds this same job.
        text_field: Column (field) with the text; not used for .txt (one text per line).
        id_field: Column (field) with the row id; not used for .txt (ids are line numbers from 0).
        pooling, normalize, max_length, long_text: As for ``AlbertEmbedder.encode`` (max_length None: the model's).
        batch_size: Texts per ONNX Runtime call.
        device, variant: As for ``AlbertEmbedder.from_pretrained``; ``auto`` is resolved once, by the driver:
            cuda where its onnxruntime has the CUDA provider, the folder a CUDA graph and the cluster a GPU, else cpu.
        actors, threads_per_actor: The actor pool (None: fit the cluster, see :func:`plan_actors`).
        address: Ray cluster address (None: start Ray in this process unless it is running).
        strict: Stop at the first bad row instead of keeping it with a null vector and an error.
        overwrite: Start over: remove the job files in ``output`` (parts, ``_job.json``; nothing else), once this
            run has its first part to write (a run that fails before that leaves them whole).
        shard_rows: Rows per shard, i.e. per part file: the unit of resuming.
        ray_init_kwargs: More keyword arguments for ``ray.init``.
    """

    folder: str
    input: str
    output: Path
    text_field: str = "text"
    id_field: str = "id"
    pooling: str = "mean"
    batch_size: int = 32
    device: str = "auto"
    variant: str = "auto"
    actors: int | None = None
    threads_per_actor: int | None = None
    address: str | None = None
    strict: bool = False
    shard_rows: int = 2048
    ray_init_kwargs: dict = field(default_factory=dict)
    overwrite: bool = False
    max_length: int | None = None
    normalize: bool = True
    long_text: str = "truncate"


# -- options -------------------------------------------------------------------------------------------


def _check(options: RayJobOptions) -> RayJobOptions:
    """Every option checked through :mod:`albert_onnx.arguments`, with no Ray and no model loaded.

    Returns:
        A copy with ``folder``, ``input`` and ``output`` as Paths.

    Raises:
        TypeError, ValueError: An option of the wrong type or out of range, naming it, its value and the fix.
    """
    if not isinstance(options, RayJobOptions):
        raise TypeError(f"options is a {type(options).__name__}; pass a RayJobOptions")
    # the counts as Python ints and the flags as bools (NumPy's are taken, and would not go into _job.json)
    checked: dict[str, int | bool] = {"batch_size": arguments.count("batch_size", options.batch_size),
              "shard_rows": arguments.count("shard_rows", options.shard_rows)}
    if options.actors is not None:
        checked["actors"] = arguments.count("actors", options.actors)
    if options.threads_per_actor is not None:  # per actor, on the cluster's machines: no local upper bound
        checked["threads_per_actor"] = arguments.count("threads_per_actor", options.threads_per_actor)
    arguments.choice("pooling", options.pooling, POOLINGS)
    arguments.choice("device", options.device, DEVICES)
    arguments.choice("variant", options.variant, ("auto", *VARIANTS))
    checked["normalize"] = arguments.flag("normalize", options.normalize)  # a NumPy bool is taken: as bool into _job.json
    if options.max_length is not None:  # the model's own limit is checked once its folder is read
        checked["max_length"] = arguments.count("max_length", options.max_length, 3)
    arguments.choice("long_text", options.long_text, LONG_TEXT)
    checked["strict"] = arguments.flag("strict", options.strict)
    checked["overwrite"] = arguments.flag("overwrite", options.overwrite)
    text_field = arguments.nonempty_str("text_field", options.text_field)
    id_field = arguments.nonempty_str("id_field", options.id_field)
    if options.address is not None:
        arguments.nonempty_str("address", options.address)
    where = _ray_address(options)
    if where is not None:
        _host_port(*where)  # the form now; whether anything listens there, when Ray starts
    if not isinstance(options.ray_init_kwargs, dict):
        raise TypeError(f"ray_init_kwargs is a {type(options.ray_init_kwargs).__name__}; pass a dict of ray.init keyword arguments")
    folder = arguments.path("folder", options.folder)
    source = arguments.input_path("input", options.input, INPUT_SUFFIXES, folder_of=".parquet")
    output = arguments.output_folder("output", options.output)
    if id_field == text_field and source.suffix.lower() != ".txt":
        raise ValueError(f"id_field and text_field are both {id_field!r}; name the id column and the text column")
    if output.is_symlink() and not output.exists():
        raise ValueError(f"output={str(output)!r} is a symbolic link to nothing (or a loop of links); remove it, or pass a folder")
    if output.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"output={str(output)!r} is inside the model folder {str(folder)!r}; pass an output folder outside it "
                         "(the export refuses to --overwrite a model folder holding other files)")
    if source.is_dir() and output.resolve().is_relative_to(source.resolve()):
        raise ValueError(f"output={str(output)!r} is inside input={str(source)!r}, whose .parquet files are the input; "
                         "pass an output folder outside it")
    return replace(options, folder=folder, input=source, output=output, **checked)


def _input_files(source: Path) -> list[Path]:
    """The input's files in reading order: the file itself, or a folder's .parquet files sorted by relative path
    (names starting with "." or "_" left out, as Arrow and Spark do).

    Raises:
        ValueError: A folder with no .parquet file, or a file that is not a regular file.
    """
    if not source.is_dir():
        if not source.is_file():  # a named pipe would be drained by the fingerprint's read, then block the second
            raise ValueError(f"input={str(source)!r} is not a regular file (a pipe or a device?); the Ray job reads its input "
                             "three times (to fingerprint it, to embed it, to check it did not change meanwhile): write it to "
                             "a file first, or use --engine local")
        return [source]
    files = sorted(path for path in source.rglob("*") if path.suffix.lower() == ".parquet"
                   and path.is_file() and not any(part.startswith((".", "_")) for part in path.relative_to(source).parts))
    if not files:
        raise ValueError(f"input={str(source)!r} is a folder with no .parquet files; pass a file or a folder of .parquet files")
    return files


# -- the job's fingerprint -----------------------------------------------------------------------------


def _fingerprint(options: RayJobOptions, files: list[Path], folder: ModelFolder, variant: str, device: str,
                 max_length: int) -> dict[str, Any]:
    """What makes this job's shards and vectors; a rerun resumes only an equal one.

    The input is recorded by content (name, size and sha256 of each file). Size and mtime would be cheaper but
    miss an edit that keeps the size within the file system's timestamp granularity, or a copy that keeps the
    mtime (``cp -p``, ``rsync -t``); two sequential reads (about 1 GB/s; the second checks, once the job has parsed
    the input, that it did not change meanwhile) are small beside embedding the same bytes (hundreds of texts per
    second per core). The model is recorded by the manifest's sha256 of the variant's
    graph (int8: and of its uint8 x int8 twin, which the actors on VNNI/AMX CPUs run) and of tokenizer.json plus
    the tokenizer settings the runtime applies, the albert-onnx version (tokenizing and pooling code) and the
    versions of the two libraries that turn text into vectors: ``tokenizers`` (a release that splits a text
    differently gives other ids) and ``onnxruntime`` (its kernels and graph rewrites move the floats). Not
    recorded, because the vectors do not depend on them: batch_size (each
    ONNX Runtime call holds one sequence length), actors, threads_per_actor, strict, address.
    """
    entries = _input_entries(options.input, files)
    digest = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()
    txt = options.input.suffix.lower() == ".txt"
    return {
        "input": {"name": options.input.name, "files": entries, "bytes": sum(e["size"] for e in entries), "sha256": digest},
        "id_field": None if txt else options.id_field,
        "text_field": None if txt else options.text_field,
        "shard_rows": options.shard_rows,
        "variant": variant,
        **_model_facts(folder, variant),
        **_library_facts(),
        "device": device,
        "pooling": options.pooling,
        "normalize": options.normalize,
        "max_length": max_length,
        "long_text": options.long_text,
        "albert_onnx": __version__,
    }


def _input_entries(source: Path, files: list[Path]) -> list[dict[str, Any]]:
    """Name (relative to the input), size and sha256 of each input file, as the fingerprint records them."""
    root = source if source.is_dir() else source.parent
    return [{"file": path.relative_to(root).as_posix(), "size": path.stat().st_size, "sha256": sha256_of(path)} for path in files]


def _check_input_unchanged(source: Path, files: list[Path], recorded: list[dict[str, Any]]) -> None:
    """The fingerprint hashed the input before the job parsed it: a file written in between would give vectors of
    other texts under this fingerprint, which a later run with the recorded input would resume as its own.

    Raises:
        ValueError: A file's size or sha256 differs from the fingerprint's, naming it.
    """
    for now, then in zip(_input_entries(source, files), recorded):
        if now != then:
            what = f"size {then['size']} -> {now['size']}" if now["size"] != then["size"] else "same size, other content"
            raise ValueError(f"input={str(source)!r}: {now['file']} changed while this job read it ({what}); nothing was "
                             "written: run the job again once the input is complete")


def _model_facts(folder: ModelFolder, variant: str) -> dict[str, Any]:
    """The fingerprint's record of the model: the variant's graph (and twin) and tokenizer, as the manifest says."""
    twin = folder.variants[variant].u8s8
    return {"graph_sha256": folder.variants[variant].sha256, "twin_sha256": twin.sha256 if twin is not None else None,
            "tokenizer": asdict(folder.tokenizer)}


def _library_facts() -> dict[str, str]:
    """The fingerprint's record of the libraries that make the vectors: this process's, and each actor's (a Ray
    cluster's nodes may have other installs than the driver's)."""
    import onnxruntime
    import tokenizers

    return {"onnxruntime": onnxruntime.__version__, "tokenizers": tokenizers.__version__}


def _shown_fact(key: str, value: object) -> str:
    if key == "input" and isinstance(value, dict):
        return f"input {value.get('name')!r} ({value.get('bytes')} bytes, sha256 {str(value.get('sha256'))[:12]})"
    if key == "tokenizer" and isinstance(value, dict):
        return f"tokenizer.json sha256 {str(value.get('sha256'))[:12]} (max_length {value.get('max_length')})"
    if key == "graph_sha256":
        return f"model graph sha256 {str(value)[:12]}"
    if key == "twin_sha256":
        return f"uint8 x int8 twin sha256 {str(value)[:12]}" if value is not None else "no uint8 x int8 twin"
    return f"{key}={value!r}"


def _finished_parts(output: Path) -> set[int]:
    if not output.is_dir():
        return set()
    return {shard for path in output.iterdir() if (shard := _shard_of(path.name)) is not None and path.is_file()}


def _part_name(shard: int) -> str:
    return f"part-{shard:06d}.parquet"


def _shard_of(name: str) -> int | None:
    """The shard whose part ``name`` is, as :func:`_part_name` spells it (another spelling of a number is a stray
    file, not a shard)."""
    match = _PART.fullmatch(name)
    return int(match.group(1)) if match is not None and name == _part_name(int(match.group(1))) else None


def _refuse_stray_parts(output: Path, shards: int, overwrite: bool) -> None:
    """Parquet files in the output that are none of this job's shards would be read with it (pyarrow, Ray Data and
    pandas read a folder's every .parquet file not named ._*): a part past the job's last shard, another spelling of
    a shard's number (part-0000001.parquet), a file manager's "part-000001 (copy).parquet". With ``overwrite`` the
    old job's part files are removed when this run writes its first part, so only other files count.

    Raises:
        ValueError: Naming them (one line).
    """
    def stray(name: str) -> bool:
        if not name.lower().endswith(".parquet") or name.startswith((".", "_")):
            return False
        if overwrite and _PART.fullmatch(name):
            return False
        shard = _shard_of(name)
        return shard is None or shard >= shards

    names = sorted(path.name for path in output.iterdir() if stray(path.name))
    if names:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise ValueError(f"output {output}/ holds {shown}, which this job of {shards} shards did not write; readers of the folder "
                         "would take them for its rows: move them away")


def _read_record(output: Path) -> Any:
    """``output``/_job.json, parsed.

    Raises:
        FileNotFoundError: There is none.
        ValueError: It cannot be read or parsed (one line).
    """
    try:
        return json.loads((output / JOB_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:  # RecursionError: JSON nested too deep
        raise ValueError(f"output {output}/{JOB_FILE} cannot be read ({error})") from None


def _resumable(output: Path, job: dict[str, Any], overwrite: bool) -> set[int]:
    """The shards already finished for this same job (none with ``overwrite``, or with no part to keep).

    Raises:
        ValueError: ``output`` holds parts of another job (one line naming what changed), or parts with no
            readable ``_job.json`` of albert-onnx's, which not even ``overwrite`` replaces.
    """
    parts = _finished_parts(output)
    if not parts:  # no finished part: nothing to protect, a stale _job.json is simply replaced
        return set()
    fix = "pass overwrite=True (--overwrite) to restart, or another output folder"
    # Without a record of ours, not even overwrite: part files no record claims may be anyone's (an attack found a
    # job's own input among them, deleted by --overwrite).
    theirs = f"so its {len(parts)} part files may not be a job's to replace: move them away, or pass another output folder"
    try:
        recorded = _read_record(output)
    except FileNotFoundError:
        raise ValueError(f"output {output}/ holds {len(parts)} part files but no {JOB_FILE} (another program or an older "
                         f"albert-onnx wrote them), {theirs}") from None
    except ValueError as error:
        raise ValueError(f"{error}, {theirs}") from None
    if not (isinstance(recorded, dict) and recorded.get("format") == JOB_FORMAT):
        raise ValueError(f"output {output}/{JOB_FILE} is not a job record of albert-onnx, {theirs}")
    if overwrite:
        return set()
    old = recorded.get("job")
    if not isinstance(old, dict):
        raise ValueError(f"output {output}/{JOB_FILE} is not a job record of this albert-onnx (an older version wrote it); {fix}")
    changed = [key for key in job if old.get(key) != job[key]] + [key for key in old if key not in job]
    if changed:
        first = changed[0]
        also = f" (also changed: {', '.join(changed[1:])})" if len(changed) > 1 else ""
        if first not in old:  # a fact this albert-onnx records and the one that wrote the parts did not
            raise ValueError(f"output {output}/ holds a job recorded by an older albert-onnx, which did not record {first}; this "
                             f"run has {_shown_fact(first, job.get(first))}, so the parts may differ: {fix}{also}")
        raise ValueError(f"output {output}/ holds a job with {_shown_fact(first, old.get(first))}; this run has "
                         f"{_shown_fact(first, job.get(first))}: {fix}{also}")
    return parts


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON through a temporary name and a rename: ``path`` holds the old record or the new one, whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(data, indent=2) + "\n")
            _sync(handle)
    except OSError as error:  # a write's OSError (no space, quota) names no file: name it, for the one-line report
        tmp.unlink(missing_ok=True)
        raise _naming(error, tmp) from None
    os.replace(tmp, path)
    _sync_folder(path.parent)


def _sync(handle: IO[Any]) -> None:
    """Flush and fsync a file before it is renamed into place (and :func:`_sync_folder` after): without both, a
    power cut or an OS crash can leave the new name with no data (a zero-byte part, which a resume would redo)."""
    handle.flush()
    os.fsync(handle.fileno())


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename in it is on disk. Not on Windows, where a folder cannot be opened so (and
    NTFS journals the rename)."""
    if os.name == "nt":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno != errno.EINVAL:  # a file system that cannot sync a folder
            raise
    finally:
        os.close(descriptor)


def _naming(error: OSError, path: Path) -> OSError:
    """``error`` with ``path`` as its file name (Python's and Arrow's write errors carry none)."""
    if error.filename is not None:
        return error
    code = error.errno or errno.EIO
    return OSError(code, os.strerror(code) if error.errno else str(error), str(path))


def _job_files(output: Path) -> list[Path]:
    """This job's own files in ``output``: parts, their temporary files and the job record (nothing else)."""
    if not output.is_dir():
        return []
    names = re.compile(rf"part-\d{{6,}}\.parquet|\.part-\d{{6,}}\.parquet\.tmp|{re.escape(JOB_FILE)}|\.{re.escape(JOB_FILE)}\.tmp")
    return [path for path in output.iterdir() if names.fullmatch(path.name) and path.is_file()]


def _lock_output(output: Path) -> int | None:
    """Take ``output``/_job.lock for this run: an exclusive ``flock``, which the kernel drops when the process ends
    however it ends, so a lock file a killed run left is simply taken.

    Returns:
        The lock's file descriptor, for :func:`_unlock_output`; None where the filesystem has no flock.

    Raises:
        ValueError: Another running job holds it (one line).
    """
    if fcntl is None:
        return None
    while True:
        try:
            descriptor = os.open(output / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # a failed job that had made the folder removed it just now
            raise ValueError(f"output {output}/ was removed while this job started (a job that had made it failed); "
                             "run this job again") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise ValueError(f"output {output}/ is being written by another job that is still running (it holds {LOCK_FILE}); "
                             "wait for it to finish, or pass another output folder") from None
        except OSError:  # no flock on this filesystem (some network ones): nothing to hold
            os.close(descriptor)
            logger.debug("no flock on %s: a second job on this output would not be refused", output)
            return None
        if os.fstat(descriptor).st_nlink:
            return descriptor
        os.close(descriptor)  # the run that held it removed it after we opened it: take the new one


def _unlock_output(output: Path, descriptor: int | None) -> None:
    """Remove and release ``_job.lock`` (still held, so a job that opened it meanwhile sees it unlinked and retries)."""
    if descriptor is None:
        return
    try:
        (output / LOCK_FILE).unlink(missing_ok=True)
    finally:
        os.close(descriptor)


def _start_output(output: Path, record: dict[str, Any], overwrite: bool) -> None:
    """Clear the old job's files with ``overwrite``, and write this job's record.

    The old parts go first and the record is replaced last, so a crash halfway through leaves the old record with
    some of its own parts, which a rerun resumes or overwrites; never old parts under the new job's record, nor
    parts with no record (which not even overwrite removes).
    """
    if overwrite:
        for path in _job_files(output):
            if path.name != JOB_FILE:
                path.unlink()
    _write_json(output / JOB_FILE, record)


def _clean_up(output: Path, started: bool) -> None:
    """After a failed run that left no finished part: remove the job files it wrote (``started``: it wrote its
    record; before that, the files there are an earlier run's)."""
    if not started or _finished_parts(output):
        return  # finished parts are kept: a rerun resumes from them
    try:
        for path in _job_files(output):
            path.unlink()
    except OSError as error:  # the job's own error is the one to raise; this one is only reported
        logger.warning("could not remove %s after the failed job: %s", output, error)


def _remove_created(created: list[Path]) -> None:
    """Once the run's lock is released: the folders it made, if they are empty (a failed run's; else finished parts
    are kept there, or another job started there meanwhile)."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:  # not empty: kept, and so are the folders above it
            return


# -- reading: rows in input order, ids checked, bad texts marked ------------------------------------------

Where = Callable[[int], str]  # row i of a chunk -> "corpus.jsonl:12", for messages


def _text_problem(text_field: str, text: object, escaped_bytes: bool = False) -> str | None:
    """Why a text cannot be embedded, or None. Arrow cannot hold a lone surrogate, so such a text is a bad row;
    with ``escaped_bytes`` (text decoded with errors="surrogateescape") a surrogate stands for a byte that is
    not UTF-8."""
    if isinstance(text, str):
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as error:
                bad = text[error.start]
                if escaped_bytes and "\udc80" <= bad <= "\udcff":
                    return f"{text_field!r} is not valid UTF-8 (byte 0x{ord(bad) - 0xdc00:02x} at character {error.start})"
                return f"{text_field!r} has a lone surrogate {bad!r} at character {error.start}, which is not valid Unicode"
        return None
    if text is None:
        return f"{text_field!r} is missing"
    return f"{text_field!r} is {arguments.json_type(text)}, not a string"  # only JSON input holds other types: its words


class _Rows:
    """Rows from a Python reader, handed out as Arrow chunks (id, text, error); holds the ids to one type.

    An id must be there and be an int or a str, the same type on every row; a text that cannot be embedded
    becomes null, with its reason in ``error``.
    """

    def __init__(self, id_field: str, text_field: str) -> None:
        self.id_field, self.text_field = id_field, text_field
        self.kind: type | None = None
        self.first = ""
        self.ids: list[int | str] = []
        self.texts: list[str | None] = []
        self.errors: list[str | None] = []
        self.wheres: list[str] = []

    def add(self, row_id: object, text: object, where: str, problem: str | None = None) -> None:
        if row_id is None:
            raise ValueError(f"{where}: {self.id_field!r} is missing; every row needs an id (the output is looked up by id)")
        kind = type(row_id)
        if kind not in (int, str):  # bool is an int to isinstance, but not an id
            raise ValueError(f"{where}: {self.id_field}={row_id!r:.60} is {kind.__name__}; ids must be int or str")
        if self.kind is None:
            self.kind, self.first = kind, where
        elif kind is not self.kind:
            raise ValueError(f"{where}: {self.id_field}={row_id!r} is {kind.__name__}, but the ids before it are "
                             f"{self.kind.__name__} (from {self.first}); write every id as one type")
        if kind is str and _text_problem("id", row_id) is not None:
            raise ValueError(f"{where}: {self.id_field}={row_id!r} is not valid Unicode; fix the id")
        problem = problem or _text_problem(self.text_field, text)
        self.ids.append(row_id)
        self.texts.append(None if problem else text)
        self.errors.append(problem)
        self.wheres.append(where)

    def __len__(self) -> int:
        return len(self.ids)

    def take(self) -> tuple[pa.Table, Where]:
        import pyarrow as pa

        try:
            ids = pa.array(self.ids, pa.int64() if self.kind is int else pa.string())
        except OverflowError:
            row = next(i for i, row_id in enumerate(self.ids) if not -2**63 <= row_id < 2**63)
            raise ValueError(f"{self.wheres[row]}: {self.id_field}={self.ids[row]} does not fit in 64 bits; write the ids as "
                             "strings") from None
        chunk = pa.table({"id": ids, "text": pa.array(self.texts, pa.string()), "error": pa.array(self.errors, pa.string())})
        wheres = self.wheres
        self.ids, self.texts, self.errors, self.wheres = [], [], [], []
        return chunk, wheres.__getitem__


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, bytes) of a file. Lines end at \\n (or \\r\\n) only, and a leading BOM is dropped, as
    the local engine reads them: row i of a .txt is line i + 1."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw[:-1] if raw.endswith(b"\n") else raw
            line = line[:-1] if line.endswith(b"\r") else line
            yield number, line[len(_BOM):] if number == 1 and line.startswith(_BOM) else line


def _txt_rows(path: Path, rows: _Rows) -> Iterator[None]:
    for number, line in _lines(path):
        try:
            text, problem = line.decode("utf-8"), None
        except UnicodeDecodeError as error:
            text, problem = None, f"line is not valid UTF-8 (byte 0x{line[error.start]:02x} at byte {error.start})"
        rows.add(number - 1, text, f"{path.name}:{number}", problem)
        yield


def _record(rows: _Rows, record: object, where: str) -> None:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object with {rows.id_field!r} and {rows.text_field!r}, got {type(record).__name__}")
    text = record.get(rows.text_field)
    null = text is None and rows.text_field in record  # there, but null: "missing" sent users looking for a typo
    rows.add(record.get(rows.id_field), text, where, f"{rows.text_field!r} is null" if null else None)


def _json_rows(path: Path, rows: _Rows) -> Iterator[None]:
    """JSON Lines (.jsonl, and .json that does not start with "["; blank lines skipped), or a .json array."""
    with path.open("rb") as handle:
        head = handle.read(4096).removeprefix(_BOM).lstrip()
    if path.suffix.lower() == ".json" and head.startswith(b"["):
        try:
            records = json.loads(path.read_bytes().decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise ValueError(f"{path.name}: not a JSON array of objects ({str(error)[:100]}); fix the file or write it as JSON Lines") from None
        for index, record in enumerate(records):
            _record(rows, record, f"{path.name} item {index}")
            yield
        return
    for number, line in _lines(path):
        if not line.strip():
            continue
        where = f"{path.name}:{number}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"{where}: not UTF-8 (byte 0x{line[error.start]:02x} at byte {error.start}); save the file as UTF-8") from None
        _record(rows, arguments.json_line(text, where, "each line must be an object"), where)
        yield


def _csv_rows(path: Path, rows: _Rows) -> Iterator[None]:
    """A CSV file with a header row; cells are str (an empty id cell is a missing id), bytes that are not UTF-8
    make a bad text (surrogateescape carries them to :func:`_text_problem`)."""
    limit = csv.field_size_limit()
    csv.field_size_limit(1 << 30)  # one text may be long; the module's default stops at 128 KiB
    try:
        with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
            # strict: an unclosed quote is an error, not one text that swallows every row after it
            reader = csv.reader(handle, strict=True)
            header = _csv_row(reader, path)
            if header is None:
                raise ValueError(f"{path.name} is empty; a CSV input needs a header row naming {rows.id_field!r} and {rows.text_field!r}")
            for name in (rows.id_field, rows.text_field):
                if name not in header:
                    raise ValueError(f"{path.name} has no column {name!r} (columns: {header}); pass id_field/text_field (--id-field/--text-field)")
            id_at, text_at = header.index(rows.id_field), header.index(rows.text_field)
            while (row := _csv_row(reader, path)) is not None:
                if not row:
                    continue  # a blank line
                row_id = row[id_at] if id_at < len(row) and row[id_at] != "" else None
                text = row[text_at] if text_at < len(row) else None
                rows.add(row_id, text, f"{path.name}:{reader.line_num}", _text_problem(rows.text_field, text, escaped_bytes=True))
                yield
    finally:
        csv.field_size_limit(limit)


def _csv_row(reader: Any, path: Path) -> list[str] | None:
    """The next row (None at the end); a malformed row is a ValueError naming the file and line."""
    try:
        return next(reader, None)
    except csv.Error as error:
        raise ValueError(f"{path.name}:{reader.line_num}: not valid CSV ({error}); a quote opened and not closed, or a "
                         "line break inside a field that is not quoted: fix the file") from None


def _python_chunks(path: Path, options: RayJobOptions) -> Iterator[tuple[pa.Table, Where]]:
    rows = _Rows(options.id_field, options.text_field)
    read = {".txt": _txt_rows, ".csv": _csv_rows}.get(path.suffix.lower(), _json_rows)
    for _ in read(path, rows):
        if len(rows) >= options.shard_rows:
            yield rows.take()
    if len(rows):
        yield rows.take()


def _parquet_chunks(files: list[Path], root: Path, options: RayJobOptions) -> Iterator[tuple[pa.Table, Where]]:
    """Parquet files in order; the id column keeps its type (integer or string, one type in every file)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    id_type = None
    for path in files:
        name = path.relative_to(root).as_posix()
        try:
            handle = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as error:
            raise ValueError(f"{name}: not a readable parquet file ({str(error)[:120]}); fix or remove it") from None
        columns = handle.schema_arrow.names
        for column in (options.id_field, options.text_field):
            if column not in columns:
                raise ValueError(f"{name} has no column {column!r} (columns: {columns}); pass id_field/text_field (--id-field/--text-field)")
        offset = 0
        for batch in _batches(handle, name, options):
            ids, texts = (_decoded(batch.column(column)) for column in (options.id_field, options.text_field))
            if not (pa.types.is_integer(ids.type) or pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
                raise ValueError(f"{name}: column {options.id_field!r} is {ids.type}; ids must be integers or strings")
            if id_type is None:
                id_type, first = ids.type, name
            elif ids.type != id_type:
                raise ValueError(f"{name}: column {options.id_field!r} is {ids.type}, but it is {id_type} in {first}; write one id type")
            if ids.null_count:
                row = offset + pc.indices_nonzero(ids.is_null())[0].as_py()
                raise ValueError(f"{name} row {row}: {options.id_field!r} is missing (null); every row needs an id (the output is looked up by id)")
            if not pa.types.is_integer(ids.type) and not _valid_utf8(ids):
                raise ValueError(f"{name}: column {options.id_field!r} holds strings that are not valid UTF-8; fix the ids")
            texts, errors = _arrow_texts(texts, options.text_field, name)
            yield pa.table({"id": ids, "text": texts, "error": errors}), (lambda i, name=name, offset=offset: f"{name} row {offset + i}")
            offset += batch.num_rows


def _batches(handle, name: str, options: RayJobOptions) -> Iterator[pa.RecordBatch]:
    """The id and text columns of a parquet file, ``shard_rows`` rows at a time; a damaged page names the file."""
    import pyarrow as pa

    batches = handle.iter_batches(batch_size=options.shard_rows, columns=[options.id_field, options.text_field])
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as error:
            raise ValueError(f"{name}: cannot be read past this point ({str(error)[:120]}); the file is damaged: fix or remove it") from None
        yield batch


def _decoded(array: pa.Array) -> pa.Array:
    """A dictionary column decoded, and Arrow's other string types (large_string, string_view) as plain string:
    one logical type, whichever writer made the file."""
    import pyarrow as pa

    array = array.dictionary_decode() if hasattr(array, "dictionary_decode") else array
    return array.cast(pa.string()) if array.type in (pa.large_string(), pa.string_view()) else array


def _valid_utf8(array: pa.Array) -> bool:
    import pyarrow as pa

    try:
        array.validate(full=True)  # checks every string's UTF-8
    except pa.ArrowInvalid:
        return False
    return True


def _arrow_texts(texts: pa.Array, text_field: str, name: str) -> tuple[pa.Array, pa.Array]:
    """(texts as string, null where bad; errors) for a parquet text column: nulls and invalid UTF-8 are bad rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_null(texts.type):
        texts = pa.nulls(len(texts), pa.string())
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        raise ValueError(f"{name}: column {text_field!r} is {texts.type}, not text; pass text_field (--text-field) naming a string column")
    errors: list[str | None] = [f"{text_field!r} is null" if null else None for null in texts.is_null().to_pylist()]
    if not _valid_utf8(texts):  # rare: find the rows, one by one
        for index in range(len(texts)):
            try:
                texts[index].as_py()
            except UnicodeDecodeError as error:
                errors[index] = f"{text_field!r} is not valid UTF-8 (byte 0x{error.object[error.start]:02x} at byte {error.start})"
    bad = pa.array([error is not None for error in errors], pa.bool_())
    clean = pc.if_else(bad, pa.scalar(None, texts.type), texts)  # a bad row's text is null: the actors skip it
    return clean.cast(pa.string()), pa.array(errors, pa.string())


@dataclass
class _Corpus:
    """What reading found: rows per shard, the unfinished shards in Ray's object store, the ids' type, counts."""

    sizes: list[int]
    todo: dict[int, Any]  # shard -> ObjectRef of its table (_ORD, _SHARD, id, text, error)
    id_type: pa.DataType
    rows: int
    bad_rows: int
    stamp: str  # _job_stamp() of the job, for its parts' metadata


def _report_bad_rows(chunk: pa.Table, where: Where, strict: bool, seen: int) -> int:
    """Log the chunk's bad rows by id (the first few of the job), or raise on the first with ``strict``.

    Returns:
        How many bad rows the chunk has.
    """
    bad = np.flatnonzero(chunk["error"].is_valid().to_numpy(zero_copy_only=False))
    for index in bad:
        row_id, error = chunk["id"][int(index)].as_py(), chunk["error"][int(index)].as_py()
        if strict:
            raise ValueError(f"row id={row_id!r:.60} ({where(int(index))}): {error} (strict=True: fix the row, or run without "
                             "strict to keep bad rows with a null vector and the reason in the error column)")
        if seen < _LOGGED_BAD_ROWS:
            logger.warning("bad row id=%.60r (%s): %s", row_id, where(int(index)), error)
        seen += 1
    return len(bad)


def _unique_ids(ids: pa.ChunkedArray, id_field: str) -> None:
    """Raises ValueError naming a repeated id and its first two rows (the output is looked up by id)."""
    import pyarrow.compute as pc

    if len(pc.unique(ids)) == len(ids):
        return
    counts = pc.value_counts(ids)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    value = repeated[0]["values"].as_py()  # value_counts keeps first-seen order: the earliest repeated id
    rows = pc.indices_nonzero(pc.equal(ids.combine_chunks(), repeated[0]["values"])).to_pylist()
    more = f"; {len(repeated) - 1} more ids repeat" if len(repeated) > 1 else ""
    raise ValueError(f"{id_field}={value!r:.60} is on rows {rows[0]} and {rows[1]} of the input (counting from 0){more}: "
                     "give every row its own id, or the output cannot say which vector is whose")


def _final_id_type(ids: pa.ChunkedArray, csv_input: bool) -> pa.DataType:
    """The ids' type in the output. CSV cells are text: ids are int when every one is a plain integer that
    reads back the same ("42", "-7"; not "007" or "+1", which stay str so that no two ids merge)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if csv_input and len(ids) and pc.all(pc.match_substring_regex(ids, r"^(0|-?[1-9][0-9]{0,18})$")).as_py():
        try:
            ids.cast(pa.int64())
            return pa.int64()
        except (pa.ArrowInvalid, OverflowError):  # 19 digits past 2**63: stays str
            return ids.type
    return ids.type


def _job_stamp(job: dict[str, Any]) -> str:
    """sha256 of a job's fingerprint: each part carries it in its parquet metadata (:data:`STAMP_KEY`)."""
    return hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()


def _part_damage(path: Path, ids: pa.ChunkedArray, stamp: str) -> str | None:
    """What is wrong with a finished part, or None: its footer must carry this job's stamp and its shard's row count,
    its id column the shard's ids in order. The vectors are not read (a resume of a big job reads only ids).

    A part is written whole, fsynced and renamed into place, so this catches what happened to it since: a part
    written before albert-onnx fsynced its parts and lost in a crash, a copy from another job or of another shard.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as parquet:
            if (parquet.schema_arrow.metadata or {}).get(STAMP_KEY) != stamp.encode():
                return "was not written by this job (no stamp of its fingerprint, or another's)"
            rows, schema = parquet.metadata.num_rows, parquet.schema_arrow
            if schema.names != ["id", "vector", "error"] or rows != len(ids):
                return f"holds {rows} rows of columns {schema.names}, not this shard's {len(ids)} rows of id, vector, error"
            vector = schema.field("vector").type
            if not (pa.types.is_fixed_size_list(vector) and vector.value_type == pa.float32()
                    and schema.field("error").type == pa.string()):
                return f"has a vector column of {vector} and an error column of {schema.field('error').type}, not a job's types"
            # as text: csv ids become ints in the output when every one is a plain integer (see _final_id_type)
            same = pc.equal(parquet.read(columns=["id"])["id"].cast(pa.string()), ids.cast(pa.string()))
    except (OSError, pa.ArrowException) as error:
        return f"cannot be read ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
    if not same.to_numpy(zero_copy_only=False).all():
        return "holds other ids than this shard's rows"
    return None


def _read(options: RayJobOptions, files: list[Path], done: set[int], put: Callable[[pa.Table], Any], stamp: str) -> _Corpus:
    """Read the input in order, cut it into shards of ``shard_rows`` and ``put`` each unfinished one into Ray.

    A finished shard whose part is damaged (:func:`_part_damage`, against the job's ``stamp``) is taken out of
    ``done``, its part removed (it is this job's), and embedded again.

    Raises:
        ValueError: The input cannot be parsed; a missing, mixed-type or repeated id; with ``strict``, the
            first bad row. Each names the row.
    """
    import pyarrow as pa

    parquet = options.input.is_dir() or options.input.suffix.lower() == ".parquet"
    root = options.input if options.input.is_dir() else options.input.parent
    chunks = _parquet_chunks(files, root, options) if parquet else _python_chunks(options.input, options)
    sizes: list[int] = []
    todo: dict[int, Any] = {}

    def cut(table: pa.Table) -> None:
        shard, start = len(sizes), len(sizes) * options.shard_rows
        sizes.append(table.num_rows)
        if shard in done:
            part = options.output / _part_name(shard)
            damage = _part_damage(part, table["id"], stamp)
            if damage is None:
                return
            logger.warning("%s %s: embedding its %d rows again", part, damage, table.num_rows)
            part.unlink(missing_ok=True)  # a run failing before it is written again leaves no part for the next to check
            done.discard(shard)
        ordinals = np.arange(start, start + table.num_rows, dtype=np.int64)
        # take() copies the rows: a slice would drag its parent's whole buffers into the object store
        table = table.take(pa.array(np.arange(table.num_rows))).append_column(_ORD, pa.array(ordinals))
        todo[shard] = put(table.append_column(_SHARD, pa.array(np.full(table.num_rows, shard, dtype=np.int64))))

    ids, pending, held, bad = [], [], 0, 0
    for chunk, where in chunks:
        bad += _report_bad_rows(chunk, where, options.strict, bad)
        ids.append(chunk["id"])
        pending.append(chunk)
        held += chunk.num_rows
        while held >= options.shard_rows:
            table = pa.concat_tables(pending)
            cut(table.slice(0, options.shard_rows))
            pending, held = [table.slice(options.shard_rows)], held - options.shard_rows
    if held:
        cut(pa.concat_tables(pending))
    if bad > _LOGGED_BAD_ROWS:
        logger.warning("%d more bad rows: each has a null vector and its reason in the error column", bad - _LOGGED_BAD_ROWS)
    all_ids = pa.chunked_array([chunk for array in ids for chunk in array.chunks], ids[0].type) if ids else pa.chunked_array([], pa.int64())
    _unique_ids(all_ids, options.id_field)
    return _Corpus(sizes, todo, _final_id_type(all_ids, options.input.suffix.lower() == ".csv"), len(all_ids), bad, stamp)


# -- embedding -----------------------------------------------------------------------------------------


class _EmbedBatch:
    """The actor: one AlbertEmbedder (one ORT session) per actor, loaded once for the whole job."""

    def __init__(self, folder: str, variant: str, device: str, threads: int, encode: dict[str, Any], model: dict[str, Any]) -> None:
        from albert_onnx import AlbertEmbedder

        self.embedder = AlbertEmbedder.from_pretrained(folder, variant=variant, device=device, threads=threads)
        # the files were checked against the folder's manifest, which may not be the one the job was fingerprinted by:
        # a folder re-exported or replaced while the job runs (or before Ray restarts this actor) would put another
        # model's vectors under this job's record, and a resumed run would mix the two
        installed = _library_facts()
        now = {**_model_facts(self.embedder.folder, variant), **installed}
        changed = [key for key, value in model.items() if now[key] != value]
        libraries = [key for key in changed if key in installed]
        if libraries:  # not the folder: this node's install differs from the driver's
            raise RuntimeError(f"this Ray worker's {', '.join(f'{key} {now[key]}' for key in libraries)} differ from the job's "
                               f"({', '.join(f'{key} {model[key]}' for key in libraries)}): vectors would differ between nodes; "
                               "install the same versions on every node")
        if changed:
            raise ModelFolderError(f"{folder} changed since this job started ({', '.join(changed)} differ); the job's finished parts "
                                   "are of the model it started with: rerun the job (with overwrite to start over with the new model)")
        self.encode = encode  # batch_size, pooling, normalize, max_length, long_text

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Embed one batch; its truncated texts are counted in the ``_TRUNCATED`` column instead of warned here.

        Why a column: a warning here would print once per batch on the actor's worker (or not at all with
        ``log_to_driver=False``); the count travels with the rows, which any re-batching keeps whole, and the
        driver sums it into one line for the job (see :func:`_embed`).
        """
        import pyarrow as pa

        good = batch["text"].is_valid().to_numpy(zero_copy_only=False)  # a bad row's text is null (see _read)
        vectors = np.zeros((batch.num_rows, self.embedder.dim), dtype=np.float32)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TruncationWarning)  # every batch's count, not just the first one's
            vectors[good] = self.embedder.encode(batch["text"].filter(pa.array(good)).to_pylist(), **self.encode)
        truncated = np.zeros(batch.num_rows, dtype=np.int64)
        for record in caught:
            if isinstance(record.message, TruncationWarning):
                truncated[0] += record.message.truncated  # a warning means a text was embedded: there is a row 0
            elif not isinstance(record.message, PoolingWarning):  # the driver warned once for the job
                warnings.warn_explicit(record.message, record.category, record.filename, record.lineno)
        vector = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), self.embedder.dim, mask=pa.array(~good))
        return pa.table({_ORD: batch[_ORD], _SHARD: batch[_SHARD], "id": batch["id"], "vector": vector, "error": batch["error"],
                         _TRUNCATED: truncated})


def _write_shard(output: Path, shard: int, start: int, parts: list[pa.Table], id_type: pa.DataType, stamp: str) -> None:
    """Write one shard in input order, atomically (temporary name, then rename).

    Raises:
        RuntimeError: The rows are not exactly ``start``, ``start + 1``, ... once each (a bug; nothing is written).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables(parts).sort_by(_ORD)
    ordinals = table[_ORD].to_numpy()
    if not np.array_equal(ordinals, np.arange(start, start + len(ordinals))):
        raise RuntimeError(f"shard {shard} came back with rows other than {start}..{start + len(ordinals) - 1} once each; "
                           "nothing of it was written (a bug: please report it)")
    part = pa.table({"id": table["id"].cast(id_type), "vector": table["vector"], "error": table["error"]},
                    metadata={STAMP_KEY: stamp.encode()})
    tmp = output / f".{_part_name(shard)}.tmp"
    try:
        with open(tmp, "wb") as handle:
            pq.write_table(part, handle)
            _sync(handle)
    except OSError as error:  # Arrow's OSError names no file (no space, quota): name it, for the one-line report
        tmp.unlink(missing_ok=True)
        raise _naming(error, tmp) from None
    target = output / _part_name(shard)
    try:
        os.replace(tmp, target)
    except OSError as error:  # a folder put where the part goes: name it, not the temporary file
        tmp.unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror, str(target)) from None
    _sync_folder(output)


def plan_actors(device: str, actors: int | None, threads: int | None, cpus: int, gpus: int) -> tuple[int, int]:
    """Actors and ONNX Runtime threads per actor for a Ray cluster of ``cpus`` CPUs and ``gpus`` GPUs.

    CPU: actors x threads <= cpus, by default one thread per actor (two 1-thread actors beat one 2-thread actor,
    see the README). CUDA: one actor per GPU of the cluster, each holding num_gpus=1, so ``actors`` defaults to
    ``gpus`` and may not exceed it; threads default to 1 (the CPU only runs the graph's shape ops).

    Raises:
        TypeError, ValueError: ``actors``/``threads`` not a positive int; CUDA on a cluster with no GPU or fewer
            GPUs than ``actors``; actors x threads over the CPUs.
    """
    if actors is not None:
        actors = arguments.count("actors", actors)
    if threads is not None:
        threads = arguments.count("threads_per_actor", threads)
    if device == "cuda":
        if gpus < 1:
            raise ValueError("device='cuda' but the Ray cluster has no GPU (device='auto' keeps cuda for a job whose finished parts "
                             "were made there); start Ray on GPU machines (ray start --num-gpus N), or pass device='cpu' (and "
                             "overwrite=True to restart such a job)")
        if actors is not None and actors > gpus:
            raise ValueError(f"actors={actors} but the Ray cluster has {gpus} GPUs and each actor holds one; pass at most {gpus}, or None for one per GPU")
        return actors or gpus, threads or 1
    actors = actors or max(1, cpus // (threads or 1))
    threads = threads or max(1, cpus // actors)
    if actors * threads > cpus:
        raise ValueError(f"actors={actors} x threads_per_actor={threads} > {cpus} CPUs of the Ray cluster; lower one of them "
                         "(the CLI's --actors, --threads)")
    return actors, threads


def _embed(options: RayJobOptions, corpus: _Corpus, model: dict[str, Any], encode: dict[str, Any], facts: dict[str, Any],
           start: Callable[[], None]) -> int:
    """Embed the unfinished shards through one actor pool; write each shard as soon as its last row is back.

    ``start`` (clear the old job's files with overwrite, write this job's record) runs before the first shard is
    written, not before the actors start: an overwrite whose actors cannot load the model (no GPU on the cluster, no
    model folder on a node) leaves the old job whole.

    Texts cut to ``max_length`` are reported once for the whole run, as the local CLI does: one warning on the
    "albert_onnx" logger counting them across every batch and actor.

    Returns:
        Shards written.

    Raises:
        RuntimeError: A shard came back incomplete (a bug; nothing of it is written).
    """
    import pyarrow as pa
    import ray
    from tqdm import tqdm

    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", os.cpu_count() or 1)), int(resources.get("GPU", 0))
    actors, threads = plan_actors(model["device"], options.actors, options.threads_per_actor, cpus, gpus)
    # no more actors than shards left (one block each): an idle actor would only load the model, and Ray Data warns
    actors = min(actors, len(corpus.todo))
    logger.debug("embedding %d shards with %d actors x %d threads on %s", len(corpus.todo), actors, threads, model["device"])
    dataset = ray.data.from_arrow_refs([corpus.todo[shard] for shard in sorted(corpus.todo)])
    embedded = dataset.map_batches(_EmbedBatch, fn_constructor_kwargs={**model, "threads": threads, "encode": encode, "model": facts},
                                   batch_size=options.batch_size * 8, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
                                   **({"num_gpus": 1} if model["device"] == "cuda" else {"num_cpus": threads}))
    collected: dict[int, list[pa.Table]] = {shard: [] for shard in corpus.todo}
    received = dict.fromkeys(corpus.todo, 0)
    written, truncated, texts = 0, 0, 0
    with tqdm(total=sum(corpus.sizes[shard] for shard in corpus.todo), desc="embedded", unit="row", disable=None) as progress, \
            _actor_start_errors(model):
        # the actors finish rows in any order; _write_shard puts each shard back in input order
        for batch in embedded.iter_batches(batch_size=None, batch_format="pyarrow"):
            shards = batch[_SHARD].to_numpy()
            truncated += int(batch[_TRUNCATED].to_numpy().sum())
            texts += batch.num_rows - batch["vector"].null_count  # a bad row has a null vector and was not embedded
            for shard in map(int, np.unique(shards)):
                part = batch.filter(pa.array(shards == shard))
                collected[shard].append(part)
                received[shard] += part.num_rows
                if received[shard] == corpus.sizes[shard]:
                    if not written:
                        start()
                    _write_shard(options.output, shard, shard * options.shard_rows, collected.pop(shard), corpus.id_type, corpus.stamp)
                    written += 1
            progress.update(batch.num_rows)
    if collected:  # every row goes in and comes out of map_batches: a shortfall is a bug, never a silent gap
        raise RuntimeError(f"shards {sorted(collected)} came back incomplete; nothing of them was written, rerun to retry")
    if truncated:  # the same line as ``albert-onnx embed --engine local``
        logger.warning("%d of %d texts exceeded --max-length %d tokens and were truncated; pass --long-text window to embed whole texts",
                       truncated, texts, encode["max_length"])
    return written


def _recorded_device(output: Path) -> str | None:
    """The device of the job whose finished parts ``output`` holds, or None (no parts, or no readable record:
    :func:`_resumable` then says what is wrong)."""
    if not _finished_parts(output):
        return None
    try:
        recorded = _read_record(output)
    except (FileNotFoundError, ValueError):
        return None
    job = recorded.get("job") if isinstance(recorded, dict) else None
    device = job.get("device") if isinstance(job, dict) else None
    return device if device in ("cpu", "cuda") else None


def _job_device(options: RayJobOptions, folder: ModelFolder) -> str:
    """The device of every actor: ``options.device``, or for ``auto`` the in-process rule applied to the cluster.

    ``auto`` is cuda where the driver's onnxruntime has the CUDA provider, the folder a graph for CUDA and the
    cluster a GPU (Ray is started to count them: the driver cannot try a session on the workers' GPUs); else cpu,
    with the reason logged (a warning when only the cluster's GPUs are missing). A rerun into a folder with
    finished parts keeps the device they were made on, where it can, so a finished job does not start Ray and
    an interrupted one is not refused because the cluster changed.

    Raises:
        DeviceUnavailable: ``cuda`` asked for and this onnxruntime has no CUDA provider.
        ModelFolderError, ValueError: ``auto`` falls to cpu and the variant asked for does not run there.
    """
    if options.device != "auto":
        return resolve_device(options.device)
    reason = cuda_missing_reason() or no_variant_for(folder, options.variant, "cuda")
    recorded = None if options.overwrite else _recorded_device(options.output)
    if (recorded == "cuda" and reason is None) or (recorded == "cpu" and no_variant_for(folder, options.variant, "cpu") is None):
        logger.debug("device='auto' runs on %s, the device of the finished parts in %s", recorded, options.output)
        return recorded
    if reason is None:
        import ray

        _start_ray(options)
        if ray.cluster_resources().get("GPU", 0) >= 1:
            return "cuda"
        reason = "the Ray cluster has no GPU (start Ray on GPU machines: ray start --num-gpus N)"
        logger.warning("device='auto' runs on cpu, not cuda: %s", reason)
    else:  # a CPU-only install or folder is normal: DEBUG, as in-process
        logger.debug("device='auto' runs on cpu: %s", reason)
    why_not_cpu = no_variant_for(folder, options.variant, "cpu")
    if why_not_cpu is not None:
        raise (ModelFolderError if options.variant == "auto" else ValueError)(f"{why_not_cpu}, and device='auto' cannot use cuda: {reason}")
    return "cpu"


class ActorStartError(RuntimeError):
    """The embedder actors could not load the model on the cluster (a worker's setup: its CUDA, its copy of the
    model folder, its albert-onnx); the message is the actor's own error, in one line."""


@contextlib.contextmanager
def _actor_start_errors(model: dict[str, Any]) -> Iterator[None]:
    """Turn Ray's report of an actor whose constructor raised (a traceback of Ray's frames around ours) into
    :class:`ActorStartError` naming the actor's own exception."""
    import ray

    try:
        yield
    except ray.exceptions.RayActorError as error:
        if not error.actor_init_failed:
            raise
        lines = [line.strip() for line in _ANSI.sub("", error.error_msg).splitlines() if line.strip()]
        raise ActorStartError(f"the embedder actors could not load {model['variant']} on {model['device']} on the Ray cluster: "
                              f"{lines[-1] if lines else error.error_msg}; every node needs albert-onnx and the model folder at "
                              f"{model['folder']}") from error


ADDRESS_TIMEOUT_S = 5.0
# HOST:PORT or ray://HOST:PORT; an IPv6 host in brackets. Other schemes (Ray's client builders, a dashboard's
# http://) are left to ray.init, which has its own messages for them.
_HOST_PORT = re.compile(r"(?:ray://)?(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):([0-9]{1,5})", re.ASCII)


def _ray_address(options: RayJobOptions) -> tuple[str, str] | None:
    """Where ray.init will connect, with its name for messages: RAY_ADDRESS where ray.init reads it (no address, or
    "auto"), else the address; None: start Ray here."""
    env = os.environ.get("RAY_ADDRESS")
    if options.address in (None, "auto") and env:
        return f"RAY_ADDRESS={env!r}", env
    if options.address is not None:
        return f"address={options.address!r}", options.address
    return None


def _host_port(named: str, address: str) -> tuple[str, int] | None:
    """The host and port to probe; None for Ray's own words and schemes.

    Raises:
        ValueError: ``address`` is not HOST:PORT, ray://HOST:PORT, auto, local or another scheme's URL.
    """
    if address in ("auto", "local") or ("://" in address and not address.startswith("ray://")):
        return None
    match = _HOST_PORT.fullmatch(address)
    if match is None or not 0 < int(match[2]) < 65536:
        raise ValueError(f"{named} is not HOST:PORT (or ray://HOST:PORT, auto, local; an IPv6 host in brackets); pass the "
                         "address `ray status` shows on the head node, or omit it to start Ray here")
    return match[1].strip("[]"), int(match[2])


def _check_reachable(named: str, address: str) -> None:
    """Refuse an address where nothing accepts a TCP connection.

    ray.init retries such an address for minutes, logging a warning every few seconds (measured: still waiting after
    300 s with Ray 2.60), so a mistyped port or a cluster that is down looked like a hang. One connection attempt per
    resolved address, ADDRESS_TIMEOUT_S each (the name lookup itself is the system's). Something else listening there
    passes, and Ray's retries follow.

    Raises:
        ValueError: Nothing accepts a connection there, or the host name does not resolve (one line).
    """
    target = _host_port(named, address)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=ADDRESS_TIMEOUT_S).close()
    except (OSError, UnicodeError) as error:  # refused, unreachable, unknown host, timed out; UnicodeError: an IDNA label
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        host = f"[{target[0]}]" if ":" in target[0] else target[0]
        raise ValueError(f"{named}: nothing accepts connections at {host}:{target[1]} ({reason}); start the cluster there "
                         "(`ray start --head`) and pass the address `ray status` shows, or omit it to start Ray here") from None


def _start_ray(options: RayJobOptions) -> None:
    """Start Ray in this process, or connect to the cluster at ``options.address`` (or RAY_ADDRESS).

    Raises:
        ValueError: Nothing accepts connections at that address, or no Ray cluster answers there (one line).
    """
    import ray

    if not ray.is_initialized():
        where = _ray_address(options)
        if where is not None:
            _check_reachable(*where)
        with _programs_sigterm():
            try:
                ray.init(address=options.address, include_dashboard=False, log_to_driver=False, **options.ray_init_kwargs)
            except ConnectionError as error:
                if where is None:
                    raise
                raise ValueError(f"{where[0]}: no Ray cluster answered there ({' '.join(str(error).split())}); "
                                 "pass the address `ray status` shows on the head node, or omit it to start Ray here") from error


@contextlib.contextmanager
def _programs_sigterm() -> Iterator[None]:
    """Keep a program's own SIGTERM disposition (a handler, as the CLI's, or SIG_IGN) through ray.init and after it.

    ray.init sets a handler of its own (sys.exit(15), which ended the CLI silently with status 15), and the C++ core it
    starts installs Abseil's failure handler, which prints a C++ stack dump and may abort; a program that set neither
    keeps Ray's behaviour. Only from the main thread, where signal handlers are set.
    """
    import ray._private.ray_constants as ray_constants
    import ray._private.utils as ray_utils

    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or previous in (None, signal.SIG_DFL):
        yield
        return
    set_handler, no_dump = ray_utils.set_sigterm_handler, getattr(ray_constants, "RAY_DISABLE_FAILURE_SIGNAL_HANDLER", None)
    try:
        ray_utils.set_sigterm_handler = lambda handler: None
        # this process's core only (Ray's workers keep theirs); it also keeps ray.shutdown() from resetting SIGTERM
        ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
        yield
    finally:
        ray_utils.set_sigterm_handler = set_handler
        if no_dump is None:
            del ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER
        else:
            ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = no_dump
        signal.signal(signal.SIGTERM, previous)  # the C level too, in case anything in ray.init replaced it there


def missing_extra() -> str | None:
    """Why this job cannot run here, when the ray extra (Ray Data, pyarrow) is not installed; else None."""
    missing = [name for name in ("ray", "pyarrow") if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return f"the Ray job needs the ray extra, and {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed: pip install 'albert-onnx[cpu,ray]'"


def run_ray_job(options: RayJobOptions) -> dict[str, int]:
    """Embed a corpus with Ray Data into ``options.output``/part-*.parquet (id, vector, error).

    Returns:
        Counts: ``shards`` (all), ``skipped`` (finished by an earlier run of this job), ``written`` (by this
        run), ``rows``, ``bad_rows`` (in the whole input: each kept with a null vector and its reason in
        ``error``; the first 20 logged by id as warnings on the "albert_onnx" logger). Texts cut to ``max_length``
        are counted in one warning on that logger for the whole run, not one per batch.

    Raises:
        TypeError, ValueError: One line each: a bad option (before Ray starts), a bad model folder, an output
            folder holding another job, an input that cannot be parsed or changed while the job read it, a missing,
            mixed-type or repeated id, or with ``strict`` a bad row (naming it); an ``address`` where no Ray cluster
            answers.
        ActorStartError: The actors could not load the model on the cluster (a RuntimeError, in one line).
        RuntimeError: CUDA asked for and missing; a shard that came back incomplete (a bug).
        ModuleNotFoundError: The ray extra is not installed (naming it).
    """
    why = missing_extra()
    if why is not None:
        raise ModuleNotFoundError(why)
    options = _check(options)
    folder = ModelFolder.load(options.folder)
    limit = folder.tokenizer.max_length
    max_length = limit if options.max_length is None else arguments.count("max_length", options.max_length, 3, limit)
    folder.check_pooling(options.pooling, f"pooling={options.pooling!r}")
    files = _input_files(options.input)
    device = _job_device(options, folder)
    variant = resolve_variant(folder, options.variant, device)
    folder.verify(variant)  # here, in one line, rather than as a traceback from every actor
    shortfall = folder.pooling_shortfall(variant, options.pooling)
    if shortfall is not None:  # once for the job, here: the actors drop theirs
        warnings.warn(PoolingWarning(shortfall), stacklevel=2)
    if device == "cpu":  # load it once here too: a graph that does not match manifest.json fails in one line, before Ray
        from .embedder import AlbertEmbedder

        AlbertEmbedder.from_pretrained(options.folder, variant=variant, device=device, threads=1, verify=False)
    job = _fingerprint(options, files, folder, variant, device, max_length)

    def put(table: pa.Table) -> Any:
        import ray

        _start_ray(options)  # only once there is a shard to embed (or _job_device counted GPUs for a new job)
        return ray.put(table)

    created = [path for path in (options.output, *options.output.parents) if not path.exists()]
    options.output.mkdir(parents=True, exist_ok=True)
    lock, started = None, False
    try:  # a failed or interrupted run: keep finished parts, leave no empty folder behind
        lock = _lock_output(options.output)  # before _job.json is read: what it says holds until this run ends
        done = _resumable(options.output, job, options.overwrite)
        corpus = _read(options, files, done, put, _job_stamp(job))
        _refuse_stray_parts(options.output, len(corpus.sizes), options.overwrite)
        _check_input_unchanged(options.input, files, job["input"]["files"])  # what was read is what was hashed
        counts = {"shards": len(corpus.sizes), "skipped": len(done & set(range(len(corpus.sizes)))), "written": 0,
                  "rows": corpus.rows, "bad_rows": corpus.bad_rows}
        record = {"format": JOB_FORMAT, "format_version": JOB_FORMAT_VERSION,
                  "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "job": job}

        def start() -> None:  # called before this run writes its first part: until then the old job's files stay whole
            nonlocal started
            started = True  # from here the job files there are this run's
            _start_output(options.output, record, options.overwrite)

        if corpus.todo:
            # absolute: an actor's working directory is not the driver's, so a relative folder would not be found there
            model = {"folder": str(Path(options.folder).resolve()), "variant": variant, "device": device}
            encode = {"batch_size": options.batch_size, "pooling": options.pooling, "normalize": options.normalize,
                      "max_length": max_length, "long_text": options.long_text}
            facts = {key: job[key] for key in ("graph_sha256", "twin_sha256", "tokenizer", *_library_facts())}  # the actors check theirs
            counts["written"] = _embed(options, corpus, model, encode, facts, start)
        if not started:
            start()
        _write_json(options.output / JOB_FILE, {**record, "finished": counts})
    except BaseException:
        _clean_up(options.output, started)
        raise
    finally:
        _unlock_output(options.output, lock)  # first: the lock file is the last of this run's files in the folder
        _remove_created(created)  # only empty ones: after a success the record is there
    return counts
