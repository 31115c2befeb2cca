"""The validation gates can fail: a graph with a dropped layer or a wrong pooling is caught, for fp32 and int8."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from albert_onnx_export import quantize, validate, validation_texts
from albert_onnx_export.load import load_albert
from albert_onnx_export.tokenizer import load_reference_tokenizer
from tests.conftest import STS_DIR

PROVIDERS = ["CPUExecutionProvider"]


@pytest.fixture(scope="module")
def reference(tiny_source):
    loaded = load_albert(str(tiny_source), random_weights=True, seed=1)  # the weights of tiny_folder
    vset = validation_texts.validation_set(STS_DIR / "sts-dev.csv", 64)
    return validate.reference(loaded.model, load_reference_tokenizer(str(tiny_source)), vset, batch_size=16, max_length=512)


def _drop_last_layer(fused: Path, out: Path) -> None:
    """last_hidden_state := the input of the last layer (its 11 predecessors' output)."""
    model = onnx.load(str(fused))
    last_attention = [node for node in model.graph.node if node.op_type == "Attention"][-1]
    final = next(node for node in model.graph.node if "last_hidden_state" in node.output)
    final.output[list(final.output).index("last_hidden_state")] = "dropped_layer_output"
    model.graph.node.append(helper.make_node("Identity", [last_attention.input[0]], ["last_hidden_state"]))
    onnx.save(model, str(out))


def _cls_pooling(fused: Path, out: Path) -> None:
    """sentence_embedding := the [CLS] vector instead of the masked mean."""
    model = onnx.load(str(fused))
    producer = next(node for node in model.graph.node if "sentence_embedding" in node.output)
    producer.output[list(producer.output).index("sentence_embedding")] = "mean_pooled"
    zero = helper.make_tensor("cls_index", onnx.TensorProto.INT64, [], [0])
    model.graph.initializer.append(zero)
    model.graph.node.append(helper.make_node("Gather", ["last_hidden_state", "cls_index"], ["sentence_embedding"], axis=1))
    onnx.save(model, str(out))


def test_shipped_variants_pass(tiny_folder, reference):
    for name in ("fp32", "fused", "int8"):
        result, failed = validate.validate_variant(name, tiny_folder / f"model_{name}.onnx", reference, PROVIDERS)
        assert (result.status, failed) == ("passed", []), (name, failed)
        assert set(result.gates) == set(validate.GATES[name])


@pytest.mark.parametrize("breakage, failing", [(_drop_last_layer, "hidden_max_abs_diff"), (_cls_pooling, "sentence_max_abs_diff")])
def test_broken_fused_graph_fails(tiny_folder, reference, tmp_path, breakage, failing):
    broken = tmp_path / "broken.onnx"
    breakage(tiny_folder / "model_fused.onnx", broken)
    result, failed = validate.validate_variant("fused", broken, reference, PROVIDERS)
    assert result.status == "failed"
    assert any(phrase.startswith(failing + "=") for phrase in failed), failed


@pytest.mark.parametrize("breakage", [_drop_last_layer, _cls_pooling])
def test_broken_int8_graph_fails(tiny_folder, reference, tmp_path, breakage):
    broken_fused, broken_int8 = tmp_path / "broken_fused.onnx", tmp_path / "broken_int8.onnx"
    breakage(tiny_folder / "model_fused.onnx", broken_fused)
    quantize.quantize_int8(broken_fused, broken_int8)
    result, failed = validate.validate_variant("int8", broken_int8, reference, PROVIDERS)
    assert result.status == "failed"
    assert {phrase.split("=")[0] for phrase in failed} >= {"centred_cosine_mean", "rank_agreement"}, failed


def test_the_other_poolings_are_measured_too(tiny_folder, reference, tmp_path):
    names = [f"{pooling}_centred_cosine_mean" for pooling in ("cls", "max", "pooler")]
    fused, _ = validate.validate_variant("fused", tiny_folder / "model_fused.onnx", reference, PROVIDERS)
    assert min(fused.metrics[name] for name in names) > 0.99999
    int8, _ = validate.validate_variant("int8", tiny_folder / "model_int8.onnx", reference, PROVIDERS)
    # the mean over tokens hides int8's per-token error; the [CLS] row alone does not (README, Validation)
    assert int8.metrics["cls_centred_cosine_mean"] < 0.99 < int8.metrics["centred_cosine_mean"]
    # ... over a reference that barely spreads (random weights' [CLS] rows), so the runtime does not report it; the max
    # vectors spread as the mean ones do (0.12 for this model's mean)
    assert int8.metrics["cls_reference_spread"] < 0.05 < int8.metrics["max_reference_spread"]
    broken = tmp_path / "broken.onnx"
    _drop_last_layer(tiny_folder / "model_fused.onnx", broken)
    dropped, _ = validate.validate_variant("fused", broken, reference, PROVIDERS)
    assert max(dropped.metrics[name] for name in names[:2]) < 0.99  # cls and max read last_hidden_state


def test_fp16_without_cuda_is_not_called_validated(tiny_folder, reference):
    result, failed = validate.validate_variant("fp16", tiny_folder / "model_fp16.onnx", reference, PROVIDERS)
    assert (result.status, failed, result.metrics) == ("not-validated", [], {})
    assert "CUDAExecutionProvider" in result.reason and "fp32" in result.reason


def test_reference_pooling_is_independent_of_the_graph(reference):
    """The reference's sentence vectors are the masked mean of the plain model's tokens, computed here."""
    first = reference.feeds[0]["attention_mask"][0].astype(bool)
    expected = reference.hidden[0][0][first].astype("float64").mean(axis=0)
    assert abs(reference.sentence[0] - expected).max() < 1e-6
    assert len(reference.pairs) == 32 and reference.pairs[0] == (0, 1)


def test_per_tensor_int8_fails_the_batch_invariance_gate(tiny_folder, reference, tmp_path):
    """albert-onnx 0.1's int8 (one activation scale per tensor) made a text's vector depend on its batchmates."""
    from benchmarks.int8_schemes import build_dynamic_per_tensor

    path = tmp_path / "per_tensor.onnx"
    build_dynamic_per_tensor(tiny_folder / "model_fused.onnx", path)
    result, failed = validate.validate_variant("int8", path, reference, PROVIDERS)
    assert result.status == "failed"
    assert [phrase.split("=")[0] for phrase in failed] == ["batch_invariance_max_abs_diff"], failed
    assert result.metrics["batch_invariance_max_abs_diff"] > 1e-4


def test_degenerate_reference_gates_on_token_agreement():
    """Deep random models give sentence vectors within 1% of their mean: ranking metrics are noise there, and the
    gate says so and checks token-level agreement instead (still able to fail)."""
    healthy = {"centred_cosine_mean": 0.41, "rank_agreement": 0.98, "token_cosine_min": 0.998, "raw_cosine_min": 0.99985,
               "batch_invariance_max_abs_diff": 0.0, "reference_spread": 0.008}
    gates, failed, reason = validate.judge("int8", healthy)
    assert failed == [] and "within 0.80% of their mean" in reason
    assert set(gates) == {"token_cosine_min", "raw_cosine_min", "batch_invariance_max_abs_diff"}
    _, failed, _ = validate.judge("int8", {**healthy, "token_cosine_min": 0.95})
    assert [phrase.split("=")[0] for phrase in failed] == ["token_cosine_min"]
    gates, failed, reason = validate.judge("int8", {**healthy, "reference_spread": 0.19})
    assert reason is None and set(gates) == set(validate.GATES["int8"])
    assert {phrase.split("=")[0] for phrase in failed} == {"centred_cosine_mean", "rank_agreement"}


def test_a_gate_without_its_metric_fails():
    """rank_agreement was skipped, and the variant passed, where no pair of texts was ranked."""
    measured = {"centred_cosine_mean": 0.999, "batch_invariance_max_abs_diff": 0.0, "reference_spread": 0.2}
    _, failed, _ = validate.judge("int8", measured)
    assert failed == ["rank_agreement was not measured"]


def _claim_cuda(monkeypatch) -> None:
    """Our provider list claims CUDA, as onnxruntime-gpu's does; ONNX Runtime's own (which builds sessions) does not."""
    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this onnxruntime has CUDA")
@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available provider names")
def test_fp16_on_a_cuda_provider_that_does_not_come_up_is_not_validated(tiny_folder, reference, capsys, monkeypatch):
    """onnxruntime-gpu on a host where CUDA fails: the session lands on the CPU; judging it there would record
    fp32 arithmetic as an fp16 pass."""
    _claim_cuda(monkeypatch)
    result, failed = validate.validate_variant("fp16", tiny_folder / "model_fp16.onnx", reference,
                                               ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert (result.status, failed, result.metrics) == ("not-validated", [], {})
    assert "the session runs on ['CPUExecutionProvider']" in result.reason
    assert capsys.readouterr().out == ""  # ONNX Runtime's own fallback banner is off


def test_a_cuda_session_that_raises_is_not_validated_and_the_export_goes_on(tiny_folder, reference, monkeypatch):
    """onnxruntime-gpu where CUDA raises at creation (no visible GPU, out of memory): not-validated with ORT's words."""
    _claim_cuda(monkeypatch)
    real = ort.InferenceSession

    def no_gpu(path, options=None, providers=None, **kwargs):
        if "CUDAExecutionProvider" in [p[0] if isinstance(p, tuple) else p for p in providers or []]:
            raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")
        return real(path, options, providers=providers, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", no_gpu)
    result, failed = validate.validate_variant("fp16", tiny_folder / "model_fp16.onnx", reference,
                                               ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert (result.status, failed) == ("not-validated", [])
    assert "did not come up (CUDA failure 100: no CUDA-capable device is detected)" in result.reason


def test_cpu_validation_records_the_cpu_and_its_kernel_flags(tiny_folder, reference):
    """validation.device names the CPU as /proc/cpuinfo does, with the int8-kernel flags it has (read here directly)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo (not Linux)")
    lines = cpuinfo.read_text().splitlines()
    name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    flags = next(line.split(":", 1)[1].split() for line in lines if line.startswith("flags"))
    result, _ = validate.validate_variant("int8", tiny_folder / "model_int8.onnx", reference, PROVIDERS)
    assert result.provider == "CPUExecutionProvider" and result.device.startswith(f"{name} (")
    for flag in ("avx2", "avx512_vnni", "amx_int8"):
        assert (flag in result.device) == (flag in flags), flag


@pytest.mark.parametrize("metric, status", [("padded_batch_invariance_max_abs_diff", "passed"), ("rank_agreement", "failed")])
def test_a_nan_metric_fails_its_gate_and_never_reaches_the_manifest(tiny_folder, reference, monkeypatch, metric, status):
    """NaN compares False with any limit: gated, it fails; ungated, it is dropped and named, so manifest.json stays JSON."""
    import json

    real = validate.measure
    monkeypatch.setattr(validate, "measure", lambda session, ref: {**real(session, ref), metric: float("nan")})
    result, failed = validate.validate_variant("int8", tiny_folder / "model_int8.onnx", reference, PROVIDERS)
    assert result.status == status and metric not in result.metrics and f"not finite, so not recorded: {metric}" in result.reason
    assert (status == "failed") == any(phrase.startswith(f"{metric}=nan") for phrase in failed)
    json.dumps(result.metrics, allow_nan=False)
