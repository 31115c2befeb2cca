"""Fuse the fp32 graph with ONNX Runtime's transformer optimizer, then store shared weights once."""

from __future__ import annotations

import collections
import contextlib
import io
from pathlib import Path

import onnx
from onnxruntime.transformers import optimizer
from onnxruntime.transformers.fusion_options import FusionOptions
from onnxruntime.transformers.onnx_model import OnnxModel
from transformers import AlbertConfig

FUSED_OP_TYPES = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "FastGelu", "BiasGelu", "Gelu", "LayerNormalization",
                  "MatMulIntegerToFloat")


def put_attention_output_first(model: onnx.ModelProto) -> int:
    """Reorder each attention residual ``Add(hidden, attention_out)`` to ``Add(attention_out, hidden)``.

    Why: ORT's FusionAttention walks up from the LayerNorm through the *first* parent Add that it finds
    (``match_parent_path(..., [None, ...])`` does not backtrack). In ALBERT's first layer ``hidden`` is the
    output of the embedding projection, itself an ``Add`` (its bias), so the matcher takes that branch, fails,
    and layer 0 stays unfused: the "11 of 12" that a plain Optimum O2 run gives. Add is commutative, so
    putting the attention branch first is exact.

    Returns:
        How many Add nodes were reordered.
    """
    graph = OnnxModel(model)
    swapped = 0
    for node in model.graph.node:
        if node.op_type != "Add":
            continue
        children = graph.get_children(node)
        if not children or any(child.op_type != "LayerNormalization" for child in children):
            continue
        # input 1 = Add(bias) <- MatMul(dense) <- Reshape(merged heads): the attention output branch
        if graph.match_parent_path(node, ["Add", "MatMul", "Reshape"], [1, None, 0]) is not None:
            node.input[0], node.input[1] = node.input[1], node.input[0]
            swapped += 1
    return swapped


def count_ops(model: onnx.ModelProto) -> dict[str, int]:
    """Count every op type in the main graph."""
    return dict(sorted(collections.Counter(node.op_type for node in model.graph.node).items()))


def fused_op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """The fusion-relevant op counts recorded in the manifest and asserted in tests."""
    counts = count_ops(model)
    return {op: counts.get(op, 0) for op in FUSED_OP_TYPES}


def optimize_fused(fp32_path: Path, out_path: Path, config: AlbertConfig) -> dict[str, int]:
    """Write the fused, deduplicated fp32 graph.

    EmbedLayerNormalization fusion is off on purpose: it would swallow the word-embedding Gather, which then
    could not be int8-quantized (15 MB of fp32 embeddings in the int8 file) nor feed ``word_embeddings``.

    Args:
        fp32_path: The reference graph from ``to_onnx.export_fp32``.
        out_path: Where to write the fused graph.
        config: The model config (heads and hidden size for the fusions).

    Returns:
        Fused op counts of the written graph.
    """
    model = onnx.load(str(fp32_path))
    put_attention_output_first(model)
    options = FusionOptions("bert")
    options.enable_embed_layer_norm = False
    fused = optimizer.optimize_model(
        model,
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        optimization_options=options,
        opt_level=0,
    )
    dedupe_initializers(fused)
    fused.save_model_to_file(str(out_path))
    return fused_op_counts(fused.model)


def dedupe_initializers(model: OnnxModel) -> None:
    """Store each distinct weight once: fusion writes a fresh copy of the shared layer weights per layer."""
    with contextlib.redirect_stdout(io.StringIO()):  # ORT prints a count line; the manifest records sizes instead
        model.remove_duplicated_initializer(None)
    model.prune_graph()


def convert_fp16(fused_path: Path, out_path: Path) -> dict[str, int]:
    """Write the fp16 graph for CUDA from the fused graph.

    Inputs stay int64 and outputs float32 (``keep_io_types``). The in-graph pooling ops stay fp32: a masked sum
    over up to 512 tokens can leave fp16's range. SkipLayerNormalization and Attention accumulate in fp32
    inside their CUDA kernels.
    """
    model = OnnxModel(onnx.load(str(fused_path)))
    model.convert_float_to_float16(
        keep_io_types=True,
        op_block_list=["ReduceSum", "Div", "Clip", "Mul", "Tanh", "Gemm"],
    )
    dedupe_initializers(model)
    model.save_model_to_file(str(out_path))
    return fused_op_counts(model.model)
