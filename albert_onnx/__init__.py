"""albert-onnx: fast, small and exact ALBERT embeddings on ONNX Runtime, with no torch at run time.

    >>> from albert_onnx import AlbertEmbedder
    >>> embedder = AlbertEmbedder.from_pretrained("models/albert-base-v2")
    >>> vectors = embedder.encode(["A man is playing a guitar."])
"""

from .arguments import NO_ONNXRUNTIME
from .model_folder import ModelFolder, ModelFolderError

try:
    from .embedder import AlbertEmbedder, PoolingWarning, TokenEmbeddings, TruncationWarning
except ModuleNotFoundError as error:
    if error.name != "onnxruntime":
        raise
    # Installed without [cpu] or [gpu]: the package still imports (the CLI says so in one line), and the names that
    # need ONNX Runtime say how to install it, instead of "No module named 'onnxruntime'".
    def __getattr__(name: str) -> object:
        if name in ("AlbertEmbedder", "PoolingWarning", "TokenEmbeddings", "TruncationWarning"):
            raise ModuleNotFoundError(NO_ONNXRUNTIME, name="onnxruntime")
        raise AttributeError(f"module 'albert_onnx' has no attribute {name!r}")

__all__ = ["AlbertEmbedder", "ModelFolder", "ModelFolderError", "PoolingWarning", "TokenEmbeddings", "TruncationWarning"]
__version__ = "0.1.0"
