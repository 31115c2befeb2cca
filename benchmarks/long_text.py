"""python -m benchmarks.long_text FOLDER KIND: one 10 MB text of KIND (english, nbsp, base64, periodic, cjk)
embedded with the default truncation; prints seconds and the peak RSS it added. Run each KIND in its own process.
"""

import base64
import os
import resource
import sys
import time
import warnings

from albert_onnx import AlbertEmbedder

if len(sys.argv) != 3:
    sys.exit(__doc__)
kind = sys.argv[2]
n = 10_000_000
texts = {
    "english": ("A man is playing a large flute. " * (n // 32 + 1))[:n],
    "nbsp": ("playing\u00a0" * (n // 8 + 1))[:n],
    "base64": base64.b64encode(os.urandom(n * 3 // 4)).decode()[:n],
    "periodic": "a" * n,
    "cjk": "漢" * (n // 3),  # 10 MB of UTF-8
}
if kind not in texts:
    sys.exit(f"KIND {kind!r}: choose one of {', '.join(texts)}")
emb = AlbertEmbedder.from_pretrained(sys.argv[1])
emb.encode(["warm up"])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
text = texts[kind]
started = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    emb.encode([text])
took = time.perf_counter() - started
print(f"{kind}: {len(text.encode())/1e6:.1f} MB utf-8, {took:.2f} s, +{(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)/1024:.0f} MB peak RSS")
