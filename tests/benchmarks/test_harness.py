"""The benchmark harness end to end on the tiny model (no timing asserts)."""

from __future__ import annotations

import json

from benchmarks.__main__ import main
from tests.conftest import BASE_SOURCE


def test_harness_writes_table_and_plots(tiny_source, tmp_path):
    out = tmp_path / "bench"
    main(["--model", str(tiny_source), "--tokenizer", str(BASE_SOURCE), "--quick", "--corpus", "64", "--out", str(out),
          "--engines", "pytorch-fp32,albert-onnx-fp32,albert-onnx-int8,albert-onnx-fp32-nobind,no-such-engine"])
    results = json.loads((out / "results.json").read_text())
    assert results["random_weights"] is True
    assert results["engines"]["no-such-engine"]["error"].startswith("ValueError")  # reported, not dropped
    assert {r["engine"] for r in results["shapes"]} == {"pytorch-fp32", "albert-onnx-fp32", "albert-onnx-int8", "albert-onnx-fp32-nobind"}
    # a tuning runs the untuned engine's graph: no process of its own, and the table says whose numbers apply
    assert results["engines"]["albert-onnx-fp32-nobind"]["own_process"] == {"skipped": "as albert-onnx-fp32"}
    assert results["accuracy"]["albert-onnx-fp32"]["same_ids_min_cosine"] > 0.9999
    assert results["accuracy"]["albert-onnx-int8"]["end_to_end_min_cosine"] > 0.9
    assert 0 <= results["tokenizer_differs"]["differ_from_hf_fast"] < 64
    table = (out / "results.md").read_text()
    assert "Same-ids cosine" in table and "splits" in table and "Cold start" in table
    own = results["engines"]["albert-onnx-int8"]["own_process"]
    assert own["peak_rss_mb"] > 50 and 0 < own["cold_start_s"] < 60 and own["peak_rss_shape"] == "b8·s128"
    assert "SEEDED RANDOM WEIGHTS" in table and "b32·s128" in table and "failed: ValueError" in table
    assert (out / "latency_throughput.png").stat().st_size > 10_000
    ops = results["profile"]["shapes"]["b1s128"]["ops"]
    assert results["profile"]["engine"] == "albert-onnx-int8" and ops[0]["ms_per_call"] > 0
    assert abs(sum(op["share"] for op in ops) - 1) < 1e-6 and "Where the time goes" in table
    single = results["profile"]["single_request"]  # no ordering assert: medians of a noisy machine
    assert single["host_ms"] > 0 and single["end_to_end_ms"] > 0 and single["host_share"] == single["host_ms"] / single["end_to_end_ms"]
    assert "tokenize, frame and pad alone" in table
    nobind = [line for line in table.splitlines() if line.startswith("| albert-onnx-fp32-nobind |")][-1]  # the second table's row
    assert nobind.endswith("| as albert-onnx-fp32 | as albert-onnx-fp32 |")
    assert "GPU MB" not in table
    # a CUDA run's table has the GPU memory column (read from each engine's own process)
    results["machine"]["device"] = "cuda"
    results["engines"]["pytorch-fp32"]["own_process"].update(gpu_memory_mb=812.0, gpu_memory_by="nvidia-smi, this process")
    results["engines"]["albert-onnx-int8"]["own_process"].update(gpu_memory_mb=530.0, gpu_memory_by="nvidia-smi, device memory.used growth")
    results["engines"]["albert-onnx-fp32"]["own_process"].update(gpu_memory_mb=None, gpu_memory_by="nvidia-smi gave no reading")
    from benchmarks.report import write_report

    (tmp_path / "cuda").mkdir()
    write_report(results, tmp_path / "cuda")
    rows = {line.split(" | ")[0]: line for line in (tmp_path / "cuda" / "results.md").read_text().splitlines()}
    assert rows["| pytorch-fp32"].endswith("| 812 |") and rows["| albert-onnx-int8"].endswith("| 530 † |")
    assert rows["| albert-onnx-fp32"].endswith("| nvidia-smi gave no reading |") and "GPU MB |" in rows["| engine"]


def test_quick_skips_emulated_bf16_and_says_so():
    from benchmarks.__main__ import skip_emulated_bf16

    names = ["pytorch-fp32", "pytorch-bf16", "albert-onnx-int8"]
    results = {"machine": {"cpu_flags": {"avx2": True, "avx512_bf16": False, "amx_bf16": False}}, "engines": {}}
    assert skip_emulated_bf16(names, results) == ["pytorch-fp32", "albert-onnx-int8"]
    assert "without avx512_bf16" in results["engines"]["pytorch-bf16"]["skipped"]
    native = {"machine": {"cpu_flags": {"avx512_bf16": True}}, "engines": {}}
    assert skip_emulated_bf16(names, native) == names and native["engines"] == {}


def test_size_table_reads_the_manifest(tiny_folder):
    from benchmarks.sizes import summarize, table

    row = summarize("tiny", tiny_folder)
    manifest = json.loads((tiny_folder / "manifest.json").read_text())
    assert row["peak_rss_mb"] == manifest["export"]["peak_rss_mb"] and row["layers"] == manifest["model"]["num_hidden_layers"]
    layers = row["layers"]
    line = table([row]).splitlines()[-1]
    assert f"| {layers} · {2 * layers} · {layers} FastGelu |" in line
    fp16 = manifest["variants"]["fp16"]["validation"]["status"]  # "passed" where CUDA runs it, else "not-validated"
    assert f"| passed · passed · passed · {fp16} |" in line


