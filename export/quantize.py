"""Quantize the fused graph to int8 for CPU."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

# Chosen by measurement on this project's CPU class (see README, "int8 scheme"): dynamic U8S8, per-tensor,
# after fusion so that QAttention and the shared MatMul weights are int8, and the word-embedding Gather too.
INT8_SCHEME = {
    "method": "dynamic",
    "activations": "uint8",
    "weights": "int8",
    "per_channel": False,
    "reduce_range": False,
    "op_types": ["MatMul", "Attention", "Gather"],
}


def quantize_int8(fused_path: Path, out_path: Path, *, per_channel: bool = False) -> dict[str, object]:
    """Write the int8 graph.

    Quantizing after fusion matters for ALBERT: the shared weights reach every layer's MatMul directly, so
    each is quantized once and stored once (Optimum's path quantizes before fusion, where they arrive
    through Identity nodes and stay fp32).

    Args:
        fused_path: The fused, deduplicated fp32 graph.
        out_path: Where to write the int8 graph.
        per_channel: Per-channel weight scales instead of per-tensor.

    Returns:
        The scheme used, for the manifest.
    """
    scheme = dict(INT8_SCHEME, per_channel=per_channel)
    quantize_dynamic(
        str(fused_path),
        str(out_path),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=list(scheme["op_types"]),
        per_channel=per_channel,
        reduce_range=False,
        # Needed on fused graphs: contrib ops have no type inference, so tensors of unknown type are float.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return scheme


def weight_dtypes(model: onnx.ModelProto) -> dict[str, int]:
    """Count the constant weights (two or more dims) feeding MatMul-like ops, by stored element type."""
    consumers = {"MatMul", "MatMulInteger", "Attention", "QAttention", "Gemm", "Gather"}
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
