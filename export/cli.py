"""``albert-onnx export``: argument parsing for the export step (called by the runtime CLI on demand)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .pipeline import VARIANTS, ExportOptions, export_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the export flags on ``parser``."""
    parser.add_argument("source", help="hub id (albert/albert-base-v2), local HF folder, or a size name with --random-weights")
    parser.add_argument("-o", "--output", required=True, type=Path, help="model folder to create")
    parser.add_argument("--revision", help="hub revision (branch, tag or commit)")
    parser.add_argument("--random-weights", action="store_true", help="seeded random weights from the config (no checkpoint needed)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --random-weights (default 0)")
    parser.add_argument("--tokenizer", help="folder or hub id with spiece.model, when the source has none")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    parser.add_argument("--hidden-states", action="store_true", help="also output every layer's hidden states (for layer=...)")
    parser.add_argument("--validation-texts", type=Path, help="real text for validation: STS-B .csv, .jsonl or .txt")
    parser.add_argument("--validation-samples", type=int, default=96, help="how many texts to validate on (default 96)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--force", action="store_true", help="write variants that fail their accuracy gate")


def run(args: argparse.Namespace) -> int:
    """Run the export from parsed arguments."""
    export_model(
        ExportOptions(
            source=args.source,
            output=args.output,
            revision=args.revision,
            random_weights=args.random_weights,
            seed=args.seed,
            tokenizer=args.tokenizer,
            variants=tuple(v.strip() for v in args.variants.split(",") if v.strip()),
            hidden_states=args.hidden_states,
            validation_texts=args.validation_texts,
            validation_samples=args.validation_samples,
            overwrite=args.overwrite,
            force=args.force,
        )
    )
    return 0
