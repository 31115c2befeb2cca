"""Gates that can fail: every variant against an independent PyTorch reference on real text.

The reference is the plain ``AlbertModel`` (not the exported wrapper), run on padded batches of texts of mixed
lengths, and pooled by this module's own numpy code, so a pooling or layer bug inside the graph shows up.
Measured per variant: max |delta| of last_hidden_state (real tokens), pooler output (where the model has that
head), sentence vector and word rows; raw and centred cosine of sentence vectors (centred: the reference mean
vector subtracted, because with random weights every sentence vector is nearly parallel and raw cosines cannot
fail); the Spearman rank agreement of pair similarities (what a search user feels); and batch invariance (a text
alone vs in a batch of same-length rows, as the runtime batches; and vs its padded batch).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from scipy.stats import spearmanr
from transformers import AlbertModel

from albert_onnx.hardware import cpu_description, gpu_name
from albert_onnx.int8_kernel import u8s8_is_exact
from albert_onnx import model_folder
from albert_onnx.model_folder import Validation
from albert_onnx.session import DeviceUnavailable, create_session

from .reference_tokenizer import ReferenceTokenizer
from .validation_texts import ValidationSet

log = logging.getLogger(__name__)

# metric -> ("at_least" | "at_most", limit). fp32/fused must be PyTorch up to float rounding. int8 limits come from
# measurement (README, "int8 scheme"): per-token int8 on albert-base-v2 (random weights, STS-B dev) gives centred
# cosine mean 0.997 and rank agreement 0.9987, per-tensor int8 0.985 and 0.998. The centred minimum is recorded but
# not gated: it is set by the few texts whose vector is within 0.2% of the mean, where any rounding dominates.
GATES: dict[str, dict[str, tuple[str, float]]] = {
    "fp32": {"hidden_max_abs_diff": ("at_most", 1e-4), "sentence_max_abs_diff": ("at_most", 1e-4),
             "pooler_max_abs_diff": ("at_most", 1e-4), "word_max_abs_diff": ("at_most", 1e-6)},
    "fused": {"hidden_max_abs_diff": ("at_most", 1e-4), "sentence_max_abs_diff": ("at_most", 1e-4),
              "pooler_max_abs_diff": ("at_most", 1e-4), "word_max_abs_diff": ("at_most", 1e-6)},
    "int8": {"centred_cosine_mean": ("at_least", 0.99), "rank_agreement": ("at_least", 0.995),
             "batch_invariance_max_abs_diff": ("at_most", 1e-6)},
    "fp16": {"centred_cosine_mean": ("at_least", 0.99), "rank_agreement": ("at_least", 0.999)},
}
# A reference whose sentence vectors all lie within SPREAD_MIN of their mean carries no ranking to preserve: centred
# cosine and rank agreement then measure rounding noise alone. Deep random-weight models are like that (attention
# stays near uniform and averages the tokens layer after layer; measured spread: tiny 0.12, base 0.19, large-v2 0.008,
# xlarge-v2 0.0006). There the lossy variants are gated on token-level agreement instead, and the manifest says so.
SPREAD_MIN = model_folder.SPREAD_MIN  # the runtime applies it to the other poolings' numbers (pooling_shortfall)
DEGENERATE_GATES = {"token_cosine_min": ("at_least", 0.99), "raw_cosine_min": ("at_least", 0.999)}
RANKING_GATES = ("centred_cosine_mean", "rank_agreement")
# fp16 arithmetic runs only on CUDA: on the CPU provider ONNX Runtime inserts casts and computes in fp32, so a CPU
# number would look like a pass without testing fp16 at all.
NEEDS_DEVICE = {"fp16": "CUDAExecutionProvider"}

# int8's uint8 x int8 twin has the same integer levels: where this CPU computes that product exactly, every output must
# be the uint8 x uint8 graph's (the integer products are equal, the float ops after them the same).
U8S8_GATES = {"max_abs_diff_vs_u8u8": ("at_most", 1e-6)}

@dataclass(frozen=True)
class Reference:
    """PyTorch fp32 outputs of the plain AlbertModel on padded batches, pooled here."""

    feeds: list[dict[str, np.ndarray]]
    hidden: list[np.ndarray]
    pooler: np.ndarray | None  # None for a model without the pooler head
    sentence: np.ndarray
    word: list[np.ndarray]
    singles: list[dict[str, np.ndarray]]  # the first texts alone, unpadded, for the batch-invariance checks
    crowds: list[dict[str, np.ndarray]]  # each single as row 0 of a batch of same-length rows cut from other texts
    pairs: list[tuple[int, int]]


def masked_mean(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over the real tokens, in float64 (the reference's own pooling, not the graph's)."""
    weights = mask[..., None].astype(np.float64)
    return ((hidden.astype(np.float64) * weights).sum(axis=1) / weights.sum(axis=1)).astype(np.float32)


