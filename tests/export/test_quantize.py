"""The per-token int8 graph: row-wise math (a row's result ignores the other rows), the ops it is made of."""

from __future__ import annotations

import collections
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from albert_onnx.model_folder import ModelFolderError
from albert_onnx_export import quantize


@pytest.fixture(scope="module")
def int8_session(tiny_folder):
    return ort.InferenceSession(str(tiny_folder / "model_int8.onnx"), providers=["CPUExecutionProvider"])


def _feeds(ids: np.ndarray) -> dict[str, np.ndarray]:
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def test_rows_do_not_depend_on_batchmates(int8_session):
    """Same-length rows, alone vs in a batch: every token output bit-identical; the in-graph mean pooling
    (ReduceSum over the sequence) sums in another order for other batch sizes, within float rounding."""
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 30000, size=(6, 20))
    ids[:, 0], ids[:, -1] = 2, 3
    names = ["last_hidden_state", "pooler_output", "projected_word_embeddings", "sentence_embedding"]
    together = int8_session.run(names, _feeds(ids))
    for row in range(len(ids)):
        alone = int8_session.run(names, _feeds(ids[row : row + 1]))
        for name, batch_value, alone_value in zip(names[:3], together, alone):
            np.testing.assert_array_equal(batch_value[row : row + 1], alone_value, err_msg=name)
        assert np.abs(together[3][row] - alone[3][0]).max() <= 1e-7


def test_per_tensor_int8_would_fail_that(tiny_folder, tmp_path):
    """The check above can fail: ORT's per-tensor dynamic int8 changes a row's vector with its batchmates."""
    from benchmarks.int8_schemes import build_dynamic_per_tensor

    path = tmp_path / "per_tensor.onnx"
    build_dynamic_per_tensor(tiny_folder / "model_fused.onnx", path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 30000, size=(6, 20))
    ids[:, 0], ids[:, -1] = 2, 3
    together = session.run(["sentence_embedding"], _feeds(ids))[0]
    alone = np.concatenate([session.run(["sentence_embedding"], _feeds(ids[row : row + 1]))[0] for row in range(len(ids))])
    assert np.abs(together - alone).max() > 1e-4


def test_graph_is_per_token_int8(tiny_folder):
    model = onnx.load(str(tiny_folder / "model_int8.onnx"))
    ops = collections.Counter(node.op_type for node in model.graph.node)
    layers = json.loads((tiny_folder / "manifest.json").read_text())["model"]["num_hidden_layers"]
    # per layer Q, K, V, attention output, FFN in and out; plus embedding projection, projected word rows, pooler
    assert ops["MatMulIntegerToFloat"] == 6 * layers + 3
    assert ops["MultiHeadAttention"] == layers
    assert not {"QAttention", "DynamicQuantizeMatMul", "DynamicQuantizeLinear", "MatMul", "Attention", "Gemm"} & set(ops)
    blocked = [node for node in model.graph.node if node.op_type == "QuantizeLinear"]
    assert blocked and all(any(a.name == "block_size" for a in node.attribute) for node in blocked)
    scheme = json.loads((tiny_folder / "manifest.json").read_text())["variants"]["int8"]["quantization"]
    assert scheme["name"] == "per-token" and scheme["batch_invariant"] is True
    # uint8 (int8 levels around 128): Q, K, V, attention output, FFN in, FFN out, embedding projection, pooler; int8:
    # the word table; float: the position table (512 x 32 here, under MIN_GATHER_ELEMENTS) and the token-type table
    assert scheme["weight_dtypes"] == {"uint8": 8, "int8": 1, "float": 2}
    assert scheme["gemm"] == "u8u8"
    initializers = {init.name: init for init in model.graph.initializer}
    for node in (node for node in model.graph.node if node.op_type == "MatMulIntegerToFloat"):
        weight, weight_zero = initializers[node.input[1]], numpy_helper.to_array(initializers[node.input[5]])
        assert weight.data_type == onnx.TensorProto.UINT8 and weight_zero.dtype == np.uint8 and int(weight_zero) == 128, node.name


