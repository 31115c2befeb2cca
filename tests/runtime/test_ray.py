"""Corpus embedding on a local Ray (2 CPUs): same vectors as in-process, every id once, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

from albert_onnx import AlbertEmbedder  # noqa: E402
from albert_onnx.ray_job import RayJobOptions, plan_actors, run_ray_job  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _read_all(folder):
    rows = {}
    for part in sorted(folder.glob("part-*.parquet")):
        table = pq.read_table(part).to_pylist()
        for row in table:
            assert row["id"] not in rows, f"id {row['id']} twice"
            rows[row["id"]] = row
    return rows


def test_ray_job_matches_in_process_and_resumes(local_ray, tiny_folder, sts_texts, tmp_path, capsys):
    texts = sts_texts[:500]
    records = [{"id": f"s{i}", "text": t} for i, t in enumerate(texts)] + [{"id": "bad", "text": None}, {"id": "nokey"}]
    source = tmp_path / "corpus.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    out = tmp_path / "vectors"
    options = RayJobOptions(folder=str(tiny_folder), input=str(source), output=out, variant="fp32", device="cpu", shard_rows=128, actors=1)
    counts = run_ray_job(options)
    assert counts == {"shards": 4, "skipped": 0, "written": 4, "rows": 502, "bad_rows": 2}
    printed = capsys.readouterr().out
    assert "bad row id=bad: 'text' is missing" in printed and "bad row id=nokey" in printed

    rows = _read_all(out)
    assert set(rows) == {r["id"] for r in records}
    assert rows["bad"]["vector"] is None and rows["bad"]["error"] == "'text' is missing"
    expected = AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32").encode(texts)
    got = np.stack([np.asarray(rows[f"s{i}"]["vector"], np.float32) for i in range(len(texts))])
    assert np.abs(got - expected).max() <= 1e-5

    # an interrupted run: two shards never finished, one left a temporary file behind
    (out / "part-000001.parquet").unlink()
    (out / "part-000003.parquet").unlink()
    (out / ".part-000003.parquet.tmp").write_bytes(b"half")
    counts = run_ray_job(options)
    assert (counts["skipped"], counts["written"]) == (2, 2)
    again = _read_all(out)
    assert set(again) == set(rows)
    assert run_ray_job(options)["written"] == 0  # complete: nothing to do


def test_strict_mode_fails_on_bad_rows(local_ray, tiny_folder, tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"id": "1", "text": "fine"}\n{"id": "2", "text": null}\n')
    with pytest.raises(Exception, match="row id='2'"):
        run_ray_job(RayJobOptions(folder=str(tiny_folder), input=str(source), output=tmp_path / "o", device="cpu", strict=True, actors=1))


def test_bad_shard_rows_is_named(tmp_path):
    with pytest.raises(ValueError, match="shard_rows=0: pass a positive int"):
        run_ray_job(RayJobOptions(folder="m", input="x.jsonl", output=tmp_path, shard_rows=0))


def test_actor_plan_fits_the_cpus():
    assert plan_actors("cpu", None, None, 2) == (2, 1)
    assert plan_actors("cpu", 1, None, 2) == (1, 2)
    with pytest.raises(ValueError, match="actors=2 x threads=2 > 2 CPUs"):
        plan_actors("cpu", 2, 2, 2)


def test_cli_ray_engine_two_actors_one_thread_each(local_ray, tiny_folder, sts_texts, tmp_path, capsys):
    from albert_onnx.cli import main

    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(sts_texts[:300]) + "\n")
    out = tmp_path / "vectors"
    assert main(["embed", str(tiny_folder), "--engine", "ray", "--input", str(source), "--output", str(out),
                 "--actors", "2", "--threads", "1", "--variant", "fp32", "--device", "cpu"]) == 0
    assert "300 rows in 1 shards: 1 written, 0 already done, 0 bad rows" in capsys.readouterr().err
    rows = _read_all(out)
    assert set(rows) == {str(n) for n in range(300)}  # txt ids are line numbers
    expected = AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32").encode(sts_texts[:3])
    got = np.stack([np.asarray(rows[str(n)]["vector"], np.float32) for n in range(3)])
    assert np.abs(got - expected).max() <= 1e-5
