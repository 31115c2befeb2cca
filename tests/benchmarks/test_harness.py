"""The benchmark harness end to end on the tiny model (no timing asserts)."""

from __future__ import annotations

import json

from benchmarks.__main__ import main
from tests.conftest import BASE_SOURCE


def test_harness_writes_table_and_plots(tiny_source, tmp_path):
    out = tmp_path / "bench"
    main(["--model", str(tiny_source), "--tokenizer", str(BASE_SOURCE), "--quick", "--corpus", "64", "--out", str(out),
          "--engines", "pytorch-fp32,albert-onnx-fp32,albert-onnx-int8,no-such-engine"])
    results = json.loads((out / "results.json").read_text())
    assert results["random_weights"] is True
    assert results["engines"]["no-such-engine"]["error"].startswith("ValueError")  # reported, not dropped
    assert {r["engine"] for r in results["shapes"]} == {"pytorch-fp32", "albert-onnx-fp32", "albert-onnx-int8"}
    assert results["accuracy"]["albert-onnx-fp32"]["min_cosine"] > 0.9999
    table = (out / "results.md").read_text()
    assert "SEEDED RANDOM WEIGHTS" in table and "b32·s128" in table and "failed: ValueError" in table
    assert (out / "latency_throughput.png").stat().st_size > 10_000
