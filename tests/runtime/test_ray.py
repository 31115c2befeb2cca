"""Corpus embedding on a local Ray (2 CPUs): same vectors as in-process, every id once and of its input type,
resume only the same job, deterministic shards, bad rows kept by id, one-line errors before Ray starts."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import need_module, short_cls  # noqa: E402

ray = need_module("ray")
pa = need_module("pyarrow")
pq = need_module("pyarrow.parquet")

from albert_onnx import AlbertEmbedder, PoolingWarning, ray_job  # noqa: E402
from albert_onnx.model_folder import ModelFolder  # noqa: E402
from albert_onnx.ray_job import RayJobOptions, plan_actors, run_ray_job  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray():
    # a new local Ray (not one a developer left running) with no GPU, even on a GPU host
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _block_ray(monkeypatch) -> None:
    """From here on the test fails if the job starts Ray or puts anything into it."""
    def refuse(*args, **kwargs):
        pytest.fail("the job started Ray")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(ray, "put", refuse)


@pytest.fixture
def no_ray(monkeypatch):
    _block_ray(monkeypatch)


def _options(folder, source, out, **changes) -> RayJobOptions:
    return RayJobOptions(folder=str(folder), input=str(source), output=out, **{"variant": "fp32", "device": "cpu", "actors": 1, **changes})


def _read_all(folder) -> dict:
    rows = {}
    for part in sorted(folder.glob("part-*.parquet")):
        for row in pq.read_table(part).to_pylist():
            assert row["id"] not in rows, f"id {row['id']!r} twice"
            rows[row["id"]] = row
    return rows


def _write_jsonl(path, records) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


def _vectors(rows: dict, ids) -> np.ndarray:
    return np.stack([np.asarray(rows[i]["vector"], np.float32) for i in ids])


def _failing_embed(*args, **kwargs):
    raise RuntimeError("the run failed")


def test_ray_job_matches_in_process_keeps_bad_rows_and_resumes(local_ray, tiny_folder, sts_texts, tmp_path, caplog, monkeypatch):
    texts = sts_texts[:500]
    records = [{"id": i, "text": t} for i, t in enumerate(texts)]
    records += [{"id": 1000, "text": None}, {"id": 1001}, {"id": 1002, "text": 7}, {"id": 1003, "text": "a\ud800b"}]
    source = tmp_path / "corpus.jsonl"
    _write_jsonl(source, records)  # json.dumps writes the lone surrogate as the escape \ud800: valid JSON
    out = tmp_path / "vectors"
    options = _options(tiny_folder, source, out, shard_rows=128)
    with caplog.at_level(logging.WARNING, logger="albert_onnx"):
        counts = run_ray_job(options)
    assert counts == {"shards": 4, "skipped": 0, "written": 4, "rows": 504, "bad_rows": 4}
    logged = [record.getMessage() for record in caplog.records]
    assert logged == ["bad row id=1000 (corpus.jsonl:501): 'text' is null", "bad row id=1001 (corpus.jsonl:502): 'text' is missing",
                      "bad row id=1002 (corpus.jsonl:503): 'text' is a number, not a string",  # as the local engine says it
                      "bad row id=1003 (corpus.jsonl:504): 'text' has a lone surrogate '\\ud800' at character 1, which is not valid Unicode"]

    assert pq.read_schema(out / "part-000000.parquet").field("id").type == pa.int64()  # ints stay ints
    rows = _read_all(out)
    assert set(rows) == {record["id"] for record in records}
    for row_id in (1000, 1001, 1002, 1003):
        assert rows[row_id]["vector"] is None and rows[row_id]["error"] is not None
    assert all(rows[i]["error"] is None for i in range(len(texts)))
    expected = AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32").encode(texts)
    assert np.abs(_vectors(rows, range(len(texts))) - expected).max() <= 1e-5

    # an interrupted run: two shards never finished, one left a temporary file behind
    (out / "part-000001.parquet").unlink()
    (out / "part-000003.parquet").unlink()
    (out / ".part-000003.parquet.tmp").write_bytes(b"half")
    counts = run_ray_job(options)
    assert (counts["skipped"], counts["written"]) == (2, 2)
    assert _read_all(out) == rows  # the same rows, ids and vectors (each part is written in input order)
    assert run_ray_job(options)["written"] == 0  # complete: nothing to do

    # a part damaged since it was written (a machine crash before its data reached the disk; a copy by hand) is not
    # done: counted as finished before (found by an attack, 2026-12-07), so the job ended with rows missing or twice
    (out / "part-000001.parquet").write_bytes(b"")
    shutil.copyfile(out / "part-000000.parquet", out / "part-000002.parquet")
    other_job = pq.read_table(out / "part-000003.parquet").replace_schema_metadata(None)  # same ids, no stamp of this job
    pq.write_table(other_job, out / "part-000003.parquet")
    monkeypatch.setattr(ray_job, "_embed", _failing_embed)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="albert_onnx"), pytest.raises(RuntimeError, match="^the run failed$"):
        run_ray_job(options)
    logged = [record.getMessage() for record in caplog.records if record.getMessage().endswith("rows again")]
    assert len(logged) == 3
    assert logged[0].startswith(f"{out}/part-000001.parquet cannot be read (")
    assert logged[0].endswith("Parquet file size is 0 bytes): embedding its 128 rows again")
    assert logged[1] == f"{out}/part-000002.parquet holds other ids than this shard's rows: embedding its 128 rows again"
    assert logged[2] == (f"{out}/part-000003.parquet was not written by this job (no stamp of its fingerprint, or another's): "
                         "embedding its 120 rows again")
    # a run that fails after the check leaves no damaged part for the next one to check again
    assert sorted(path.name for path in out.glob("part-*")) == ["part-000000.parquet"]
    monkeypatch.undo()
    counts = run_ray_job(options)
    assert (counts["skipped"], counts["written"]) == (1, 3)
    assert _read_all(out) == rows

    # a part with this job's stamp and ids but vectors of another type is not done either
    part = pq.read_table(out / "part-000002.parquet")
    retyped = part.set_column(1, "vector", part["vector"].cast(pa.list_(pa.float64())))
    pq.write_table(retyped.replace_schema_metadata(part.schema.metadata), out / "part-000002.parquet")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="albert_onnx"):
        assert run_ray_job(options)["written"] == 1
    assert [record.getMessage() for record in caplog.records if record.getMessage().endswith("rows again")] == [
        f"{out}/part-000002.parquet has a vector column of list<element: double> and an error column of string, not a job's types: "
        "embedding its 128 rows again"]
    assert _read_all(out) == rows

    # parts that are none of the job's shards would be read with the output: copies past the last shard, or another
    # spelling of a shard's number (found by an attack, 2026-12-07: the rerun reported success over 1300 rows of 1200)
    shutil.copyfile(out / "part-000003.parquet", out / "part-000050.parquet")
    shutil.copyfile(out / "part-000001.parquet", out / "part-000001 (copy).parquet")
    (out / "part-000002.parquet").rename(out / "part-0000002.parquet")  # renamed: shard 2 is missing, and the copy is stray
    with pytest.raises(ValueError, match=rf"^output {re.escape(str(out))}/ holds part-0000002\.parquet, part-000001 \(copy\)\.parquet, "
                                         r"part-000050\.parquet, which this job of 4 shards did not write; readers of the folder would "
                                         "take them for its rows: move them away$"):
        run_ray_job(options)
    # overwrite: the old job's part files go (when this run writes its first part), other parquet files still stop it
    (out / "part-000001 (copy).parquet").unlink()
    fewer = dataclasses.replace(options, shard_rows=1000, overwrite=True)
    assert run_ray_job(fewer)["written"] == 1
    assert sorted(path.name for path in out.glob("*.parquet")) == ["part-000000.parquet"]


def test_rerunning_another_job_into_the_output_is_refused_in_one_line(local_ray, tiny_folder, sts_texts, tmp_path, monkeypatch):
    records = [{"id": f"s{i:03d}", "text": t} for i, t in enumerate(sts_texts[:40])]
    source = tmp_path / "corpus.jsonl"
    _write_jsonl(source, records)
    out = tmp_path / "vectors"
    options = _options(tiny_folder, source, out, shard_rows=16)
    assert run_ray_job(options)["written"] == 3
    rows = _read_all(out)
    assert sorted(rows) == [f"s{i:03d}" for i in range(40)]
    parts = {path.name: path.read_bytes() for path in out.glob("part-*")}

    def refused(options: RayJobOptions) -> str:
        with pytest.raises(ValueError) as caught:
            run_ray_job(options)
        message = str(caught.value)
        assert "\n" not in message
        assert ": pass overwrite=True (--overwrite) to restart, or another output folder" in message
        assert {path.name: path.read_bytes() for path in out.glob("part-*")} == parts  # nothing touched
        return message

    _block_ray(monkeypatch)  # a refused job starts nothing
    original = source.read_bytes()
    _write_jsonl(source, records + [{"id": f"x{i}", "text": "more"} for i in range(100)])  # a grown input
    assert refused(options).startswith(f"output {out}/ holds a job with input 'corpus.jsonl' ({len(original)} bytes, sha256 ")
    edited = original.replace(b"A ", b"a ", 1)  # changed text, same size
    assert len(edited) == len(original) and edited != original
    source.write_bytes(edited)
    assert "holds a job with input 'corpus.jsonl'" in refused(options)
    source.write_bytes(original)
    other = tmp_path / "other.jsonl"
    _write_jsonl(other, records[:39] + [{"id": "s039", "text": "another text"}])
    assert "this run has input 'other.jsonl'" in refused(_options(tiny_folder, other, out, shard_rows=16))
    assert refused(_options(tiny_folder, source, out, shard_rows=16, pooling="cls")) == (
        f"output {out}/ holds a job with pooling='mean'; this run has pooling='cls': pass overwrite=True (--overwrite) to "
        "restart, or another output folder")
    for change, fact in [({"max_length": 64}, "max_length=512"), ({"normalize": False}, "normalize=True"),
                         ({"long_text": "window"}, "long_text='truncate'"), ({"shard_rows": 8}, "shard_rows=16"),
                         ({"variant": "fused"}, "variant='fp32'"), ({"text_field": "body"}, "text_field='text'"),
                         ({"pooling": "cls", "normalize": False}, "pooling='mean'")]:
        message = refused(_options(tiny_folder, source, out, **{"shard_rows": 16, **change}))
        assert f"holds a job with {fact}; this run has" in message
    assert message.endswith("(also changed: normalize)")
    # another tokenizers or onnxruntime release splits or computes differently: its vectors are not this job's
    import onnxruntime
    import tokenizers

    for library in ("tokenizers", "onnxruntime"):
        installed = {"onnxruntime": onnxruntime.__version__, "tokenizers": tokenizers.__version__}
        monkeypatch.setattr(ray_job, "_library_facts", lambda: {**installed, library: "0.0.1"})
        assert f"holds a job with {library}={installed[library]!r}; this run has {library}='0.0.1'" in refused(options)

    monkeypatch.undo()
    # overwrite=True restarts cleanly: the old job's parts go (a stray one too), other files stay
    (out / "part-000099.parquet").write_bytes(b"stale")
    (out / "notes.txt").write_text("mine")
    changed = _options(tiny_folder, source, out, shard_rows=16, pooling="cls", normalize=False, max_length=16, overwrite=True)
    assert run_ray_job(changed)["written"] == 3
    assert sorted(path.name for path in out.iterdir()) == ["_job.json", "notes.txt", "part-000000.parquet", "part-000001.parquet",
                                                            "part-000002.parquet"]
    rows = _read_all(out)
    expected = AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32").encode(sts_texts[:40], pooling="cls", normalize=False, max_length=16)
    assert np.abs(_vectors(rows, [f"s{i:03d}" for i in range(40)]) - expected).max() <= 1e-5
    _block_ray(monkeypatch)  # a finished job has nothing to embed
    assert run_ray_job(dataclasses.replace(changed, overwrite=False))["skipped"] == 3  # the same job again: resumes (nothing left)
    assert json.loads((out / "_job.json").read_text())["job"]["pooling"] == "cls"


def test_shards_follow_input_order_in_every_run(local_ray, tiny_folder, tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    start = 0
    for index, size in enumerate([60, 5, 40, 1, 20, 3]):  # Ray's parquet reader returned these files out of order
        ids = np.arange(start, start + size, dtype=np.int32)
        pq.write_table(pa.table({"id": ids, "text": [f"text number {i}" for i in ids]}), folder / f"f{index:02d}.parquet")
        start += size
    contents = []
    for run in range(2):
        out = tmp_path / f"vectors{run}"
        assert run_ray_job(_options(tiny_folder, folder, out, shard_rows=16))["shards"] == 9
        contents.append([pq.read_table(part) for part in sorted(out.glob("part-*.parquet"))])
    for shard, (first, second) in enumerate(zip(*contents)):
        assert first.schema.field("id").type == pa.int32()  # the column's own type
        assert first["id"].to_pylist() == list(range(16 * shard, min(16 * shard + 16, 129)))  # rows in input order
        assert first.equals(second)


@pytest.mark.parametrize("name, text, problem", [
    ("null.jsonl", '{"id": 1, "text": "a"}\n{"id": null, "text": "b"}\n', "null.jsonl:2: 'id' is missing; every row needs an id"),
    ("nokey.jsonl", '{"id": 1, "text": "a"}\n{"text": "b"}\n', "nokey.jsonl:2: 'id' is missing"),
    ("mixed.jsonl", '{"id": 1, "text": "a"}\n\n{"id": "x", "text": "b"}\n',
     "mixed.jsonl:3: id='x' is str, but the ids before it are int (from mixed.jsonl:1); write every id as one type"),
    ("float.jsonl", '{"id": 1.5, "text": "a"}\n', "float.jsonl:1: id=1.5 is float; ids must be int or str"),
    ("empty.csv", "id,text\n1,a\n,b\n", "empty.csv:3: 'id' is missing"),
    ("twice.jsonl", '{"id": 5, "text": "a"}\n{"id": 6, "text": "b"}\n{"id": 5, "text": "c"}\n',
     "id=5 is on rows 0 and 2 of the input (counting from 0): give every row its own id"),
    ("twice.csv", "id,text\n007,a\n7,b\n007,c\n", "id='007' is on rows 0 and 2"),
    ("broken.jsonl", '{"id": 1, "text": "a"}\n{"id": 2, \n', "broken.jsonl:2: not valid JSON"),
    ("huge.jsonl", '{"id": 1, "text": "a"}\n{"id": ' + "2" * 5000 + ', "text": "b"}\n', "huge.jsonl:2: JSON that Python will not read"),
    # the row it names: it named the chunk's first row (found by an attack, 2026-12-07)
    ("wide.jsonl", '{"id": 1, "text": "a"}\n{"id": 2, "text": "b"}\n{"id": 18446744073709551616, "text": "c"}\n',
     "wide.jsonl:3: id=18446744073709551616 does not fit in 64 bits; write the ids as strings"),
])
def test_ids_that_cannot_identify_a_row_stop_the_job(local_ray, tiny_folder, tmp_path, name, text, problem):
    source = tmp_path / name
    source.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match="^" + re.escape(problem)):
        run_ray_job(_options(tiny_folder, source, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_ids_keep_the_type_they_were_written_in(local_ray, tiny_folder, tmp_path):
    ints, strs, jsonl = tmp_path / "ints.csv", tmp_path / "strs.csv", tmp_path / "strs.jsonl"
    ints.write_text('id,text\n3,"first, with a comma"\n-1,second\n10,\n')
    strs.write_text("id,text\n3,first\n007,second\n")
    _write_jsonl(jsonl, [{"id": "007", "text": "first"}, {"id": "7", "text": "second"}])  # Ray's pandas reader made both 7
    assert run_ray_job(_options(tiny_folder, ints, tmp_path / "a", shard_rows=2))["rows"] == 3
    assert run_ray_job(_options(tiny_folder, strs, tmp_path / "b", shard_rows=2))["rows"] == 2
    assert run_ray_job(_options(tiny_folder, jsonl, tmp_path / "c", shard_rows=2))["rows"] == 2
    assert sorted(_read_all(tmp_path / "a")) == [-1, 3, 10]  # csv: int when every id is a plain integer
    assert _read_all(tmp_path / "a")[10]["error"] is None  # an empty cell is an empty text, embedded
    assert sorted(_read_all(tmp_path / "b")) == ["007", "3"]  # 007 would become 7: every id stays str
    assert sorted(_read_all(tmp_path / "c")) == ["007", "7"]


def test_strict_stops_at_the_first_bad_row_in_one_line_and_leaves_no_folder(no_ray, tiny_folder, tmp_path, capsys):
    from albert_onnx.cli import main

    source = tmp_path / "bad.jsonl"
    source.write_text('{"id": "1", "text": "fine"}\n{"id": "2", "text": null}\n{"id": "3", "text": 4}\n')
    with pytest.raises(ValueError) as caught:
        run_ray_job(_options(tiny_folder, source, tmp_path / "new" / "out", strict=True))
    assert str(caught.value) == ("row id='2' (bad.jsonl:2): 'text' is null (strict=True: fix the row, or run without strict to "
                                 "keep bad rows with a null vector and the reason in the error column)")
    assert not (tmp_path / "new").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["embed", str(tiny_folder), "--engine", "ray", "--input", str(source), "--output", str(mine), "--strict",
                 "--variant", "fp32", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"albert-onnx embed: error: {caught.value}"]
    assert [path.name for path in mine.iterdir()] == ["notes.txt"]
    # the same in each reader's words: a key that is absent is missing, one that holds null is null
    (tmp_path / "absent.jsonl").write_text('{"id": "1", "text": "fine"}\n{"id": "2"}\n')
    pq.write_table(pa.table({"id": ["1", "2"], "text": ["fine", None]}), tmp_path / "null.parquet")
    for name, problem in (("absent.jsonl", "absent.jsonl:2): 'text' is missing"), ("null.parquet", "null.parquet row 1): 'text' is null")):
        with pytest.raises(ValueError, match=rf"^row id='2' \({re.escape(problem)} \(strict=True"):
            run_ray_job(_options(tiny_folder, tmp_path / name, tmp_path / "new" / "out", strict=True))


def test_a_failed_run_removes_only_what_it_wrote(tiny_folder, tmp_path, monkeypatch):
    source = tmp_path / "corpus.jsonl"
    _write_jsonl(source, [{"id": 1, "text": "a"}])
    monkeypatch.setattr(ray_job, "_start_ray", lambda options: None)
    monkeypatch.setattr(ray, "put", lambda table: table)

    def crash(*args):
        raise RuntimeError("an actor died")
    monkeypatch.setattr(ray_job, "_embed", crash)
    for out in (tmp_path / "made" / "here", tmp_path / "mine"):
        if out.name == "mine":
            out.mkdir()
            (out / "notes.txt").write_text("keep")
        with pytest.raises(RuntimeError, match="an actor died"):
            run_ray_job(_options(tiny_folder, source, out))
    assert not (tmp_path / "made").exists()  # nor the parent it had to make
    assert [path.name for path in (tmp_path / "mine").iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("change, error, message", [
    ({"batch_size": 0}, ValueError, "batch_size=0: pass an int >= 1"),
    ({"batch_size": "8"}, TypeError, "batch_size='8': pass an int >= 1"),
    ({"shard_rows": 0}, ValueError, "shard_rows=0: pass an int >= 1"),
    ({"actors": 0}, ValueError, "actors=0: pass an int >= 1"),
    ({"threads_per_actor": 1.5}, TypeError, "threads_per_actor=1.5: pass an int >= 1"),
    ({"pooling": "sum"}, ValueError, "pooling='sum': choose one of 'mean', "),
    ({"device": "tpu"}, ValueError, "device='tpu': choose one of 'auto', 'cpu', 'cuda'"),
    ({"variant": "int4"}, ValueError, "variant='int4': choose one of 'auto', 'fp32'"),
    ({"normalize": "no"}, TypeError, "normalize='no': pass True or False"),
    ({"max_length": 2}, ValueError, "max_length=2: pass an int >= 3"),
    ({"max_length": 513}, ValueError, "max_length=513: pass an int from 3 to 512"),
    ({"long_text": "wrap"}, ValueError, "long_text='wrap': choose one of 'truncate', 'window'"),
    ({"strict": 1}, TypeError, "strict=1: pass True or False"),
    ({"overwrite": "yes"}, TypeError, "overwrite='yes': pass True or False"),
    ({"id_field": ""}, ValueError, "id_field='': pass a non-empty name"),
    ({"input": "missing.jsonl"}, ValueError, "input='missing.jsonl' does not exist; pass an existing .jsonl, .json, .csv"),
    ({"input": "corpus.tsv"}, ValueError, "input='corpus.tsv' is not a .jsonl, .json, .csv, .txt, .parquet file, or a folder"),
    ({"input": "s3://bucket/corpus.parquet"}, ValueError, "input='s3://bucket/corpus.parquet' is a URI; pass a local"),
    ({"output": "corpus.jsonl"}, ValueError, "output='corpus.jsonl' is a file, not a folder"),
    # found by an attack (2026-12-07): "corpus.jsonl/x/y: Not a directory", naming neither the argument nor the fix
    ({"output": "corpus.jsonl/x/y"}, ValueError, "output='corpus.jsonl/x/y' is inside 'corpus.jsonl', which is a file; pass a folder outside it"),
    ({"output": "out\0"}, ValueError, "output='out\\x00' holds a NUL character"),
    ({"variant": "fp16"}, ValueError, "variant='fp16' runs on ['cuda'], not device='cpu'"),
])
def test_options_are_checked_before_ray_starts(no_ray, tiny_folder, tmp_path, monkeypatch, change, error, message):
    monkeypatch.chdir(tmp_path)
    _write_jsonl(tmp_path / "corpus.jsonl", [{"id": 1, "text": "a"}])
    (tmp_path / "corpus.tsv").write_text("id\ttext\n")
    options = _options(tiny_folder, "corpus.jsonl", "out")
    for name, value in change.items():
        setattr(options, name, value)
    with pytest.raises(error) as caught:
        run_ray_job(options)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_numpy_integer_options_are_recorded_as_ints(tiny_folder, tmp_path):
    # a NumPy integer is a count (as in AlbertEmbedder), and must reach _job.json as a JSON number
    source = tmp_path / "in.txt"
    source.write_text("a\n")
    checked = ray_job._check(_options(tiny_folder, source, tmp_path / "out", batch_size=np.int64(4), shard_rows=np.int32(8),
                                      actors=np.int64(1), threads_per_actor=np.uint16(1), max_length=np.int64(32)))
    counts = {key: getattr(checked, key) for key in ("batch_size", "shard_rows", "actors", "threads_per_actor", "max_length")}
    assert counts == {"batch_size": 4, "shard_rows": 8, "actors": 1, "threads_per_actor": 1, "max_length": 32}
    assert {type(value) for value in counts.values()} == {int}
    flagged = ray_job._check(_options(tiny_folder, source, tmp_path / "out", normalize=np.False_, strict=np.True_, overwrite=np.False_))
    flags = {key: getattr(flagged, key) for key in ("normalize", "strict", "overwrite")}
    assert flags == {"normalize": False, "strict": True, "overwrite": False}
    assert {type(value) for value in flags.values()} == {bool}  # np.bool_ is no JSON


def test_actor_plan_fits_the_cpus_and_gives_each_gpu_an_actor():
    assert plan_actors("cpu", None, None, 2, 0) == (2, 1)
    assert plan_actors("cpu", 1, None, 2, 0) == (1, 2)
    with pytest.raises(ValueError, match=r"^actors=2 x threads_per_actor=2 > 2 CPUs of the Ray cluster; lower one of them \(the CLI's --actors, --threads\)$"):
        plan_actors("cpu", 2, 2, 2, 0)
    assert plan_actors("cuda", None, None, 64, 4) == (4, 1)  # one actor per GPU across the cluster
    assert plan_actors("cuda", 2, 3, 64, 4) == (2, 3)
    with pytest.raises(ValueError, match="actors=5 but the Ray cluster has 4 GPUs and each actor holds one; pass at most 4"):
        plan_actors("cuda", 5, None, 64, 4)
    with pytest.raises(ValueError, match="device='cuda' but the Ray cluster has no GPU"):
        plan_actors("cuda", None, None, 64, 0)


def test_cli_ray_engine_two_actors_one_thread_each(local_ray, tiny_folder, sts_texts, tmp_path, capsys):
    from albert_onnx.cli import main

    source = tmp_path / "corpus.txt"
    lines = [text.encode() for text in sts_texts[:300]]
    lines[3] = b"caf\xed\xa0\x80"  # a lone surrogate written as UTF-8 bytes: not valid UTF-8
    source.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "vectors"
    assert main(["embed", str(tiny_folder), "--engine", "ray", "--input", str(source), "--output", str(out),
                 "--actors", "2", "--threads", "1", "--variant", "fp32", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "albert-onnx embed: warning: bad row id=3 (corpus.txt:4): line is not valid UTF-8 (byte 0xed at byte 3)" in err
    assert "300 rows in 1 shards: 1 written, 0 already done, 1 bad rows" in err
    rows = _read_all(out)
    assert set(rows) == set(range(300))  # txt ids are line numbers from 0, as ints
    assert rows[3]["vector"] is None
    expected = AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32").encode(sts_texts[:3])
    assert np.abs(_vectors(rows, range(3)) - expected).max() <= 1e-5


def test_cli_ray_job_of_its_own_keeps_ray_info_off_the_console(tiny_folder, sts_texts, tmp_path):
    """A command that starts Ray: Ray's INFO lines (a dozen of them, "Started a local Ray instance", Ray Data's
    execution plan and progress) stay in Ray's log files; the command's summary is its last line. Two warnings of
    every such run are gone too: the local Ray's token authentication notice, and Ray Data's about an actor pool
    larger than the shards to embed (2 actors asked, 1 shard)."""
    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(sts_texts[:20]) + "\n")
    result = subprocess.run([sys.executable, "-m", "albert_onnx.cli", "embed", str(tiny_folder), "--engine", "ray", "--input",
                             str(source), "--output", str(tmp_path / "out"), "--actors", "2", "--threads", "1", "--variant", "fp32",
                             "--device", "cpu"], capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_ADDRESS": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    assert [line for line in lines if re.search(r"\sINFO\s", line)] == []
    assert [line for line in lines if "Token authentication is enabled" in line or "concurrent actors" in line] == []
    assert lines[-1] == f"20 rows in 1 shards: 1 written, 0 already done, 0 bad rows -> {tmp_path / 'out'}"
    assert set(_read_all(tmp_path / "out")) == set(range(20))


def test_sigterm_ends_a_ray_job_in_one_line_and_keeps_finished_parts(local_ray, tiny_folder, sts_texts, tmp_path):
    # Ray's C++ core installs a SIGTERM handler that printed a stack dump (found by an attack, 2026-12-07)
    source, out = tmp_path / "in.txt", tmp_path / "out"
    source.write_text("\n".join(sts_texts[:40]) + "\n")
    code = (
        "import dataclasses, os, signal, time\n"
        "from albert_onnx import ray_job\n"
        "from albert_onnx.cli import main\n"
        "write = ray_job._write_shard\n"
        "def write_then_terminated(output, shard, *args):\n"
        "    write(output, shard, *args)\n"
        "    os.kill(os.getpid(), signal.SIGTERM); time.sleep(60)\n"
        "ray_job._write_shard = write_then_terminated\n"
        "run = ray_job.run_ray_job\n"
        "ray_job.run_ray_job = lambda options: run(dataclasses.replace(options, shard_rows=10))  # the CLI has no flag for it\n"
        f"raise SystemExit(main(['embed', {str(tiny_folder)!r}, '--engine', 'ray', '--input', {str(source)!r}, '--output', {str(out)!r}, "
        "'--actors', '1', '--threads', '1']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 143, result.stderr
    assert result.stderr.endswith("albert-onnx: terminated\n")
    assert "SIGTERM received" not in result.stderr and "Traceback" not in result.stderr
    assert sorted(path.name for path in out.iterdir()) == ["_job.json", "part-000000.parquet"]  # no lock, no temporary
    assert ray_job.run_ray_job(_options(tiny_folder, source, out, variant="auto", shard_rows=10))["skipped"] == 1


@pytest.mark.parametrize("ignored", [False, True])
def test_sigterm_while_ray_starts_is_the_commands_sigterm(tiny_folder, tmp_path, ignored):
    # While ray.init ran, Ray's own SIGTERM handler (sys.exit(15)) ended the command silently with status 15, and once
    # its C++ core was up, Abseil's printed a stack dump and could abort; an ignored SIGTERM was not ignored there
    # (found by attacks, 2026-12-07). Sent once the core is connected, before ray.init returns.
    source, out = tmp_path / "in.txt", tmp_path / "out"
    source.write_text("a\nb\n")
    code = (
        "import os, signal\n"
        "import ray._private.worker as worker\n"
        "from albert_onnx.cli import main\n"
        "connect = worker.connect\n"
        "def connect_then_terminated(*args, **kwargs):\n"
        "    result = connect(*args, **kwargs)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return result\n"
        "worker.connect = connect_then_terminated\n"
        + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignored else "")
        + f"raise SystemExit(main(['embed', {str(tiny_folder)!r}, '--engine', 'ray', '--input', {str(source)!r}, '--output', {str(out)!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env={**os.environ, "RAY_ADDRESS": ""})
    assert "SIGTERM received" not in result.stderr and "Traceback" not in result.stderr
    if ignored:
        assert result.returncode == 0, result.stderr
        assert set(_read_all(out)) == {0, 1}
    else:
        assert (result.returncode, result.stderr.splitlines()[-1]) == (143, "albert-onnx: terminated"), result.stderr
        assert sorted(path.name for path in tmp_path.iterdir()) == ["in.txt"]


def test_sigterm_after_ray_shuts_down_still_reaches_the_command(tiny_folder, tmp_path):
    # ray.shutdown() left SIGTERM at its default in C while Python still named the CLI's handler: a SIGTERM in the
    # command's last moments ended it silently (found by an attack, 2026-12-07)
    source, out = tmp_path / "in.txt", tmp_path / "out"
    source.write_text("a\nb\n")
    code = (
        "import os, signal\n"
        "import ray\n"
        "from albert_onnx.cli import main\n"
        "shutdown = ray.shutdown\n"
        "def shutdown_then_terminated(*args, **kwargs):\n"
        "    shutdown(*args, **kwargs); os.kill(os.getpid(), signal.SIGTERM)\n"
        "ray.shutdown = shutdown_then_terminated\n"
        f"raise SystemExit(main(['embed', {str(tiny_folder)!r}, '--engine', 'ray', '--input', {str(source)!r}, '--output', {str(out)!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env={**os.environ, "RAY_ADDRESS": ""})
    assert (result.returncode, result.stderr.splitlines()[-1]) == (143, "albert-onnx: terminated"), result.stderr


@pytest.mark.parametrize("max_length", [8, None])
def test_truncation_is_reported_once_for_the_whole_job_as_the_local_engine_does(local_ray, tiny_folder, sts_texts, tmp_path,
                                                                                capsys, caplog, max_length):
    from albert_onnx.cli import main
    from albert_onnx.embedder import TruncationWarning

    texts = sts_texts[:100]
    long = " ".join(sts_texts[:200])  # far over the model's own 512 tokens
    for index in (5, 40, 75, 99):  # one in each batch of 32 rows (--batch-size 4 x 8)
        texts[index] = long
    source = tmp_path / "corpus.txt"
    source.write_text("".join(text + "\n" for text in texts), encoding="utf-8")
    with pytest.warns(TruncationWarning) as caught:
        AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32").encode(texts, max_length=max_length)
    expected = sum(record.message.truncated for record in caught)
    limit = max_length or 512  # the tiny model's own limit when none is given
    if max_length is None:
        assert expected == 4
    flags = ["--variant", "fp32", "--device", "cpu", "--batch-size", "4", *(["--max-length", str(max_length)] if max_length else [])]

    def truncation_lines(engine: list[str], output) -> list[str]:
        assert main(["embed", str(tiny_folder), "--input", str(source), "--output", str(output), *flags, *engine]) == 0
        return [line for line in capsys.readouterr().err.splitlines() if "truncated" in line]

    message = f"{expected} of 100 texts exceeded --max-length {limit} tokens and were truncated; pass --long-text window to embed whole texts"
    ray_lines = truncation_lines(["--engine", "ray", "--actors", "2", "--threads", "1"], tmp_path / "vectors")
    assert ray_lines == [f"albert-onnx embed: warning: {message}"]
    assert truncation_lines([], tmp_path / "vectors.npy") == ray_lines  # the local engine's line, word for word

    # four shards: four blocks, spread over both actors, still one line
    with caplog.at_level(logging.WARNING, logger="albert_onnx"):
        run_ray_job(_options(tiny_folder, source, tmp_path / "sharded", actors=2, batch_size=4, shard_rows=25, max_length=max_length))
    assert [record.getMessage() for record in caplog.records if "truncated" in record.getMessage()] == [message]


def test_a_damaged_parquet_file_in_an_input_folder_is_named(no_ray, tiny_folder, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    pq.write_table(pa.table({"id": [1, 2], "text": ["a", "b"]}), source / "a.parquet")
    (source / "b.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(ValueError, match=r"^b\.parquet: not a readable parquet file \(.*\); fix or remove it$"):
        run_ray_job(_options(tiny_folder, source, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_manifest_that_does_not_match_its_graph_stops_the_job_before_ray(no_ray, copy_of, tmp_path):
    folder = copy_of
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["model"]["hidden_size"] = 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    _write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "text": "a"}])
    with pytest.raises(ValueError, match=r"manifest\.json says model\.hidden_size=64 but model_fp32\.onnx was exported with 128"):
        run_ray_job(_options(folder, tmp_path / "in.jsonl", tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_an_input_written_while_the_job_reads_it_is_refused(local_ray, tiny_folder, tmp_path, monkeypatch):
    """The fingerprint hashes the input, then the job parses it: a write in between gave vectors of the new texts
    under the old input's fingerprint, which a rerun with the old input resumed as its own."""
    source = tmp_path / "in.jsonl"
    _write_jsonl(source, [{"id": 1, "text": "a cat"}, {"id": 2, "text": "a dog"}])
    read = ray_job._read

    def read_after_a_write(*args):
        _write_jsonl(source, [{"id": 1, "text": "something else"}, {"id": 2, "text": "a dog"}])
        return read(*args)

    monkeypatch.setattr(ray_job, "_read", read_after_a_write)
    with pytest.raises(ValueError, match=rf"^input={re.escape(repr(str(source)))}: in\.jsonl changed while this job read it "
                                         r"\(size 54 -> 63\); nothing was written"):
        run_ray_job(_options(tiny_folder, source, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_pooler_pooling_of_a_folder_without_the_head_stops_the_job_before_ray(no_ray, copy_of, tmp_path):
    # a checkpoint saved without the pooler head (AlbertForMaskedLM) exports without pooler_output (tests/export)
    folder = copy_of
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["outputs"].remove("pooler_output")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    _write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "text": "a"}])
    with pytest.raises(ValueError, match=rf"^pooling='pooler': {re.escape(str(folder))} has no pooler head .*; pick mean, cls or max$"):
        run_ray_job(_options(folder, tmp_path / "in.jsonl", tmp_path / "out", pooling="pooler"))
    assert not (tmp_path / "out").exists()


