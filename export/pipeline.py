"""The export pipeline: load -> tokenizer -> fp32 -> fused -> int8 / fp16 -> validate -> write."""

from __future__ import annotations

import ctypes
import datetime as dt
import errno
import gc
import logging
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

import onnx

from albert_onnx import arguments
from albert_onnx.hardware import onnxruntime_package
from albert_onnx.model_folder import (
    INPUTS, INT8_GEMM, U8S8_FILE, VARIANT_DEVICES, VARIANT_FILES, VARIANTS, Architecture, FileEntry, Manifest, Source, TokenizerSettings,
    U8s8Graph, VariantEntry, TOKENIZER_FILE, graph_facts,
)

from . import locate, validation_texts, write
from .errors import ExportError

log = logging.getLogger("albert_onnx_export")


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
    validation_texts: Path | None = None
    validation_samples: int = 96
    overwrite: bool = False
    force: bool = False
    providers: list[str] = field(default_factory=list)


def _versions() -> dict[str, str]:
    names = ["albert-onnx", "torch", "transformers", "onnx", "tokenizers", "sentencepiece", "numpy"]
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    ort_name, ort_version = onnxruntime_package()  # the one that ran the validation, where both are installed
    found[ort_name] = ort_version
    found["python"] = platform.python_version()
    return found


def _release_freed_memory() -> None:
    """Collect garbage and hand glibc's freed heap pages back to the system between steps.

    Each step loads and drops whole graphs (0.9 GB for xxlarge); without this, glibc keeps the freed pages, and the
    next step's allocations land on top of them instead of in them (RSS "now" between steps measured 2.0 GB with
    0.8 GB live for xlarge). Not glibc (musl, macOS): only the collection.
    """
    gc.collect()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB.

    ``ru_maxrss`` is in KiB on Linux but in bytes on macOS (see getrusage(2) on each).
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**2 if sys.platform == "darwin" else peak / 1024


