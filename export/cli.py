"""``albert-onnx export``: parsed flags -> :class:`ExportOptions` -> :func:`export_model`.

The flags are defined in ``albert_onnx.cli`` (so that building the parser never imports torch); the runtime CLI
imports this module only when ``export`` runs.
"""

from __future__ import annotations

import argparse

from .pipeline import ExportOptions, export_model


def run(args: argparse.Namespace) -> int:
    """Run the export from the flags ``albert_onnx.cli`` parsed.

    Raises:
        ExportError: Bad input, an existing output without --overwrite, or a variant that failed its gate.
    """
    export_model(
        ExportOptions(
            source=args.source,
            output=args.output,
            revision=args.revision,
            random_weights=args.random_weights,
            seed=args.seed,
            tokenizer=args.tokenizer,
            variants=tuple(args.variants),
            hidden_states=args.hidden_states,
            validation_texts=args.validation_texts,
            validation_samples=args.validation_samples,
            overwrite=args.overwrite,
            force=args.force,
        )
    )
    return 0
