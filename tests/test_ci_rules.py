"""CI runs every test: a missing ../shared or a missing optional module fails there instead of skipping."""

from __future__ import annotations

import pytest

from tests import conftest


def test_missing_shared_fails_in_ci_and_skips_elsewhere(monkeypatch, tmp_path):
    monkeypatch.setattr(conftest, "BASE_SOURCE", tmp_path / "no-model")
    monkeypatch.setattr(conftest, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI must run every test"):
        conftest.need_shared()
    monkeypatch.setattr(conftest, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="is not beside the project"):
        conftest.need_shared()


def test_missing_module_fails_in_ci_and_skips_elsewhere(monkeypatch):
    monkeypatch.setattr(conftest, "IN_CI", True)
    with pytest.raises(ModuleNotFoundError):
        conftest.need_module("no_such_module_albert_onnx")
    monkeypatch.setattr(conftest, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception):
        conftest.need_module("no_such_module_albert_onnx")


def test_docs_have_no_unfilled_placeholders():
    """README and docs are written from measured tables; a line that is only an ALL_CAPS name is a slot left empty."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for path in [root / "README.md", *sorted((root / "docs").rglob("*.md"))]:
        slots = re.findall(r"^[A-Z][A-Z0-9]*_[A-Z0-9_]+$", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
        assert slots == [], f"{path.name}: {slots}"
