"""python -m benchmarks.int8_schemes FOLDER [--pairs 1500] [--out DIR]

The int8 scheme table: the shipped per-token int8 against the alternatives, all built from the same exported
folder's graphs and measured in one process:

- ``per-token`` — the folder's model_int8.onnx (export/quantize.py): one activation scale per token.
- ``dynamic-per-tensor`` — ONNX Runtime's quantize_dynamic on the fused graph (albert-onnx 0.1's int8).
- ``static-per-channel`` — quantize_static, QDQ, per-channel weights, calibrated on 64 STS-B train sentences.
- ``weight-only`` — int8 weights with one scale per column, dequantized to fp32 at load (fp32 arithmetic).

ONNX Runtime runs ``static-per-channel`` as built: it does not fuse those QDQ pairs into integer kernels here.

Speed: median ms at b1·s16, b1·s128, b32·s128 (random ids, sessions interleaved round by round).
Fidelity on STS-B dev against the fused fp32 graph: centred cosine of sentence vectors (mean and min; the fp32
mean vector subtracted), Spearman rank agreement of the pair similarities, and batch invariance: each text
alone vs inside shuffled padded batches of 32 (max |delta| of unit vectors).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from albert_onnx.int8_kernel import u8s8_is_exact

from .__main__ import SHARED, machine_facts, random_feeds

SHAPES = [(1, 16), (1, 128), (32, 128)]


def build_dynamic_per_tensor(fused: Path, out: Path) -> None:
    """albert-onnx 0.1's int8: dynamic U8S8, one activation scale per tensor, QAttention."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic warns about pre-processing on every call
    quantize_dynamic(str(fused), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Attention", "Gather"],
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def build_static_per_channel(fp32: Path, out: Path, texts: list[str], tokenizer) -> None:
    """Static QDQ with per-channel weights, calibrated on ``texts`` (MinMax)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([_feeds(tokenizer, [text]) for text in texts])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])


def build_weight_only(fused: Path, out: Path) -> None:
    """int8 weights (one scale per column) behind DequantizeLinear; ONNX Runtime folds them to fp32 at load."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(fused))
    initializers = {init.name: init for init in model.graph.initializer}
    done: set[str] = set()
    nodes = []
    for node in model.graph.node:
        weight = node.input[1] if node.op_type in ("MatMul", "Attention") and len(node.input) > 1 else None
        init = initializers.get(weight) if weight else None
        if init is not None and len(init.dims) == 2 and init.data_type == onnx.TensorProto.FLOAT:
            if weight not in done:
                done.add(weight)
                values = numpy_helper.to_array(init)
                scale = np.maximum(np.abs(values).max(axis=0), 1e-30) / 127
                model.graph.initializer.extend([
                    numpy_helper.from_array(np.clip(np.round(values / scale), -127, 127).astype(np.int8), f"{weight}/int8"),
                    numpy_helper.from_array(scale.astype(np.float32), f"{weight}/scale")])
                nodes.append(helper.make_node("DequantizeLinear", [f"{weight}/int8", f"{weight}/scale"], [f"{weight}/dq"], axis=1))
            node.input[1] = f"{weight}/dq"
        nodes.append(node)
    kept = [init for init in model.graph.initializer if init.name not in done]
    del model.graph.node[:], model.graph.initializer[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(kept)
    onnx.save(model, str(out))


def _feeds(tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    """Right-padded feeds of ``texts`` from the folder's own tokenizer (the graph's contract)."""
    return tokenizer.pad([tokenizer.frame(np.asarray(e.ids[:510], np.int64)) for e in tokenizer.encode(texts)])


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def fidelity(session, tokenizer, texts: list[str], pairs: list[tuple[int, int]], reference: np.ndarray | None, seed: int = 0) -> dict:
    """Vectors alone and in shuffled padded batches; centred cosine and rank agreement against ``reference``."""
    from scipy.stats import spearmanr

    alone = np.concatenate([session.run(["sentence_embedding"], _feeds(tokenizer, [text]))[0] for text in texts])
    order = np.random.default_rng(seed).permutation(len(texts))
    batched = np.zeros_like(alone)
    for start in range(0, len(order), 32):
        rows = order[start : start + 32]
        batched[rows] = session.run(["sentence_embedding"], _feeds(tokenizer, [texts[i] for i in rows]))[0]
    result = {"vectors": alone, "batch_invariance_max_abs_diff": float(np.abs(_unit(alone) - _unit(batched)).max())}
    if reference is not None:
        centre = reference.mean(axis=0)
        centred = (_unit(alone - centre) * _unit(reference - centre)).sum(axis=1)
        left, right = (list(side) for side in zip(*pairs))
        similarity = lambda v: (_unit(v[left]) * _unit(v[right])).sum(axis=1)  # noqa: E731
        result.update(centred_cosine_mean=float(centred.mean()), centred_cosine_min=float(centred.min()),
                      centred_cosine_p1=float(np.percentile(centred, 1)),
                      rank_agreement=float(spearmanr(similarity(alone), similarity(reference)).statistic))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8_schemes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="an exported model folder with model_fp32, model_fused and model_int8")
    parser.add_argument("--pairs", type=int, default=1500, help="STS-B dev pairs for the fidelity columns (default: all 1500)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per shape at batch 1 (b32: a fifth)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="where int8_schemes.json/.md go")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from albert_onnx import ModelFolder
    from albert_onnx.session import session_options
    from albert_onnx.tokenizer import AlbertTokenizer
    from albert_onnx_export.validation_texts import sentence_pairs

    folder = ModelFolder.load(args.folder)
    tokenizer = AlbertTokenizer(folder.file(folder.tokenizer.file), folder.tokenizer, folder.model.vocab_size)
    work = args.out / "int8-schemes"
    work.mkdir(parents=True, exist_ok=True)
    graphs = {"fused fp32 (reference)": folder.variant_path("fused"), "per-token (shipped int8)": folder.variant_path("int8", u8s8=u8s8_is_exact())}
    builds = {"dynamic-per-tensor": lambda p: build_dynamic_per_tensor(folder.variant_path("fused"), p),
              "static-per-channel": lambda p: build_static_per_channel(
                  folder.variant_path("fp32"), p, [a for a, _ in sentence_pairs(SHARED / "data/stsbenchmark/sts-train.csv")[:64]], tokenizer),
              "weight-only": lambda p: build_weight_only(folder.variant_path("fused"), p)}
    for name, build in builds.items():
        path = work / f"{name}.onnx"
        if not path.exists():
            print(f"building {name} ...", flush=True)
            build(path)
        graphs[name] = path
    def options(name: str):
        options = session_options(args.threads, spin_wait=False)
        if name == "weight-only":
            # fold DequantizeLinear(int8 weight) into an fp32 constant at load: the point of weight-only int8 is the
            # file size. Left unfolded (ORT keeps QDQ nodes by default), every call dequantizes and repacks every
            # weight: measured 466 ms instead of 33 ms at b1*s16.
            options.add_session_config_entry("session.disable_quant_qdq", "1")
        return options

    sessions = {name: ort.InferenceSession(str(path), options(name), providers=["CPUExecutionProvider"]) for name, path in graphs.items()}

    pairs_text = sentence_pairs(SHARED / "data/stsbenchmark/sts-dev.csv")[: args.pairs]
    texts = sorted({text for pair in pairs_text for text in pair})
    index = {text: i for i, text in enumerate(texts)}
    pairs = [(index[a], index[b]) for a, b in pairs_text]
    results: dict = {"machine": machine_facts(args.threads), "folder": str(args.folder), "random_weights": folder.manifest.source.random_weights,
                     "texts": len(texts), "pairs": len(pairs), "schemes": {}}
    reference = None
    for name, session in sessions.items():
        measured = fidelity(session, tokenizer, texts, pairs, reference)
        reference = measured.pop("vectors") if reference is None else reference
        measured.pop("vectors", None)
        results["schemes"][name] = {"size_mb": round(graphs[name].stat().st_size / 1e6, 1), **measured}
        print(name, {k: round(v, 6) if isinstance(v, float) else v for k, v in measured.items()}, flush=True)

    rng = np.random.default_rng(0)
    for batch, seq in SHAPES:
        feeds = random_feeds(batch, seq, rng)
        times = {name: [] for name in sessions}
        for session in sessions.values():
            session.run(["sentence_embedding"], feeds)
        for _ in range(max(3, args.rounds // (5 if batch > 1 else 1))):
            for name, session in sessions.items():
                started = time.perf_counter()
                session.run(["sentence_embedding"], feeds)
                times[name].append(time.perf_counter() - started)
        for name, samples in times.items():
            results["schemes"][name][f"b{batch}s{seq}_ms"] = float(np.median(samples) * 1000)
        print(f"b{batch}·s{seq}: " + ", ".join(f"{n} {np.median(t) * 1000:.1f} ms" for n, t in times.items()), flush=True)

    (args.out / "int8_schemes.json").write_text(json.dumps(results, indent=2))
    (args.out / "int8_schemes.md").write_text(table(results))
    print(table(results))
    return 0


def table(results: dict) -> str:
    """The Markdown table for the README."""
    m = results["machine"]
    flags = ", ".join(k for k, v in m["cpu_flags"].items() if v) or "none"
    base = results["schemes"]["dynamic-per-tensor"]
    lines = [f"{m['date']} · {m['cpu']} ({flags}) · {m['threads']} threads · onnxruntime {m['versions'].get('onnxruntime')} · "
             f"{results['texts']} STS-B dev texts, {results['pairs']} pairs" + (" · RANDOM WEIGHTS" if results["random_weights"] else ""), "",
             "| scheme | b1·s16 ms | b1·s128 ms | b32·s128 ms | vs per-tensor (b1·s16 / b1·s128 / b32·s128) | centred cos mean | centred cos min | rank agreement | batch invariance max abs diff | MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["schemes"].items():
        ratio = " / ".join(f"{r[f'b{b}s{s}_ms'] / base[f'b{b}s{s}_ms']:.2f}×" for b, s in SHAPES)
        fid = (f"{r['centred_cosine_mean']:.4f} | {r['centred_cosine_min']:.4f} | {r['rank_agreement']:.5f}"
               if "rank_agreement" in r else "reference | reference | reference")
        lines.append(f"| {name} | " + " | ".join(f"{r[f'b{b}s{s}_ms']:.1f}" for b, s in SHAPES)
                     + f" | {ratio} | {fid} | {r['batch_invariance_max_abs_diff']:.1e} | {r['size_mb']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
