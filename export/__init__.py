"""albert-onnx export step: an ALBERT checkpoint -> a validated ONNX model folder.

Installed as ``albert_onnx_export`` (the ``export`` extra). Its heavy dependencies (torch, transformers, onnx) are
never imported by the ``albert_onnx`` runtime; torch and transformers load only once an export has checked its
options (``pipeline._export``), so importing this package is cheap.
"""

from .pipeline import ExportOptions, export_model

__all__ = ["ExportOptions", "export_model"]