def test_gelu_rows_use_the_small_zero_point(tiny_folder):
    """The FFN output projection's input comes from FastGelu, so its rows are quantized above zero point 32."""
    model = onnx.load(str(tiny_folder / "model_int8.onnx"))
    producers = {out: node for node in model.graph.node for out in node.output}
    gelu_inputs = [node for node in model.graph.node if node.op_type == "QuantizeLinear" and producers[node.input[0]].op_type == "FastGelu"]
    assert gelu_inputs and all(node.input[2].endswith(f"zero_point_{quantize.GELU_ZERO_POINT}") for node in gelu_inputs)
    assert quantize.GELU_FLOOR > 0.17004  # the tanh GELU's minimum is -0.170041


def _one_matmul_int8(weight: np.ndarray, folder) -> ort.InferenceSession:
    """``y = x @ weight`` (x: [1, S, K]) through quantize_int8, loaded in ONNX Runtime."""
    k, n = weight.shape
    # the per-token zero points take their shape from input_ids, as in an exported graph
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "one-matmul",
                              [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "S"]),
                               helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "S", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "S", n])], [numpy_helper.from_array(weight, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(folder / "fp32.onnx"))
    quantize.quantize_int8(folder / "fp32.onnx", folder / "int8.onnx")
    ops = [node.op_type for node in onnx.load(str(folder / "int8.onnx")).graph.node]
    assert "MatMul" not in ops and ops.count("MatMulIntegerToFloat") == 1  # the product really is int8 now
    return ort.InferenceSession(str(folder / "int8.onnx"), providers=["CPUExecutionProvider"])


def test_integer_product_is_exact_where_uint8_x_int8_saturates(tmp_path):
    """Rows and columns of +-max: every quantized level is 255/1 (x) and +-127 (w), so each pair of products is
    2 x 255 x 127 = 64770, past int16. uint8 x int8 weights gave errors in the thousands on an AVX2-only CPU (AMD
    EPYC Zen 3, vpmaddubsw saturating); the shipped uint8 x uint8 product must be exact on every CPU. (On a CPU
    with VNNI or AMX both products are exact, so this test can fail only where saturation exists: AVX2-only CPUs.)"""
    rng = np.random.default_rng(1)
    weight = rng.choice(np.array([-1.0, 1.0], np.float32), size=(256, 32))
    session = _one_matmul_int8(weight, tmp_path)
    x = rng.choice(np.array([-1.0, 1.0], np.float32), size=(1, 9, 256))
    x[0, :3] = 1.0  # all-positive rows meet the positive weight pairs: the worst case for int16 pair sums
    (y,) = session.run(None, {"input_ids": np.zeros((1, 9), np.int64), "x": x})
    np.testing.assert_allclose(y, x @ weight, rtol=1e-5, atol=1e-4)


def test_an_all_zero_row_gives_zeros_and_the_others_their_product(tmp_path):
    """Scale max|x|/127 has no floor: a zero row's 0/0 must come out as 0, not NaN, and leave the other rows alone."""
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((64, 48)) * 0.05).astype(np.float32)
    session = _one_matmul_int8(weight, tmp_path)
    x = rng.standard_normal((1, 5, 64)).astype(np.float32)
    x[0, 2] = 0.0
    (y,) = session.run(None, {"input_ids": np.zeros((1, 5), np.int64), "x": x})
    assert np.isfinite(y).all()
    np.testing.assert_array_equal(y[0, 2], np.zeros(48, np.float32))
    np.testing.assert_allclose(y[0, [0, 1, 3, 4]], (x @ weight)[0, [0, 1, 3, 4]], atol=0.02)


def test_the_shipped_probe_is_what_the_quantizer_builds():
    """albert_onnx/u8s8_probe.onnx is committed (the runtime has no onnx package to build it): it must be this build.
    After changing either side: ``python -c "from albert_onnx_export.quantize import u8s8_probe_model as m;
    from albert_onnx.int8_kernel import PROBE_FILE as f; f.write_bytes(m().SerializeToString())"``."""
    from albert_onnx.int8_kernel import PROBE_FILE

    assert PROBE_FILE.read_bytes() == quantize.u8s8_probe_model().SerializeToString()


