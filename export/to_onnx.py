"""Trace a PyTorch ALBERT into the fp32 reference ONNX graph with the outputs the runtime needs."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from transformers import AlbertModel

from .errors import ExportError

INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
BASE_OUTPUTS = ["last_hidden_state", "pooler_output", "sentence_embedding", "word_embeddings", "projected_word_embeddings"]
HIDDEN_STATES = "hidden_states"
POOLER_OUTPUT = "pooler_output"
OPSET = 17


class AlbertExportWrapper(torch.nn.Module):
    """ALBERT plus in-graph masked-mean pooling and the static word-embedding lookups.

    ``word_embeddings`` and ``projected_word_embeddings`` reuse the graph's own embedding and projection
    initializers, so the runtime reads static word vectors from the ONNX file at almost no cost
    (one 128-wide gather and one 128xH MatMul per token).
    """

    def __init__(self, model: AlbertModel, hidden_states: bool) -> None:
        super().__init__()
        self.model = model
        self.hidden_states = hidden_states

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor):
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            output_hidden_states=self.hidden_states,
            return_dict=True,  # a config with return_dict=false or torchscript=true would give a tuple
        )
        hidden = out.last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        # clamp: an all-padding row (never produced by the runtime) gives zeros instead of NaN.
        sentence = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        word = self.model.embeddings.word_embeddings(input_ids)
        projected = self.model.encoder.embedding_hidden_mapping_in(word)
        pooled = () if out.pooler_output is None else (out.pooler_output,)  # None: no pooler head (LoadedModel.pooler)
        outputs = (hidden, *pooled, sentence, word, projected)
        if self.hidden_states:
            outputs = outputs + (torch.stack(out.hidden_states, dim=0),)
        return outputs


def output_names(hidden_states: bool, pooler: bool = True) -> list[str]:
    """Graph output names, in order: ``pooler_output`` only for a model with the pooler head."""
    base = BASE_OUTPUTS if pooler else [name for name in BASE_OUTPUTS if name != POOLER_OUTPUT]
    return base + ([HIDDEN_STATES] if hidden_states else [])


def export_fp32(model: AlbertModel, path: Path, *, hidden_states: bool) -> None:
    """Export the fp32 reference graph with dynamic batch and sequence axes.

    Uses the TorchScript exporter (``dynamo=False``): the dynamo exporter's graph gets no Attention fusion.

    Args:
        model: ALBERT in eval mode with eager attention.
        path: Where to write the .onnx file.
        hidden_states: Also output all hidden states stacked as (layers + 1, batch, sequence, hidden).

    Raises:
        ExportError: The model holds an operation torch cannot export to ONNX.
    """
    names = output_names(hidden_states, pooler=model.pooler is not None)
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    for name in names:
        if name == HIDDEN_STATES:
            dynamic_axes[name] = {1: "batch", 2: "sequence"}
        elif name == "pooler_output" or name == "sentence_embedding":
            dynamic_axes[name] = {0: "batch"}
        else:
            dynamic_axes[name] = {0: "batch", 1: "sequence"}
    # A [CLS] ... [SEP] text in albert-base-v2's ids and a padded one. The values only feed the trace (the graph is the
    # same for any ids), but must be rows of the embedding table: a custom vocabulary can be smaller than 2293 ids.
    ids = torch.tensor([[2, 13, 1632, 25, 21, 2292, 9, 3], [2, 13, 1632, 3, 0, 0, 0, 0]], dtype=torch.long) % model.config.vocab_size
    mask = torch.tensor([[1] * 8, [1] * 4 + [0] * 4], dtype=torch.long)  # not from the ids: a small table can map a word to 0
    types = torch.zeros_like(ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deprecated, and needed
        try:
            torch.onnx.export(
                AlbertExportWrapper(model, hidden_states).eval(),
                (ids, mask, types),
                str(path),
                input_names=INPUT_NAMES,
                output_names=names,
                dynamic_axes=dynamic_axes,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        except torch.onnx.errors.UnsupportedOperatorError as error:
            # load.check_config refuses the activations known to fail here; this names any other cause in one line
            raise ExportError(f"torch cannot export this model to ONNX opset {OPSET} ({str(error).splitlines()[0][:200]}); check "
                              f"config.json's hidden_act={model.config.hidden_act!r} and its other non-standard fields") from None