def test_size_benchmark_refuses_unknown_names(capsys):
    import pytest

    from benchmarks.sizes import main as sizes_main

    with pytest.raises(SystemExit) as stopped:
        sizes_main(["albert-huge-v9"])
    assert stopped.value.code == 2
    assert "unknown size albert-huge-v9: choose from albert-base-v1" in capsys.readouterr().err


def test_profile_command_prints_ops_per_graph(tiny_folder, capsys):
    from benchmarks.profile import main as profile_main

    assert profile_main([str(tiny_folder / "model_int8.onnx"), "--shapes", "1x8", "--runs", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("b1·s8 ") and out[0].endswith("ms of kernels per call")
    assert any(line.split()[0] == "MatMulIntegerToFloat" for line in out[1:])


def test_profile_command_refuses_bad_shapes_and_files(tiny_folder, tmp_path, capsys):
    import pytest

    from benchmarks.profile import main as profile_main

    graph = str(tiny_folder / "model_int8.onnx")
    for argv, says in [([graph, "--shapes", "1x8x2"], "--shapes '1x8x2'"), ([graph, "--shapes", "0x8"], "--shapes '0x8'"),
                       ([graph, "--shapes", "1x600"], "--shapes '1x600'"), ([str(tmp_path / "none.onnx")], "no such graph file")]:
        with pytest.raises(SystemExit) as stopped:
            profile_main(argv)
        assert stopped.value.code == 2 and says in capsys.readouterr().err


def test_albert_onnx_engine_names_carry_a_variant_and_a_tuning():
    import pytest

    from benchmarks.engines import albert_onnx_engine

    assert albert_onnx_engine("albert-onnx-fp16") == ("fp16", None)
    assert albert_onnx_engine("albert-onnx-fp16-cudnn") == ("fp16", "cudnn")
    assert albert_onnx_engine("albert-onnx-fused-nobind") == ("fused", "nobind")
    # "fp32-" would run as albert-onnx-fp32 under another name, and the results keyed by name lost the run
    for bad in ("albert-onnx-", "albert-onnx-fp8", "albert-onnx-fp16-warp", "albert-onnx-fp16-trt-x", "albert-onnx-fp32-", "pytorch-fp32"):
        with pytest.raises(ValueError, match="unknown engine"):
            albert_onnx_engine(bad)


def test_tuned_engines_reach_the_embedder(tiny_folder, tmp_path):
    import numpy as np
    import pytest

    from benchmarks.__main__ import random_feeds
    from benchmarks.engines import make_engine

    plain = make_engine("albert-onnx-fp32", tmp_path, tiny_folder, tmp_path, 1, "cpu")
    unbound = make_engine("albert-onnx-fp32-nobind", tmp_path, tiny_folder, tmp_path, 1, "cpu")
    assert unbound.name == "albert-onnx-fp32-nobind" and unbound.embedder._runner.io_binding is False
    feeds = random_feeds(2, 16, np.random.default_rng(0))
    np.testing.assert_array_equal(unbound.run_ids(feeds), plain.run_ids(feeds))
    # an attention-kernel choice is a CUDA provider option: on the CPU it is refused, never ignored
    with pytest.raises(ValueError, match="CUDA settings but device='cpu'"):
        make_engine("albert-onnx-fp32-cudnn", tmp_path, tiny_folder, tmp_path, 1, "cpu")


def test_gpu_memory_reading(monkeypatch):
    from benchmarks import footprint

    listing = "4242, 1530\n17, 80\n4242, 20\n"  # one line per GPU the process uses
    assert footprint.process_gpu_mb(listing, 4242) == 1550.0 and footprint.process_gpu_mb(listing, 424) is None
    assert footprint.device_used_mb("9000\n") == 9000.0 and footprint.device_used_mb("[N/A]\n") is None
    asked = []
    answers = {"--query-compute-apps=pid,used_memory": "1, 99\n", "--query-gpu=memory.used": "2600\n"}

    def nvidia_smi(query, *target):
        asked.append(target)
        return answers[query]

    monkeypatch.setattr(footprint, "_nvidia_smi", nvidia_smi)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert footprint.gpu_memory(1000.0) == {"gpu_memory_mb": 1600.0, "gpu_memory_by": "nvidia-smi, device memory.used growth"}
    assert asked[-1] == ("-i", "3")  # CUDA's device 0 is the first visible GPU, not nvidia-smi's GPU 0
    assert footprint.gpu_memory(3000.0) == {"gpu_memory_mb": None, "gpu_memory_by": "device memory.used fell while it ran"}
    answers["--query-compute-apps=pid,used_memory"] = f"1, 99\n{footprint.os.getpid()}, 1200\n"
    assert footprint.gpu_memory(1000.0) == {"gpu_memory_mb": 1200.0, "gpu_memory_by": "nvidia-smi, this process"}
    monkeypatch.setattr(footprint, "_nvidia_smi", lambda *query: None)
    assert footprint.gpu_memory(None)["gpu_memory_mb"] is None


def test_int8_poolings_prints_each_pooling(tiny_folder, capsys):
    from benchmarks import int8_poolings

    assert int8_poolings.main([str(tiny_folder), "40"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["mean", "max", "cls", "pooler"]
    means = {line.split()[0]: float(line.rsplit(": mean ", 1)[1].split(",")[0]) for line in lines}
    assert means["mean"] >= 0.99  # what the export's gate holds int8 to, on these texts too
    assert all(-1 <= value <= 1 for value in means.values())
    assert int8_poolings.main([str(tiny_folder), "many"]) == 2
