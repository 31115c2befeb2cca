"""Every ALBERT size: each shipped size config exported by name, offline, with random weights.

Per size: one fusion per layer (Attention, two SkipLayerNormalization and the GELU: FastGelu for v2's gelu_new,
BiasGelu for v1's exact gelu), the shared layer weights stored once in every graph, and every gate passed. The
vocabulary comes from a Hugging Face cache laid out like the real one (no --tokenizer), which also proves the
size names export offline.

CI runs albert-base-v2 by name (fp32 only), a tiny v1 config (the exact-GELU path, BiasGelu) here, and albert-base-v2
(12 heads of 64, FastGelu) with the per-size checks in test_albert_base.py; ``pytest -m sizes`` exports all eight size configs by name (large alone
takes 80 s on 2 cores, xlarge and xxlarge minutes and several GB each, so CI leaves them out).
"""

from __future__ import annotations

import collections
import hashlib
import json
from importlib import resources
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest

from albert_onnx_export.locate import SHIPPED_SIZES
from tests.conftest import BASE_SOURCE, STS_DIR, TINY_CONFIG, make_tiny_source, run_cli

pytestmark = pytest.mark.sizes

# Texts to validate on, by size: each costs a PyTorch and three ONNX Runtime runs. A .txt source ranks all pairs
# among them (496, 276, 66, 28), so the rank-agreement gate keeps its meaning with few texts.
SAMPLES = {"base": 32, "large": 24, "xlarge": 12, "xxlarge": 8}
GELU_OPS = {"gelu_new": "FastGelu", "gelu": "BiasGelu"}
VARIANT_FILES = ("model_fp32.onnx", "model_fused.onnx", "model_int8.onnx", "model_fp16.onnx")


def shipped_config(name: str) -> dict:
    return json.loads(resources.files("albert_onnx_export").joinpath("configs", f"{name}.json").read_text())


def duplicated_initializers(path: Path) -> list[str]:
    """Names of initializers over 1024 elements whose values another one already holds."""
    seen: dict[str, str] = {}
    duplicated = []
    for tensor in onnx.load(str(path)).graph.initializer:
        count = 1
        for dim in tensor.dims:
            count *= dim
        if count <= 1024:
            continue
        data = tensor.raw_data or onnx.numpy_helper.to_array(tensor).tobytes()
        key = hashlib.sha256(bytes([tensor.data_type]) + data).hexdigest()
        if key in seen:
            duplicated.append(f"{tensor.name} = {seen[key]}")
        seen.setdefault(key, tensor.name)
    return duplicated


def check_size_folder(folder: Path, config: dict) -> None:
    """The per-size checks: fusion counts per layer, weights stored once, every gate passed."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "embedding_size", "vocab_size",
                  "hidden_act"):
        assert manifest["model"][field] == config[field], field
    layers, gelu = config["num_hidden_layers"], GELU_OPS[config["hidden_act"]]
    other_gelus = set(GELU_OPS.values()) - {gelu}
    graphs = {name: collections.Counter(node.op_type for node in onnx.load(str(folder / f"model_{name}.onnx"), load_external_data=False).graph.node)
              for name in ("fused", "int8", "fp16")}
    for name in ("fused", "fp16"):
        ops = graphs[name]
        assert (ops["Attention"], ops["SkipLayerNormalization"], ops[gelu]) == (layers, 2 * layers, layers), (name, ops)
        assert all(ops[op] == 0 for op in other_gelus), (name, ops)
        recorded = manifest["variants"][name]["fused_ops"]
        assert (recorded["Attention"], recorded["SkipLayerNormalization"], recorded[gelu]) == (layers, 2 * layers, layers), name
    int8 = graphs["int8"]
    assert (int8["MultiHeadAttention"], int8["SkipLayerNormalization"], int8[gelu]) == (layers, 2 * layers, layers), int8
    assert (int8["QAttention"], int8["Attention"], int8["MatMul"]) == (0, 0, 0), int8
    for file in VARIANT_FILES:
        assert duplicated_initializers(folder / file) == [], file
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    statuses = {name: entry["validation"]["status"] for name, entry in manifest["variants"].items()}
    assert statuses == {"fp32": "passed", "fused": "passed", "int8": "passed", "fp16": "passed" if cuda else "not-validated"}
    assert not any(entry["validation"]["forced"] for entry in manifest["variants"].values())


@pytest.fixture(scope="module")
def validation_texts(tmp_path_factory) -> Path:
    """STS-B dev sentences, one per line (read from ../shared at test time)."""
    lines = (STS_DIR / "sts-dev.csv").read_text(encoding="utf-8").splitlines()
    texts = [cell for line in lines for cell in line.split("\t")[5:7] if cell.strip()]
    path = tmp_path_factory.mktemp("validation") / "sts-dev-sentences.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow_size) for name in SHIPPED_SIZES])
def test_size_exports_offline_with_every_fusion(name, hub_cache, validation_texts, tmp_path):
    out = tmp_path / name
    samples = SAMPLES[name.split("-")[1]]
    result = run_cli("export", name, "--random-weights", "--validation-texts", str(validation_texts), "--validation-samples",
                     str(samples), "-o", str(out), env={"HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1", "HF_HOME": None})
    assert "Hugging Face cache, sha256 checked" in result.stdout
    check_size_folder(out, shipped_config(name))
    export = json.loads((out / "manifest.json").read_text())["export"]
    print(f"{name}: export {export['seconds']} s, peak RSS {export['peak_rss_mb']} MB, {samples} validation texts")


def test_a_size_name_exports_offline_from_the_cache(hub_cache, tmp_path):
    """What CI keeps of the size exports by name: albert-base-v2's shipped config and the cached vocabulary, end to
    end (fp32 only; test_albert_base.py checks every variant of the same architecture)."""
    out = tmp_path / "albert-base-v2"
    result = run_cli("export", "albert-base-v2", "--random-weights", "--variants", "fp32", "--validation-samples", "8", "-o", str(out),
                     env={"HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1", "HF_HOME": None})
    assert "Hugging Face cache, sha256 checked" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    real = json.loads((BASE_SOURCE / "config.json").read_text())
    assert {field: manifest["model"][field] for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "embedding_size")} == {
        field: real[field] for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "embedding_size")}
    assert manifest["source"]["model"] == "albert-base-v2" and manifest["variants"]["fp32"]["validation"]["status"] == "passed"


def test_v1_gelu_fuses_into_bias_gelu_in_every_graph(tmp_path, validation_texts):
    """ALBERT v1 uses the exact GELU: fused to BiasGelu (v2's tanh GELU gives FastGelu); the same per-layer checks."""
    config = {**TINY_CONFIG, "hidden_act": "gelu"}
    source = make_tiny_source(tmp_path / "albert-tiny-v1")
    (source / "config.json").write_text(json.dumps(config))
    out = tmp_path / "model"
    run_cli("export", str(source), "--random-weights", "--validation-texts", str(validation_texts), "--validation-samples", "32", "-o", str(out))
    check_size_folder(out, config)
