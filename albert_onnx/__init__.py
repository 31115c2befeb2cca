"""albert-onnx: fast, small and exact ALBERT embeddings on ONNX Runtime, with no torch at run time.

    >>> from albert_onnx import AlbertEmbedder
    >>> embedder = AlbertEmbedder.from_pretrained("models/albert-base-v2")
    >>> vectors = embedder.encode(["A man is playing a guitar."])
"""

from .embedder import AlbertEmbedder, TokenEmbeddings, TruncationWarning
from .model_folder import ModelFolder, ModelFolderError

__all__ = ["AlbertEmbedder", "ModelFolder", "ModelFolderError", "TokenEmbeddings", "TruncationWarning"]
__version__ = "0.1.0"
