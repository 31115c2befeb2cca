"""python -m benchmarks [--quick] [--model albert-base-v2|PATH] [--out DIR]

Runs every engine on the same inputs in one process, interleaved, and writes results.json, results.md and
PNG plots. The model is ALBERT's architecture with SEEDED RANDOM WEIGHTS unless --model is a real checkpoint.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from . import engines as eng
from .report import write_report

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHAPES_CPU = [(1, 16), (1, 128), (1, 512), (8, 128), (32, 128)]
SHAPES_GPU = SHAPES_CPU + [(128, 128)]


def read_sts(limit: int | None = None) -> list[str]:
    texts = []
    for name in ("sts-train.csv", "sts-dev.csv"):
        for line in (SHARED / "data" / "stsbenchmark" / name).read_text(encoding="utf-8").splitlines():
            texts.extend(line.split("\t")[5:7])
    return texts[:limit] if limit else texts


def machine_facts(threads: int) -> dict[str, object]:
    flags = ""
    cpu = platform.processor()
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = next(l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name"))
        flags = next(l for l in info.splitlines() if l.startswith("flags"))
    except (OSError, StopIteration):
        pass
    wanted = ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16"]
    versions = {}
    for name in ["torch", "transformers", "onnxruntime", "onnxruntime-gpu", "optimum", "optimum-onnx", "sentence-transformers", "tokenizers", "numpy"]:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    import os

    return {"date": dt.date.today().isoformat(), "cpu": cpu, "cores": os.cpu_count(), "threads": threads,
            "cpu_flags": {f: f in flags.split() for f in wanted}, "python": platform.python_version(), "versions": versions}


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
                                   validation_texts=SHARED / "data" / "stsbenchmark" / "sts-dev.csv"), log=lambda s: print("  export", s))
    return checkpoint, folder, random


def random_feeds(batch: int, seq: int, rng) -> dict[str, np.ndarray]:
    ids = rng.integers(5, 30000, size=(batch, seq), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 2, 3
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def build_engines(names: list[str], checkpoint: Path, folder: Path, workdir: Path, threads: int, device: str, results: dict) -> list:
    built = []
    for name in names:
        before = rss_mb()
        print(f"loading {name} ...", flush=True)
        try:
            if name.startswith("pytorch-"):
                engine = eng.TorchEngine(checkpoint, name.split("-", 1)[1], threads, device)
            elif name.startswith("albert-onnx-"):
                engine = eng.AlbertOnnxEngine(folder, name.rsplit("-", 1)[1], threads, device)
            elif name.startswith("optimum-"):
                engine = eng.OptimumEngine(checkpoint, workdir, name.split("-", 1)[1], threads)
            elif name == "sentence-transformers-onnx":
                engine = eng.SentenceTransformersEngine(checkpoint, workdir, threads)
            else:
                raise ValueError(f"unknown engine {name!r}")
        except Exception as error:  # a peer that cannot run here is reported, never dropped silently
            results["engines"][name] = {"error": f"{type(error).__name__}: {error}"[:500]}
            print(f"  {name} FAILED: {error}", file=sys.stderr)
            continue
        results["engines"][name] = {"file_size": engine.file_size, "load_seconds": round(engine.load_seconds, 3),
                                    "rss_after_load_mb": round(rss_mb() - before, 1)}
        built.append(engine)
    return built


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="albert-base-v2", help="size name (random weights) or checkpoint folder")
    parser.add_argument("--tokenizer", type=Path, default=SHARED / "models" / "albert-base-v2")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--quick", action="store_true", help="fewer repeats and a corpus sample (<= 10 min on 2 cores)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--engines", help="comma-separated subset")
    parser.add_argument("--corpus", type=int, help="how many STS-B sentences for the corpus run (default: all; quick: 1500)")
    args = parser.parse_args(argv)

    cpu_engines = ["pytorch-fp32", "pytorch-bf16", "albert-onnx-fp32", "albert-onnx-fused", "albert-onnx-int8",
                   "optimum-o2", "optimum-int8", "sentence-transformers-onnx"]
    gpu_engines = ["pytorch-fp32", "pytorch-fp16", "albert-onnx-fused", "albert-onnx-fp16"]
    names = args.engines.split(",") if args.engines else (gpu_engines if args.device == "cuda" else cpu_engines)
    variants = tuple(sorted({n.rsplit("-", 1)[1] for n in names if n.startswith("albert-onnx-")} | {"fused"}))
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = args.out / "work"
    workdir.mkdir(exist_ok=True)
    checkpoint, folder, random = prepare(args.model, args.tokenizer, workdir, variants)
    results: dict = {"machine": machine_facts(args.threads), "model": args.model, "random_weights": random,
                     "quick": args.quick, "engines": {}, "shapes": [], "latency": {}, "corpus": {}, "accuracy": {}}
    engines = build_engines(names, checkpoint, folder, workdir, args.threads, args.device, results)
    if not engines or engines[0].name != names[0]:
        raise SystemExit(f"the baseline {names[0]} did not load; see {results['engines'].get(names[0])}")
    rng = np.random.default_rng(0)

    # 1. fixed shapes, engines interleaved round by round
    for batch, seq in SHAPES_GPU if args.device == "cuda" else SHAPES_CPU:
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

    # 3. corpus throughput, end to end, and accuracy against eager fp32 on the same vectors
    corpus = texts[: args.corpus or (1500 if args.quick else len(texts))]
    reference = None
    for engine in engines:
        started = time.perf_counter()
        vectors = engine.embed(corpus, batch_size=32)
        seconds = time.perf_counter() - started
        results["corpus"][engine.name] = {"texts": len(corpus), "seconds": round(seconds, 2), "texts_per_s": round(len(corpus) / seconds, 1)}
        if reference is None:
            reference = vectors
        cos = (vectors * reference).sum(1) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1))
        results["accuracy"][engine.name] = {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}
        print(f"corpus {engine.name}: {len(corpus) / seconds:.1f} texts/s, min cos {cos.min():.5f}", flush=True)
    results["peak_rss_mb"] = round(rss_mb(), 1)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    write_report(results, args.out)
    print(f"wrote {args.out}/results.json, results.md and plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