def test_a_job_resumes_only_with_the_same_uint8_x_int8_twin(copy_of, tmp_path):
    # actors on VNNI/AMX CPUs run the twin, not model_int8.onnx: another twin makes another job
    folder = copy_of
    _write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "text": "a"}])
    options = ray_job._check(_options(folder, tmp_path / "in.jsonl", tmp_path / "out", variant="int8"))
    files = [options.input]

    def job() -> dict:
        return ray_job._fingerprint(options, files, ray_job.ModelFolder.load(folder), "int8", "cpu", 512)

    options.output.mkdir()
    (options.output / "part-000000.parquet").write_bytes(b"a finished shard")
    first = {"format": ray_job.JOB_FORMAT, "job": job()}
    ray_job._write_json(options.output / ray_job.JOB_FILE, first)
    assert ray_job._resumable(options.output, job(), overwrite=False) == {0}
    manifest = json.loads((folder / "manifest.json").read_text())
    twin = manifest["variants"]["int8"]["u8s8"]
    recorded = twin["sha256"][:12]
    twin["sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=rf"holds a job with uint8 x int8 twin sha256 {recorded}; this run has uint8 x int8 "
                                         r"twin sha256 000000000000: pass overwrite=True"):
        ray_job._resumable(options.output, job(), overwrite=False)
    older = json.loads((options.output / ray_job.JOB_FILE).read_text())
    del older["job"]["twin_sha256"]  # a record from before the twin was recorded
    ray_job._write_json(options.output / ray_job.JOB_FILE, older)
    with pytest.raises(ValueError, match=r"holds a job recorded by an older albert-onnx, which did not record twin_sha256; this "
                                         r"run has uint8 x int8 twin sha256 000000000000, so the parts may differ: pass overwrite"):
        ray_job._resumable(options.output, job(), overwrite=False)
    del manifest["variants"]["int8"]["u8s8"]  # a folder from before the twin: the older record's job again
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert ray_job._resumable(options.output, job(), overwrite=False) == {0}
    ray_job._write_json(options.output / ray_job.JOB_FILE, first)  # the job with the twin, rerun without it
    with pytest.raises(ValueError, match=rf"holds a job with uint8 x int8 twin sha256 {recorded}; this run has no uint8 x int8 twin"):
        ray_job._resumable(options.output, job(), overwrite=False)


