"""Quantize the fused graph to int8 for CPU with one activation scale per token (batch-invariant).

ONNX Runtime's ``quantize_dynamic`` gives every MatMul one activation scale for the whole tensor, so a text's
vector depended on its batchmates (measured 1.8e-2 on unit vectors). Here each token row gets its own scale
``max|x| / 127``, computed in the graph:

    x -> ReduceMax, ReduceMin -> scale per row -> QuantizeLinear (blocked, one block per row, zero point 128)
      -> MatMulIntegerToFloat (int8 weights, one scale per output column) -> * row scale

The integer product is exact and every other op is row-wise, so a row's result does not depend on the other
rows. QAttention quantizes its input per tensor too, so each Attention becomes a per-row int8 QKV projection
followed by fp32 MultiHeadAttention (the same kernel Attention uses). Weights are 7-bit (-63..63): u8 x s8
pair sums then fit int16, so the AVX2 kernel (vpmaddubsw, which saturates) gives the exact product too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, version_converter

from .errors import ExportError

OPSET = 21  # blocked QuantizeLinear (one block per row) is opset 21
WEIGHT_MAX = 63  # 7-bit weights: 255 * 63 * 2 < 32767, no int16 saturation in AVX2's vpmaddubsw
MIN_GATHER_ELEMENTS = 65536  # quantize embedding tables at least this big (word and position, not token type)

INT8_SCHEME = {
    "name": "per-token",
    "activations": "uint8, one symmetric scale per token (max|x|/127, zero point 128), computed in the graph",
    "weights": f"int8 in [-{WEIGHT_MAX}, {WEIGHT_MAX}], one symmetric scale per output column",
    "attention": "int8 QKV projection, fp32 MultiHeadAttention",
    "embeddings": "int8, one scale per row",
    "batch_invariant": True,
}


class _PerRowRewriter:
    """Rewrites a fused fp32 graph node by node; shared weights and inputs are quantized once."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.initializers = {init.name: init for init in model.graph.initializer}
        self.nodes: list[onnx.NodeProto] = []
        self.added: list[onnx.TensorProto] = []
        self.rows: dict[str, tuple[str, str]] = {}
        self.weights: dict[tuple[str, bool], tuple[str, str]] = {}
        self._constant("q/one", np.array(1.0, np.float32))
        self._constant("q/zero_point", np.array(128, np.uint8))
        self._constant("q/weight_zero_point", np.array(0, np.int8))
        self._constant("q/inv127", np.array(1 / 127, np.float32))
        self._constant("q/tiny", np.array(1e-30, np.float32))  # an all-zero row gets scale > 0, quantizes to 0
        self._constant("q/last_axis", np.array([-1], np.int64))

    def _constant(self, name: str, value: np.ndarray) -> str:
        self.added.append(numpy_helper.from_array(value, name))
        return name

    def _float_matrix(self, name: str) -> np.ndarray | None:
        init = self.initializers.get(name)
        if init is None or len(init.dims) != 2 or init.data_type != TensorProto.FLOAT:
            return None
        return numpy_helper.to_array(init)

    def _node(self, op: str, inputs: list[str], output: str, domain: str = "", **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, domain=domain, **attrs))
        return output

    def quantized_rows(self, x: str, width: int) -> tuple[str, str]:
        """uint8 rows of ``x`` and their per-row scales (computed once per activation)."""
        if x not in self.rows:
            p = f"q/{x}"
            high = self._node("ReduceMax", [x, "q/last_axis"], f"{p}/max", keepdims=1)
            low = self._node("Neg", [self._node("ReduceMin", [x, "q/last_axis"], f"{p}/min", keepdims=1)], f"{p}/neg_min")
            scale = self._node("Mul", [self._node("Max", [high, low, "q/tiny"], f"{p}/absmax"), "q/inv127"], f"{p}/scale")
            zero = self._node("ConstantOfShape", [self._node("Shape", [scale], f"{p}/scale_shape")], f"{p}/zero_point",
                              value=numpy_helper.from_array(np.array([128], np.uint8)))
            quantized = self._node("QuantizeLinear", [x, scale, zero], f"{p}/uint8", axis=-1, block_size=width)
            self.rows[x] = (quantized, scale)
        return self.rows[x]

    def quantized_weight(self, name: str, transposed: bool) -> tuple[str, str]:
        """int8 weight [K, N] with one scale per column N (computed once per shared weight)."""
        key = (name, transposed)
        if key not in self.weights:
            weight = self._float_matrix(name)
            weight = weight.T if transposed else weight
            scale = np.maximum(np.abs(weight).max(axis=0), 1e-30) / WEIGHT_MAX
            values = np.clip(np.round(weight / scale), -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8)
            suffix = "/T" if transposed else ""
            self.weights[key] = (self._constant(f"{name}{suffix}/int8", values),
                                 self._constant(f"{name}{suffix}/scale", scale.astype(np.float32)))
        return self.weights[key]

    def matmul(self, x: str, weight: str, output: str, transposed: bool = False) -> str:
        """``output = x @ weight`` (or ``weight.T``) with per-row int8 activations."""
        values, weight_scale = self.quantized_weight(weight, transposed)
        rows, row_scale = self.quantized_rows(x, self._float_matrix(weight).shape[1 if transposed else 0])
        raw = self._node("MatMulIntegerToFloat", [rows, values, "q/one", weight_scale, "q/zero_point", "q/weight_zero_point"],
                         f"{output}/int32_scaled", domain="com.microsoft")
        return self._node("Mul", [raw, row_scale], output)

    def gather(self, table: str, indices: str, output: str) -> str:
        """Embedding lookup from an int8 table with one scale per row."""
        weight = self._float_matrix(table)
        scale = np.maximum(np.abs(weight).max(axis=1, keepdims=True), 1e-30) / 127
        values = self._constant(f"{table}/int8", np.clip(np.round(weight / scale), -127, 127).astype(np.int8))
        scales = self._constant(f"{table}/row_scale", scale.astype(np.float32))
        rows = self._node("Cast", [self._node("Gather", [values, indices], f"{output}/int8")], f"{output}/float", to=TensorProto.FLOAT)
        return self._node("Mul", [rows, self._node("Gather", [scales, indices], f"{output}/scale")], output)

    def attention(self, node: onnx.NodeProto) -> None:
        """Attention(x, W_qkv, b_qkv, mask) -> per-row int8 QKV, then MultiHeadAttention(q, k, v, b_qkv, mask)."""
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if set(attrs) - {"num_heads", "mask_filter_value"} or len(node.input) != 4:
            raise ExportError(f"Attention node {node.name!r} has inputs {list(node.input)} and attributes {sorted(attrs)}; "
                              "the int8 rewrite handles (input, weights, bias, mask_index) with num_heads/mask_filter_value only")
        x, weight, bias, mask = node.input
        hidden = self._float_matrix(weight).shape[1] // 3
        qkv = self.matmul(x, weight, f"{node.name}/qkv")
        sizes = self._constant(f"q/{node.name}/split", np.array([hidden] * 3, np.int64))
        q, k, v = (f"{node.name}/{part}" for part in "qkv")
        self.nodes.append(helper.make_node("Split", [qkv, sizes], [q, k, v], name=f"{node.name}/split", axis=-1))
        self.nodes.append(helper.make_node("MultiHeadAttention", [q, k, v, bias, mask], list(node.output), name=node.name,
                                           domain="com.microsoft", **attrs))

    def rewrite(self) -> dict[str, int]:
        counts = {"MatMul": 0, "Attention": 0, "Gemm": 0, "Gather": 0}
        for node in self.model.graph.node:
            if node.op_type == "MatMul" and self._float_matrix(node.input[1]) is not None:
                self.matmul(node.input[0], node.input[1], node.output[0])
            elif node.op_type == "Attention" and node.domain == "com.microsoft" and self._float_matrix(node.input[1]) is not None:
                self.attention(node)
            elif node.op_type == "Gemm" and self._float_matrix(node.input[1]) is not None:
                attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
                if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
                    self.nodes.append(node)
                    continue
                has_bias = len(node.input) > 2 and node.input[2]
                product = self.matmul(node.input[0], node.input[1], f"{node.output[0]}/product" if has_bias else node.output[0],
                                      transposed=bool(attrs.get("transB", 0)))
                if has_bias:
                    self._node("Add", [product, node.input[2]], node.output[0])
            elif (node.op_type == "Gather" and self._float_matrix(node.input[0]) is not None
                  and self._float_matrix(node.input[0]).size >= MIN_GATHER_ELEMENTS):
                self.gather(node.input[0], node.input[1], node.output[0])
            else:
                self.nodes.append(node)
                continue
            counts[node.op_type] += 1
        return counts


