"""Where the time goes: ONNX Runtime's own profiler, summed by op type, and the host-side share of a request.

python -m benchmarks.profile GRAPH [GRAPH ...] [--shapes 1x128,32x128] [--threads 2] [--runs 10]
prints kernel ms per call by op type for each graph and shape (random ids; b32 and up run a fifth of --runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


def profile_by_op(graph: Path, feeds: dict[str, np.ndarray], threads: int, runs: int, workdir: Path) -> dict[str, object]:
    """Run ``graph`` ``runs`` times under ORT's profiler and sum kernel time per op type.

    Args:
        graph: The .onnx file (loaded with the runtime's SessionOptions, so the same fusions apply).
        feeds: Inputs of one call.
        threads: Intra-op threads.
        runs: Calls summed, after one warm-up call that is left out.
        workdir: Where ORT writes its trace (removed after reading).

    Returns:
        ``{"ms_per_call": float, "ops": [{"op": str, "ms_per_call": float, "share": float}, ...]}``, largest first.
    """
    from albert_onnx.session import session_options

    options = session_options(threads, spin_wait=False)  # like every ORT session of the benchmark (engines.py)
    options.enable_profiling = True
    options.profile_file_prefix = str(workdir / f"ort-profile-{graph.stem}")
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    session.run(["sentence_embedding"], feeds)  # warm-up: its kernels are left out of the sums below
    for _ in range(runs):
        session.run(["sentence_embedding"], feeds)
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    # the profiler is on from the session's start, so the warm-up is in the trace too: count only the kernels that
    # started after the first model_run ended (its first-call allocations would otherwise be spread over the runs)
    calls = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(calls) != runs + 1:
        raise RuntimeError(f"ONNX Runtime's trace of {graph} holds {len(calls)} model_run events, not the {runs + 1} calls made")
    warm_end = calls[0][1]
    per_op: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= warm_end:
            per_op[event["args"]["op_name"]] += event["dur"] / 1000.0  # microseconds -> ms
    total = sum(per_op.values())
    ops = [{"op": op, "ms_per_call": ms / runs, "share": ms / total} for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])]
    return {"ms_per_call": total / runs, "ops": ops}


def host_share(embedder, texts: list[str]) -> dict[str, float]:
    """What the runtime around the graph costs per single request: median ``encode([text])`` end to end, and the
    median of ``tokenize([text])`` (tokenize, frame, pad) timed on its own.

    Timed directly rather than as end-to-end minus graph: the difference of two noisy medians of ~6 ms came out
    negative (-0.11 ms) in a run on this machine.

    Args:
        embedder: An ``AlbertEmbedder``.
        texts: Single requests to time.
    """
    total, host = [], []
    for text in texts:
        started = time.perf_counter()
        embedder.encode([text], normalize=False)
        total.append(time.perf_counter() - started)
        started = time.perf_counter()
        embedder.tokenize([text])
        host.append(time.perf_counter() - started)
    total_ms, host_ms = float(np.median(total) * 1000), float(np.median(host) * 1000)
    return {"end_to_end_ms": total_ms, "host_ms": host_ms, "host_share": host_ms / total_ms}


def main(argv: list[str] | None = None) -> int:
    from .__main__ import random_feeds

    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("graphs", nargs="+", type=Path, help=".onnx files to profile")
    parser.add_argument("--shapes", default="1x128,32x128", help="BATCHxSEQ list (default 1x128,32x128)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--runs", type=int, default=10, help="profiled calls at batch 1 (default 10)")
    args = parser.parse_args(argv)
    try:
        shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")]
    except ValueError:
        shapes = []
    if not shapes or any(len(shape) != 2 or shape[0] < 1 or not 3 <= shape[1] <= 512 for shape in shapes):
        parser.error(f"--shapes {args.shapes!r}: give BATCHxSEQ pairs (batch >= 1, 3 <= seq <= 512) separated by commas, "
                     "e.g. 1x128,32x128")
    missing = [str(graph) for graph in args.graphs if not graph.is_file()]
    if missing:
        parser.error(f"no such graph file: {', '.join(missing)}")
    for batch, seq in shapes:
        feeds = random_feeds(batch, seq, np.random.default_rng(0))
        for graph in args.graphs:
            with tempfile.TemporaryDirectory() as workdir:
                result = profile_by_op(graph, feeds, args.threads, max(1, args.runs // 5 if batch >= 32 else args.runs), Path(workdir))
            print(f"b{batch}·s{seq} {graph}: {result['ms_per_call']:.2f} ms of kernels per call")
            for op in result["ops"][:10]:
                print(f"  {op['op']:<28} {op['ms_per_call']:9.2f} ms {op['share']:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