def _driver_with_cuda(monkeypatch, gpus: int) -> list:
    """The driver's onnxruntime has the CUDA provider and the cluster has ``gpus`` GPUs; returns the Ray starts."""
    started = []
    monkeypatch.setattr(ray_job, "cuda_missing_reason", lambda: None)
    monkeypatch.setattr(ray_job, "_start_ray", lambda options: started.append(options.address))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 64.0, **({"GPU": float(gpus)} if gpus else {})})
    return started


def test_auto_is_cuda_only_where_the_cluster_has_a_gpu(tiny_folder, tmp_path, monkeypatch, caplog):
    folder = ModelFolder.load(tiny_folder)

    def device(variant="auto") -> str:
        return ray_job._job_device(_options(tiny_folder, "corpus.jsonl", tmp_path / "out", device="auto", variant=variant), folder)

    started = _driver_with_cuda(monkeypatch, 2)
    assert device() == "cuda"
    assert started == [None]  # Ray was started (here: its address, None) to count the GPUs
    assert device("fused") == "cuda"

    started = _driver_with_cuda(monkeypatch, 0)
    with caplog.at_level(logging.DEBUG, logger="albert_onnx"):
        assert device() == "cpu"
    assert [(record.levelname, record.getMessage()) for record in caplog.records] == [
        ("WARNING", "device='auto' runs on cpu, not cuda: the Ray cluster has no GPU (start Ray on GPU machines: ray start --num-gpus N)")]
    with pytest.raises(ValueError) as caught:
        device("fp16")
    assert str(caught.value) == ("variant='fp16' runs on ['cuda'], not device='cpu', and device='auto' cannot use cuda: the Ray "
                                 "cluster has no GPU (start Ray on GPU machines: ray start --num-gpus N)")

    # a graph that runs only on the CPU, or a CPU-only onnxruntime: cpu, without starting Ray
    started = _driver_with_cuda(monkeypatch, 2)
    assert device("int8") == "cpu"
    monkeypatch.setattr(ray_job, "cuda_missing_reason", lambda: "onnxruntime has no CUDAExecutionProvider")
    assert device() == "cpu"
    assert started == []


