"""python -m benchmarks [--quick] [--model albert-base-v2|PATH] [--out DIR]

Runs every engine on the same inputs in one process, interleaved, and writes results.json, results.md and
PNG plots. The model is ALBERT's architecture with SEEDED RANDOM WEIGHTS unless --model is a real checkpoint.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from albert_onnx.hardware import cpu_facts, cpuinfo_fields, gpu_name, onnxruntime_package

from . import engines as eng
from .profile import host_share, profile_by_op
from .report import write_report

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHAPES_CPU = [(1, 16), (1, 128), (1, 512), (8, 128), (32, 128)]
SHAPES_GPU = SHAPES_CPU + [(128, 128)]


def read_sts(limit: int | None = None) -> list[str]:
    """STS-B train then dev sentences, read by the export step's reader."""
    from albert_onnx_export.validation_texts import read_texts

    texts = [t for name in ("sts-train.csv", "sts-dev.csv") for t in read_texts(SHARED / "data" / "stsbenchmark" / name)]
    return texts[:limit] if limit else texts


def machine_facts(threads: int) -> dict[str, object]:
    import os

    cpu, flags = cpu_facts()
    versions = {}
    for name in ["torch", "transformers", "optimum", "optimum-onnx", "sentence-transformers", "tokenizers", "numpy"]:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    ort_name, ort_version = onnxruntime_package()  # the imported one (a GPU host may hold both builds)
    versions[ort_name] = ort_version
    return {"date": dt.date.today().isoformat(), "cpu": cpu, **cpu_model(), "logical_cpus": os.cpu_count(), "threads": threads,
            "cpu_flags": flags, "python": platform.python_version(), "versions": versions, "harness": harness_commit()}


def cpu_model() -> dict[str, str]:
    """/proc/cpuinfo's family and model numbers: "AMD EPYC" alone is Zen 3 on one machine and Zen 4 on another."""
    fields = cpuinfo_fields()
    return {f"cpu_{key.replace(' ', '_')}": fields[key] for key in ("cpu family", "model") if key in fields}


