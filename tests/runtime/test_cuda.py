"""The CUDA half, on a real GPU: fp16 and fused fp32 sessions on CUDAExecutionProvider against the CPU fp32 graph.

Marked ``cuda`` and skipped unless a CUDA session really comes up (onnxruntime-gpu, a GPU, CUDA 13 and cuDNN 9).
``make test-gpu`` runs them; on a machine without the export extra, export the folders first with
``python -m tests.export_test_folders DIR`` and pass ``ALBERT_ONNX_TEST_FOLDERS=DIR``. Never imports torch.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from albert_onnx import AlbertEmbedder
from albert_onnx.session import DeviceUnavailable

pytestmark = pytest.mark.cuda


# make test-gpu sets this: there, a CUDA session that does not come up fails the tests instead of skipping them
REQUIRE_CUDA = os.environ.get("ALBERT_ONNX_REQUIRE_CUDA") == "1"


def _cuda(folder, **kwargs) -> AlbertEmbedder:
    try:
        return AlbertEmbedder.from_pretrained(folder, device="cuda", **kwargs)
    except DeviceUnavailable as error:
        if REQUIRE_CUDA:
            pytest.fail(f"ALBERT_ONNX_REQUIRE_CUDA=1 but no CUDA session came up: {error}")
        pytest.skip(f"no CUDA session here: {error}")


@pytest.fixture(scope="module")
def tiny_fp16(tiny_folder):
    return _cuda(tiny_folder)


@pytest.fixture(scope="module")
def tiny_cpu(tiny_folder):
    return AlbertEmbedder.from_pretrained(tiny_folder, variant="fp32", device="cpu")


def _centred_cosine(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine after subtracting the reference mean (random-weight vectors are nearly parallel: raw cosines cannot fail)."""
    centre = reference.mean(axis=0)
    a, b = vectors - centre, reference - centre
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_auto_picks_cuda_fp16_when_it_comes_up(tiny_fp16, tiny_folder):
    assert (tiny_fp16.device, tiny_fp16.variant, tiny_fp16.providers[0]) == ("cuda", "fp16", "CUDAExecutionProvider")
    auto = AlbertEmbedder.from_pretrained(tiny_folder)
    assert (auto.device, auto.variant, auto.device_reason) == ("cuda", "fp16", None)


@pytest.mark.parametrize("variant, mean_at_least, min_at_least", [("fp16", 0.99, 0.9), ("fused", 0.9999, 0.999)])
def test_cuda_matches_cpu_fp32_on_real_text(tiny_folder, tiny_cpu, sts_texts, variant, mean_at_least, min_at_least):
    cuda = _cuda(tiny_folder, variant=variant)
    texts = sts_texts[:400]  # mixed lengths: many exact-length calls
    got, want = cuda.encode(texts, batch_size=64), tiny_cpu.encode(texts, batch_size=64)
    assert np.isfinite(got).all()
    centred = _centred_cosine(got, want)
    assert centred.mean() >= mean_at_least and centred.min() >= min_at_least, (centred.mean(), centred.min())


@pytest.mark.base
def test_albert_base_fp16_on_cuda(base_folder, sts_texts):
    cuda, cpu = _cuda(base_folder), AlbertEmbedder.from_pretrained(base_folder, variant="fp32", device="cpu")
    texts = sts_texts[:300]
    got, want = cuda.encode(texts, batch_size=128), cpu.encode(texts, batch_size=128)
    centred = _centred_cosine(got, want)
    assert np.isfinite(got).all() and centred.mean() >= 0.99, (centred.mean(), centred.min())


def test_512_tokens_stay_finite_in_fp16(tiny_fp16, tiny_cpu, sts_texts):
    """12 shared layers at 512 positions: fp16 must not overflow (SkipLayerNorm and Attention accumulate in fp32)."""
    text = " ".join(sts_texts[:200])
    got, want = tiny_fp16.encode([text], normalize=False), tiny_cpu.encode([text], normalize=False)
    hidden = tiny_fp16.encode_tokens([text])[0].vectors
    assert hidden.shape[0] == tiny_fp16.max_length and np.isfinite(hidden).all()
    assert np.isfinite(got).all() and float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want)) > 0.999


def test_padded_rows_match_their_unpadded_selves(tiny_fp16):
    """Right padding through encode_ids: the fp16 attention mask (a huge negative in half precision) must hide it."""
    feeds = tiny_fp16.tokenize(["a man plays a guitar", "stocks fell sharply on tuesday after the bank raised rates by half a point"])
    padded = tiny_fp16.encode_ids(feeds)
    alone = np.concatenate([tiny_fp16.encode_ids(tiny_fp16.tokenize([text])) for text in
                            ["a man plays a guitar", "stocks fell sharply on tuesday after the bank raised rates by half a point"]])
    assert feeds["attention_mask"].min() == 0  # the first row really is padded
    assert np.isfinite(padded).all() and (padded * alone).sum(1).min() > 0.9999


def test_hidden_layer_and_windows_on_cuda(tiny_fp16, tiny_cpu, sts_texts):
    long_text = " ".join(sts_texts[:300])
    for options in ({"layer": -2}, {"long_text": "window"}):
        got, want = tiny_fp16.encode([long_text, sts_texts[0]], **options), tiny_cpu.encode([long_text, sts_texts[0]], **options)
        assert np.isfinite(got).all() and (got * want).sum(1).min() > 0.999, options


def test_io_binding_changes_no_result(tiny_folder, sts_texts):
    bound, plain = _cuda(tiny_folder, io_binding=True), _cuda(tiny_folder, io_binding=False)
    np.testing.assert_allclose(bound.encode(sts_texts[:64]), plain.encode(sts_texts[:64]), atol=1e-6)


def test_device_id_and_provider_options_reach_onnx_runtime(tiny_folder):
    embedder = _cuda(tiny_folder, device_id=0, provider_options={"gpu_mem_limit": 4 << 30, "arena_extend_strategy": "kSameAsRequested"})
    options = embedder._runner.session.get_provider_options()["CUDAExecutionProvider"]
    assert (options["device_id"], options["gpu_mem_limit"], options["arena_extend_strategy"]) == ("0", str(4 << 30), "kSameAsRequested")


def test_a_gpu_that_is_not_there_is_an_error_even_with_auto(tiny_folder, tiny_fp16):
    """A GPU number or a provider option says CUDA is meant: a wrong one is an error, never a quiet CPU run."""
    for device in ("cuda", "auto"):
        with pytest.raises(DeviceUnavailable, match="did not come up"):
            AlbertEmbedder.from_pretrained(tiny_folder, device=device, device_id=99)
        with pytest.raises(DeviceUnavailable, match="did not come up"):
            AlbertEmbedder.from_pretrained(tiny_folder, device=device, provider_options={"no_such_option": 1})
