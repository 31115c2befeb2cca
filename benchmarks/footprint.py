"""One engine alone in a fresh process: ``python -m benchmarks.footprint NAME CHECKPOINT FOLDER WORKDIR THREADS DEVICE B S
LAUNCHED`` (LAUNCHED: the parent's ``time.time()`` just before it started this process).

Prints one JSON line: cold start (seconds from LAUNCHED to the first vector of one short text, interpreter start
and imports included), peak RSS after one call of shape (B, S), and on CUDA the GPU memory this process holds then.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


from albert_onnx.hardware import nvidia_smi, nvidia_smi_target


def _nvidia_smi(*query: str) -> str | None:
    return nvidia_smi(*query, "--format=csv,noheader,nounits")


def process_gpu_mb(listing: str | None, pid: int) -> float | None:
    """MiB that ``nvidia-smi --query-compute-apps=pid,used_memory`` lists for ``pid``, over every GPU it uses (None:
    not listed, as in a container whose PIDs nvidia-smi does not see)."""
    found = []
    for line in (listing or "").splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) == 2 and cells[0] == str(pid) and cells[1].isdigit():
            found.append(float(cells[1]))
    return sum(found) if found else None


def device_used_mb(listing: str | None) -> float | None:
    """``memory.used`` in MiB from ``nvidia-smi --query-gpu=memory.used -i GPU`` (one GPU asked for: one line)."""
    first = (listing or "").strip().splitlines()[:1]
    return float(first[0]) if first and first[0].strip().isdigit() else None


def _device_used() -> float | None:
    target = nvidia_smi_target(0)  # the engines run on CUDA device 0, as CUDA_VISIBLE_DEVICES numbers it
    return device_used_mb(_nvidia_smi("--query-gpu=memory.used", "-i", target)) if target is not None else None


def gpu_memory(before_mb: float | None) -> dict:
    """This process's GPU memory (CUDA context, weights, arena: whatever the framework holds), by the best measure
    nvidia-smi gives here: its per-process listing, else the growth of the device's used memory since this process
    started (the benchmark's main process holds its own memory meanwhile, but does not change it)."""
    mine = process_gpu_mb(_nvidia_smi("--query-compute-apps=pid,used_memory"), os.getpid())
    if mine is not None:
        return {"gpu_memory_mb": mine, "gpu_memory_by": "nvidia-smi, this process"}
    after = _device_used()
    if before_mb is None or after is None:
        return {"gpu_memory_mb": None, "gpu_memory_by": "nvidia-smi gave no reading"}
    if after < before_mb:  # another process freed memory meanwhile: the growth says nothing about this one
        return {"gpu_memory_mb": None, "gpu_memory_by": "device memory.used fell while it ran"}
    return {"gpu_memory_mb": after - before_mb, "gpu_memory_by": "nvidia-smi, device memory.used growth"}


def main(argv: list[str]) -> int:
    name, checkpoint, folder, workdir, threads, device, batch, seq, launched = argv
    before = _device_used() if device == "cuda" else None  # before any CUDA context
    from . import engines

    engine = engines.make_engine(name, Path(checkpoint), Path(folder), Path(workdir), int(threads), device)
    engine.embed(["A man is playing a guitar."])
    cold = time.time() - float(launched)  # the parent's clock just before it started this process
    import numpy as np

    from .__main__ import random_feeds

    engine.run_ids(random_feeds(int(batch), int(seq), np.random.default_rng(0)))
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec
    peak = next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM")) / 1024
    result = {"cold_start_s": round(cold, 2), "peak_rss_mb": round(peak, 1), "peak_rss_shape": f"b{batch}·s{seq}"}
    if device == "cuda":
        result.update(gpu_memory(before))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
