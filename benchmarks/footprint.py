"""One engine alone in a fresh process: ``python -m benchmarks.footprint NAME CHECKPOINT FOLDER WORKDIR THREADS DEVICE B S``.

Prints one JSON line: cold start (seconds from process start to the first vector of one short text, imports
included), and peak RSS after one call of shape (B, S).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import psutil


def main(argv: list[str]) -> int:
    name, checkpoint, folder, workdir, threads, device, batch, seq = argv
    from . import engines

    engine = engines.make_engine(name, Path(checkpoint), Path(folder), Path(workdir), int(threads), device)
    engine.embed(["A man is playing a guitar."])
    cold = time.time() - psutil.Process().create_time()
    import numpy as np

    from .__main__ import random_feeds

    engine.run_ids(random_feeds(int(batch), int(seq), np.random.default_rng(0)))
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec
    peak = next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM")) / 1024
    print(json.dumps({"cold_start_s": round(cold, 2), "peak_rss_mb": round(peak, 1), "peak_rss_shape": f"b{batch}·s{seq}"}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
