"""Actors that cannot load the model on the cluster: one line naming the actor's own error, not Ray's traceback.

A module of its own: it starts a local Ray that claims a GPU (Ray does not check), which the module-wide Ray of
test_ray.py must not.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import need_module

ray = need_module("ray")
need_module("pyarrow")

from albert_onnx import cli, ray_job  # noqa: E402
from albert_onnx.ray_job import ActorStartError, RayJobOptions, run_ray_job  # noqa: E402
from albert_onnx.session import available_providers  # noqa: E402

pytestmark = [pytest.mark.ray,
              pytest.mark.skipif("CUDAExecutionProvider" in available_providers(), reason="the actors need an onnxruntime without CUDA")]


@pytest.fixture(scope="module")
def ray_with_a_claimed_gpu():
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_actors_that_cannot_load_the_model_are_one_line(ray_with_a_claimed_gpu, tiny_folder, tmp_path, monkeypatch, capfd):
    # The driver is made to believe in CUDA; the actors, in their own processes, find this onnxruntime has none
    monkeypatch.setattr(ray_job, "resolve_device", lambda device: device)
    monkeypatch.setattr(cli, "_check_device", lambda device: None)
    source = tmp_path / "corpus.jsonl"
    source.write_text(json.dumps({"id": 1, "text": "a b"}) + "\n")
    with pytest.raises(ActorStartError) as caught:
        run_ray_job(RayJobOptions(folder=str(tiny_folder), input=str(source), output=tmp_path / "out", device="cuda"))
    message = str(caught.value)
    assert message.startswith("the embedder actors could not load fp16 on cuda on the Ray cluster: albert_onnx.session.DeviceUnavailable: "
                              "device='cuda' but onnxruntime ")
    assert message.endswith(f"; every node needs albert-onnx and the model folder at {tiny_folder}")
    assert "\n" not in message and "\x1b" not in message
    assert not (tmp_path / "out").exists()

    capfd.readouterr()
    status = cli.main(["embed", str(tiny_folder), "--engine", "ray", "--input", str(source), "--output", str(tmp_path / "out"),
                       "--device", "cuda"])
    err = capfd.readouterr().err  # file descriptor 2: Ray's log handlers hold the stderr of before any capture
    assert (status, err.splitlines()[-1:]) == (2, [f"albert-onnx embed: error: {message}"])
    # found by an attack (2026-12-07): Ray Data's whole traceback (95 lines) came first; its one error line stays
    assert "Traceback" not in err and "Full stack trace" not in err


# Found in review (2026-12-07): --overwrite removed the old job's parts and record before the actors started, so a
# restart whose actors could not load the model (here: CUDA on a cluster without it) lost the old output and wrote
# nothing in its place.
def test_an_overwrite_whose_actors_cannot_start_leaves_the_old_job_whole(ray_with_a_claimed_gpu, tiny_folder, tmp_path, monkeypatch):
    source = tmp_path / "corpus.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": f"text number {i}"}) + "\n" for i in range(40)))
    out = tmp_path / "out"
    old = RayJobOptions(folder=str(tiny_folder), input=str(source), output=out, variant="fp32", device="cpu", actors=1, shard_rows=16)
    assert run_ray_job(old)["written"] == 3
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    assert sorted(before) == ["_job.json", "part-000000.parquet", "part-000001.parquet", "part-000002.parquet"]

    monkeypatch.setattr(ray_job, "resolve_device", lambda device: device)  # the driver believes in CUDA, the actors find none
    with pytest.raises(ActorStartError):
        run_ray_job(RayJobOptions(folder=str(tiny_folder), input=str(source), output=out, device="cuda", shard_rows=16, overwrite=True))
    monkeypatch.undo()
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert run_ray_job(old)["skipped"] == 3  # still the old job, finished
