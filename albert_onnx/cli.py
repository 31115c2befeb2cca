"""The ``albert-onnx`` command: export, embed, info."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .model_folder import ModelFolder
from .pooling import POOLINGS


def read_texts(source: str, field: str = "text") -> list[str]:
    """Texts from a .txt file (one per line), a .jsonl file (``field`` of each object) or ``-`` (stdin lines).

    Raises:
        FileNotFoundError: The input file does not exist.
        ValueError: A jsonl line is not an object with a str ``field`` (names the line).
    """
    if source == "-":
        lines: Iterator[str] | list[str] = sys.stdin.read().splitlines()
        name = "<stdin>"
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"--input {source!r} does not exist; pass a .txt or .jsonl file, or - for stdin")
        lines = path.read_text(encoding="utf-8").splitlines()
        name = source
        if path.suffix == ".jsonl":
            texts = []
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get(field), str):
                    raise ValueError(f"{name}:{number}: expected an object with a str {field!r} field; pass --text-field to name another")
                texts.append(record[field])
            return texts
    return list(lines)


def _embed(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .embedder import AlbertEmbedder

    if args.engine == "ray":
        from .ray_job import RayJobOptions, run_ray_job

        counts = run_ray_job(RayJobOptions(folder=args.folder, input=args.input, output=Path(args.output), text_field=args.text_field,
                                           id_field=args.id_field, pooling=args.pooling, batch_size=args.batch_size, device=args.device,
                                           variant=args.variant, actors=args.actors, threads_per_actor=args.threads,
                                           address=args.address, strict=args.strict))
        print(f"{counts['rows']} rows in {counts['shards']} shards: {counts['written']} written, {counts['skipped']} already done, "
              f"{counts['bad_rows']} bad rows -> {args.output}", file=sys.stderr)
        return 0
    texts = read_texts(args.input, args.text_field)
    embedder = AlbertEmbedder.from_pretrained(args.folder, variant=args.variant, device=args.device, threads=args.threads)
    chunk = args.batch_size * 8
    parts = []
    with tqdm(total=len(texts), unit="text", file=sys.stderr, disable=len(texts) <= chunk) as bar:
        for start in range(0, len(texts), chunk):
            parts.append(embedder.encode(texts[start : start + chunk], batch_size=args.batch_size, pooling=args.pooling,
                                         long_text=args.long_text, normalize=not args.no_normalize))
            bar.update(len(parts[-1]))
    vectors = np.concatenate(parts) if parts else np.zeros((0, embedder.dim), np.float32)
    np.save(args.output, vectors)
    print(f"{len(vectors)} vectors of dim {embedder.dim} -> {args.output} ({embedder.variant} on {embedder.device})", file=sys.stderr)
    return 0


def _info(args: argparse.Namespace) -> int:
    from .session import available_providers

    folder = ModelFolder.load(args.folder)
    manifest = folder.manifest
    source = manifest.source
    print(f"model folder  {folder.path} (format v2, created {manifest.created})")
    print(f"source        {source.model}" + (f"  [RANDOM WEIGHTS, seed {source.seed}]" if source.random_weights else ""))
    model = manifest.model
    print(f"architecture  hidden {model.hidden_size}, embedding {model.embedding_size}, {model.num_hidden_layers} layers, vocab {model.vocab_size}")
    print(f"outputs       {', '.join(manifest.outputs)}")
    print(f"padding       {manifest.padding} (rows are [CLS] ... [SEP] then padding)")
    print(f"providers     {', '.join(available_providers())}")
    for name, entry in folder.variants.items():
        check = entry.validation
        if check.status == "not-validated":
            verdict = f"NOT VALIDATED: {check.reason}"
        else:
            gates = ", ".join(f"{metric}={check.metrics[metric]:.6g} ({'>=' if 'at_least' in bound else '<='} {next(iter(bound.values()))})"
                              for metric, bound in check.gates.items() if metric in check.metrics)
            verdict = f"{check.status.upper()}{' (forced)' if check.forced else ''} on {check.provider}: {gates}"
        ops = ", ".join(f"{k} {v}" for k, v in entry.fused_ops.items() if v)
        print(f"  {name:6s} {entry.size / 1e6:7.1f} MB  [{'/'.join(entry.devices)}]  {verdict}")
        print(f"         ops: {ops}")
    return 0


def _export(args: argparse.Namespace) -> int:
    return importlib.import_module("albert_onnx_export.cli").run(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (export flags load only when the export extra is installed)."""
    parser = argparse.ArgumentParser(prog="albert-onnx", description="Fast ALBERT embeddings on ONNX Runtime")
    commands = parser.add_subparsers(dest="command", required=True)

    export = commands.add_parser("export", help="checkpoint -> validated ONNX model folder (needs the export extra)")
    try:
        importlib.import_module("albert_onnx_export.cli").add_arguments(export)
    except ImportError as error:
        export.add_argument("rest", nargs=argparse.REMAINDER)
        export.set_defaults(missing=error)
    export.set_defaults(func=_export)

    embed = commands.add_parser("embed", help="embed texts into a .npy file (or parquet with --engine ray)")
    embed.add_argument("folder", help="model folder")
    embed.add_argument("--input", required=True, help="texts.txt (a line each), texts.jsonl, or - for stdin (ray: also parquet/csv)")
    embed.add_argument("--output", required=True, help="vectors.npy (ray: output folder of parquet files)")
    embed.add_argument("--pooling", choices=POOLINGS, default="mean")
    embed.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    embed.add_argument("--variant", default="auto", help="fp32, fused, int8, fp16 or auto")
    embed.add_argument("--batch-size", type=int, default=32)
    embed.add_argument("--threads", type=int, help="ONNX Runtime threads (ray: per actor; default: one per core / fit the CPUs)")
    embed.add_argument("--long-text", choices=("truncate", "window"), default="truncate")
    embed.add_argument("--no-normalize", action="store_true", help="keep raw (not unit-length) vectors")
    embed.add_argument("--text-field", default="text", help="jsonl/parquet/csv column with the text")
    embed.add_argument("--id-field", default="id", help="ray: column with the row id")
    embed.add_argument("--engine", choices=("local", "ray"), default="local")
    embed.add_argument("--actors", type=int, help="ray: embedder actors (default: fit the CPUs, threads x actors <= cores)")
    embed.add_argument("--address", help="ray: cluster address (default: start Ray in-process)")
    embed.add_argument("--strict", action="store_true", help="ray: fail the job on a bad row instead of reporting it")
    embed.set_defaults(func=_embed)

    info = commands.add_parser("info", help="summarize a model folder's manifest")
    info.add_argument("folder")
    info.set_defaults(func=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``albert-onnx`` command."""
    import logging

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("albert_onnx", "albert_onnx_export"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    if getattr(args, "missing", None) is not None:
        print(f"albert-onnx export needs the export extra: pip install 'albert-onnx[export]' ({args.missing})", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as error:
        print(f"albert-onnx {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
