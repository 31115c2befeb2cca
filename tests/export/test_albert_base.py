"""albert-base-v2 (real config and vocabulary, seeded random weights): sizes, fusion, gates, cost."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.base


def test_albert_base_folder(base_folder):
    manifest = json.loads((base_folder / "manifest.json").read_text())
    variants = manifest["variants"]
    assert variants["fp32"]["size"] <= 50e6 and variants["fused"]["size"] <= 50e6
    assert variants["int8"]["size"] <= 14e6
    fused = variants["fused"]["fused_ops"]
    assert (fused["Attention"], fused["SkipLayerNormalization"], fused["FastGelu"]) == (12, 24, 12)
    assert variants["int8"]["fused_ops"]["QAttention"] == 12
    assert variants["fp32"]["validation"]["max_abs_diff"] <= 1e-4
    assert variants["fused"]["validation"]["max_abs_diff"] <= 1e-4
    assert variants["int8"]["validation"]["min_cosine"] >= 0.995
    assert manifest["source"]["random_weights"] is True
    log = (base_folder.parent / "export.log").read_text()
    assert "[7/7]" in log and "RANDOM weights" in log
    # cost is a target for the benchmark, not a timed test; recorded here for the note
    print(f"export {manifest['export']['seconds']} s, peak RSS {manifest['export']['peak_rss_mb']} MB")