def reference(model: AlbertModel, tokenizer: ReferenceTokenizer, vset: ValidationSet, batch_size: int, max_length: int, singles: int = 24) -> Reference:
    """Tokenize in padded batches (input order, so lengths mix) and run the plain PyTorch model.

    Args:
        model: ALBERT in eval mode.
        tokenizer: The reference SentencePiece tokenizer (the ids).
        vset: Texts and pairs.
        batch_size: Texts per padded batch.
        max_length: Truncation length.
        singles: How many texts to also run alone, for the batch-invariance metric.
    """
    feeds, hidden, pooler, sentence, word = [], [], [], [], []
    table = model.embeddings.word_embeddings.weight.detach().numpy()
    for start in range(0, len(vset.texts), batch_size):
        batch = tokenizer.encode_batch(vset.texts[start : start + batch_size], max_length)
        with torch.inference_mode():
            out = model(**{name: torch.from_numpy(value) for name, value in batch.items()})
        feeds.append(batch)
        hidden.append(out.last_hidden_state.numpy())
        if out.pooler_output is not None:
            pooler.append(out.pooler_output.numpy())
        sentence.append(masked_mean(hidden[-1], batch["attention_mask"]))
        word.append(table[batch["input_ids"]])
    solo, crowds = [], []
    pool = np.concatenate([batch["input_ids"][batch["attention_mask"] == 1] for batch in feeds])  # real token ids
    rng = np.random.default_rng(0)
    for text in vset.texts[:singles]:
        single = tokenizer.encode_batch([text], max_length)
        solo.append(single)
        # batchmates of the same length (no padding): the row-wise math must give row 0 the same vector
        length = single["input_ids"].shape[1]
        mates = [pool[start : start + length] for start in rng.integers(0, len(pool) - length, size=3)]
        ids = np.concatenate([single["input_ids"], np.stack(mates)])
        ids[1:, 0], ids[1:, -1] = single["input_ids"][0, 0], single["input_ids"][0, -1]  # [CLS] ... [SEP]
        crowds.append({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
    return Reference(feeds, hidden, np.concatenate(pooler) if pooler else None, np.concatenate(sentence), word, solo, crowds,
                     vset.pairs)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _pair_similarities(vectors: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
    left, right = zip(*pairs)
    return _cosines(vectors[list(left)], vectors[list(right)])


def measure(session: ort.InferenceSession, ref: Reference) -> dict[str, float]:
    """Every fidelity number of one ONNX session against the reference."""
    names = ["last_hidden_state", "sentence_embedding", "word_embeddings"] + (["pooler_output"] if ref.pooler is not None else [])
    hidden_diff = word_diff = 0.0
    token_cosine = 1.0
    nonfinite = 0  # NaN/inf values among the graph's outputs: a broken graph, whatever the metrics say
    pooler, sentence = [], []
    other = {"cls": ([], []), "max": ([], [])}  # the other poolings of last_hidden_state: (graph's, reference's)
    for feeds, ref_hidden, ref_word in zip(ref.feeds, ref.hidden, ref.word):
        hidden, vector, word, *pooled = session.run(names, feeds)
        real = feeds["attention_mask"].astype(bool)
        for states, side in ((hidden, 0), (ref_hidden, 1)):
            other["cls"][side].append(states[:, 0])
            other["max"][side].append(np.where(real[..., None], states, -np.inf).max(axis=1))
        nonfinite += int((~np.isfinite(hidden[real])).sum() + (~np.isfinite(vector)).sum() + (~np.isfinite(word[real])).sum()
                         + sum((~np.isfinite(p)).sum() for p in pooled))
        # np.max/np.min keep a NaN (Python's max(0.0, nan) is 0.0): a NaN anywhere must fail the gate, not vanish
        hidden_diff = float(np.max([hidden_diff, np.abs(hidden - ref_hidden)[real].max()]))
        word_diff = float(np.max([word_diff, np.abs(word - ref_word)[real].max()]))
        token_cosine = float(np.min([token_cosine, _cosines(hidden[real], ref_hidden[real]).min()]))
        pooler.extend(pooled)
        sentence.append(vector)
    sentence = np.concatenate(sentence)
    centre = ref.sentence.mean(axis=0)
    centred = _cosines(sentence - centre, ref.sentence - centre)
    spread = np.linalg.norm(ref.sentence - centre, axis=-1) / np.linalg.norm(ref.sentence, axis=-1)
    alone = np.concatenate([session.run(["sentence_embedding"], feeds)[0] for feeds in ref.singles])
    crowded = np.concatenate([session.run(["sentence_embedding"], feeds)[0][:1] for feeds in ref.crowds])
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    nonfinite += int((~np.isfinite(alone)).sum() + (~np.isfinite(crowded)).sum())
    metrics = {
        "nonfinite_outputs": float(nonfinite),
        "hidden_max_abs_diff": hidden_diff,
        "token_cosine_min": token_cosine,
        "sentence_max_abs_diff": float(np.abs(sentence - ref.sentence).max()),
        "word_max_abs_diff": word_diff,
        "raw_cosine_min": float(_cosines(sentence, ref.sentence).min()),
        "centred_cosine_mean": float(centred.mean()),
        "centred_cosine_min": float(centred.min()),
        "reference_spread": float(spread.mean()),
        # the runtime only batches rows of one length; padded batches are measured too, for direct ORT users
        "batch_invariance_max_abs_diff": float(np.abs(unit(alone) - unit(crowded)).max()),
        "padded_batch_invariance_max_abs_diff": float(np.abs(unit(alone) - unit(sentence[: len(alone)])).max()),
    }
    if ref.pooler is not None:
        metrics["pooler_max_abs_diff"] = float(np.abs(np.concatenate(pooler) - ref.pooler).max())
        other["pooler"] = (pooler, [ref.pooler])
    # The gates measure mean pooling; cls, max and pooler are recorded (the runtime warns where they fall short): they
    # read one row or one value per dimension, so no averaging over tokens hides per-token error
    for pooling, (graph, reference) in other.items():
        graph, reference = np.concatenate(graph), np.concatenate(reference)
        centre = reference.mean(axis=0)
        metrics[f"{pooling}_centred_cosine_mean"] = float(_cosines(graph - centre, reference - centre).mean())
        # as for mean pooling: below SPREAD_MIN the centred cosine measures rounding alone (random weights' cls rows)
        metrics[f"{pooling}_reference_spread"] = float((np.linalg.norm(reference - centre, axis=-1) / np.linalg.norm(reference, axis=-1)).mean())
    if ref.pairs:
        metrics["rank_agreement"] = float(spearmanr(_pair_similarities(sentence, ref.pairs), _pair_similarities(ref.sentence, ref.pairs)).statistic)
    return metrics


def variant_gates(name: str, pooler: bool) -> dict[str, tuple[str, float]]:
    """GATES[name], without the pooler's gate for a model that has no pooler head (nothing to measure)."""
    return {metric: gate for metric, gate in GATES[name].items() if pooler or metric != "pooler_max_abs_diff"}


def gates_for(name: str, metrics: dict[str, float], pooler: bool = True) -> tuple[dict[str, tuple[str, float]], str | None]:
    """The gates that apply to ``name`` given the reference, and why they differ from GATES (None if they do not)."""
    gates = variant_gates(name, pooler)
    spread = metrics.get("reference_spread", 1.0)
    if spread >= SPREAD_MIN or not set(RANKING_GATES) & set(gates):
        return gates, None
    for metric in RANKING_GATES:
        gates.pop(metric, None)
    reason = (f"the reference sentence vectors lie within {spread:.2%} of their mean (below {SPREAD_MIN:.0%}: the model "
              "maps every text near one vector, as random weights do), so "
              "centred cosine and rank agreement measure rounding noise only: recorded, not gated; gated on token and raw cosine")
    return {**DEGENERATE_GATES, **gates}, reason


def judge(name: str, metrics: dict[str, float], pooler: bool = True) -> tuple[dict[str, dict[str, float]], list[str], str | None]:
    """The variant's gates as recorded in the manifest, the ones it failed (as readable phrases), and why the
    gates differ from the usual ones (None if they do not)."""
    applied, reason = gates_for(name, metrics, pooler)
    gates, failed = judge_with(applied, metrics)
    return gates, failed, reason


def judge_with(applied: dict[str, tuple[str, float]], metrics: dict[str, float]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """``metrics`` against the gates ``applied``: the gates as recorded, and the failed ones as readable phrases."""
    gates, failed = {}, []
    for metric, (kind, limit) in applied.items():
        gates[metric] = {kind: limit}
        value = metrics.get(metric)
        if value is None:  # a gate nobody measured must not pass (rank_agreement without pairs was skipped so)
            failed.append(f"{metric} was not measured")
            continue
        ok = value >= limit if kind == "at_least" else value <= limit
        if not ok:
            failed.append(f"{metric}={value:.6g} ({'>=' if kind == 'at_least' else '<='} {limit} required)")
    return gates, failed


def validate_variant(name: str, path: Path, ref: Reference, providers: list[str]) -> tuple[Validation, list[str]]:
    """Run one variant and judge it against its gates.

    Returns:
        The manifest's validation record, and the failed gates (empty when it passed or was not validated).
    """
    needed = NEEDS_DEVICE.get(name)
    pooler = ref.pooler is not None
    planned = {metric: {kind: limit} for metric, (kind, limit) in variant_gates(name, pooler).items()}
    if needed is not None and needed not in providers:
        reason = (f"{name} arithmetic runs on {needed} only and this machine has {', '.join(providers)}; "
                  "not validated here (a CPU run would compute in fp32 and prove nothing)")
        return Validation("not-validated", reason=reason, gates=planned), []
    provider = needed or "CPUExecutionProvider"
    try:  # the runtime's own session: on exactly that provider (no ONNX Runtime retry on CPU), or DeviceUnavailable
        session = create_session(path, "cuda" if provider == "CUDAExecutionProvider" else "cpu", threads=None)
    except DeviceUnavailable as error:  # a CUDA session that does not come up must not be judged on CPU math
        reason = f"{error}; not validated here (a CPU run would compute in fp32 and prove nothing)"
        return Validation("not-validated", reason=reason, gates=planned), []
    metrics = measure(session, ref)
    gates, failed, reason = judge(name, metrics, pooler)  # a NaN fails any gate it meets: NaN >= x and NaN <= x are False
    # manifest.json is strict JSON (a reader refuses NaN): keep the finite numbers, name the others
    dropped = sorted(metric for metric, value in metrics.items() if not math.isfinite(value))
    if dropped:
        metrics = {metric: value for metric, value in metrics.items() if metric not in dropped}
        reason = "; ".join(filter(None, [reason, f"not finite, so not recorded: {', '.join(dropped)}"]))
    device = (gpu_name(0) or "a CUDA GPU (nvidia-smi not found)") if provider == "CUDAExecutionProvider" else cpu_description()
    return Validation("failed" if failed else "passed", reason=reason, provider=provider, device=device, gates=gates,
                      metrics=metrics), failed


def compare_u8s8(u8u8: Path, u8s8: Path, feeds: list[dict[str, np.ndarray]]) -> tuple[Validation, list[str]]:
    """Run int8's uint8 x int8 twin beside the uint8 x uint8 graph on ``feeds``, where this CPU can run it exactly.

    Returns:
        The twin's validation record (not-validated where this CPU's uint8 x int8 product saturates), and the
        failed gates (empty unless its outputs differ).
    """
    gates = {metric: {kind: limit} for metric, (kind, limit) in U8S8_GATES.items()}
    if not u8s8_is_exact():
        create_session(u8s8, "cpu", threads=1)  # it loads, at least: a malformed graph fails here, not on another CPU
        reason = ("this CPU's uint8 x int8 product saturates (the albert_onnx.int8_kernel probe), so it was loaded but not run here; "
                  "the runtime runs it only where that product is exact, and its levels are the uint8 x uint8 graph's")
        return Validation("not-validated", reason=reason, gates=gates), []
    sessions = [create_session(path, "cpu", threads=None) for path in (u8u8, u8s8)]
    diff = 0.0
    for feed in feeds:
        for left, right in zip(*(session.run(None, feed) for session in sessions)):
            diff = float(np.max([diff, np.abs(left - right).max()]))  # np.max keeps a NaN, which then fails the gate
    _, failed = judge_with(U8S8_GATES, {"max_abs_diff_vs_u8u8": diff})
    metrics = {"max_abs_diff_vs_u8u8": diff} if math.isfinite(diff) else {}
    return Validation("failed" if failed else "passed", provider="CPUExecutionProvider", device=cpu_description(), gates=gates,
                      metrics=metrics), failed


def gate_summary(validation: Validation) -> str:
    """One short phrase for a progress line, e.g. ``centred_cosine_min=0.98731``."""
    if validation.status == "not-validated":
        return "not validated"
    return ", ".join(f"{metric}={validation.metrics[metric]:.5g}" for metric in validation.gates if metric in validation.metrics)
