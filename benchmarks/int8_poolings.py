"""python -m benchmarks.int8_poolings FOLDER [TEXTS]: how close int8 stays to fp32 for each pooling.

The export's gates measure mean pooling only. This prints, for mean, max, cls and pooler, int8's centred cosine to
fp32 (the fp32 mean vector subtracted from both, as the export's gate does) over the first TEXTS (default 300)
distinct sentences of ../shared/data/stsbenchmark/sts-dev.csv: the mean and the worst text.
"""

from __future__ import annotations

import sys

import numpy as np

from albert_onnx import AlbertEmbedder
from albert_onnx_export.validation_texts import sentence_pairs

from .__main__ import SHARED

POOLINGS = ("mean", "max", "cls", "pooler")


def centred_cosines(folder: str, texts: list[str]) -> dict[str, np.ndarray]:
    """Per pooling, each text's centred cosine between its int8 and fp32 sentence vectors."""
    fp32, int8 = (AlbertEmbedder.from_pretrained(folder, variant=variant, device="cpu") for variant in ("fp32", "int8"))
    result = {}
    for pooling in POOLINGS:
        reference, quantized = (embedder.encode(texts, pooling=pooling, normalize=False) for embedder in (fp32, int8))
        centre = reference.mean(axis=0)
        a, b = reference - centre, quantized - centre
        result[pooling] = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return result


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2) or (len(argv) == 2 and not argv[1].isdigit()):
        print(__doc__, file=sys.stderr)
        return 2
    pairs = sentence_pairs(SHARED / "data" / "stsbenchmark" / "sts-dev.csv")
    texts = list(dict.fromkeys(text for pair in pairs for text in pair))[: int(argv[1]) if len(argv) == 2 else 300]
    for pooling, cosines in centred_cosines(argv[0], texts).items():
        print(f"{pooling:6s} centred cosine int8 vs fp32 over {len(texts)} texts: mean {cosines.mean():.4f}, worst {cosines.min():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
