"""Corpus-scale embedding on Ray Data: read -> actor pool of AlbertEmbedders -> parquet, resumable.

Resuming: the input is cut into fixed, ordered shards of ``shard_rows`` rows; shard k is written to
``part-{k:06d}.parquet`` through a temporary name and a rename, so a finished file is a finished shard.
A rerun skips every shard whose file exists. Every id lands in exactly one shard, hence once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .session import resolve_device


@dataclass
class RayJobOptions:
    """One corpus job. ``input``: .jsonl, .parquet, .csv or .txt (txt ids are line numbers)."""

    folder: str
    input: str
    output: Path
    text_field: str = "text"
    id_field: str = "id"
    pooling: str = "mean"
    batch_size: int = 32
    device: str = "auto"
    variant: str = "auto"
    actors: int | None = None
    threads_per_actor: int | None = None
    address: str | None = None
    strict: bool = False
    shard_rows: int = 2048
    ray_init_kwargs: dict = field(default_factory=dict)


class _EmbedBatch:
    """The actor: one AlbertEmbedder (one ORT session) per actor, loaded once."""

    def __init__(self, folder: str, variant: str, device: str, threads: int, pooling: str, batch_size: int,
                 text_field: str, id_field: str, strict: bool) -> None:
        from albert_onnx import AlbertEmbedder

        self.embedder = AlbertEmbedder.from_pretrained(folder, variant=variant, device=device, threads=threads)
        self.pooling, self.batch_size = pooling, batch_size
        self.text_field, self.id_field, self.strict = text_field, id_field, strict

    def __call__(self, batch: dict) -> dict:
        ids = [str(i) for i in batch[self.id_field]]
        texts = list(batch[self.text_field])
        good = [i for i, text in enumerate(texts) if isinstance(text, str)]
        bad = [i for i in range(len(texts)) if not isinstance(texts[i], str)]
        if bad and self.strict:
            raise ValueError(f"row id={ids[bad[0]]!r}: {self.text_field!r} is {type(texts[bad[0]]).__name__}, not str (--strict)")
        vectors = self.embedder.encode([texts[i] for i in good], batch_size=self.batch_size, pooling=self.pooling)
        out_vectors = [None] * len(texts)
        for row, i in enumerate(good):
            out_vectors[i] = vectors[row].tolist()
        errors = [None] * len(texts)
        for i in bad:
            errors[i] = f"{self.text_field!r} is {type(texts[i]).__name__}, not str"
        return {"id": ids, "vector": out_vectors, "error": errors}


def _read(ray, options: RayJobOptions):
    path = options.input
    suffix = Path(path).suffix
    if suffix == ".jsonl" or suffix == ".json":
        return ray.data.read_json(path, lines=True) if suffix == ".jsonl" else ray.data.read_json(path)
    if suffix == ".parquet" or Path(path).is_dir():
        return ray.data.read_parquet(path)
    if suffix == ".csv":
        return ray.data.read_csv(path)
    if suffix == ".txt":
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return ray.data.from_items([{options.id_field: str(n), options.text_field: t} for n, t in enumerate(lines)])
    raise ValueError(f"input={path!r}: use a .jsonl, .parquet, .csv or .txt file")


def plan_actors(device: str, actors: int | None, threads: int | None, cpus: int) -> tuple[int, int]:
    """Actors and threads per actor so that actors x threads <= CPUs (one GPU per actor on CUDA)."""
    if actors is not None and actors < 1:
        raise ValueError(f"actors={actors}: pass at least 1")
    if device == "cuda":
        return actors or 1, threads or 1
    actors = actors or max(1, cpus // (threads or 1))
    threads = threads or max(1, cpus // actors)
    if actors * threads > cpus:
        raise ValueError(f"actors={actors} x threads={threads} > {cpus} CPUs; lower one of them")
    return actors, threads


def run_ray_job(options: RayJobOptions) -> dict[str, int]:
    """Embed a corpus with Ray Data into ``options.output``/part-*.parquet (id, vector, error).

    Returns:
        Counts: shards total/skipped/written, rows, bad rows.

    Raises:
        ValueError: Bad options, a missing id/text column, or a bad row with ``strict``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    if not ray.is_initialized():
        ray.init(address=options.address, include_dashboard=False, log_to_driver=False, **options.ray_init_kwargs)
    device = resolve_device(options.device)
    cpus = int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    actors, threads = plan_actors(device, options.actors, options.threads_per_actor, cpus)
    dataset = _read(ray, options).materialize()  # read the input once: count, shard and embed from memory
    columns = dataset.columns()
    for column in (options.id_field, options.text_field):
        if column not in columns:
            raise ValueError(f"input {options.input!r} has no column {column!r} (columns: {columns}); pass --id-field/--text-field")
    total = dataset.count()
    output = Path(options.output)
    output.mkdir(parents=True, exist_ok=True)
    shards = range(0, total, options.shard_rows)
    todo = [k for k, _ in enumerate(shards) if not (output / f"part-{k:06d}.parquet").exists()]
    counts = {"shards": len(shards), "skipped": len(shards) - len(todo), "written": 0, "rows": total, "bad_rows": 0}
    if not todo:
        return counts
    splits = dataset.split_at_indices(list(shards)[1:]) if len(shards) > 1 else [dataset]
    resources = {"num_gpus": 1} if device == "cuda" else {"num_cpus": threads}
    fn_kwargs = dict(folder=str(options.folder), variant=options.variant, device=device, threads=threads, pooling=options.pooling,
                     batch_size=options.batch_size, text_field=options.text_field, id_field=options.id_field, strict=options.strict)
    from tqdm import tqdm

    for k in tqdm(todo, desc="shards", unit="shard"):
        result = splits[k].map_batches(_EmbedBatch, fn_constructor_kwargs=fn_kwargs, batch_size=options.batch_size * 8,
                                       compute=ray.data.ActorPoolStrategy(size=actors), batch_format="numpy", **resources)
        rows = result.take_all()
        bad = [r for r in rows if r["error"] is not None]
        for r in bad:
            print(f"bad row id={r['id']}: {r['error']}")
        counts["bad_rows"] += len(bad)
        table = pa.table({"id": [r["id"] for r in rows],
                          "vector": [None if r["vector"] is None else np.asarray(r["vector"], np.float32) for r in rows],
                          "error": [r["error"] for r in rows]})
        tmp = output / f".part-{k:06d}.parquet.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, output / f"part-{k:06d}.parquet")
        counts["written"] += 1
    (output / "_job.json").write_text(json.dumps({"folder": str(options.folder), "input": options.input, **counts}))
    return counts
