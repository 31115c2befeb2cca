"""The ``albert-onnx`` command: export, embed, info.

Building the parser imports nothing heavy: the export flags are defined here and the export step (torch,
transformers, onnx) is imported only when ``export`` runs. A user error is reported as one line,
``albert-onnx <command>: error: <message>``, with exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import hashlib
import importlib.util
import logging
import os
import re
import secrets
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator, NoReturn, Sequence, TextIO

import numpy as np

try:
    import fcntl
except ImportError:  # Windows: no flock, so temporaries of killed writes are left in place
    fcntl = None  # type: ignore[assignment]

from . import __version__, arguments
from .arguments import DEVICES, LONG_TEXT, NAME_MAX, NO_ONNXRUNTIME
from .model_folder import MANIFEST, VARIANTS, FileEntry, ModelFolder, ModelFolderError, Validation
from .pooling import POOLINGS

USAGE_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command ended by Ctrl-C
TERMINATED = 143  # 128 + SIGTERM (kill, timeout, docker stop)
BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for any tool whose reader went away (`| head -1`)
OWN_LOGGERS = ("albert_onnx", "albert_onnx_export")
# Loggers kept at WARNING while a command runs, so third-party INFO chatter never shows even when something
# configured the root logger at INFO: the root covers ORT's fusion modules, which log as top-level "fusion_utils",
# "onnx_model", ... ("Removed 67 Identity nodes"); torch and transformers set levels on their own loggers.
QUIET_LOGGERS = ("", "onnxruntime", "onnx", "onnxscript", "torch", "transformers")
RAY_ONLY_FLAGS = {"actors": "--actors", "address": "--address", "strict": "--strict", "overwrite": "--overwrite",
                  "id_field": "--id-field"}
RAY_ONLY_SUFFIXES = (".parquet", ".csv", ".json")
LOCAL_SUFFIXES = (".txt", ".jsonl", "")  # compared in lower case; no suffix (a device, a plain name) reads as lines


class CommandError(Exception):
    """A user error the CLI itself found (a path, a flag combination); :func:`main` prints it as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (argparse's default prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- the parser ----------------------------------------------------------------------------------------


def _variant_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(","))
    if not all(name in VARIANTS for name in names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: choose each at most once from {','.join(VARIANTS)}, comma-separated")
    return names


def _folder_path(text: str) -> Path:
    if not text:  # Path("") is ".": an empty argument (an unset shell variable) must not mean the current directory
        raise argparse.ArgumentTypeError("'' names no folder (it would mean the current directory); pass the model folder to create")
    return Path(text)


def _add_export(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="checkpoint -> validated ONNX model folder (needs the export extra)",
                                 description="Export an ALBERT checkpoint to a validated ONNX model folder. "
                                             "Needs: pip install 'albert-onnx[cpu,export]'.")
    export.add_argument("source", help="hub id (albert/albert-base-v2), local HF folder, or a size name with --random-weights")
    export.add_argument("-o", "--output", required=True, type=_folder_path, help="model folder to create")
    export.add_argument("--revision", help="hub revision (branch, tag or commit)")
    export.add_argument("--random-weights", action="store_true", help="seeded random weights from the config (no checkpoint needed)")
    export.add_argument("--seed", type=int, default=0, help="seed for --random-weights (default 0)")
    export.add_argument("--tokenizer", help="folder or hub id with spiece.model, when the source has none")
    export.add_argument("--variants", type=_variant_list, default=VARIANTS, help=f"comma-separated subset of {','.join(VARIANTS)} (default all)")
    export.add_argument("--hidden-states", action="store_true", help="also output every layer's hidden states (for embed --layer)")
    export.add_argument("--validation-texts", type=Path, help="real text for validation: STS-B .csv, .jsonl or .txt")
    export.add_argument("--validation-samples", type=int, default=96, help="how many texts of --validation-texts to validate on (default 96; without --validation-texts, that many of the 64 built-in sentences: all of them by default)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    export.add_argument("--force", action="store_true", help="write variants that fail their accuracy gate (flagged in the manifest)")
    export.set_defaults(run=_export, parser=export)


def _add_embed(commands: argparse._SubParsersAction) -> None:
    embed = commands.add_parser("embed", help="embed texts into a .npy file (or parquet with --engine ray)")
    embed.add_argument("folder", help="model folder written by albert-onnx export")
    embed.add_argument("--input", required=True, help="texts.txt (one text per line), texts.jsonl, or - for stdin; UTF-8 (ray: also .json, .csv, .parquet)")
    embed.add_argument("--output", required=True, help="file to write the (texts, dim) float32 array to in .npy format, "
                                                       "replaced atomically; - for stdout (ray: folder of parquet files)")
    embed.add_argument("--pooling", choices=POOLINGS, default="mean", help="how token vectors become one vector (default mean)")
    embed.add_argument("--device", choices=DEVICES, default="auto",
                       help="auto: cuda when a CUDA session comes up (onnxruntime-gpu and a GPU), else cpu, saying why if CUDA failed; "
                            "ray: cuda when this onnxruntime has CUDA and the cluster a GPU")
    embed.add_argument("--device-id", type=int, help="the GPU to run on (cuda; default 0)")
    embed.add_argument("--cuda-option", action="append", metavar="KEY=VALUE",
                       help="a CUDAExecutionProvider option passed through, e.g. gpu_mem_limit=8589934592 (repeatable)")
    embed.add_argument("--variant", choices=("auto", *VARIANTS), default="auto", help="graph to run (auto: int8 on cpu, fp16 on cuda)")
    embed.add_argument("--batch-size", type=int, default=32, help="texts per ONNX Runtime call (default 32)")
    embed.add_argument("--threads", type=int, help="ONNX Runtime threads (ray: per actor; default: one per core / fit the CPUs)")
    embed.add_argument("--max-length", type=int, help="tokens per sequence, [CLS] and [SEP] included (default: the model's limit)")
    embed.add_argument("--layer", type=int, help="hidden layer to pool, -2 for the second to last; needs a folder exported with --hidden-states")
    embed.add_argument("--long-text", choices=LONG_TEXT, default="truncate", help="texts over --max-length: truncate, or pool over windows")
    embed.add_argument("--no-normalize", action="store_true", help="keep raw (not unit-length) vectors")
    embed.add_argument("--text-field", help="jsonl/json/parquet/csv field with the text (default text)")
    embed.add_argument("--engine", choices=("local", "ray"), default="local", help="local: this process; ray: a Ray Data job over parquet shards")
    embed.add_argument("--id-field", help="ray: column with the row id (default id)")
    embed.add_argument("--actors", type=int, help="ray: embedder actors (default: fit the CPUs, threads x actors <= cores)")
    embed.add_argument("--address", help="ray: the cluster's HOST:PORT, ray://HOST:PORT, auto or local (default: as ray.init, "
                       "RAY_ADDRESS or a cluster running here, else start Ray in-process)")
    embed.add_argument("--strict", action="store_true", help="ray: fail the job on a bad row instead of reporting it")
    embed.add_argument("--overwrite", action="store_true", help="ray: replace what the output folder holds instead of resuming from its finished parts")
    embed.set_defaults(run=_embed, parser=embed)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command; imports nothing of the export step."""
    parser = _Parser(prog="albert-onnx", description="Fast ALBERT embeddings on ONNX Runtime")
    parser.add_argument("--version", action="version", version=f"albert-onnx {__version__}", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{export,embed,info}",
                                     help="what to do; albert-onnx COMMAND --help lists its options")
    _add_export(commands)
    _add_embed(commands)
    info = commands.add_parser("info", help="summarize a model folder's manifest")
    info.add_argument("folder", help="model folder written by albert-onnx export")
    info.set_defaults(run=_info, parser=info)
    return parser


# -- the commands --------------------------------------------------------------------------------------


def _export(args: argparse.Namespace) -> int:
    """``albert-onnx export``: import the export step now (torch, transformers, onnx) and run it.

    Raises:
        CommandError: The export extra is not installed.
    """
    try:
        export_cli = importlib.import_module("albert_onnx_export.cli")
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] in ("albert_onnx", "albert_onnx_export"):
            raise  # one of our own modules is missing: a broken install or a bug, not a missing extra
        raise CommandError(f"needs the export extra: pip install 'albert-onnx[cpu,export]' ({error})") from error
    return export_cli.run(args)


def _embed(args: argparse.Namespace) -> int:
    """``albert-onnx embed``: check the flags that need no model, then run the chosen engine."""
    arguments.count("--batch-size", args.batch_size)
    if args.threads is not None:  # ray: per actor, on the cluster's machines, so only this machine's limit is local
        arguments.count("--threads", args.threads, 1, arguments.max_threads() if args.engine == "local" else None)
    if args.max_length is not None:
        arguments.count("--max-length", args.max_length, 3)
    _check_device(args.device)
    return _embed_ray(args) if args.engine == "ray" else _embed_local(args)


def _embed_local(args: argparse.Namespace) -> int:
    """Embed in this process into one .npy file (or stdout), in input order.

    Raises:
        CommandError: A Ray-only flag, a bad --input or --output, or CUDA asked for and missing.
        ValueError: A flag out of range for this model (--max-length, --layer), or a bad model folder.
    """
    from tqdm import tqdm

    from .embedder import AlbertEmbedder, TruncationWarning

    given = [flag for name, flag in RAY_ONLY_FLAGS.items() if getattr(args, name) is not None and getattr(args, name) is not False]
    if given:
        why = " (a local --output file is always replaced, atomically)" if args.overwrite else ""
        raise CommandError(f"{', '.join(given)}: only with --engine ray{why}")
    cuda = _cuda_settings(args)
    output = _output_file(args.output, args.input, args.folder)  # checked before the work, written after it
    texts = read_texts(args.input, args.text_field)
    try:
        embedder = AlbertEmbedder.from_pretrained(args.folder, variant=args.variant, device=args.device, threads=args.threads, **cuda)
    except RuntimeError as error:  # documented for a CUDA that is not there or not working: the user's setup
        raise CommandError(str(error)) from error
    max_length = embedder.max_length if args.max_length is None else arguments.count("--max-length", args.max_length, 3, embedder.max_length)
    embedder.folder.check_pooling(args.pooling, f"--pooling {args.pooling}")
    if args.layer is not None:
        layers = embedder.folder.model.num_hidden_layers + 1  # the embeddings and every layer's output
        arguments.count("--layer", args.layer, -layers, layers - 1)
        if "hidden_states" not in embedder.folder.manifest.outputs:
            raise CommandError(f"--layer {args.layer}: {args.folder} has no hidden states; re-export it with --hidden-states")
    chunk = min(args.batch_size, 4096) * 8  # progress granularity: a few batches per bar update
    parts = [np.zeros((0, embedder.dim), np.float32)]
    truncated = 0
    with tqdm(total=len(texts), unit="text", file=sys.stderr, disable=len(texts) <= chunk) as bar:
        for start in range(0, len(texts), chunk):
            with warnings.catch_warnings(record=True) as caught:  # one count for the whole input, not one per chunk
                warnings.simplefilter("always", TruncationWarning)
                parts.append(embedder.encode(texts[start : start + chunk], batch_size=args.batch_size, pooling=args.pooling,
                                             layer=args.layer, max_length=max_length, long_text=args.long_text,
                                             normalize=not args.no_normalize))
            for record in caught:
                if isinstance(record.message, TruncationWarning):
                    truncated += record.message.truncated
                else:
                    warnings.warn_explicit(record.message, record.category, record.filename, record.lineno)
            bar.update(len(parts[-1]))
    if truncated:
        logging.getLogger("albert_onnx").warning(f"{truncated} of {len(texts)} texts exceeded --max-length {max_length} tokens and were "
                                                 "truncated; pass --long-text window to embed whole texts")
    vectors = np.concatenate(parts)
    if output is None:
        with _naming_stdout():
            np.save(_WriteAll(sys.stdout.buffer), vectors)
    else:
        write_npy(output, vectors)
    print(f"{len(vectors)} vectors of dim {embedder.dim} -> {output or 'stdout'} ({embedder.variant} on {embedder.device})", file=sys.stderr)
    return 0


def _embed_ray(args: argparse.Namespace) -> int:
    """Embed with a Ray Data job into a folder of parquet parts (``albert_onnx.ray_job``).

    Raises:
        CommandError: --layer, an option this ray_job's RayJobOptions does not have yet, or actors that could not
            load the model on the cluster.
        ValueError: Bad job options (from the job).
    """
    from . import ray_job

    if args.layer is not None:
        raise CommandError("--layer: only with --engine local")
    for flag, value in (("--input", args.input), ("--output", args.output)):
        if value == "":  # Path("") is the current directory: parts would be written (or read) there
            raise CommandError(f"{flag} '' names no file or folder (it would mean the current directory); pass a path")
        if value == "-":  # stdin/stdout for the local engine; here it was read as a file, or made a folder named "-"
            raise CommandError(f"{flag} -: stdin and stdout are for --engine local; the Ray job reads input files and "
                               f"writes a folder of parquet parts: pass {'a file' if flag == '--input' else 'a folder'} (./- for one named -)")
    if args.device_id is not None or args.cuda_option:
        raise CommandError("--device-id/--cuda-option: only with --engine local (Ray gives each actor its own GPU, num_gpus=1)")
    if args.actors is not None:
        arguments.count("--actors", args.actors)
    given = [flag for flag, value in (("--text-field", args.text_field), ("--id-field", args.id_field)) if value is not None]
    if given and Path(args.input).suffix.lower() == ".txt":  # one text per line, ids are line numbers: no fields
        raise CommandError(f"{'/'.join(given)}: --input {args.input!r} is read one text per line (ids are line numbers); "
                           "only .jsonl/.json/.csv/parquet input has fields, so leave them out")
    if args.pooling == "pooler" or args.max_length is not None:  # here, to name the flags; the job checks them again
        folder = ModelFolder.load(args.folder)
        folder.check_pooling(args.pooling, f"--pooling {args.pooling}")
        if args.max_length is not None:
            arguments.count("--max-length", args.max_length, 3, folder.tokenizer.max_length)
    # Options that RayJobOptions may or may not have yet: pass each one it has, refuse a non-default one it lacks.
    fields = {field.name for field in dataclasses.fields(ray_job.RayJobOptions)}
    optional = {"overwrite": ("--overwrite", args.overwrite, False), "max_length": ("--max-length", args.max_length, None),
                "normalize": ("--no-normalize", not args.no_normalize, True), "long_text": ("--long-text", args.long_text, "truncate")}
    extra = {}
    for name, (flag, value, default) in optional.items():
        if name in fields and value is not None:  # max_length None: keep the job's own default
            extra[name] = value
        elif name not in fields and value != default:
            raise CommandError(f"{flag}: not supported by this albert_onnx.ray_job (RayJobOptions has no {name!r})")
    options = ray_job.RayJobOptions(folder=args.folder, input=args.input, output=Path(args.output),
                                    text_field="text" if args.text_field is None else args.text_field,
                                    id_field=args.id_field or "id", pooling=args.pooling, batch_size=args.batch_size, device=args.device,
                                    variant=args.variant, actors=args.actors, threads_per_actor=args.threads, address=args.address,
                                    strict=args.strict, **extra)
    why = ray_job.missing_extra()  # after the flags' own checks, which need no Ray
    if why is not None:
        raise CommandError(why)
    try:
        with _ray_console():
            counts = ray_job.run_ray_job(options)
    except ray_job.ActorStartError as error:  # a worker's setup (its CUDA, its copy of the folder), as a local CUDA error is
        raise CommandError(str(error)) from error
    print(f"{counts['rows']} rows in {counts['shards']} shards: {counts['written']} written, {counts['skipped']} already done, "
          f"{counts['bad_rows']} bad rows -> {args.output}", file=sys.stderr)
    return 0


def _info(args: argparse.Namespace) -> int:
    """``albert-onnx info``: the manifest of a model folder, one line per fact and two per variant."""
    from .session import available_providers

    if sys.stdout is None:  # started with stdout closed (`>&-`): print() would drop every line and exit 0
        raise CommandError("this process has no stdout (it was closed); redirect it to a file or a pipe")
    folder = ModelFolder.load(args.folder)
    with _naming_stdout():  # print's OSError names no file: a full disk or a closed device behind the redirect
        manifest = folder.manifest
        source = manifest.source
        print(f"model folder  {folder.path} (format v2, created {manifest.created})")
        print(f"source        {source.model}" + (f"  [RANDOM WEIGHTS, seed {source.seed}]" if source.random_weights else ""))
        model = manifest.model
        print(f"architecture  hidden {model.hidden_size}, embedding {model.embedding_size}, {model.num_hidden_layers} layers, vocab {model.vocab_size}")
        print(f"outputs       {', '.join(manifest.outputs)}")
        print(f"padding       {manifest.padding} (rows are [CLS] ... [SEP] then padding)")
        print(f"providers     {', '.join(available_providers())}")
        problems = []  # every file that does not match: info shows them all, then fails (`info F && deploy` must stop)

        def checked(entry: FileEntry, graph: tuple[str, bool] | None = None) -> str | None:
            problem = _file_problem(folder, entry, graph)
            problems.extend([problem] if problem is not None else [])
            return problem

        print(f"tokenizer     {checked(folder.tokenizer.entry) or _FILE_MATCHES.format(folder.tokenizer.file)}")
        for name, entry in folder.variants.items():
            ops = ", ".join(f"{k} {v}" for k, v in entry.fused_ops.items() if v)
            print(f"  {name:6s} {entry.size / 1e6:7.1f} MB  [{'/'.join(entry.devices)}]  {_verdict(entry.validation)}")
            print(f"         ops: {ops}")
            others = {pooling: entry.validation.metrics.get(f"{pooling}_centred_cosine_mean") for pooling in ("cls", "max", "pooler")}
            if "centred_cosine_mean" in entry.validation.gates and any(value is not None for value in others.values()):
                # gated on mean pooling; the other poolings' numbers are recorded (the runtime warns where one falls short)
                print(f"         other poolings, centred cosine (not gated): "
                      f"{', '.join(f'{pooling} {value:.4f}' for pooling, value in others.items() if value is not None)}")
            # the verdict is the manifest's; the file may have changed since
            print(f"         {checked(entry.entry, (name, False)) or _FILE_MATCHES.format(entry.file)}")
            if entry.u8s8 is not None:
                from .int8_kernel import u8s8_is_exact

                exact = u8s8_is_exact()
                print(f"         uint8 x int8 twin {entry.u8s8.file}, {entry.u8s8.size / 1e6:.1f} MB: {_verdict(entry.u8s8.validation)}")
                problem = checked(entry.u8s8.entry, (name, True))  # the loader needs the file on every CPU (verify checks it)
                if problem is not None:
                    print(f"         {problem} (int8 {'does not load here' if exact else 'loads here only from Python with verify=False'})")
                else:
                    print(f"         this CPU runs {'this twin (uint8 x int8 is exact here)' if exact else f'{entry.file} (uint8 x int8 saturates here)'}")
        sys.stdout.flush()
    if problems:
        # not all are a re-export's to fix: an unreadable file, or a path too long to open, says its own fix on its line
        raise CommandError(f"{len(problems)} file(s) of {folder.path} fail the loader's checks (shown above); do what each line says, "
                           "or re-export the folder")
    return 0


_FILE_MATCHES = "{}: size and sha256 match manifest.json"


@contextmanager
def _naming_stdout() -> Iterator[None]:
    """Name ``<stdout>`` in an OSError that names no file (ENOSPC from a write names none: a full disk behind a
    redirect); a reader that went away (BrokenPipeError) and errors naming a file of ours go on as they are."""
    try:
        yield
    except OSError as error:
        if isinstance(error, BrokenPipeError) or error.filename is not None:
            raise
        raise OSError(error.errno, error.strerror, "<stdout>") from error


def _file_problem(folder: ModelFolder, entry: FileEntry, graph: tuple[str, bool] | None) -> str | None:
    """Why the loader would refuse a file of the folder, or None: changed, missing or unreadable, or, its bytes being
    the manifest's, not what manifest.json states. A graph (``graph``: its variant and whether it is int8's uint8 x int8
    twin; loaded unoptimized on the CPU, never run) must have its outputs and stamp, tokenizer.json (``graph`` None)
    its special tokens and vocabulary size."""
    from .session import create_session
    from .tokenizer import MAX_TOKENIZER_BYTES, AlbertTokenizer

    try:
        # hashed as a stream, then loaded from the path: reading the bytes once and loading them took 1.05 s and 240 MB
        # on albert-base-v2, against 0.9 s and 185 MB
        folder.check_file(entry)
        if graph is None:  # as AlbertEmbedder._open builds it
            AlbertTokenizer(folder.file(entry.file), folder.tokenizer, folder.model.vocab_size,
                            data=folder.read_file(entry, False, most=MAX_TOKENIZER_BYTES))
        else:
            variant, u8s8 = graph
            session = create_session(folder.file(entry.file), "cpu", threads=1, spin_wait=False, optimize=False)
            folder.check_session(variant, [node.name for node in session.get_outputs()], session.get_modelmeta().custom_metadata_map,
                                 u8s8)
    except ModelFolderError as error:
        return str(error)
    except OSError as error:  # one file it may not read: say so on its line and go on with the others
        return f"{error.filename}: {error.strerror}"
    return None


def _verdict(check: Validation) -> str:
    """A validation record in one phrase: NOT VALIDATED and why, or the status and every gated metric."""
    if check.status == "not-validated":
        return f"NOT VALIDATED: {check.reason}"
    gates = ", ".join(f"{metric}={check.metrics[metric]:.6g} ({'>=' if 'at_least' in bound else '<='} {next(iter(bound.values()))})"
                      for metric, bound in check.gates.items() if metric in check.metrics)
    return f"{check.status.upper()}{' (forced)' if check.forced else ''} on {check.provider}: {gates}"


# -- devices, input and output -------------------------------------------------------------------------


def _cuda_settings(args: argparse.Namespace) -> dict[str, object]:
    """``device_id`` and ``provider_options`` for from_pretrained from --device-id and --cuda-option KEY=VALUE.

    Raises:
        CommandError: A --cuda-option without ``=`` or with an empty key, or either flag with --device cpu.
    """
    settings: dict[str, object] = {}
    if args.device_id is not None:
        settings["device_id"] = arguments.count("--device-id", args.device_id, 0)
    if args.cuda_option:
        options = {}
        for item in args.cuda_option:
            key, equals, value = item.partition("=")
            if not equals or not key.strip():
                raise CommandError(f"--cuda-option {item!r}: pass KEY=VALUE, e.g. --cuda-option gpu_mem_limit=8589934592")
            options[key.strip()] = value.strip()
        settings["provider_options"] = options
    if settings and args.device == "cpu":
        raise CommandError("--device-id/--cuda-option are CUDA settings but --device cpu; drop them, or pass --device cuda or auto")
    return settings


def _check_device(device: str) -> None:
    """Fail early, in one line, when CUDA is asked for and onnxruntime has none (the library raises RuntimeError)."""
    from .session import resolve_device

    try:
        resolve_device(device)
    except RuntimeError as error:
        raise CommandError(str(error)) from error


MAX_LOCAL_INPUT_BYTES = 1 << 30  # the local engine holds every text in memory (several times the file's bytes)


def _read_at_most(stream: BinaryIO, shown: str) -> bytearray:
    """All of ``stream``, in pieces (a read of the whole limit would allocate it up front).

    Raises:
        CommandError: More than :data:`MAX_LOCAL_INPUT_BYTES` (a corpus for ``--engine ray``, or /dev/zero).
    """
    data = bytearray()
    while piece := stream.read(1 << 20):
        data += piece
        if len(data) > MAX_LOCAL_INPUT_BYTES:
            raise CommandError(f"--input {shown} holds more than {MAX_LOCAL_INPUT_BYTES >> 20} MiB (a device such as /dev/zero "
                               "never ends); the local engine holds every text in memory: split the input, or use --engine ray "
                               "for a corpus")
    return data


def read_texts(source: str, field: str | None = None) -> list[str]:
    """Texts from a .txt file (one per line, empty lines included), a .jsonl file (``field`` of each object, default
    ``text``) or ``-`` (stdin).

    Input is strict UTF-8 (a leading BOM is dropped). Lines end at ``\\n`` (or ``\\r\\n``) only, so a form feed
    or U+2028 inside a line stays inside its text and row i of the output is line i + 1 of a .txt file.

    Raises:
        CommandError: The input is missing, a directory, a parquet/csv file, read one text per line while
            ``field`` is given (it would be ignored), not UTF-8 (naming the byte and line), or a jsonl line is not
            JSON, not an object with a str ``field``, or has a lone surrogate (naming the line).
        OSError: The file cannot be read (the error names it).
    """
    if source == "-":
        if sys.stdin is None:  # started with stdin closed (`<&-`)
            raise CommandError("--input -: this process has no stdin (it was closed); pipe the texts in, or pass a file path")
    else:
        path = Path(source)
        if path.is_dir():
            raise CommandError(f"--input {source!r} is a directory; pass a .txt or .jsonl file, or - for stdin")
        if not path.exists():
            raise CommandError(f"--input {source!r} does not exist; pass a .txt or .jsonl file, or - for stdin")
        kind = path.suffix.lower()
        if kind in RAY_ONLY_SUFFIXES:
            raise CommandError(f"--input {source!r}: {path.suffix} is read by --engine ray; locally pass a .txt or .jsonl file")
        if kind not in LOCAL_SUFFIXES:
            raise CommandError(f"--input {source!r}: the suffix {path.suffix!r} names no format this command reads; pass a .txt "
                               "(one text per line) or .jsonl file (rename the file to say which it is), or - for stdin")
    jsonl = source != "-" and Path(source).suffix.lower() == ".jsonl"
    if field is not None and not jsonl:  # a .txt file or stdin: no field to pick
        given = "- (stdin) is" if source == "-" else f"{source!r} is"
        raise CommandError(f"--text-field {field}: --input {given} read one text per line; only a .jsonl file has fields (save "
                           "the records as .jsonl), or leave --text-field out")
    if source == "-":
        name, data = "<stdin>", _read_at_most(sys.stdin.buffer, "- (stdin)")
    else:
        with open(source, "rb") as stream:
            name, data = source, _read_at_most(stream, repr(source))
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as error:
        at = bom + error.start
        line = data.count(b"\n", 0, at) + 1
        raise CommandError(f"{name}: not UTF-8 text: byte {at} (line {line}) is 0x{data[at]:02x}; save the file as UTF-8") from error
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start an empty one
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if jsonl:
        return arguments.jsonl_texts(name, lines, "text" if field is None else field, fix="pass --text-field to name another")
    return lines


def _same_inode(path: Path, stream: TextIO) -> bool:
    try:
        opened = os.fstat(stream.fileno())
    except (OSError, ValueError):  # no file descriptor behind it
        return False
    try:
        found = path.stat()
    except FileNotFoundError:
        return False
    return (opened.st_dev, opened.st_ino) == (found.st_dev, found.st_ino)


def _own_descriptor(output: str) -> int | None:
    """The file descriptor of this process that ``output`` names through Linux's /proc (/dev/stdout, /dev/fd/N,
    /proc/self/fd/N), or None. Such a path resolves to the file behind the descriptor: replacing that file by
    rename would drop what a ``>>`` redirect appends to, and opening it anew would truncate it."""
    own = re.compile(rf"/proc/{os.getpid()}(/task/\d+)?/fd")
    path = os.path.abspath(output)
    for _ in range(40):  # the kernel's own limit on links followed
        folder, name = os.path.split(path)
        if name.isdigit() and own.fullmatch(os.path.realpath(folder)):
            return int(name)
        try:
            link = os.readlink(path)
        except OSError:  # not a link (or not there): no descriptor
            return None
        path = os.path.normpath(os.path.join(folder, link))
    return None


def _output_file(output: str, source: str = "-", folder: str | None = None) -> Path | None:
    """The --output path (None for ``-``, stdout), checked before any work is done.

    Args:
        output: The --output flag.
        source: The --input flag: the output must not overwrite it.
        folder: The model folder: the output must not be written into it (it would replace a graph, or make the
            folder one that ``export --overwrite`` no longer replaces).

    Raises:
        CommandError: It is a directory or ends in a separator, its folder (a symbolic link's target's folder) does
            not exist, it is a loop of links, its name is too long to write beside, it is the input or inside the
            model folder, or it is ``-`` and stdout is a terminal or closed, or it names another of this process's
            file descriptors (/dev/stderr).
    """
    descriptor = _own_descriptor(output)
    if descriptor is not None and descriptor != 1:
        raise CommandError(f"--output {output!r} is this process's file descriptor {descriptor}, not a file to write; pass a "
                           "file path, or - for stdout")
    if output == "-" or descriptor == 1:  # /dev/stdout is stdout: written as - is, appending where it appends
        if sys.stdout is None:  # started with stdout closed (`>&-`)
            raise CommandError(f"--output {output}: this process has no stdout (it was closed); redirect it to a file or a pipe, or pass a file path")
        if sys.stdout.isatty():
            raise CommandError(f"--output {output}: stdout is a terminal; redirect it to a file or a pipe, or pass a file path")
        if source != "-" and _same_inode(Path(source), sys.stdout):  # `1<> in.txt` would overwrite the texts, `>>` append to them
            raise CommandError(f"--output {output}: stdout is redirected to the --input file {source!r}; redirect it elsewhere, so "
                               "the texts are kept")
        return None
    path = Path(output)
    if len(os.fsencode(path.name)) > NAME_MAX:
        raise CommandError(f"--output {output!r}: the file name is over {NAME_MAX} bytes; pass a shorter one")
    if path.is_dir() or output.endswith(("/", os.sep)) or os.path.basename(output) in (".", ".."):
        raise CommandError(f"--output {output!r} is a directory; pass the path of a file to write")
    if path.is_symlink():
        try:
            path.stat()
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise CommandError(f"--output {output!r} is a loop of symbolic links; remove it or pass another path") from None
    target = Path(os.path.realpath(path))  # what write_npy replaces: a link's target, in its folder
    shown = repr(output) if str(target) == os.path.abspath(output) else f"{output!r} (that is {str(target)!r})"
    if not target.parent.is_dir():
        raise CommandError(f"--output {shown}: folder {str(target.parent)!r} does not exist")
    # The write renames over the target's name: the texts are lost if that name is the input's (a hard link's other
    # name keeps them). Through stdin only the inode is known: `--input - < out.txt --output out.txt`.
    if source != "-" and str(target) == os.path.realpath(source):
        raise CommandError(f"--output {shown} is the --input file; pass another path, so the texts are kept")
    if source == "-" and sys.stdin is not None and _same_inode(target, sys.stdin):
        raise CommandError(f"--output {shown} is the file redirected to stdin (--input -); pass another path, so the texts are kept")
    # only a model folder (its manifest there): any other folder is refused as a folder when it is loaded, by name
    if folder is not None and (Path(folder) / MANIFEST).is_file() and target.parent.samefile(folder):
        raise CommandError(f"--output {shown} is inside the model folder {folder!r}; write the vectors elsewhere")
    return path


class _WriteAll:
    """A binary file that np.save can only write() to, and whose write() writes everything or raises.

    Given a real file, numpy writes through C (ndarray.tofile), which reports a short write on a full disk or a
    closed pipe as a bare "N requested and M written" OSError without errno. And BufferedWriter.write returns a
    short count when a pipe's reader goes away mid-write (measured: 65536 of 512000 bytes, no error); the next
    write() raises BrokenPipeError, so keep writing until all is written.
    """

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle

    def write(self, data: bytes) -> int:
        view = memoryview(data).cast("B")
        while view:
            written = self.handle.write(view)
            if not written:  # None or 0: a non-blocking file that takes nothing now; looping would spin forever
                raise OSError(errno.EAGAIN, "the output takes no more bytes (a non-blocking file?)")
            view = view[written:]
        return len(data)


def _temporary_prefix(target: Path) -> str:
    """``.albert-onnx-HASH.``: the same for every writer of ``target``, and short, so any name NAME_MAX allows has a
    temporary beside it (``.NAME.TOKEN.tmp`` was 22 bytes longer than NAME, over the limit for long names)."""
    return f".albert-onnx-{hashlib.sha256(os.fsencode(target.name)).hexdigest()[:16]}."


def _temporary_pattern(target: Path) -> re.Pattern[str]:
    return re.compile(rf"{re.escape(_temporary_prefix(target))}[0-9a-f]{{16}}\.tmp")


def _remove_dead_temporaries(target: Path) -> None:
    """Delete the ``.albert-onnx-HASH.TOKEN.tmp`` files that writers of ``target`` killed mid-write left.

    Each writer holds an exclusive ``flock`` on its temporary file until the rename, and the kernel drops it when the
    process ends however it ends, so a file whose lock can be taken is a dead writer's. Where the filesystem has no
    flock (some network filesystems), nothing can tell, and the files are left alone.
    """
    if fcntl is None:
        return
    pattern = _temporary_pattern(target)
    try:
        names = [name for name in os.listdir(target.parent) if pattern.fullmatch(name)]
    except OSError:
        return  # the write itself will report the folder
    for name in names:
        try:
            descriptor = os.open(target.parent / name, os.O_RDWR)
        except OSError:
            continue  # renamed or removed meanwhile, or not ours to open
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            (target.parent / name).unlink(missing_ok=True)
        except OSError:
            pass  # a live writer holds it, or no flock here
        finally:
            os.close(descriptor)


def _locked_temporary(target: Path) -> tuple[Path, int]:
    """A new ``.albert-onnx-HASH.TOKEN.tmp`` beside ``target``, open for writing and flock-ed (where the filesystem
    can), with ``target``'s permission bits when it exists (a rewrite must not make a private file readable)."""
    try:
        old: os.stat_result | None = target.stat()
    except FileNotFoundError:
        old = None  # a new file: 0o666 and the umask
    while True:
        temporary = target.with_name(f"{_temporary_prefix(target)}{secrets.token_hex(8)}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if old is not None else 0o666)
        if old is not None:
            try:
                if (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                    try:  # like `sed -i`: keep the owner and group where allowed (root; a group the user is in)
                        os.fchown(descriptor, old.st_uid, old.st_gid)
                    except PermissionError:
                        if old.st_gid in os.getgroups():
                            os.fchown(descriptor, -1, old.st_gid)
                os.fchmod(descriptor, old.st_mode & 0o777)  # no setuid/setgid/sticky on a data file
            except BaseException:
                os.close(descriptor)
                temporary.unlink(missing_ok=True)
                raise
        if fcntl is not None:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            except OSError:
                pass  # no flock on this filesystem: cleaners leave every temporary alone there
        # Between open and flock a cleaner may have found the file unlocked and removed it: then take another name.
        if os.fstat(descriptor).st_nlink:
            return temporary, descriptor
        os.close(descriptor)


def write_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` in .npy format to exactly ``path`` (no ``.npy`` appended).

    A new or regular file is written to a temporary file in the same folder (``.albert-onnx-HASH.TOKEN.tmp``, locked while
    written), synced and renamed over ``path``, so ``path`` holds its old content or the whole new array, never part
    of one, even if the process is killed; the next write removes what a killed one left. A device or FIFO
    (/dev/null, a named pipe) is written in place: there is nothing to rename over. A symbolic link is followed, so its target
    is replaced and the link kept.

    Raises:
        OSError: The write failed (a full disk, no permission); the error names ``path``, not the temporary file.
    """
    target = Path(os.path.realpath(path))
    try:
        if path.exists() and not path.is_file():
            with path.open("wb") as handle:
                np.save(_WriteAll(handle), array)
            return
        _remove_dead_temporaries(target)
        temporary, descriptor = _locked_temporary(target)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                np.save(_WriteAll(handle), array)
                handle.flush()
                os.fsync(handle.fileno())
                os.replace(temporary, target)  # still locked: a cleaner never sees this name unlocked
        except BaseException:
            temporary.unlink(missing_ok=True)  # then re-raised: a failed or interrupted write leaves nothing behind
            raise
    except OSError as error:
        # ENOSPC from write() names no file, and open/rename name the temporary: name the one the user asked for
        if error.filename is None or _temporary_pattern(target).fullmatch(os.path.basename(error.filename)):
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise


# -- main ----------------------------------------------------------------------------------------------


class _Handler(logging.StreamHandler):
    """A log handler that lets a closed stdout end the command (quietly, in :func:`main`) instead of printing
    logging's "--- Logging error ---" report for every later line."""

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, BrokenPipeError):
            raise error
        super().handleError(record)


class _OneLine(logging.Formatter):
    """``albert-onnx <command>: warning: <message>``, like the error lines."""

    def __init__(self, command: str) -> None:
        super().__init__()
        self.command = command

    def format(self, record: logging.LogRecord) -> str:
        return f"albert-onnx {self.command}: {record.levelname.lower()}: {' '.join(record.getMessage().split())}"


@contextmanager
def _cli_output(command: str) -> Iterator[None]:
    """For one command: our INFO lines (export progress) on stdout, our warnings and Python warnings as one
    ``albert-onnx <command>: warning:`` line on stderr, third-party loggers at WARNING. Restored afterwards."""
    progress = _Handler(sys.stdout)
    progress.addFilter(lambda record: record.levelno < logging.WARNING)
    progress.setFormatter(logging.Formatter("%(message)s"))
    problems = _Handler(sys.stderr)
    problems.setLevel(logging.WARNING)
    problems.setFormatter(_OneLine(command))
    saved = {name: (logging.getLogger(name).level, logging.getLogger(name).propagate) for name in OWN_LOGGERS + QUIET_LOGGERS}
    for name in OWN_LOGGERS:
        logger = logging.getLogger(name)
        logger.addHandler(progress)
        logger.addHandler(problems)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # a root handler someone else set up would print every line twice
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)

    def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: TextIO | None = None,
                     line: str | None = None) -> None:
        print(f"albert-onnx {command}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            yield
    finally:
        for name, (level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.setLevel(level)
            logger.propagate = propagate
            for handler in (progress, problems):
                logger.removeHandler(handler)


@contextmanager
def _ray_console() -> Iterator[None]:
    """Ray's console output at WARNING, as other third-party loggers', and without Ray Data's stack traces, while a
    job runs; its log files (ray-data.log) keep everything.

    The job shows its own progress bar and reports a failure in one line (an actor that cannot load the model:
    its own error). Ray Data would add a dozen INFO lines and, for that failure, its whole traceback. Its warnings
    and error lines stay (a cluster too small for the actors says so there). What no Python logger holds stays too:
    Ray's C++ core's lines, and the workers' errors Ray's driver prints as "(raylet) ...". A Ray this command
    started is shut down before the command's last line, so none of those come after it.
    """
    ray = importlib.import_module("ray")
    started_here = not ray.is_initialized()
    importlib.import_module("ray.data")  # it sets up its loggers' handlers when imported: ours go after

    def shown(record: logging.LogRecord) -> bool:
        return (record.levelno >= logging.WARNING and not record.name.startswith("ray.data.exceptions")
                # every local Ray this command starts says it; the warning that auth is off stays
                and not record.getMessage().startswith("Token authentication is enabled for this Ray cluster"))

    consoles = [handler for name in ("ray", "ray.data") for handler in logging.getLogger(name).handlers
                if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)]
    for handler in consoles:
        handler.addFilter(shown)
    try:
        yield
    finally:
        try:
            if started_here and ray.is_initialized():
                ray.shutdown()  # its printer of workers' errors runs in a thread, which would write after the error line
        except Exception as error:  # the job's own outcome is what to report; this one only as a warning
            logging.getLogger("albert_onnx").warning("could not shut down Ray after the job: %s", error)
        finally:
            for handler in consoles:
                handler.removeFilter(shown)


def _run(argv: Sequence[str] | None) -> int:
    tokens = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(tokens)
        if extra:  # argparse's own error names the top parser ("albert-onnx: error") even for a flag after the command
            before = tokens[: tokens.index(args.command)] if args.command in tokens else tokens
            (parser if any(token in before for token in extra) else args.parser).error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as done:  # --help and --version (0), or a usage error already printed as one line (2)
        return done.code if isinstance(done.code, int) else USAGE_ERROR
    with _cli_output(args.command):
        try:
            if importlib.util.find_spec("onnxruntime") is None:  # every command runs graphs (export validates them)
                raise CommandError(NO_ONNXRUNTIME)
            return args.run(args)
        except (CommandError, ValueError, TypeError) as error:  # ModelFolderError and ExportError are ValueErrors
            message = str(error)
        except Warning as error:  # -W error / PYTHONWARNINGS=error made one an exception: the user's choice, one line still
            message = f"{error} ({type(error).__name__}, an error under this Python's warnings filter)"
        except OSError as error:
            if error.filename is None:
                raise  # an OSError about no file the user named: a bug or a system failure, keep the traceback
            message = f"{error.filename}: {error.strerror}"
    print(f"albert-onnx {args.command}: error: {' '.join(message.splitlines())}", file=sys.stderr)
    return USAGE_ERROR


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so that it ends a command as Ctrl-C does (what is being written is left
    whole or not at all) instead of at once, or with the C++ stack dump of the handler Ray's core installs."""


def _terminate(signum: int, frame: object) -> NoReturn:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the cleanup the first one starts
    raise _Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``albert-onnx`` command.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 done, 2 a user error (reported in one line on stderr), 130 interrupted (Ctrl-C),
        143 terminated (SIGTERM), 141 stdout closed early.
    """
    if sys.stderr is None:  # started with stderr closed (`2>&-`): print(file=None) would write to stdout, into the vectors
        sys.stderr = open(os.devnull, "w")
    # Only where SIGTERM would kill the process: an ignored one (`trap '' TERM`) or a program's own handler stays.
    # Signal handlers are set from the main thread only.
    ours = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    if ours:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(argv)
    finally:
        if ours:  # main() called in a program of the user's (or a test) gives the default back
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _main(argv: Sequence[str] | None) -> int:
    try:
        status = _run(argv)
        try:
            if sys.stdout is not None:  # None: started with stdout closed
                sys.stdout.flush()  # a reader that went away (`| head -1`) shows up here, inside this try
        except OSError as error:
            if isinstance(error, BrokenPipeError):
                raise
            print(f"albert-onnx: error: <stdout>: {error.strerror}", file=sys.stderr)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the interpreter's own flush would fail again
            return USAGE_ERROR
        return status
    except KeyboardInterrupt as stop:
        # Ctrl-C is the user's choice, not a bug: no traceback. What was being written is left whole or not at all
        # (write_npy's rename, the export's staging folder, the Ray job's part files).
        if isinstance(stop, _Terminated):
            print("albert-onnx: terminated", file=sys.stderr)
            return TERMINATED
        print("albert-onnx: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's own flush at exit does not report the pipe again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
