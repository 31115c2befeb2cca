"""albert-onnx export step: an ALBERT checkpoint -> a validated ONNX model folder.

Installed as ``albert_onnx_export`` (the ``export`` extra). Heavy dependencies (torch, transformers,
onnx) are imported here and never by the ``albert_onnx`` runtime.
"""

from .pipeline import ExportOptions, export_model

__all__ = ["ExportOptions", "export_model"]
