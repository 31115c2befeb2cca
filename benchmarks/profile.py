"""Where the time goes: ONNX Runtime's own profiler, summed by op type, and the host-side share of a request."""

from __future__ import annotations

import json
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
        runs: Profiled calls after one unprofiled-shape warm-up.
        workdir: Where ORT writes its trace (removed after reading).

    Returns:
        ``{"ms_per_call": float, "ops": [{"op": str, "ms_per_call": float, "share": float}, ...]}``, largest first.
    """
    from albert_onnx.session import session_options

    options = session_options(threads)
    options.enable_profiling = True
    options.profile_file_prefix = str(workdir / f"ort-profile-{graph.stem}")
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    session.run(["sentence_embedding"], feeds)  # warm-up: first-call allocations stay out of the sums
    for _ in range(runs):
        session.run(["sentence_embedding"], feeds)
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    per_op: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1000.0  # microseconds -> ms
    calls = runs + 1
    total = sum(per_op.values())
    ops = [{"op": op, "ms_per_call": ms / calls, "share": ms / total} for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])]
    return {"ms_per_call": total / calls, "ops": ops}


def host_share(embedder, texts: list[str]) -> dict[str, float]:
    """Median end-to-end ``encode([text])`` vs the graph call alone on the same ids: what tokenize, pad and
    numpy around the graph cost per single request.

    Args:
        embedder: An ``AlbertEmbedder``.
        texts: Single requests to time.
    """
    total, graph = [], []
    for text in texts:
        started = time.perf_counter()
        embedder.encode([text], normalize=False)
        total.append(time.perf_counter() - started)
        feeds = embedder.tokenize([text])
        started = time.perf_counter()
        embedder.encode_ids(feeds)
        graph.append(time.perf_counter() - started)
    total_ms, graph_ms = float(np.median(total) * 1000), float(np.median(graph) * 1000)
    return {"end_to_end_ms": total_ms, "graph_ms": graph_ms, "host_ms": total_ms - graph_ms,
            "host_share": (total_ms - graph_ms) / total_ms}