def harness_commit() -> str:
    """The git commit the harness ran from, ``+changes`` when the tree differed from it (``unknown`` outside git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def prepare(model: str, tokenizer: Path, workdir: Path, variants: tuple[str, ...]) -> tuple[Path, Path, bool]:
    """A HF checkpoint folder (saved safetensors) and our exported folder, both from the same weights."""
    from albert_onnx_export import ExportOptions, export_model
    from albert_onnx_export.load import load_albert

    checkpoint, folder = workdir / "checkpoint", workdir / "albert-onnx"
    source = Path(model)
    random = not (source.is_dir() and any(source.glob("*.safetensors")) or (source / "pytorch_model.bin").exists())
    if not checkpoint.exists():
        loaded = load_albert(model, random_weights=random, seed=0)
        loaded.model.save_pretrained(checkpoint, safe_serialization=True)
        for name in ("spiece.model", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(tokenizer / name, checkpoint / name)
    if not folder.exists():
        export_model(ExportOptions(source=str(checkpoint), output=folder, variants=variants,
                                   validation_texts=SHARED / "data" / "stsbenchmark" / "sts-dev.csv"))
    return checkpoint, folder, random


def random_feeds(batch: int, seq: int, rng) -> dict[str, np.ndarray]:
    ids = rng.integers(5, 30000, size=(batch, seq), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 2, 3
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((_unit(a) * _unit(b)).sum(1).min())


def fidelity(vectors: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Raw and centred cosine against ``reference``, and the rank agreement of consecutive-pair similarities."""
    from scipy.stats import spearmanr

    centre = reference.mean(axis=0)
    centred = (_unit(vectors - centre) * _unit(reference - centre)).sum(1)
    pair = lambda v: (_unit(v[0::2][: len(v) // 2]) * _unit(v[1::2][: len(v) // 2])).sum(1)  # noqa: E731
    return {"same_ids_min_cosine": _min_cosine(vectors, reference), "centred_cosine_mean": float(centred.mean()),
            "centred_cosine_min": float(centred.min()), "rank_agreement": float(spearmanr(pair(vectors), pair(reference)).statistic)}


def _variant_of(name: str) -> str | None:
    """The variant a well-formed albert-onnx engine name runs (None otherwise: a bad name is reported when its engine
    is built, not exported for)."""
    try:
        return eng.albert_onnx_engine(name)[0]
    except ValueError:
        return None


def tokens_computed(engine, corpus: list[str]) -> int | None:
    """Token positions the engine's ``embed`` of the corpus computed, padding included (None: not known, e.g.
    sentence-transformers, which sorts by characters on its own). Counted outside the timing."""
    if isinstance(engine, eng.AlbertOnnxEngine):  # one exact length per call: real tokens only
        return int(engine.embedder.tokenize(corpus)["attention_mask"].sum())
    return engine.tokens_computed if isinstance(engine, eng.PaddedBatchEngine) else None


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def skip_emulated_bf16(names: list[str], results: dict) -> list[str]:
    """--quick on a CPU without bf16 instructions leaves pytorch-bf16 out and records why in the table.

    Autocast then emulates bf16: measured 1.7 s at b1*s128 (7x fp32) on AVX2, which alone would take --quick past
    10 minutes. The full benchmark runs it anyway.
    """
    flags = results["machine"]["cpu_flags"]
    if "pytorch-bf16" not in names or flags.get("avx512_bf16") or flags.get("amx_bf16"):
        return names
    results["engines"]["pytorch-bf16"] = {"skipped": "--quick on a CPU without avx512_bf16/amx_bf16 (emulated bf16 is ~7x slower than fp32); run without --quick"}
    return [n for n in names if n != "pytorch-bf16"]


def build_engines(names: list[str], checkpoint: Path, folder: Path, workdir: Path, threads: int, device: str, results: dict) -> list:
    built = []
    for name in names:
        print(f"loading {name} ...", flush=True)
        try:
            engine = eng.make_engine(name, checkpoint, folder, workdir, threads, device)
        except Exception as error:  # a peer that cannot run here is reported, never dropped silently
            results["engines"][name] = {"error": f"{type(error).__name__}: {error}"[:500]}
            print(f"  {name} FAILED: {error}", file=sys.stderr)
            continue
        results["engines"][name] = {"file_size": engine.file_size, "load_seconds": round(engine.load_seconds, 3),
                                    **({"attention": engine.attention} if hasattr(engine, "attention") else {})}
        built.append(engine)
    return built


def footprint(name: str, checkpoint: Path, folder: Path, workdir: Path, threads: int, device: str, batch: int, seq: int) -> dict:
    """Cold start and peak RSS of one engine in a fresh process (in this process all engines share one heap)."""
    # the child's cold start counts from here: psutil's create_time inherits /proc/stat's whole-second boot time
    # (a review measured 0.17-0.19 s reported for a process whose parent timed 0.04 s, 2026-12-06)
    command = [sys.executable, "-m", "benchmarks.footprint", name, str(checkpoint), str(folder), str(workdir),
               str(threads), device, str(batch), str(seq), repr(time.time())]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1][:300] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="albert-base-v2", help="size name (random weights) or checkpoint folder")
    parser.add_argument("--tokenizer", type=Path, default=SHARED / "models" / "albert-base-v2")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--quick", action="store_true", help="fewer repeats and a corpus sample (<= 10 min on 2 cores)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--engines", help="comma-separated subset")
    parser.add_argument("--corpus", type=int, help="how many STS-B sentences for the corpus run (default: all; quick: 1000)")
    args = parser.parse_args(argv)

    cpu_engines = ["pytorch-fp32", "pytorch-bf16", "albert-onnx-fp32", "albert-onnx-fused", "albert-onnx-int8",
                   "optimum-o2", "optimum-int8", "sentence-transformers-onnx"]
    gpu_engines = ["pytorch-fp32", "pytorch-fp16", "pytorch-fp16sdpa", "albert-onnx-fused", "albert-onnx-fp16",
                   *(f"albert-onnx-fp16-{tuning}" for tuning in eng.TUNINGS)]
    names = args.engines.split(",") if args.engines else (gpu_engines if args.device == "cuda" else cpu_engines)
    variants = tuple(sorted(({_variant_of(n) for n in names} - {None}) | {"fused"}))
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = args.out / "work"
    workdir.mkdir(exist_ok=True)
    checkpoint, folder, random = prepare(args.model, args.tokenizer, workdir, variants)
    results: dict = {"machine": {**machine_facts(args.threads), "device": args.device,
                                 **({"gpu": gpu_name(0) or "unknown (no nvidia-smi)"} if args.device == "cuda" else {})}, "model": args.model, "random_weights": random,
                     "quick": args.quick, "engines": {}, "shapes": [], "latency": {}, "corpus": {}, "accuracy": {}, "tokenizer_differs": None}
    if args.quick and args.device == "cpu" and not args.engines:
        names = skip_emulated_bf16(names, results)
    engines = build_engines(names, checkpoint, folder, workdir, args.threads, args.device, results)
    if not engines or engines[0].name != names[0]:
        raise SystemExit(f"the baseline {names[0]} did not load; see {results['engines'].get(names[0])}")
    rng = np.random.default_rng(0)

    # 1. fixed shapes, engines interleaved round by round
    shapes = SHAPES_GPU if args.device == "cuda" else SHAPES_CPU
    for batch, seq in [shape for shape in shapes if not (args.quick and shape == (8, 128))]:  # --quick: fewer shapes
        rounds = (3 if batch * seq >= 2048 else 8) if args.quick else (7 if batch * seq >= 2048 else 25)
        feeds = random_feeds(batch, seq, rng)
        times = {e.name: [] for e in engines}
        for engine in engines:
            engine.run_ids(feeds)  # warm-up
        for _ in range(rounds):
            for engine in engines:
                times[engine.name].append(timed(lambda: engine.run_ids(feeds)))
        for name, samples in times.items():
            ms = np.asarray(samples) * 1000
            results["shapes"].append({"engine": name, "batch": batch, "seq": seq, "runs": len(ms), "median_ms": float(np.median(ms)),
                                      "p10_ms": float(np.percentile(ms, 10)), "p90_ms": float(np.percentile(ms, 90)),
                                      "seq_per_s": float(batch / np.median(ms) * 1000)})
        print(f"b{batch}·s{seq}: " + ", ".join(f"{n} {np.median(t) * 1000:.1f} ms" for n, t in times.items()), flush=True)

    texts = read_sts()
    # 1b. where the time goes: ORT's profiler by op type on our fastest CPU graph, and the host share of a request
    ours = [e for e in engines if isinstance(e, eng.AlbertOnnxEngine)]
    if ours and args.device == "cpu":
        mine = next((e for e in ours if e.name.endswith("int8")), ours[0])
        graph = mine.embedder.graph  # the file the embedder runs (int8: its u8s8 twin where exact here)
        results["profile"] = {"engine": mine.name, "shapes": {}}
        for batch, seq in [(1, 128), (32, 128)]:
            runs = (2 if batch > 1 else 5) if args.quick else (5 if batch > 1 else 20)
            results["profile"]["shapes"][f"b{batch}s{seq}"] = profile_by_op(graph, random_feeds(batch, seq, rng), args.threads, runs, workdir)
        short = [t for t in texts if len(t.split()) <= 12][:30]
        results["profile"]["single_request"] = host_share(mine.embedder, short)
        print(f"profile {mine.name}: " + ", ".join(f"{k} {v['ms_per_call']:.1f} ms ({v['ops'][0]['op']} {v['ops'][0]['share']:.0%})"
                                                    for k, v in results["profile"]["shapes"].items()), flush=True)

    # 2. single-request latency over real sentence lengths (end to end, tokenization included)
    sample = [texts[i] for i in rng.choice(len(texts), size=40 if args.quick else 200, replace=False)]
    lat = {e.name: [] for e in engines}
    for engine in engines:
        engine.embed(sample[:2])
    for text in sample:
        for engine in engines:
            lat[engine.name].append(timed(lambda: engine.embed([text])) * 1000)
    for name, ms in lat.items():
        results["latency"][name] = {f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 90, 99)}
    results["latency_requests"] = len(sample)

    # 3. fidelity of the model alone: every engine on the same token ids (the baseline's tokenizer) against the
    # baseline: raw and centred cosine (the baseline's mean vector subtracted: with random weights all sentence
    # vectors are nearly parallel, so raw cosines cannot fail), Spearman rank agreement of the STS-B pair
    # similarities, and batch invariance (each text alone vs inside its padded batch of 32).
    sample = texts[: 128 if args.quick else 512]  # read_sts keeps each pair's two sentences next to each other
    batches = []
    for start in range(0, len(sample), 32):  # tokenized once, fed to every engine
        enc = engines[0].tokenizer(sample[start : start + 32], padding=True, truncation=True, max_length=512,
                                   return_token_type_ids=True, return_tensors="np")
        batches.append({k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")})
    alone_count = 32 if args.quick else 128
    singles = [{k: v[row : row + 1, : int(feeds["attention_mask"][row].sum())] for k, v in feeds.items()}
               for feeds in batches for row in range(len(feeds["input_ids"]))][:alone_count]
    same_ids = {}
    for engine in engines:
        same_ids[engine.name] = np.concatenate([engine.run_ids(feeds) for feeds in batches])
        alone = np.concatenate([engine.run_ids(feeds) for feeds in singles])
        results["accuracy"][engine.name] = {**fidelity(same_ids[engine.name], same_ids[engines[0].name]), "same_ids_texts": len(sample),
                                            "batch_invariance_max_abs_diff": float(np.abs(_unit(alone) - _unit(same_ids[engine.name][:alone_count])).max()),
                                            "batch_invariance_texts": alone_count}

    # 4. corpus throughput, end to end (each engine's own tokenizer), and the end-to-end cosine vs baseline
    corpus = texts[: args.corpus or (1000 if args.quick else len(texts))]
    reference = None
    for engine in engines:
        started = time.perf_counter()
        vectors = engine.embed(corpus, batch_size=32)
        seconds = time.perf_counter() - started
        results["corpus"][engine.name] = {"texts": len(corpus), "seconds": round(seconds, 2), "texts_per_s": round(len(corpus) / seconds, 1),
                                          "tokens_computed": tokens_computed(engine, corpus)}
        reference = vectors if reference is None else reference
        results["accuracy"][engine.name]["end_to_end_min_cosine"] = _min_cosine(vectors, reference)
        print(f"corpus {engine.name}: {len(corpus) / seconds:.1f} texts/s, min cos {results['accuracy'][engine.name]}", flush=True)
    if ours:
        # our tokenizer.json reproduces ALBERT's SentencePiece tokenizer; HF's fast tokenizer differs on some texts
        theirs = engines[0].tokenizer(corpus, add_special_tokens=False)["input_ids"]
        our_feeds = ours[0].embedder.tokenize(corpus)
        lengths = our_feeds["attention_mask"].sum(1)
        results["tokenizer_differs"] = {"texts": len(corpus), "differ_from_hf_fast": int(sum(
            list(row[1 : n - 1]) != list(t[:510]) for row, n, t in zip(our_feeds["input_ids"], lengths, theirs)))}

    # 5. each engine alone in a fresh process: cold start (process start -> first vector) and peak RSS
    batch, seq = (8, 128) if args.quick else (32, 128)
    for engine in engines:
        if getattr(engine, "tuning", None):  # the same graph as the untuned engine: its process would repeat those numbers
            results["engines"][engine.name]["own_process"] = {"skipped": f"as {engine.name.removesuffix('-' + engine.tuning)}"}
            continue
        results["engines"][engine.name]["own_process"] = footprint(engine.name, checkpoint, folder, workdir, args.threads, args.device, batch, seq)
        print(f"footprint {engine.name}: {results['engines'][engine.name]['own_process']}", flush=True)
    results["rss_mb_at_end"] = round(rss_mb(), 1)  # this process, all engines loaded (each alone: own_process)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    write_report(results, args.out)
    print(f"wrote {args.out}/results.json, results.md and plots")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
    logging.getLogger("albert_onnx_export").setLevel(logging.INFO)  # the export's [n/7] progress lines
    sys.exit(main())
