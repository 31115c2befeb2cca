"""The export pipeline: load -> tokenizer -> fp32 -> fused -> int8 / fp16 -> validate -> write."""

from __future__ import annotations

import datetime as dt
import platform
import resource
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

import onnx

from . import optimize, quantize, to_onnx, tokenizer as tok, validate, write
from .errors import ExportError
from .load import load_albert

VARIANTS = ("fp32", "fused", "int8", "fp16")
VARIANT_FILES = {name: f"model_{name}.onnx" for name in VARIANTS}
VARIANT_DEVICES = {"fp32": ["cpu", "cuda"], "fused": ["cpu", "cuda"], "int8": ["cpu"], "fp16": ["cuda"]}


@dataclass
class ExportOptions:
    """What to export and how. Mirrors the ``albert-onnx export`` flags."""

    source: str
    output: Path
    revision: str | None = None
    random_weights: bool = False
    seed: int = 0
    tokenizer: str | None = None
    variants: tuple[str, ...] = VARIANTS
    hidden_states: bool = False
    per_channel: bool = False
    validation_texts: Path | None = None
    validation_samples: int = 48
    overwrite: bool = False
    force: bool = False
    providers: list[str] = field(default_factory=list)


def _versions() -> dict[str, str]:
    names = ["albert-onnx", "torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "tokenizers", "sentencepiece", "numpy"]
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    found["python"] = platform.python_version()
    return found


def _check_options(options: ExportOptions) -> None:
    unknown = [name for name in options.variants if name not in VARIANTS]
    if unknown or not options.variants:
        raise ExportError(f"variants={','.join(options.variants)!r}: choose from {','.join(VARIANTS)}")
    if options.validation_samples < 1:
        raise ExportError(f"validation_samples={options.validation_samples}: must be at least 1")


def export_model(options: ExportOptions, log: Callable[[str], None] = print) -> Path:
    """Export an ALBERT checkpoint to a validated model folder.

    Args:
        options: Source, output folder and choices.
        log: Receives one progress line per step.

    Returns:
        The finished model folder.

    Raises:
        ExportError: Bad input, an existing output without ``overwrite``, a tokenizer mismatch, or a variant
            that failed its accuracy gate without ``force``.
    """
    import onnxruntime as ort

    _check_options(options)
    started = time.perf_counter()
    steps = 7
    clock = [started]

    def step(index: int, text: str) -> None:
        now = time.perf_counter()
        log(f"[{index}/{steps}] {text} ({now - clock[0]:.1f}s)")
        clock[0] = now

    with write.staging_folder(Path(options.output), options.overwrite) as folder:
        loaded = load_albert(options.source, revision=options.revision, random_weights=options.random_weights, seed=options.seed)
        config = loaded.config
        weights_note = f"RANDOM weights (seed {options.seed}; architecture only)" if loaded.random_weights else "trained weights"
        step(1, f"loaded {options.source} with {weights_note}")

        slow = tok.load_slow_tokenizer(options.tokenizer or options.source, options.revision)
        fast = tok.build_fast_tokenizer(slow)
        fast.save(str(folder / "tokenizer.json"))
        texts = validate.sample_texts(
            validate.read_texts(options.validation_texts) if options.validation_texts else validate.FALLBACK_TEXTS,
            options.validation_samples,
        )
        bad = tok.mismatches(slow, fast, texts)
        if bad:
            raise ExportError(f"tokenizer.json differs from the SentencePiece reference on {len(bad)} texts, e.g. {bad[0][:80]!r}")
        step(2, f"wrote tokenizer.json (identical ids on {len(texts)} validation texts)")

        to_onnx.export_fp32(loaded.model, folder / VARIANT_FILES["fp32"], hidden_states=options.hidden_states)
        step(3, "exported fp32 graph")
        ops: dict[str, dict[str, int]] = {"fp32": optimize.fused_op_counts(onnx.load(str(folder / VARIANT_FILES["fp32"])))}
        ops["fused"] = optimize.optimize_fused(folder / VARIANT_FILES["fp32"], folder / VARIANT_FILES["fused"], config)
        step(4, f"fused graph: {ops['fused']['Attention']} Attention, {ops['fused']['SkipLayerNormalization']} SkipLayerNormalization")

        details: dict[str, dict[str, object]] = {}
        if "int8" in options.variants:
            scheme = quantize.quantize_int8(folder / VARIANT_FILES["fused"], folder / VARIANT_FILES["int8"], per_channel=options.per_channel)
            int8_model = onnx.load(str(folder / VARIANT_FILES["int8"]))
            ops["int8"] = optimize.fused_op_counts(int8_model)
            details["int8"] = {"quantization": scheme, "weight_dtypes": quantize.weight_dtypes(int8_model)}
        if "fp16" in options.variants:
            ops["fp16"] = optimize.convert_fp16(folder / VARIANT_FILES["fused"], folder / VARIANT_FILES["fp16"])
        step(5, "quantized int8 / converted fp16")

        max_length = min(512, config.max_position_embeddings)
        batches = validate.reference_batches(loaded.model, slow, texts, batch_size=16, max_length=max_length)
        providers = options.providers or ort.get_available_providers()
        results = {}
        for name in options.variants:
            results[name] = validate.validate_variant(name, folder / VARIANT_FILES[name], batches, providers)
        failed = [name for name, res in results.items() if res.get("validated") and not res["passed"]]
        for name in failed:
            (metric, limit), = results[name]["gate"].items()
            message = f"variant {name!r} failed its gate: {metric}={results[name][metric]:.6g} (limit {limit})"
            if not options.force:
                raise ExportError(message + "; nothing was written. Pass --force to write it anyway")
            log("WARNING: " + message + " (written because --force)")
        summary = ", ".join(
            f"{n}: {validate.gate_summary(r)}" for n, r in results.items()
        )
        step(6, f"validated against PyTorch fp32 on {len(texts)} texts ({summary})")

        for name in VARIANTS:
            if name not in options.variants:
                (folder / VARIANT_FILES[name]).unlink(missing_ok=True)
        variants = {}
        for name in options.variants:
            write.check_external_data(folder / VARIANT_FILES[name])
            variants[name] = {
                **write.file_entry(folder, VARIANT_FILES[name]),
                "devices": VARIANT_DEVICES[name],
                "fused_ops": ops[name],
                "validation": {**results[name], "forced": name in failed},
                **details.get(name, {}),
            }
        seconds = time.perf_counter() - started
        manifest = {
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "source": {
                "model": options.source,
                "revision": options.revision,
                "random_weights": loaded.random_weights,
                "seed": loaded.seed,
                "weights_file": loaded.weights_file,
                "tokenizer": options.tokenizer or options.source,
            },
            "versions": _versions(),
            "opset": to_onnx.OPSET,
            "model": {
                "model_type": "albert",
                "hidden_size": config.hidden_size,
                "embedding_size": config.embedding_size,
                "num_hidden_layers": config.num_hidden_layers,
                "num_attention_heads": config.num_attention_heads,
                "intermediate_size": config.intermediate_size,
                "vocab_size": config.vocab_size,
                "max_position_embeddings": config.max_position_embeddings,
                "hidden_act": config.hidden_act,
            },
            "inputs": to_onnx.INPUT_NAMES,
            "outputs": to_onnx.output_names(options.hidden_states),
            "tokenizer": {**tok.tokenizer_settings(slow, config.max_position_embeddings), **write.file_entry(folder, "tokenizer.json")},
            "variants": variants,
            "validation_texts": {"source": str(options.validation_texts) if options.validation_texts else "built-in sentences", "count": len(texts)},
            "export": {"seconds": round(seconds, 1), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)},
        }
        write.write_manifest(folder, manifest)
        sizes = ", ".join(f"{n} {v['size'] / 1e6:.1f} MB" for n, v in variants.items())
        step(7, f"wrote manifest; {sizes}")
    log(f"done in {time.perf_counter() - started:.1f}s -> {options.output}" + ("  [RANDOM WEIGHTS]" if loaded.random_weights else ""))
    return Path(options.output)