def test_the_twin_differs_only_in_the_integer_products_types(tiny_folder):
    """model_int8_u8s8.onnx: every GEMM weight is the uint8 graph's level - 128 as int8, the weight zero point int8 0;
    every node and every other initializer as in model_int8.onnx."""
    u8u8, u8s8 = (onnx.load(str(tiny_folder / name)) for name in ("model_int8.onnx", "model_int8_u8s8.onnx"))
    assert [(n.op_type, list(n.input), list(n.output)) for n in u8u8.graph.node] == [(n.op_type, list(n.input), list(n.output)) for n in u8s8.graph.node]
    weights = {node.input[1] for node in u8u8.graph.node if node.op_type == "MatMulIntegerToFloat"}
    twin = {init.name: init for init in u8s8.graph.initializer}
    assert len(weights) == 8 and len(twin) == len(u8u8.graph.initializer)
    for init in u8u8.graph.initializer:
        mine, theirs = numpy_helper.to_array(init), numpy_helper.to_array(twin[init.name])
        if init.name in weights:
            assert theirs.dtype == np.int8
            np.testing.assert_array_equal(theirs.astype(np.int16), mine.astype(np.int16) - 128)
        elif init.name == "q/weight_zero_point":
            assert theirs.dtype == np.int8 and int(theirs) == 0 and int(mine) == 128
        else:
            assert theirs.dtype == mine.dtype, init.name
            np.testing.assert_array_equal(theirs, mine, err_msg=init.name)


def test_the_twin_is_refused_for_a_graph_it_was_not_made_for(tiny_folder, tmp_path):
    from albert_onnx_export.errors import ExportError

    with pytest.raises(ExportError, match=r"weight zero points are \[\], not the shared uint8 128"):
        quantize.write_u8s8(tiny_folder / "model_fused.onnx", tmp_path / "twin.onnx")
    assert not (tmp_path / "twin.onnx").exists()


def test_the_export_compares_the_twin_where_it_can(tiny_folder):
    from albert_onnx.int8_kernel import u8s8_is_exact

    twin = json.loads((tiny_folder / "manifest.json").read_text())["variants"]["int8"]["u8s8"]
    assert twin["file"] == "model_int8_u8s8.onnx" and twin["validation"]["gates"] == {"max_abs_diff_vs_u8u8": {"at_most": 1e-6}}
    if u8s8_is_exact():
        assert twin["validation"]["status"] == "passed" and twin["validation"]["metrics"]["max_abs_diff_vs_u8u8"] <= 1e-6
    else:
        assert twin["validation"]["status"] == "not-validated" and "saturates" in twin["validation"]["reason"]


def test_compare_u8s8_fails_a_twin_that_computes_something_else(tiny_folder, monkeypatch, tmp_path):
    """The gate can fail: the fused fp32 graph posing as the twin differs from int8 by far more than 1e-6. Where the
    probe says saturating, the twin is not run at all."""
    from albert_onnx_export import validate

    rng = np.random.default_rng(0)
    ids = rng.integers(5, 30000, size=(2, 12))
    ids[:, 0], ids[:, -1] = 2, 3
    int8, fused = tiny_folder / "model_int8.onnx", tiny_folder / "model_fused.onnx"
    monkeypatch.setattr(validate, "u8s8_is_exact", lambda: True)
    record, failed = validate.compare_u8s8(int8, fused, [_feeds(ids)])
    assert record.status == "failed" and record.metrics["max_abs_diff_vs_u8u8"] > 1e-3
    assert failed and failed[0].startswith("max_abs_diff_vs_u8u8=")
    record, failed = validate.compare_u8s8(int8, int8, [_feeds(ids)])
    assert (record.status, record.metrics, failed) == ("passed", {"max_abs_diff_vs_u8u8": 0.0}, [])
    monkeypatch.setattr(validate, "u8s8_is_exact", lambda: False)
    record, failed = validate.compare_u8s8(int8, tiny_folder / "model_fused.onnx", [_feeds(ids)])  # not run: cannot fail
    assert (record.status, record.metrics, failed) == ("not-validated", {}, [])
    (tmp_path / "damaged.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelFolderError, match=r"damaged\.onnx: ONNX Runtime cannot load it"):  # but it is loaded
        validate.compare_u8s8(int8, tmp_path / "damaged.onnx", [_feeds(ids)])