def test_auto_job_on_a_cluster_without_gpus_runs_on_cpu(local_ray, tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(ray_job, "cuda_missing_reason", lambda: None)  # as with onnxruntime-gpu on the driver
    source = tmp_path / "corpus.jsonl"
    texts = ["A man is playing a guitar.", "Stocks fell sharply on Tuesday."]
    _write_jsonl(source, [{"id": i, "text": text} for i, text in enumerate(texts)])
    out = tmp_path / "vectors"
    counts = run_ray_job(_options(tiny_folder, source, out, device="auto", variant="auto"))
    assert counts["written"] == 1
    job = json.loads((out / "_job.json").read_text())["job"]
    assert (job["device"], job["variant"]) == ("cpu", "int8")
    expected = AlbertEmbedder.from_pretrained(tiny_folder, variant="int8", device="cpu", threads=1).encode(texts)
    np.testing.assert_array_equal(_vectors(_read_all(out), [0, 1]), expected)


def test_auto_keeps_the_device_of_the_finished_parts(tiny_folder, tmp_path, monkeypatch):
    folder = ModelFolder.load(tiny_folder)
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-000000.parquet").write_bytes(b"")  # a finished part: the record below says what made it

    def device(**changes) -> str:
        return ray_job._job_device(_options(tiny_folder, "corpus.jsonl", out, **{"device": "auto", "variant": "auto", **changes}), folder)

    for recorded, gpus in (("cuda", 0), ("cpu", 2)):
        (out / "_job.json").write_text(json.dumps({"format": ray_job.JOB_FORMAT, "job": {"device": recorded}}))
        started = _driver_with_cuda(monkeypatch, gpus)
        assert device() == recorded  # not the cluster's count: the job resumes, or is refused for another change, as made
        assert started == []  # so a finished job does not start Ray
        assert device(overwrite=True) == ("cuda" if gpus else "cpu")  # a restart counts the GPUs
        assert started == [None]
    assert device(variant="fp16") == "cuda"  # a recorded cpu that the variant cannot run on: the cluster decides
    monkeypatch.setattr(ray_job, "cuda_missing_reason", lambda: "onnxruntime has no CUDAExecutionProvider")
    (out / "_job.json").write_text(json.dumps({"format": ray_job.JOB_FORMAT, "job": {"device": "cuda"}}))
    assert device() == "cpu"  # cuda recorded, but this onnxruntime cannot run it: the fingerprint then names the change


def test_auto_without_a_cluster_is_one_line(tiny_folder, tmp_path, monkeypatch):
    def no_cluster(**kwargs):  # what ray.init(address="auto") raises where no cluster runs
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to by setting `--address` flag\n"
                              "or `RAY_ADDRESS` environment variable.")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", no_cluster)
    source = tmp_path / "corpus.jsonl"
    _write_jsonl(source, [{"id": 1, "text": "a"}])
    with pytest.raises(ValueError) as caught:
        run_ray_job(_options(tiny_folder, source, tmp_path / "out", address="auto"))
    assert str(caught.value) == ("address='auto': no Ray cluster answered there (Could not find any running Ray instance. "
                                 "Please specify the one to connect to by setting `--address` flag or `RAY_ADDRESS` environment variable.); "
                                 "pass the address `ray status` shows on the head node, or omit it to start Ray here")
    assert not (tmp_path / "out").exists()