def _rss_now_gb() -> float:
    """Resident set size now (Linux /proc; 0 where it cannot be read), beside the peak in the step log."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (OSError, ValueError, IndexError):
        return 0.0


def _check_options(options: ExportOptions) -> ExportOptions:
    """The options with paths given as str or Path made one type each; refused: wrong types and values.

    Raises:
        ExportError: Unknown or repeated variants.
        TypeError: A path that is neither str nor os.PathLike, or variants given as one str.
        ValueError: Counts out of range.
    """
    for name in ("source", "output", "tokenizer", "validation_texts"):
        value = getattr(options, name)
        if not (value is None and name in ("tokenizer", "validation_texts")) and not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"{name}={value!r:.60}: pass a str or a pathlib.Path")
    if isinstance(options.variants, str) or not isinstance(options.variants, (tuple, list)):
        raise TypeError(f"variants={options.variants!r:.60}: pass a tuple of names, e.g. ('fp32', 'int8')")
    options = replace(options, source=os.fspath(options.source), output=Path(options.output), variants=tuple(options.variants),
                      tokenizer=None if options.tokenizer is None else os.fspath(options.tokenizer),
                      validation_texts=None if options.validation_texts is None else Path(options.validation_texts))
    unknown = [name for name in options.variants if name not in VARIANTS]
    if unknown or not options.variants or len(set(options.variants)) != len(options.variants):
        raise ExportError(f"variants={','.join(options.variants)!r}: choose each at most once from {','.join(VARIANTS)}")
    flags = {name: arguments.flag(name, getattr(options, name)) for name in ("random_weights", "hidden_states", "overwrite", "force")}
    # as Python ints: a NumPy integer is taken, and torch's manual_seed and the manifest's JSON want an int
    return replace(options, **flags, validation_samples=arguments.count("validation_samples", options.validation_samples,
                                                               validation_texts.MIN_TEXTS, 100_000),
                   seed=arguments.count("seed", options.seed, 0, 2**63 - 1))


def export_model(options: ExportOptions) -> Path:
    """Export an ALBERT checkpoint to a validated model folder; progress goes to the ``albert_onnx_export`` logger.

    Args:
        options: Source, output folder and choices.

    Returns:
        The finished model folder.

    Raises:
        ExportError: Bad input, an existing output without ``overwrite``, a tokenizer mismatch, or a variant
            that failed its gates without ``force``, or a full disk.
    """
    try:
        return _export(options)
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise ExportError(f"output={str(options.output)!r}: the disk is full ({error.strerror}); nothing was written and the "
                          "staging folder was removed: free some space (the folder takes about 3x the fp32 weights, e.g. 142 MB "
                          "for albert-base) or choose another output") from error


def _export(options: ExportOptions) -> Path:
    options = _check_options(options)
    write.check_output(options.output, options.overwrite)
    vset = validation_texts.validation_set(options.validation_texts, options.validation_samples)
    where = locate.locate_model(options.source)
    # a revision is ignored (yet recorded in the manifest as the source's) unless the weights come from the hub: a hub
    # id, or the official albert/NAME, whose config ships with us and whose weights are fetched
    fetched = where == "hub" or (where == "shipped" and not options.random_weights and locate.shipped_name(options.source) != options.source)
    if options.revision is not None and not fetched:
        what = "a local folder" if where == "folder" else "a size name" if options.random_weights else "a size name with no weights"
        raise ExportError(f"revision={options.revision!r}: a revision picks a commit of a hub repository, but source="
                          f"{options.source!r} is {what}; drop --revision (for a folder, check that revision out into it)")
    if not options.random_weights:
        locate.local_weights(options.source, where)
    if options.tokenizer is not None:  # the source's own spiece.model is looked for after its config says ALBERT
        locate.locate_vocabulary(options.tokenizer)
    # The steps import torch, transformers and ONNX Runtime's optimizer (7-10 s): only now, so a mistyped flag or path,
    # an existing output or a bad validation file is reported at once, before any of that (or a download of the weights).
    import onnxruntime as ort

    from . import optimize, quantize, to_onnx, tokenizer as tok, tokenizer_probes, validate
    from .load import load_albert, read_config
    started = time.perf_counter()
    steps = 7
    clock = [started]

    def step(index: int, text: str) -> None:
        _release_freed_memory()
        now = time.perf_counter()
        log.info(f"[{index}/{steps}] {text} ({now - clock[0]:.1f}s, peak RSS so far {_peak_rss_mb() / 1024:.1f} GiB, "
                 f"now {_rss_now_gb():.1f} GiB)")
        clock[0] = now

    with write.staging_folder(options.output, options.overwrite) as folder:
        # the tokenizer and the validation texts first: they need the config only, and a mistake in them must not wait
        # for the weights (minutes of download and loading for a large model)
        source_config = read_config(options.source, options.revision)
        config = source_config[0]
        vocabulary = options.tokenizer or options.source
        revision = options.revision if vocabulary == options.source else None  # the model's commit, not another repository's
        reference = tok.load_reference_tokenizer(vocabulary, revision, vocab_size=config.vocab_size,
                                                 argument="source" if options.tokenizer is None else "tokenizer")
        max_length = min(512, config.max_position_embeddings)
        # the gates compare texts as the model sees them: distinct strings can be one token sequence (ALBERT lowercases;
        # truncation cuts what differs late), and too few sequences would pass the gates on noise
        sequences = {tuple(reference.encode(text, max_length)) for text in vset.drawn}
        if len(sequences) < validation_texts.MIN_TEXTS:
            raise ExportError(f"validation_texts={vset.source!r}: the model sees its texts as only {len(sequences)} distinct token "
                              f"sequences within {max_length} tokens (ALBERT lowercases, and truncation drops what differs later); "
                              f"the gates need at least {validation_texts.MIN_TEXTS}: pass texts that differ in their words")
        loaded = load_albert(options.source, revision=options.revision, random_weights=options.random_weights, seed=options.seed,
                             config=source_config)
        weights_note = f"RANDOM weights (seed {options.seed}; architecture only)" if loaded.random_weights else "trained weights"
        if not loaded.pooler:
            weights_note += ("; no pooler head in the checkpoint (saved from e.g. AlbertForMaskedLM): the folder has no "
                             "pooler_output, pooling='pooler' is refused")
        step(1, f"loaded {options.source} with {weights_note}")

        fast = tok.build_fast_tokenizer(reference)
        # written by Python, not Tokenizer.save: that raises a bare Exception on a full disk, which the ENOSPC handler
        # of export_model cannot tell from a bug (the same bytes: save() writes to_str(pretty=True))
        with open(folder / TOKENIZER_FILE, "w", encoding="utf-8", newline="") as handle:
            handle.write(fast.to_str(pretty=True))
        probes = tokenizer_probes.probe_texts()  # the rules English validation text never meets (tokenizer_probes.py)
        bad = tok.mismatches(reference, fast, [*vset.texts, *probes])
        if bad:
            # ALBERT's own settings convert exactly; name the ones this vocabulary changes where the config shows them
            changed = [f"{name}={value}" for name, value, default in (("remove_space", reference.remove_space, True),
                                                                       ("keep_accents", reference.keep_accents, False)) if value != default]
            suspects = (f"its tokenizer_config.json sets {' and '.join(changed)}" if changed else "a setting such as single_word on "
                        "a special token, or a spiece.model trained with byte_fallback or without remove_extra_whitespaces")
            raise ExportError(f"tokenizer.json differs from the SentencePiece reference on {len(bad)} of {len(vset.texts) + len(probes)} "
                              f"texts, e.g. {bad[0][:80]!r}: the conversion does not reproduce {vocabulary}'s tokenizer ({suspects}); "
                              "export with ALBERT's own tokenizer settings")
        step(2, f"wrote tokenizer.json (identical ids on {len(vset.texts)} validation texts and {len(probes)} probe texts)")

        to_onnx.export_fp32(loaded.model, folder / VARIANT_FILES["fp32"], hidden_states=options.hidden_states)
        # Eager attention holds batch x heads x length^2 scores (x3 with softmax and dropout): 16 rows of 64-head
        # xxlarge at 350 tokens are ~1.5 GB a copy. Fewer rows per batch for more heads; still mixed lengths.
        rows = max(2, 16 * 12 // config.num_attention_heads)
        ref = validate.reference(loaded.model, reference, vset, batch_size=rows, max_length=max_length)
        # PyTorch is done: free its weights before the graph rewrites need the memory (0.9 GB for xxlarge)
        loaded.model = None  # step() collects it and hands the pages back
        step(3, f"exported fp32 graph, ran the PyTorch reference on {len(vset.texts)} texts")
        ops: dict[str, dict[str, int]] = {"fp32": optimize.fused_op_counts(onnx.load(str(folder / VARIANT_FILES["fp32"])))}
        ops["fused"] = optimize.optimize_fused(folder / VARIANT_FILES["fp32"], folder / VARIANT_FILES["fused"], config)
        step(4, f"fused graph: {ops['fused']['Attention']} Attention, {ops['fused']['SkipLayerNormalization']} SkipLayerNormalization")

        quantization: dict[str, dict[str, object]] = {}
        if "int8" in options.variants:
            scheme = quantize.quantize_int8(folder / VARIANT_FILES["fused"], folder / VARIANT_FILES["int8"])
            int8_model = onnx.load(str(folder / VARIANT_FILES["int8"]))
            ops["int8"] = optimize.fused_op_counts(int8_model)
            quantization["int8"] = {**scheme, "weight_dtypes": quantize.weight_dtypes(int8_model)}
            quantize.write_u8s8(folder / VARIANT_FILES["int8"], folder / U8S8_FILE)
        if "fp16" in options.variants:
            ops["fp16"] = optimize.convert_fp16(folder / VARIANT_FILES["fused"], folder / VARIANT_FILES["fp16"])
        step(5, "quantized int8 / converted fp16")

        providers = options.providers or ort.get_available_providers()
        results = {}
        for name in options.variants:
            results[name], failed = validate.validate_variant(name, folder / VARIANT_FILES[name], ref, providers)
            nonfinite = int(results[name].metrics.get("nonfinite_outputs", 0))
            if nonfinite:  # NaN/inf vectors are not a quality trade-off --force could accept
                why = ("the weights overflow float32 on the way: check the checkpoint" if name in ("fp32", "fused") else
                       f"{name}'s narrower numbers overflow where float32 does not (fp16 holds at most 65504): leave it out with --variants")
                raise ExportError(f"variant {name!r} computes {nonfinite} NaN or inf values on the validation texts ({why}), so it is "
                                  "not written, even with --force")
            if failed:
                message = f"variant {name!r} failed its gate: {'; '.join(failed)}"
                if not options.force:
                    raise ExportError(message + "; nothing was written. Pass --force to write it anyway")
                log.warning(message + " (written because --force)")
                results[name] = replace(results[name], forced=True)
        u8s8 = None
        if "int8" in options.variants:
            u8s8, failed = validate.compare_u8s8(folder / VARIANT_FILES["int8"], folder / U8S8_FILE, [*ref.feeds, *ref.singles, *ref.crowds])
            if failed:  # the same levels must give the same products: a kernel bug, not a trade-off --force could accept
                raise ExportError(f"int8's uint8 x int8 graph differs from its uint8 x uint8 graph on this CPU ({'; '.join(failed)}), "
                                  f"though the probe finds that product exact here ({u8s8.device}); nothing was written. Please report "
                                  "it with `albert-onnx info`'s versions; meanwhile export without int8 (--variants)")
        summary = "; ".join(f"{n}: {validate.gate_summary(r)}" for n, r in results.items())
        if u8s8 is not None:
            summary += f"; int8 as uint8 x int8: {validate.gate_summary(u8s8)}"
        step(6, f"validated against PyTorch fp32 on {len(vset.texts)} texts ({summary})")

        for name in VARIANTS:
            if name not in options.variants:
                (folder / VARIANT_FILES[name]).unlink(missing_ok=True)
        architecture = Architecture("albert", config.hidden_size, config.embedding_size, config.num_hidden_layers,
                                    config.num_attention_heads, config.intermediate_size, config.vocab_size,
                                    config.type_vocab_size, config.max_position_embeddings, config.hidden_act)
        settings = tok.tokenizer_settings(reference, config.max_position_embeddings)
        outputs = to_onnx.output_names(options.hidden_states, pooler=loaded.pooler)
        facts = graph_facts(architecture, settings["max_length"], settings["special_ids"], outputs)
        variants = {}
        for name in options.variants:
            twin = None
            # int8's two graphs also carry their product's types, so one copied over the other is caught at load
            stamps = {VARIANT_FILES[name]: {**facts, "gemm": INT8_GEMM}, U8S8_FILE: {**facts, "gemm": "u8s8"}} if name == "int8" else {
                VARIANT_FILES[name]: facts}
            for file, stamp in stamps.items():
                write.check_external_data(folder / file)
                # and its own file name: a graph copied into another's place is caught at load even with verify=False
                write.stamp_graph(folder / file, {**stamp, "file": file})
            if name == "int8":
                entry = FileEntry.of(folder, U8S8_FILE)
                twin = U8s8Graph(entry.file, entry.size, entry.sha256, u8s8)
            entry = FileEntry.of(folder, VARIANT_FILES[name])
            variants[name] = VariantEntry(entry.file, entry.size, entry.sha256, VARIANT_DEVICES[name], ops[name], results[name],
                                          quantization.get(name), twin)
        tokenizer_entry = FileEntry.of(folder, TOKENIZER_FILE)
        manifest = Manifest(
            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            source=Source(options.source, options.revision, loaded.random_weights, loaded.seed, loaded.weights_file,
                          reference.name_or_path),  # the folder or hub id the vocabulary really came from
            versions=_versions(),
            opset=to_onnx.OPSET,
            model=architecture,
            outputs=outputs,
            tokenizer=TokenizerSettings(tokenizer_entry.file, tokenizer_entry.size, tokenizer_entry.sha256, **settings),
            variants=variants,
            validation_texts={"source": vset.source, "texts": len(vset.texts), "pairs": len(vset.pairs)},
            export={"seconds": round(time.perf_counter() - started, 1),
                    "peak_rss_mb": round(_peak_rss_mb())},
            inputs=list(INPUTS),
        )
        write.write_manifest(folder, manifest)
        sizes = ", ".join(f"{n} {v.size / 1e6:.1f} MB" + (f" (+ {v.u8s8.size / 1e6:.1f} MB uint8 x int8)" if v.u8s8 else "")
                          for n, v in variants.items())
        step(7, f"wrote manifest; {sizes}")
    log.info(f"done in {time.perf_counter() - started:.1f}s -> {options.output}" + ("  [RANDOM WEIGHTS]" if loaded.random_weights else ""))
    return Path(options.output)
