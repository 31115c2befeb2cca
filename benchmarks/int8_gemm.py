"""uint8 x uint8 (shipped) against uint8 x int8 integer products on this CPU: speed and fidelity.

    python -m benchmarks.int8_gemm build/albert-base-v2 [--texts 2910] [--threads 2]

The u8s8 graph is the folder's model_int8_u8s8.onnx: the int8 graph with each weight's levels as int8 (value - 128,
zero point 0), so the two differ only in the integer product's types. On CPUs without VNNI (AVX2 only) ONNX Runtime
computes u8s8 with int16 saturation (export/quantize.py) and the runtime loads u8u8; where its probe finds u8s8
exact (VNNI/AMX, albert_onnx/int8_kernel.py) it loads u8s8; the table's first line says which it picks here.
Also timed: ORT's own dynamic per-tensor int8 (``quantize_dynamic``, u8s8) and the fused fp32 graph, every graph
in one process, interleaved.
Fidelity: STS-B dev sentences, each alone, centred cosine against the fused fp32 graph.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from albert_onnx.embedder import AlbertEmbedder
from albert_onnx.hardware import cpu_description
from albert_onnx.int8_kernel import u8s8_is_exact
from albert_onnx.session import session_options

from .__main__ import SHARED, random_feeds
from .int8_schemes import build_dynamic_per_tensor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8_gemm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="an exported model folder with model_fused and model_int8")
    parser.add_argument("--texts", type=int, default=2910, help="STS-B dev sentences for the fidelity columns (default: all)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="where the derived graphs go")
    args = parser.parse_args(argv)
    from albert_onnx_export.validation_texts import sentence_pairs  # the STS-B reader the export's validation uses

    fused = AlbertEmbedder.from_pretrained(args.folder, variant="fused", device="cpu", threads=args.threads)
    work = args.out / "int8-gemm"
    work.mkdir(parents=True, exist_ok=True)
    build_dynamic_per_tensor(fused.folder.variant_path("fused"), work / "dynamic-per-tensor.onnx")
    picked = "u8s8" if u8s8_is_exact() else "u8u8"
    graphs = {"fused fp32": fused.folder.variant_path("fused"), "int8 u8u8": fused.folder.variant_path("int8"),
              "int8 u8s8 (same levels)": fused.folder.variant_path("int8", u8s8=True),
              "dynamic per-tensor (ORT, u8s8)": work / "dynamic-per-tensor.onnx"}
    sessions = {name: ort.InferenceSession(str(path), session_options(args.threads, spin_wait=False), providers=["CPUExecutionProvider"])
                for name, path in graphs.items()}
    texts = sorted({text for pair in sentence_pairs(SHARED / "data/stsbenchmark/sts-dev.csv") for text in pair})[: args.texts]
    feeds = [fused.tokenize(text) for text in texts]
    vectors = {name: np.concatenate([s.run(["sentence_embedding"], f)[0] for f in feeds]) for name, s in sessions.items()}
    rng, times = np.random.default_rng(0), {name: {} for name in sessions}
    for batch, seq, rounds in [(1, 16, 30), (1, 128, 15), (32, 128, 4)]:
        x, samples = random_feeds(batch, seq, rng), {name: [] for name in sessions}
        for session in sessions.values():
            session.run(["sentence_embedding"], x)
        for _ in range(rounds):
            for name, session in sessions.items():
                started = time.perf_counter()
                session.run(["sentence_embedding"], x)
                samples[name].append(time.perf_counter() - started)
        for name in sessions:
            times[name][(batch, seq)] = 1000 * float(np.median(samples[name]))
    reference = vectors["fused fp32"]
    centre = reference.mean(axis=0)
    print(f"{time.strftime('%Y-%m-%d')} · {cpu_description()} · {args.threads} threads · onnxruntime {ort.__version__} · "
          f"{len(texts)} STS-B dev sentences alone · medians of interleaved rounds · the runtime's int8 here: {picked}")
    print("| graph | b1·s16 ms | b1·s128 ms | b32·s128 ms | centred cos mean | centred cos min |\n|---|---|---|---|---|---|")
    for name in sessions:
        a, b = vectors[name] - centre, reference - centre
        centred = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        fidelity = "reference | reference" if name == "fused fp32" else f"{centred.mean():.4f} | {centred.min():.4f}"
        print(f"| {name} | " + " | ".join(f"{times[name][shape]:.1f}" for shape in [(1, 16), (1, 128), (32, 128)]) + f" | {fidelity} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
