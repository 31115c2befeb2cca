"""Quantize the fused graph to int8 for CPU with one activation scale per token (batch-invariant).

ONNX Runtime's ``quantize_dynamic`` gives every MatMul one activation scale for the whole tensor, so a text's
vector depended on its batchmates (measured 1.8e-2 on unit vectors). Here each token row gets its own scale,
computed in the graph:

    x -> ReduceMax(Abs(x)) per row / 127 -> QuantizeLinear (blocked: one block per row) -> uint8 rows
      -> MatMulIntegerToFloat(rows, int8 weights, row scales, one scale per weight column)

The integer product is exact and every other op is row-wise, so a row's result does not depend on the other
rows. QAttention quantizes its input per tensor too, so each Attention becomes three per-row int8 projections
(Q, K, V) and fp32 MultiHeadAttention (the kernel Attention uses). Per-token scales also halve the error:
centred cosine vs fp32 0.997 mean (per-tensor: 0.985) on STS-B dev, albert-base-v2 random weights.

Weights use the full int8 range, [-127, 127], and are stored as uint8 around zero point 128, so every GEMM is
uint8 x uint8. uint8 x int8 is what ONNX Runtime's own quantizer writes, but on x86 CPUs without VNNI (AVX2, or
AVX-512 without VNNI: AMD Zen 1-3, Intel Skylake-SP and older) ONNX Runtime runs it through vpmaddubsw, which adds pairs of products in
int16 and saturates: on AMD EPYC (Zen 3, AVX2) the tiny test model's int8 gate failed and rows/weights at +-max
came out wrong (tests/export/test_quantize.py). uint8 x uint8 is exact there (ONNX Runtime's AVX2 kernel widens
to int16 before vpmaddwd) and wherever VNNI or AMX run the product.
7-bit weights would also avoid saturation but cost measurably more error (centred cosine 0.988 mean).

Where VNNI or AMX run it, uint8 x int8 is exact and much faster than uint8 x uint8 (b1·s128: 33.8 vs 81.7 ms on a Xeon
with AMX, 2 threads; README "int8 GEMM"), so :func:`write_u8s8` writes the same graph once more with the same
levels as int8 (level - 128, zero point 0). The runtime loads that one where its probe finds uint8 x int8 exact
(albert_onnx/int8_kernel.py; :func:`u8s8_probe_model` builds the probe graph it ships).
ONNX Runtime's own remedy, the session option ``session.x64quantprecision=1`` (rewrite int8 weights to uint8 at
load), is no substitute in 1.32: it rewrote on the AMX Xeon too, and failed on ALBERT's weights, which 12 layers'
nodes share ("AddInitializedOrtValue Attempt to replace the existing tensor", model_int8_u8s8.onnx of albert-base-v2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, version_converter

from albert_onnx.model_folder import INT8_GEMM

from .errors import ExportError

OPSET = 21  # blocked QuantizeLinear (one block per row) is opset 21
GEMM = INT8_GEMM  # uint8 activations x uint8 weights: exact on every x86 CPU (module docstring)
WEIGHT_MAX = 127
MIN_GATHER_ELEMENTS = 65536  # quantize embedding tables at least this big (word and position, not token type)
GELU_OPS = ("FastGelu", "BiasGelu", "Gelu")  # their outputs are >= -0.17 (exact GELU -0.16997, tanh form -0.17004)
GELU_FLOOR = 0.171
GELU_ZERO_POINT = 32  # GELU rows: 32 levels below zero (enough for -0.171 once the row max is >= 1.2), 223 above

INT8_SCHEME = {
    "name": "per-token",
    "activations": "uint8, one scale per token computed in the graph: max|x|/127 around 128; GELU outputs max/223 above 32",
    "weights": f"int8 levels in [-{WEIGHT_MAX}, {WEIGHT_MAX}] stored as uint8 around 128, one symmetric scale per output column",
    "gemm": GEMM,
    "attention": "int8 Q, K and V projections, fp32 MultiHeadAttention",
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
        self.rows: dict[str, tuple[str, str, str]] = {}
        self.weights: dict[tuple[str, bool], tuple[str, str]] = {}
        self._constant("q/one", np.array(1.0, np.float32))
        self._constant("q/zero_point", np.array(128, np.uint8))
        self._constant("q/weight_zero_point", np.array(128, np.uint8))
        self._constant("q/inv127", np.array(1 / 127, np.float32))
        self._constant("q/last_axis", np.array([-1], np.int64))
        self._constant("q/one_dim", np.array([1], np.int64))
        self.shared: set[str] = set()
        self._constant("q/gelu_inv_levels", np.array(1 / (255 - GELU_ZERO_POINT), np.float32))
        self._constant("q/gelu_min_scale", np.array(GELU_FLOOR / GELU_ZERO_POINT, np.float32))
        self._constant("q/gelu_zero_point", np.array(GELU_ZERO_POINT, np.uint8))
        self.producers = {out: node.op_type for node in model.graph.node for out in node.output}

    def _constant(self, name: str, value: np.ndarray) -> str:
        self.added.append(numpy_helper.from_array(value, name))
        return name

    def _matrix_shape(self, name: str) -> tuple[int, int] | None:
        """Shape of a 2-D float initializer (a weight to quantize), None for anything else."""
        init = self.initializers.get(name)
        if init is None or len(init.dims) != 2 or init.data_type != TensorProto.FLOAT:
            return None
        return int(init.dims[0]), int(init.dims[1])

    def _node(self, op: str, inputs: list[str], output: str, domain: str = "", **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, domain=domain, **attrs))
        return output

    def _zero_point(self, value: int, scale: str, per_token: bool) -> str:
        """A uint8 tensor of ``value`` shaped like ``scale`` (blocked QuantizeLinear wants one zero point per block).

        Every per-token activation has rows [batch, sequence], so one tensor made from input_ids' shape serves
        them all; other activations (the pooler's [CLS] rows) get one from their own scale.
        """
        fill = numpy_helper.from_array(np.array([value], np.uint8))
        if not per_token:
            return self._node("ConstantOfShape", [self._node("Shape", [scale], f"{scale}/shape")], f"{scale}/zero_point_{value}", value=fill)
        name = f"q/token_zero_point_{value}"
        if name not in self.shared:
            if "q/token_rows" not in self.shared:
                self.shared.add("q/token_rows")
                self._node("Concat", [self._node("Shape", ["input_ids"], "q/token_shape"), "q/one_dim"], "q/token_rows", axis=0)
            self.shared.add(self._node("ConstantOfShape", ["q/token_rows"], name, value=fill))
        return name

    def quantized_rows(self, x: str, width: int, per_token: bool) -> tuple[str, str, str]:
        """uint8 rows of ``x``, their per-row scales and zero point (computed once per activation).

        GELU outputs are never below -GELU_FLOOR, so their rows use a small fixed zero point: 255 - GELU_ZERO_POINT
        levels for the positive side instead of 127, and no pass for the row minimum.

        Other rows: scale = max|x| / 127 around 128, with no floor: an all-zero row gets scale 0, QuantizeLinear turns
        its 0/0 into some finite uint8 row, and the integer product is multiplied by the row scale 0, so the row's
        output is exactly 0, as it should be (checked in tests/export/test_quantize.py). Abs + ReduceMax is two ops
        where ReduceMax, ReduceMin, Neg and Max were four: every op costs its dispatch at b1 (measured here: 6.98 vs
        7.33 ms at b1 x s16).
        """
        if x not in self.rows:
            p = f"q/{x}"
            if self.producers.get(x) in GELU_OPS:
                high = self._node("ReduceMax", [x, "q/last_axis"], f"{p}/max", keepdims=1)
                # scale = max(row max / (255 - zp), floor / zp): the row's maximum and -GELU_FLOOR both fit in 0..255
                scale = self._node("Max", [self._node("Mul", [high, "q/gelu_inv_levels"], f"{p}/max_scale"), "q/gelu_min_scale"], f"{p}/scale")
                zero = self._zero_point(GELU_ZERO_POINT, scale, per_token)
                quantized = self._node("QuantizeLinear", [x, scale, zero], f"{p}/uint8", axis=-1, block_size=width)
                self.rows[x] = (quantized, scale, "q/gelu_zero_point")
            else:
                absmax = self._node("ReduceMax", [self._node("Abs", [x], f"{p}/abs"), "q/last_axis"], f"{p}/absmax", keepdims=1)
                scale = self._node("Mul", [absmax, "q/inv127"], f"{p}/scale")
                zero = self._zero_point(128, scale, per_token)
                quantized = self._node("QuantizeLinear", [x, scale, zero], f"{p}/uint8", axis=-1, block_size=width)
                self.rows[x] = (quantized, scale, "q/zero_point")
        return self.rows[x]

    def quantized_weight(self, name: str, transposed: bool) -> tuple[str, str]:
        """Weight [K, N] as int8 levels stored in uint8 around 128, one scale per column N (once per shared weight)."""
        key = (name, transposed)
        if key not in self.weights:
            weight = numpy_helper.to_array(self.initializers[name])
            weight = weight.T if transposed else weight
            scale = np.maximum(np.abs(weight).max(axis=0), 1e-30) / WEIGHT_MAX
            levels = np.clip(np.round(weight / scale), -WEIGHT_MAX, WEIGHT_MAX)
            values = (levels + 128).astype(np.uint8)  # zero point 128: a uint8 x uint8 GEMM (module docstring)
            suffix = "/T" if transposed else ""
            self.weights[key] = (self._constant(f"{name}{suffix}/uint8", values),
                                 self._constant(f"{name}{suffix}/scale", scale.astype(np.float32)))
        return self.weights[key]

    def matmul(self, x: str, weight: str, output: str, transposed: bool = False, per_token: bool = True) -> str:
        """``output = x @ weight`` (or ``weight.T``) with per-row int8 activations."""
        values, weight_scale = self.quantized_weight(weight, transposed)
        rows, row_scale, zero_point = self.quantized_rows(x, self._matrix_shape(weight)[1 if transposed else 0], per_token)
        # A non-scalar a_scale ([rows, 1]) multiplies the output in place after the GEMM (onnxruntime >= 1.31, pinned)
        return self._node("MatMulIntegerToFloat", [rows, values, row_scale, weight_scale, zero_point, "q/weight_zero_point"],
                          output, domain="com.microsoft")

    def gather(self, table: str, indices: str, output: str) -> str:
        """Embedding lookup from an int8 table with one scale per row."""
        weight = numpy_helper.to_array(self.initializers[table])
        scale = np.maximum(np.abs(weight).max(axis=1, keepdims=True), 1e-30) / 127
        values = self._constant(f"{table}/int8", np.clip(np.round(weight / scale), -127, 127).astype(np.int8))
        scales = self._constant(f"{table}/row_scale", scale.astype(np.float32))
        rows = self._node("Cast", [self._node("Gather", [values, indices], f"{output}/int8")], f"{output}/float", to=TensorProto.FLOAT)
        return self._node("Mul", [rows, self._node("Gather", [scales, indices], f"{output}/scale")], output)

    def attention(self, node: onnx.NodeProto) -> None:
        """Attention(x, W_qkv, b_qkv, mask) -> three per-row int8 projections, then MultiHeadAttention(q, k, v, b_qkv, mask).

        Three GEMMs instead of one packed GEMM and a Split: the CPU MultiHeadAttention takes no packed QKV, and the
        Split's copy cost more than the GEMM's larger N saves.
        """
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if set(attrs) - {"num_heads", "mask_filter_value"} or len(node.input) != 4:
            raise ExportError(f"Attention node {node.name!r} has inputs {list(node.input)} and attributes {sorted(attrs)}; "
                              "the int8 rewrite handles (input, weights, bias, mask_index) with num_heads/mask_filter_value only")
        x, weight, bias, mask = node.input
        packed = numpy_helper.to_array(self.initializers[weight])
        hidden = packed.shape[1] // 3
        projections = []
        for index, part in enumerate("qkv"):
            name = f"{weight}/{part}"
            if name not in self.initializers:  # a slice of the shared packed weight, quantized once
                self.initializers[name] = numpy_helper.from_array(np.ascontiguousarray(packed[:, index * hidden : (index + 1) * hidden]), name)
            projections.append(self.matmul(x, name, f"{node.name}/{part}"))
        self.nodes.append(helper.make_node("MultiHeadAttention", [*projections, bias, mask], list(node.output), name=node.name,
                                           domain="com.microsoft", **attrs))

    def rewrite(self) -> dict[str, int]:
        counts = {"MatMul": 0, "Attention": 0, "Gemm": 0, "Gather": 0}
        for node in self.model.graph.node:
            if node.op_type == "MatMul" and self._matrix_shape(node.input[1]) is not None:
                self.matmul(node.input[0], node.input[1], node.output[0])
            elif node.op_type == "Attention" and node.domain == "com.microsoft" and self._matrix_shape(node.input[1]) is not None:
                self.attention(node)
            elif node.op_type == "Gemm" and self._matrix_shape(node.input[1]) is not None:
                attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
                if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
                    self.nodes.append(node)
                    continue
                has_bias = len(node.input) > 2 and node.input[2]
                product = self.matmul(node.input[0], node.input[1], f"{node.output[0]}/product" if has_bias else node.output[0],
                                      transposed=bool(attrs.get("transB", 0)), per_token=False)
                if has_bias:
                    self._node("Add", [product, node.input[2]], node.output[0])
            elif node.op_type == "Gather" and np.prod(self._matrix_shape(node.input[0]) or 0) >= MIN_GATHER_ELEMENTS:
                self.gather(node.input[0], node.input[1], node.output[0])
            else:
                self.nodes.append(node)
                continue
            counts[node.op_type] += 1
        return counts


# Default-domain ops of the fused ALBERT graph whose meaning is the same from opset 17 to 21 (later versions only add
# types or attributes with the old default); contrib ops (Attention, SkipLayerNormalization, ...) have no opset.
SAME_SINCE_17 = {"Add", "Cast", "Clip", "Constant", "Div", "Gather", "Gemm", "LayerNormalization", "MatMul", "Mul", "ReduceSum",
                 "Shape", "Slice", "Tanh", "Unsqueeze", "Sub", "Concat", "Reshape", "Transpose", "Identity", "Sqrt", "Pow", "Erf"}


def _to_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` at opset 21 (blocked QuantizeLinear). Where every op means the same at 21, only the opset import
    changes: the version converter copies the whole model several times (5.5 GB peak for xxlarge's 0.9 GB)."""
    ops = {node.op_type for node in model.graph.node if node.domain in ("", "ai.onnx")}
    if ops <= SAME_SINCE_17 and all(17 <= entry.version <= OPSET for entry in model.opset_import if entry.domain in ("", "ai.onnx")):
        for entry in model.opset_import:
            if entry.domain in ("", "ai.onnx"):
                entry.version = OPSET
    else:
        model = version_converter.convert_version(model, OPSET)
    model.ir_version = max(model.ir_version, 10)  # opset 21 needs IR 10
    return model


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
    model = _to_opset(onnx.load(str(fused_path)))
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


def write_u8s8(int8_path: Path, out_path: Path) -> int:
    """Write ``int8_path``'s graph with uint8 x int8 GEMMs: every MatMulIntegerToFloat weight's levels as int8
    (stored value - 128) and the weight zero point 0. The levels, and so the exact products, are unchanged.

    Returns:
        How many weights were converted.

    Raises:
        ExportError: A weight is not uint8 around the shared zero point 128 (not a graph from :func:`quantize_int8`).
    """
    model = onnx.load(str(int8_path))
    initializers = {init.name: init for init in model.graph.initializer}
    gemms = [node for node in model.graph.node if node.op_type == "MatMulIntegerToFloat"]
    zero_points = {node.input[5] for node in gemms}
    if zero_points != {"q/weight_zero_point"} or int(numpy_helper.to_array(initializers["q/weight_zero_point"])) != 128:
        raise ExportError(f"{int8_path}: its integer GEMMs' weight zero points are {sorted(zero_points)}, not the shared uint8 128 "
                          "this quantizer writes; re-export the folder")
    converted: set[str] = set()
    for node in gemms:
        weight = initializers[node.input[1]]
        if weight.name in converted:
            continue
        if weight.data_type != TensorProto.UINT8:
            raise ExportError(f"{int8_path}: {node.name}'s weight {weight.name!r} is not uint8; re-export the folder")
        levels = numpy_helper.to_array(weight).astype(np.int16) - 128
        weight.CopyFrom(numpy_helper.from_array(levels.astype(np.int8), weight.name))
        converted.add(weight.name)
    initializers["q/weight_zero_point"].CopyFrom(numpy_helper.from_array(np.array(0, np.int8), "q/weight_zero_point"))
    onnx.save(model, str(out_path))
    return len(converted)


def u8s8_probe_model() -> onnx.ModelProto:
    """The runtime's uint8 x int8 probe (albert_onnx/int8_kernel.py, :data:`PROBE_FILE`): one MatMulIntegerToFloat
    shaped as the int8 graph's, over :func:`albert_onnx.int8_kernel.probe_weights`, with unit weight scales."""
    from albert_onnx import int8_kernel as probe

    weights = probe.probe_weights()
    initializers = [numpy_helper.from_array(weights, "weights"),
                    numpy_helper.from_array(np.ones(probe.PROBE_N, np.float32), "weight_scale"),
                    numpy_helper.from_array(np.array(probe.ROW_ZERO_POINT, np.uint8), "row_zero_point"),
                    numpy_helper.from_array(np.array(0, np.int8), "weight_zero_point")]
    node = helper.make_node("MatMulIntegerToFloat", ["rows", "weights", "row_scale", "weight_scale", "row_zero_point", "weight_zero_point"],
                            ["product"], name="product", domain="com.microsoft")
    graph = helper.make_graph(
        [node], "u8s8_probe",
        [helper.make_tensor_value_info("rows", TensorProto.UINT8, [1, "count", probe.PROBE_K]),
         helper.make_tensor_value_info("row_scale", TensorProto.FLOAT, [1, "count", 1])],
        [helper.make_tensor_value_info("product", TensorProto.FLOAT, [1, "count", probe.PROBE_N])], initializers)
    model = helper.make_model(graph, producer_name="albert-onnx", ir_version=10,
                              opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)])
    return model


def weight_dtypes(model: onnx.ModelProto) -> dict[str, int]:
    """Count the constant matrices that are multiplied (MatMul-like ops' B) or looked up (Gather's table), by
    stored element type."""
    weight_input = {"MatMul": 1, "MatMulInteger": 1, "MatMulIntegerToFloat": 1, "Attention": 1, "QAttention": 1, "Gemm": 1, "Gather": 0}
    initializers = {init.name: init for init in model.graph.initializer}
    counts: dict[str, int] = {}
    seen: set[str] = set()
    for node in model.graph.node:
        if node.op_type not in weight_input or len(node.input) <= weight_input[node.op_type]:
            continue
        name = node.input[weight_input[node.op_type]]
        init = initializers.get(name)
        if init is None or len(init.dims) < 2 or min(init.dims) < 2 or name in seen:
            continue  # not a matrix (e.g. a per-row scale column)
        seen.add(name)
        key = onnx.TensorProto.DataType.Name(init.data_type).lower()
        counts[key] = counts.get(key, 0) + 1
    return counts