def quantize_int8(fused_path: Path, out_path: Path) -> dict[str, object]:
    """Write the batch-invariant int8 graph (see the module docstring for the scheme).

    Quantizing after fusion matters for ALBERT: its 12 layers share one set of weights, which reach every
    layer's MatMul directly, so each is quantized once and stored once.

    Args:
        fused_path: The fused, deduplicated fp32 graph.
        out_path: Where to write the int8 graph.

    Returns:
        The scheme and how many ops of each kind were rewritten, for the manifest.
    """
    model = version_converter.convert_version(onnx.load(str(fused_path)), OPSET)
    model.ir_version = max(model.ir_version, 10)  # opset 21 needs IR 10
    rewriter = _PerRowRewriter(model)
    counts = rewriter.rewrite()
    used = {name for node in rewriter.nodes for name in node.input}
    kept = [init for init in model.graph.initializer if init.name in used]
    added = [init for init in rewriter.added if init.name in used]
    del model.graph.node[:]
    model.graph.node.extend(rewriter.nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + added)
    onnx.save(model, str(out_path))
    return {**INT8_SCHEME, "rewritten": counts}


def weight_dtypes(model: onnx.ModelProto) -> dict[str, int]:
    """Count the constant weights (two or more dims) feeding MatMul-like ops and lookups, by stored element type."""
    consumers = {"MatMul", "MatMulInteger", "MatMulIntegerToFloat", "Attention", "QAttention", "Gemm", "Gather"}
    initializers = {init.name: init for init in model.graph.initializer}
    counts: dict[str, int] = {}
    seen: set[str] = set()
    for node in model.graph.node:
        if node.op_type not in consumers:
            continue
        for name in node.input:
            init = initializers.get(name)
            if init is None or len(init.dims) < 2 or name in seen:
                continue
            seen.add(name)
            key = onnx.TensorProto.DataType.Name(init.data_type).lower()
            counts[key] = counts.get(key, 0) + 1
    return counts
