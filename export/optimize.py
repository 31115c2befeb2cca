"""Fuse the fp32 graph with ONNX Runtime's transformer optimizer, then store shared weights once."""

from __future__ import annotations

import collections
import contextlib
import io
import math
from pathlib import Path

import onnx
from onnx import helper
from onnxruntime.transformers.fusion_options import FusionOptions
from onnxruntime.transformers.onnx_model import OnnxModel
from onnxruntime.transformers.onnx_model_bert import BertOnnxModel
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
    # What optimizer.optimize_model(model_type="bert", opt_level=0) does (its optimize_by_fusion), with the class below
    fused = _AlbertFusion(model, config.num_attention_heads, config.hidden_size)
    fused.optimize(options)
    fused.topological_sort()
    fused.model.producer_name = "onnxruntime.transformers"
    dedupe_initializers(fused)
    fused.save_model_to_file(str(out_path))
    return fused_op_counts(fused.model)


class _AlbertFusion(BertOnnxModel):
    """ORT's BERT fusions, with ALBERT's shared weights kept shared while fusing.

    The Attention fusion gives each layer its own packed copy of the one shared Q/K/V weight (12 x 201 MB on
    xxlarge), and the later passes run symbolic shape inference on a copy of the whole model: measured peak 11.0 GB
    for xxlarge's 0.9 GB graph. Storing the copies once right after that fusion keeps the model at its own size.
    """

    def fuse_attention(self) -> None:
        super().fuse_attention()
        with contextlib.redirect_stdout(io.StringIO()):  # ORT prints a count line
            self.remove_duplicated_initializer(None)

    def infer_runtime_shape(self, dynamic_axis_mapping: dict | None = None, update: bool = False):
        """ORT's shape inference, run on a copy of the graph whose large weights are shape-only inputs.

        The fusions only ask it for shapes; the stock method copies the whole model, weights included, each time
        (measured: +3.6 GB per call for xxlarge).
        """
        if self.enable_shape_infer and (self.shape_infer_helper is None or update):
            from shape_infer_helper import SymbolicShapeInferenceHelper  # on sys.path once onnxruntime.transformers is imported

            self.shape_infer_helper = SymbolicShapeInferenceHelper(_shapes_only(self.model))
        return super().infer_runtime_shape(dynamic_axis_mapping or {}, update=False)


def _shapes_only(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph with each initializer of 64K+ elements turned into a graph input of its shape (no data copied)."""
    graph = model.graph
    small, large = [], []
    for tensor in graph.initializer:
        (large if math.prod(tensor.dims) >= 1 << 16 else small).append(tensor)
    inputs = list(graph.input) + [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in large]
    copy = helper.make_graph(list(graph.node), graph.name, inputs, list(graph.output), small, value_info=list(graph.value_info))
    return helper.make_model(copy, opset_imports=list(model.opset_import), ir_version=model.ir_version)


def dedupe_initializers(model: OnnxModel) -> None:
    """Store each distinct weight once: fusion writes a fresh copy of the shared layer weights per layer."""
    with contextlib.redirect_stdout(io.StringIO()):  # ORT prints a count line; the manifest records sizes instead
        model.remove_duplicated_initializer(None)
    model.prune_graph()


FP16_MASK_FILTER_VALUE = -10000.0


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
    for node in model.model.graph.node:  # the masked-score value, in half precision
        if node.op_type == "Attention":
            # Under transformers 4.x the fusion writes float32's minimum (-3.4e38), which is -inf in fp16: a kernel
            # that forms mask * value (0 * -inf = NaN) or adds it to a negative score would break. -10000 (ONNX
            # Runtime's default) is finite in fp16 and still gives exp(score - 10000) == 0 for a masked position.
            # Under transformers 5 the fusion writes none (the default applies); set it either way, so the graph says it.
            kept = [attribute for attribute in node.attribute if attribute.name != "mask_filter_value"]
            del node.attribute[:]
            node.attribute.extend([*kept, helper.make_attribute("mask_filter_value", FP16_MASK_FILTER_VALUE)])
    dedupe_initializers(model)
    model.save_model_to_file(str(out_path))
    return fused_op_counts(model.model)
