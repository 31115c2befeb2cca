"""benchmarks.int8_gemm: the u8s8 twin of the shipped int8 graph holds the same levels, only typed int8."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, numpy_helper

from benchmarks.int8_gemm import to_u8s8


def test_u8s8_twin_has_the_same_levels_as_int8(tiny_folder, tmp_path):
    converted = to_u8s8(tiny_folder / "model_int8.onnx", tmp_path / "u8s8.onnx")
    shipped, twin = onnx.load(str(tiny_folder / "model_int8.onnx")), onnx.load(str(tmp_path / "u8s8.onnx"))
    before, after = ({i.name: i for i in m.graph.initializer} for m in (shipped, twin))
    products = [node for node in twin.graph.node if node.op_type == "MatMulIntegerToFloat"]
    weights = {node.input[1] for node in products}
    assert converted == len(weights) == 8  # Q, K, V, attention output, FFN in/out, embedding projection, pooler
    for name in weights:
        assert after[name].data_type == TensorProto.INT8
        np.testing.assert_array_equal(numpy_helper.to_array(after[name]).astype(np.int16),
                                      numpy_helper.to_array(before[name]).astype(np.int16) - 128)
    assert {int(numpy_helper.to_array(after[node.input[5]])) for node in products} == {0}
    ids = np.array([[2, 100, 200, 300, 3]])
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    (vector,) = ort.InferenceSession(str(tmp_path / "u8s8.onnx"), providers=["CPUExecutionProvider"]).run(["sentence_embedding"], feeds)
    assert vector.shape == (1, 128) and np.isfinite(vector).all()