def _port_nothing_listens_on() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed on return: nothing listens there


@pytest.mark.parametrize("form", ["HOST:PORT", "ray://HOST:PORT", "RAY_ADDRESS", "RAY_ADDRESS with auto"])
def test_an_address_where_nothing_listens_is_one_line_at_once(no_ray, tiny_folder, tmp_path, monkeypatch, capsys, form):
    """ray.init waited on such an address for minutes (still retrying after 300 s), logging a warning every few seconds."""
    from albert_onnx.cli import main

    address = f"127.0.0.1:{_port_nothing_listens_on()}"
    flags = []
    if form.startswith("RAY_ADDRESS"):
        monkeypatch.setenv("RAY_ADDRESS", address)
        named = f"RAY_ADDRESS={address!r}"
        flags = ["--address", "auto"] if form.endswith("auto") else []
    else:
        given = form.replace("HOST:PORT", address)
        flags, named = ["--address", given], f"address={given!r}"
    source = tmp_path / "corpus.jsonl"
    _write_jsonl(source, [{"id": 1, "text": "a"}])
    started = time.monotonic()
    status = main(["embed", str(tiny_folder), "--engine", "ray", "--input", str(source), "--output", str(tmp_path / "out"),
                   "--variant", "fp32", "--device", "cpu", *flags])
    seconds = time.monotonic() - started
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    assert err.startswith(f"albert-onnx embed: error: {named}: nothing accepts connections at {address} (Connection refused); "
                          "start the cluster there (`ray start --head`)"), err
    assert seconds < 30, seconds  # no retries: one refused connection
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("address", ["headnode", "headnode:", "headnode:port", "10.0.0.9:70000", "::1:6379", "headnode:\u0666\u0663\u0667\u0669",
                                     "headnode:" + "9" * 5000, "ray://headnode", "head node:6379"])
