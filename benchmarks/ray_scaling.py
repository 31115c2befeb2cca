"""python -m benchmarks.ray_scaling FOLDER [--texts 2000] [--cpus 2]

Throughput of the Ray corpus job with 1 actor x 1 thread, 2 actors x 1 thread and 1 actor x 2 threads (each
twice where it matters), next to in-process ``encode`` with all threads, on STS-B sentences. Wall time per job
includes actor start; the input is written once as jsonl.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .__main__ import read_sts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ray_scaling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="an exported model folder (e.g. bench-results/work/albert-onnx)")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    args = parser.parse_args(argv)

    import ray

    from albert_onnx import AlbertEmbedder
    from albert_onnx.ray_job import RayJobOptions, run_ray_job

    texts = read_sts(args.texts)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "corpus.jsonl"
        source.write_text("\n".join(json.dumps({"id": f"s{i}", "text": t}) for i, t in enumerate(texts)) + "\n")
        embedder = AlbertEmbedder.from_pretrained(args.folder, threads=args.cpus)
        embedder.encode(texts[:64])
        started = time.perf_counter()
        embedder.encode(texts)
        print(f"in-process, {args.cpus} threads: {len(texts) / (time.perf_counter() - started):.1f} texts/s", flush=True)
        del embedder
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        for actors, threads in [(1, 1), (2, 1), (1, 2), (1, 1), (2, 1)]:
            out = Path(tmp) / "vectors"
            shutil.rmtree(out, ignore_errors=True)
            started = time.perf_counter()
            run_ray_job(RayJobOptions(folder=args.folder, input=str(source), output=out, device="cpu", actors=actors,
                                      threads_per_actor=threads, shard_rows=512))
            seconds = time.perf_counter() - started
            print(f"ray, {actors} actor(s) x {threads} thread(s): {seconds:.1f} s, {len(texts) / seconds:.1f} texts/s", flush=True)
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
