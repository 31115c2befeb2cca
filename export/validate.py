"""Check every ONNX variant against PyTorch fp32 on real sentences in padded batches."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from transformers import AlbertModel

from .errors import ExportError

# Gates from the product spec: fp32/fused by max |delta| of last_hidden_state, int8/fp16 by min cosine.
GATES: dict[str, tuple[str, float]] = {
    "fp32": ("max_abs_diff", 1e-4),
    "fused": ("max_abs_diff", 1e-4),
    "int8": ("min_cosine", 0.995),
    "fp16": ("min_cosine", 0.999),
}

FALLBACK_TEXTS = [
    "A man is playing a guitar.",
    "The quick brown fox jumps over the lazy dog near the riverbank at dawn.",
    "Stocks fell sharply on Tuesday after the central bank raised interest rates by half a point.",
    "She said it was fine.",
    "Researchers found that the new material conducts heat twice as well as copper at room temperature.",
    "Two dogs run through a field of tall grass while children watch from a wooden fence.",
    "Is this the right way?",
    "The committee will publish its final report, including all 1,250 public comments, next spring.",
]


def read_texts(path: Path) -> list[str]:
    """Read texts from STS-B style .csv/.tsv (sentence columns 6 and 7), .jsonl ("text") or .txt (a line each)."""
    if not path.is_file():
        raise ExportError(f"validation_texts={str(path)!r} does not exist; pass an STS-B .csv, a .jsonl or a .txt file")
    texts: list[str] = []
    if path.suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
                texts.extend(cell for cell in row[5:7] if cell.strip())
    elif path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            texts = [json.loads(line)["text"] for line in handle if line.strip()]
    else:
        texts = [line.rstrip("\n") for line in path.open(encoding="utf-8") if line.strip()]
    if not texts:
        raise ExportError(f"validation_texts={str(path)!r} holds no text")
    return texts


def sample_texts(texts: list[str], count: int) -> list[str]:
    """Pick ``count`` texts spread over the length range, plus two long ones built from them (mixed lengths)."""
    unique = sorted(set(texts), key=lambda text: (len(text), text))
    picks = [unique[int(i)] for i in np.linspace(0, len(unique) - 1, num=min(count, len(unique)))]
    long_text = " ".join(unique[-40:])
    return picks + [long_text[:1500], long_text[:700]]


@dataclass
class Batch:
    """One padded batch of token ids and its torch reference outputs."""

    feeds: dict[str, np.ndarray]
    reference: dict[str, np.ndarray]


def reference_batches(model: AlbertModel, tokenizer, texts: list[str], batch_size: int, max_length: int) -> list[Batch]:
    """Tokenize in padded batches (input order, so lengths mix) and compute PyTorch fp32 outputs."""
    from .to_onnx import AlbertExportWrapper

    wrapper = AlbertExportWrapper(model, hidden_states=False).eval()
    batches = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="np")
        feeds = {
            "input_ids": enc["input_ids"].astype(np.int64),
            "attention_mask": enc["attention_mask"].astype(np.int64),
            "token_type_ids": enc["token_type_ids"].astype(np.int64),
        }
        with torch.inference_mode():
            hidden, pooler, sentence, word, _ = wrapper(*(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask", "token_type_ids")))
        batches.append(Batch(feeds, {"last_hidden_state": hidden.numpy(), "pooler_output": pooler.numpy(), "sentence_embedding": sentence.numpy(), "word_embeddings": word.numpy()}))
    return batches


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def compare(session: ort.InferenceSession, batches: list[Batch]) -> dict[str, float]:
    """Max |delta| (over real, unpadded tokens) and min cosine of one ONNX session against the reference."""
    names = ["last_hidden_state", "pooler_output", "sentence_embedding", "word_embeddings"]
    worst = {"max_abs_diff": 0.0, "pooler_max_abs_diff": 0.0, "word_embeddings_max_abs_diff": 0.0, "min_cosine": 1.0, "min_token_cosine": 1.0}
    for batch in batches:
        hidden, pooler, sentence, word = session.run(names, batch.feeds)
        valid = batch.feeds["attention_mask"].astype(bool)
        ref = batch.reference
        worst["max_abs_diff"] = max(worst["max_abs_diff"], float(np.abs(hidden - ref["last_hidden_state"])[valid].max()))
        worst["pooler_max_abs_diff"] = max(worst["pooler_max_abs_diff"], float(np.abs(pooler - ref["pooler_output"]).max()))
        worst["word_embeddings_max_abs_diff"] = max(worst["word_embeddings_max_abs_diff"], float(np.abs(word - ref["word_embeddings"])[valid].max()))
        worst["min_cosine"] = min(worst["min_cosine"], float(_cosines(sentence, ref["sentence_embedding"]).min()))
        worst["min_token_cosine"] = min(worst["min_token_cosine"], float(_cosines(hidden, ref["last_hidden_state"])[valid].min()))
    return worst


def validate_variant(name: str, path: Path, batches: list[Batch], providers: list[str]) -> dict[str, object]:
    """Run one variant and judge it against its gate.

    Returns:
        Metrics, the gate, whether it passed, and the execution provider it ran on (for fp16 with no CUDA
        device, the CPU provider and a note saying so).
    """
    metric, limit = GATES[name]
    note = None
    provider = "CPUExecutionProvider"
    if name == "fp16":
        if "CUDAExecutionProvider" in providers:
            provider = "CUDAExecutionProvider"
        else:
            note = "fp16 targets CUDA; no CUDA device here, so checked with ONNX Runtime's CPU fp16 kernels (a proxy)"
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=[provider])
    metrics = compare(session, batches)
    value = metrics[metric]
    passed = value <= limit if metric == "max_abs_diff" else value >= limit
    result = {"validated": True, "provider": provider, "passed": bool(passed), "gate": {metric: limit}, **metrics}
    return result if note is None else {**result, "note": note}


def gate_summary(result: dict[str, object]) -> str:
    """One short phrase for a progress line: ``min_cosine=0.9994`` or ``not validated``."""
    if not result.get("validated"):
        return "not validated"
    (metric, _limit), = result["gate"].items()  # type: ignore[union-attr]
    return f"{metric}={result[metric]:.3g}"