def test_an_address_that_is_not_host_port_is_one_line_before_the_job_starts(no_ray, tiny_folder, tmp_path, address):
    source = tmp_path / "corpus.jsonl"
    _write_jsonl(source, [{"id": 1, "text": "a"}])
    with pytest.raises(ValueError) as caught:
        run_ray_job(_options(tiny_folder, source, tmp_path / "out", address=address))
    assert str(caught.value) == (f"address={address!r} is not HOST:PORT (or ray://HOST:PORT, auto, local; an IPv6 host in brackets); "
                                 "pass the address `ray status` shows on the head node, or omit it to start Ray here")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl"]


@pytest.mark.parametrize("host, shown, reason", [("a" * 64 + ".example", "a" * 64 + ".example", "(UnicodeError: label empty or too long)"),
                                                 ("[::1]", "[::1]", "Connection refused")])
def test_a_host_that_cannot_be_reached_is_one_line(no_ray, tiny_folder, tmp_path, host, shown, reason):
    """An IDNA label over 63 characters raised UnicodeError from the socket module, not OSError."""
    source = tmp_path / "corpus.jsonl"
    _write_jsonl(source, [{"id": 1, "text": "a"}])
    port = _port_nothing_listens_on()
    if host == "[::1]":
        try:
            socket.create_server(("::1", 0), family=socket.AF_INET6).close()
        except OSError:
            pytest.skip("no IPv6 loopback here")
    with pytest.raises(ValueError) as caught:
        run_ray_job(_options(tiny_folder, source, tmp_path / "out", address=f"{host}:{port}"))
    message = str(caught.value)
    assert message.startswith(f"address='{host}:{port}': nothing accepts connections at {shown}:{port} (") and reason in message, message
    assert "\n" not in message


def test_ray_address_auto_without_a_cluster_names_ray_address(tiny_folder, tmp_path, monkeypatch):
    """RAY_ADDRESS=auto made ray.init raise ConnectionError, which kept its traceback (no --address to name)."""
    def no_cluster(**kwargs):
        raise ConnectionError("Could not find any running Ray instance.")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", no_cluster)
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    source = tmp_path / "corpus.jsonl"
    _write_jsonl(source, [{"id": 1, "text": "a"}])
    with pytest.raises(ValueError) as caught:
        run_ray_job(_options(tiny_folder, source, tmp_path / "out"))
    assert str(caught.value) == ("RAY_ADDRESS='auto': no Ray cluster answered there (Could not find any running Ray instance.); "
                                 "pass the address `ray status` shows on the head node, or omit it to start Ray here")


@pytest.mark.parametrize("form", ["ray://127.0.0.1:PORT", "localhost:PORT", "http://127.0.0.1:PORT"])
def test_an_address_that_accepts_connections_is_handed_to_ray(tiny_folder, tmp_path, monkeypatch, form):
    """The check only refuses: where something listens (or for a scheme Ray's own messages cover), ray.init gets the
    address as given."""
    given = []

    class Stop(Exception):
        pass

    def init(**kwargs):
        given.append(kwargs["address"])
        raise Stop
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    source = tmp_path / "corpus.jsonl"
    _write_jsonl(source, [{"id": 1, "text": "a"}])
    with socket.create_server(("127.0.0.1", 0)) as server:
        address = form.replace("PORT", str(server.getsockname()[1]))
        with pytest.raises(Stop):
            run_ray_job(_options(tiny_folder, source, tmp_path / "out", address=address))
    assert given == [address]


def test_a_record_nested_too_deep_is_one_line(no_ray, tiny_folder, tmp_path):
    source = tmp_path / "corpus.jsonl"
    _write_jsonl(source, [{"id": 1, "text": "a"}])
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-000000.parquet").write_bytes(b"")
    (out / "_job.json").write_text("[" * 200_000 + "]" * 200_000)
    for device in ("auto", "cpu"):
        with pytest.raises(ValueError) as caught:
            run_ray_job(_options(tiny_folder, source, out, device=device))
        assert str(caught.value).startswith(f"output {out}/_job.json cannot be read (maximum recursion depth exceeded")
        assert str(caught.value).endswith("so its 1 part files may not be a job's to replace: move them away, or pass another output folder")
    with pytest.raises(ValueError, match=r"cannot be read .* may not be a job's to replace"):
        run_ray_job(_options(tiny_folder, source, out, overwrite=True))  # not even overwrite: the record is not ours
    assert sorted(path.name for path in out.iterdir()) == ["_job.json", "part-000000.parquet"]


# Found by an attack (2026-12-05): --overwrite deleted part files that no record claimed (the job's own input), and
# two jobs on one output both reported success, leaving rows of two inputs and 6,998 ids twice.


@pytest.mark.parametrize("record", [None, '{"job": {}}'])
def test_overwrite_never_removes_parts_no_record_of_ours_claims(no_ray, tiny_folder, tmp_path, record):
    out = tmp_path / "data"
    out.mkdir()
    table = pa.table({"id": [1, 2], "text": ["a", "b"]})
    for name in ("part-000000.parquet", "part-000001.parquet"):
        pq.write_table(table, out / name)
    if record is not None:
        (out / "_job.json").write_text(record)  # another program's _job.json
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    for overwrite in (False, True):
        with pytest.raises(ValueError, match=r"so its 2 part files may not be a job's to replace: move them away, or pass another "
                                             r"output folder$"):
            run_ray_job(_options(tiny_folder, out / "part-000001.parquet", out, overwrite=overwrite))
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_an_overwrite_interrupted_while_clearing_can_be_run_again(local_ray, tiny_folder, sts_texts, tmp_path, monkeypatch):
    """The record was removed first: an interrupt left parts with no record, which not even --overwrite took."""
    source = tmp_path / "corpus.jsonl"
    _write_jsonl(source, [{"id": i, "text": t} for i, t in enumerate(sts_texts[:40])])
    out = tmp_path / "out"
    assert run_ray_job(_options(tiny_folder, source, out, shard_rows=16))["written"] == 3
    unlink, calls = Path.unlink, []

    def interrupted(self, *args, **kwargs):
        calls.append(self.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_ray_job(_options(tiny_folder, source, out, shard_rows=16, pooling="cls", overwrite=True))
    monkeypatch.undo()
    assert (out / "_job.json").exists() and len(list(out.glob("part-*"))) == 2  # the old record and two of its parts
    assert run_ray_job(_options(tiny_folder, source, out, shard_rows=16))["skipped"] == 2  # resumes the old job
    assert run_ray_job(_options(tiny_folder, source, out, shard_rows=16, pooling="cls", overwrite=True))["written"] == 3
    expected = AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32").encode(sts_texts[:40], pooling="cls")
    assert np.abs(_vectors(_read_all(out), range(40)) - expected).max() <= 1e-5


@pytest.mark.parametrize("where, message", [
    ("model", "is inside the model folder"),  # the export's --overwrite then refused the folder
    ("dangling", "is a symbolic link to nothing (or a loop of links); remove it, or pass a folder"),  # was "File exists"
])
def test_an_output_in_the_model_folder_or_a_dangling_link_is_refused(no_ray, copy_of, tmp_path, where, message):
    source = tmp_path / "corpus.jsonl"
    _write_jsonl(source, [{"id": 1, "text": "a"}])
    out = copy_of / "vectors" if where == "model" else tmp_path / "link"
    if where == "dangling":
        out.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=re.escape(message)):
        run_ray_job(_options(copy_of, source, out))
    assert not (copy_of / "vectors").exists() and not (tmp_path / "nowhere").exists()


def test_a_second_job_on_a_running_jobs_output_is_refused(no_ray, tiny_folder, tmp_path):
    source = tmp_path / "corpus.jsonl"
    _write_jsonl(source, [{"id": 1, "text": "a"}])
    out = tmp_path / "out"
    out.mkdir()
    (out / "_job.json").write_text('{"format": "albert-onnx-ray-job", "job": {}}')
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; f = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)", str(out / ray_job.LOCK_FILE)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for overwrite in (False, True):
            with pytest.raises(ValueError, match=rf"^output {re.escape(str(out))}/ is being written by another job that is still "
                                                 r"running \(it holds _job\.lock\); wait for it to finish, or pass another output folder$"):
                run_ray_job(_options(tiny_folder, source, out, overwrite=overwrite))
        assert sorted(path.name for path in out.iterdir()) == ["_job.json", "_job.lock"]  # the running job's, untouched
        assert (out / "_job.json").read_text() == '{"format": "albert-onnx-ray-job", "job": {}}'
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_a_killed_job_left_is_taken_and_removed(local_ray, tiny_folder, tmp_path):
    source = tmp_path / "corpus.jsonl"
    _write_jsonl(source, [{"id": 1, "text": "a"}, {"id": 2, "text": "b"}])
    out = tmp_path / "out"
    out.mkdir()
    (out / ray_job.LOCK_FILE).write_bytes(b"")  # what kill -9 leaves: the file, no flock
    assert run_ray_job(_options(tiny_folder, source, out))["written"] == 1
    assert sorted(path.name for path in out.iterdir()) == ["_job.json", "part-000000.parquet"]


def test_a_job_that_fails_before_writing_leaves_an_earlier_record_and_no_new_folder(no_ray, tiny_folder, tmp_path):
    source = tmp_path / "corpus.jsonl"
    source.write_text('{"id": 1, "text": "a"}\nnot json\n')
    out = tmp_path / "out"
    out.mkdir()
    (out / "_job.json").write_text('{"format": "albert-onnx-ray-job", "job": {}, "finished": {"rows": 0}}')  # an empty job's
    with pytest.raises(ValueError, match="not JSON|JSON"):
        run_ray_job(_options(tiny_folder, source, out))
    assert sorted(path.name for path in out.iterdir()) == ["_job.json"]
    with pytest.raises(ValueError):
        run_ray_job(_options(tiny_folder, source, tmp_path / "new" / "out"))
    assert not (tmp_path / "new").exists()


def test_a_relative_folder_reaches_the_actors(local_ray, tiny_folder, tmp_path, monkeypatch):
    source = tmp_path / "corpus.jsonl"
    _write_jsonl(source, [{"id": 1, "text": "a b"}])
    monkeypatch.chdir(tiny_folder.parent)  # the actors' working directory is Ray's, not this one
    counts = run_ray_job(_options(tiny_folder.name, source, tmp_path / "out", variant="int8"))
    assert counts["written"] == 1
    expected = AlbertEmbedder.from_pretrained(tiny_folder, variant="int8", device="cpu", threads=1).encode(["a b"])
    np.testing.assert_array_equal(_vectors(_read_all(tmp_path / "out"), [1]), expected)


def test_a_folder_replaced_while_the_job_runs_stops_the_actors(local_ray, copy_of, plain_folder, tmp_path, monkeypatch):
    # the driver fingerprints the folder, then the actors load it: a folder re-exported in between must not put
    # another model's vectors under this job's record (a resumed run would then mix two models in one output)
    source, out = tmp_path / "in.jsonl", tmp_path / "out"
    _write_jsonl(source, [{"id": i, "text": f"text number {i}"} for i in range(20)])
    read = ray_job._read

    def replace_the_folder_then_read(*args, **kwargs):
        shutil.rmtree(copy_of)
        shutil.copytree(plain_folder, copy_of)  # another export: its own manifest, consistent with its graph
        return read(*args, **kwargs)

    monkeypatch.setattr(ray_job, "_read", replace_the_folder_then_read)
    with pytest.raises(ray_job.ActorStartError, match=r"changed since this job started \(graph_sha256 differ\); the job's finished "
                                                      r"parts are of the model it started with: rerun the job"):
        run_ray_job(_options(copy_of, source, out))
    assert not out.exists()  # nothing was written: no part, no record, no folder


def test_an_actor_whose_libraries_differ_from_the_drivers_refuses_to_embed(tiny_folder, monkeypatch):
    # a Ray cluster's node with another tokenizers or onnxruntime would give other vectors than the driver's record
    folder = ModelFolder.load(tiny_folder)
    job = {**ray_job._model_facts(folder, "int8"), **ray_job._library_facts()}
    ray_job._EmbedBatch(str(tiny_folder), "int8", "cpu", 1, {}, job)  # the same install: it loads
    job_libraries = {key: job[key] for key in ("onnxruntime", "tokenizers")}
    monkeypatch.setattr(ray_job, "_library_facts", lambda: {**job_libraries, "tokenizers": "0.0.1"})
    with pytest.raises(RuntimeError, match=rf"^this Ray worker's tokenizers 0\.0\.1 differ from the job's \(tokenizers "
                                           rf"{re.escape(job['tokenizers'])}\): vectors would differ between nodes; install the same"):
        ray_job._EmbedBatch(str(tiny_folder), "int8", "cpu", 1, {}, job)


def test_a_pooling_int8_falls_short_on_is_warned_once_by_the_driver_not_by_each_actor(copy_of, tmp_path, monkeypatch):
    tiny_folder = short_cls(copy_of)  # its int8 cls vectors below the mean-pooling gate (ModelFolder.pooling_shortfall)
    source = tmp_path / "in.jsonl"
    _write_jsonl(source, [{"id": 1, "text": "a"}])

    class Stop(Exception):
        pass

    def stop(options):
        raise Stop  # the driver's checks are done; no need for Ray here

    monkeypatch.setattr(ray_job, "_start_ray", stop)
    with pytest.warns(PoolingWarning, match=r"^variant 'int8' of .* is gated on mean pooling; its 'cls' vectors") as caught, \
            pytest.raises(Stop):
        run_ray_job(_options(tiny_folder, source, tmp_path / "out", variant="int8", pooling="cls"))
    assert len(caught) == 1
    folder = ModelFolder.load(tiny_folder)
    actor = ray_job._EmbedBatch(str(tiny_folder), "int8", "cpu", 1, {"pooling": "cls", "normalize": False},
                                {**ray_job._model_facts(folder, "int8"), **ray_job._library_facts()})
    batch = pa.table({ray_job._ORD: [0], ray_job._SHARD: [0], "id": ["1"], "text": ["a"], "error": pa.array([None], pa.string())})
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        rows = actor(batch)
    assert rows.num_rows == 1
    assert shown == []  # the actor's own warning is dropped: the driver said it once for the job


@pytest.mark.parametrize("content, line", [
    ('id,text\n1,"hello world\n2,second row\n3,third row\n', 4),  # an unclosed quote would swallow rows 2 and 3
    ('id,text\n1,"said "hi" twice"\n2,b\n', 2),  # a quote inside a quoted field must be doubled
])
def test_malformed_csv_is_one_line_naming_the_line(no_ray, tiny_folder, tmp_path, content, line):
    source = tmp_path / "in.csv"
    source.write_bytes(content.encode())
    with pytest.raises(ValueError, match=rf"^in\.csv:{line}: not valid CSV \(.+\); a quote opened and not closed, or a line "
                                         r"break inside a field that is not quoted: fix the file$"):
        run_ray_job(_options(tiny_folder, source, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_named_pipe_is_refused_before_it_is_read(no_ray, tiny_folder, tmp_path):
    fifo = tmp_path / "in.jsonl"
    os.mkfifo(fifo)  # nobody writes to it: reading it would block forever
    with pytest.raises(ValueError, match=r"is not a regular file \(a pipe or a device\?\); the Ray job reads its input three times"):
        run_ray_job(_options(tiny_folder, fifo, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_arrow_string_types_are_one_type(local_ray, tiny_folder, tmp_path):
    # pyarrow writes string_view and large_string columns; they are text and ids like string ones
    source = tmp_path / "in"
    source.mkdir()
    pq.write_table(pa.table({"id": pa.array(["a", "b"], pa.large_string()), "text": pa.array(["one", "two"], pa.string_view())}),
                   source / "a.parquet")
    pq.write_table(pa.table({"id": pa.array(["c"], pa.string()), "text": pa.array(["three"], pa.large_string())}), source / "b.parquet")
    run_ray_job(_options(tiny_folder, source, tmp_path / "out"))
    rows = _read_all(tmp_path / "out")
    embedder = AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32")
    np.testing.assert_array_equal(_vectors(rows, ["a", "b", "c"]), embedder.encode(["one", "two", "three"]))
    assert pq.read_schema(next((tmp_path / "out").glob("part-*.parquet"))).field("id").type == pa.string()


def _one_row() -> pa.Table:
    """One embedded row as the actors hand it to the driver, for tests of how a shard is written."""
    return pa.table({ray_job._ORD: [0], "id": [1], "vector": [[0.0]], "error": pa.array([None], pa.string())})


def test_parts_and_the_record_reach_the_disk_before_and_after_their_rename(tmp_path, monkeypatch):
    # a rename that reaches the disk before the file's data leaves a zero-byte part after a power cut
    synced = []
    fsync = os.fsync

    def recording(descriptor):
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recording)
    table = _one_row()
    ray_job._write_shard(tmp_path, 0, 0, [table], pa.int64(), "stamp")
    ray_job._write_json(tmp_path / ray_job.JOB_FILE, {"job": {}})
    assert synced == [str(tmp_path / ".part-000000.parquet.tmp"), str(tmp_path), str(tmp_path / f".{ray_job.JOB_FILE}.tmp"), str(tmp_path)]
    assert pq.read_table(tmp_path / "part-000000.parquet")["id"].to_pylist() == [1]


def test_a_folder_where_a_part_goes_is_named_and_no_temporary_is_left(tmp_path):
    (tmp_path / "part-000000.parquet").mkdir()
    (tmp_path / "part-000000.parquet" / "mine.txt").write_text("mine")
    table = _one_row()
    with pytest.raises(OSError) as caught:
        ray_job._write_shard(tmp_path, 0, 0, [table], pa.int64(), "stamp")
    assert caught.value.filename == str(tmp_path / "part-000000.parquet")  # it named .part-000000.parquet.tmp
    assert sorted(path.name for path in tmp_path.iterdir()) == ["part-000000.parquet"]
    assert (tmp_path / "part-000000.parquet" / "mine.txt").read_text() == "mine"


@pytest.mark.parametrize("write", ["part", "record"])
def test_a_full_disk_names_the_file_it_was_writing(tiny_folder, tmp_path, monkeypatch, write):
    # Arrow's and Python's write errors carry no file name; the CLI reports an OSError in one line only with one
    out = tmp_path / "out"
    out.mkdir()

    def no_space(*args, **kwargs):
        raise OSError(28, "Error writing bytes to file. Detail: [errno 28] No space left on device")

    if write == "part":
        monkeypatch.setattr(pq, "write_table", no_space)
        table = _one_row()
        with pytest.raises(OSError) as caught:
            ray_job._write_shard(out, 0, 0, [table], pa.int64(), "stamp")
        temporary = out / ".part-000000.parquet.tmp"
    else:
        monkeypatch.setattr(ray_job, "_sync", no_space)  # where a full disk (or NFS) reports what a write left unwritten
        with pytest.raises(OSError) as caught:
            ray_job._write_json(out / ray_job.JOB_FILE, {"job": {}})
        temporary = out / f".{ray_job.JOB_FILE}.tmp"
    assert (caught.value.errno, caught.value.strerror, caught.value.filename) == (28, "No space left on device", str(temporary))
    assert list(out.iterdir()) == []
