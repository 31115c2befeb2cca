"""The engines under test. Each loads from the same checkpoint and answers two calls:
``run_ids(feeds)`` (token ids -> mean-pooled vectors) and ``embed(texts)`` (text -> mean-pooled vectors)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*.onnx")) + sum(p.stat().st_size for p in Path(path).rglob("*.onnx_data"))


def ort_options(threads: int):
    """The runtime's own SessionOptions, without spin-waiting, for every ONNX Runtime engine here.

    Several sessions live in this one process; with ORT's default spin-wait, the idle sessions' threads keep
    spinning after their turn and take the 2 cores from the engine being timed (measured: int8 b1*s128 156 ms
    interleaved with two spinning sessions, 109-119 ms interleaved with spinning off, 86-120 ms alone).
    """
    from albert_onnx.session import session_options

    return session_options(threads, spin_wait=False)


# The CUDA settings still open (issue 10), each an engine of its own so that one GPU run measures them side by side:
# albert-onnx-VARIANT-TUNING passes these to AlbertEmbedder.from_pretrained. sdpa_kernel is ONNX Runtime's CUDA
# provider option naming the attention kernels its Attention op may use (bit flags of its AttentionBackend: 1 flash,
# 2 memory-efficient, 4 TensorRT fused, 8 cuDNN flash, 16 unfused, 32 TensorRT flash; 0, the default, lets it
# choose; the unfused kernel stays enabled whatever is asked). Our graphs give Attention a mask of one key length
# per row, which flash and memory-efficient attention do not take (they need no mask), so they are not offered;
# TensorRT's fused kernels have no sm90 build, hence 4|32. Which kernel really ran: tools/gpu_session.sh bench
# records it (ORT_ENABLE_ATTENTION_KERNEL_DEBUG_INFO).
TUNINGS: dict[str, dict] = {
    "nobind": {"io_binding": False},  # plain run(): does IOBinding (the CUDA default) pay?
    "trt": {"provider_options": {"sdpa_kernel": 4 | 32}},
    "cudnn": {"provider_options": {"sdpa_kernel": 8}},
    "unfused": {"provider_options": {"sdpa_kernel": 16}},
}


def albert_onnx_engine(name: str) -> tuple[str, str | None]:
    """The variant and tuning (None: the runtime's defaults) an ``albert-onnx-VARIANT[-TUNING]`` name asks for.

    Raises:
        ValueError: Not such a name, or a variant or tuning that does not exist.
    """
    from albert_onnx.model_folder import VARIANTS

    variant, dash, tuning = name.removeprefix("albert-onnx-").partition("-")
    if not name.startswith("albert-onnx-") or variant not in VARIANTS or (dash and tuning not in TUNINGS):
        raise ValueError(f"unknown engine {name!r}: albert-onnx-VARIANT[-TUNING] takes a variant from {', '.join(VARIANTS)} "
                         f"and a tuning from {', '.join(TUNINGS)}")
    return variant, tuning or None


def make_engine(name: str, checkpoint: Path, folder: Path, workdir: Path, threads: int, device: str) -> "Engine":
    """Build the engine called ``name`` (pytorch-fp32|bf16|fp16|fp16sdpa, albert-onnx-VARIANT[-TUNING], optimum-o2|int8,
    sentence-transformers-onnx)."""
    if name.startswith("pytorch-"):
        return TorchEngine(checkpoint, name.split("-", 1)[1], threads, device)
    if name.startswith("albert-onnx-"):
        variant, tuning = albert_onnx_engine(name)
        return AlbertOnnxEngine(folder, variant, threads, device, tuning)
    if device != "cpu" and (name.startswith("optimum-") or name == "sentence-transformers-onnx"):
        raise ValueError(f"{name} runs on the CPU in this harness; leave it out of --device {device}")
    if name.startswith("optimum-"):
        return OptimumEngine(checkpoint, workdir, name.split("-", 1)[1], threads)
    if name == "sentence-transformers-onnx":
        return SentenceTransformersEngine(checkpoint, workdir, threads)
    raise ValueError(f"unknown engine {name!r}")


class Engine:
    name = "engine"
    file_size: int | None = None
    load_seconds: float = 0.0

    def run_ids(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        raise NotImplementedError


class PaddedBatchEngine(Engine):
    """An engine fed the way a careful user feeds it: the HF tokenizer, texts sorted by token count (as
    sentence-transformers sorts by characters), padded batches, ``_forward(feeds)`` -> vectors in input order.

    Sorted, because input order pads each batch to its longest text: 1.49x the real tokens of the first 1,000
    STS-B texts in batches of 32 (9,995 real tokens, 14,904 padded), which would credit our exact-length batching with a speed-up that is
    batching, not engine. ``tokens_computed`` counts the padded tokens of the last ``embed``.
    """

    tokenizer = None
    tokens_computed: int | None = None

    def _forward(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def run_ids(self, feeds):
        return self._forward(feeds)

    def embed(self, texts, batch_size=32):
        # token_type_ids asked for: transformers 5's ALBERT tokenizer leaves them out by default (4.57's returned them)
        encoded = self.tokenizer(list(texts), truncation=True, max_length=512, return_token_type_ids=True)
        order = sorted(range(len(texts)), key=lambda i: len(encoded["input_ids"][i]))
        vectors, self.tokens_computed = [None] * len(texts), 0
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = self.tokenizer.pad({k: [encoded[k][i] for i in rows] for k in ("input_ids", "attention_mask", "token_type_ids")},
                                       return_tensors="np")
            self.tokens_computed += batch["input_ids"].size
            for row, vector in zip(rows, self._forward({k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")})):
                vectors[row] = vector
        return np.stack(vectors)


class TorchEngine(PaddedBatchEngine):
    """Eager (not compiled) PyTorch as transformers loads it by default, the baseline; ``dtype='bf16'`` runs under
    CPU autocast (fp16 on CUDA); ``fp16sdpa`` is the model itself in half precision with scaled-dot-product attention."""

    def __init__(self, checkpoint: Path, dtype: str, threads: int, device: str = "cpu") -> None:
        import torch
        from transformers import AlbertModel, AlbertTokenizerFast

        torch.set_num_threads(threads)
        started = time.perf_counter()
        self.torch, self.device, self.dtype = torch, device, dtype
        # fp32 / bf16 / fp16: the attention transformers picks by default (sdpa for ALBERT in transformers 4.57: what a user
        # gets), autocast for bf16 / fp16; fp16sdpa: the model itself in half precision with PyTorch's fused
        # attention (flash / memory-efficient kernels on CUDA), the fastest eager PyTorch
        sdpa = dtype == "fp16sdpa"
        self.model = AlbertModel.from_pretrained(checkpoint, **({"attn_implementation": "sdpa"} if sdpa else {})).eval().to(device)
        if sdpa:
            self.model = self.model.half()
        self.attention = self.model.config._attn_implementation  # recorded beside the numbers
        self.tokenizer = AlbertTokenizerFast.from_pretrained(checkpoint)
        self.load_seconds = time.perf_counter() - started
        self.name = f"pytorch-{dtype}"
        self.file_size = sum(p.stat().st_size for p in Path(checkpoint).glob("*.safetensors"))

    def _forward(self, feeds):
        torch = self.torch
        tensors = {k: torch.from_numpy(v).to(self.device) for k, v in feeds.items()}
        with torch.inference_mode():
            if self.dtype in ("fp32", "fp16sdpa"):
                out = self.model(**tensors).last_hidden_state
            else:
                kind = torch.bfloat16 if self.device == "cpu" else torch.float16
                with torch.autocast(self.device, dtype=kind):
                    out = self.model(**tensors).last_hidden_state
            out = out.float()  # pooled in fp32, as every other engine pools
            mask = tensors["attention_mask"].unsqueeze(-1).to(out.dtype)
            pooled = (out * mask).sum(1) / mask.sum(1)
            if self.device == "cuda":
                torch.cuda.synchronize()
            return pooled.cpu().numpy()



class AlbertOnnxEngine(Engine):
    """This project: AlbertEmbedder on one variant of the exported folder."""

    def __init__(self, folder: Path, variant: str, threads: int, device: str = "cpu", tuning: str | None = None) -> None:
        from albert_onnx import AlbertEmbedder

        settings = dict(TUNINGS.get(tuning or "", {}))
        if device == "cuda" and variant in ("fp32", "fused"):
            # ONNX Runtime's CUDA provider computes fp32 MatMuls in TF32 by default, PyTorch does not: compare fp32
            # with fp32 (the runtime's default stays ONNX Runtime's)
            settings["provider_options"] = {**settings.get("provider_options", {}), "use_tf32": "0"}
        started = time.perf_counter()
        self.embedder = AlbertEmbedder.from_pretrained(folder, variant=variant, device=device, threads=threads, spin_wait=False, **settings)
        self.load_seconds = time.perf_counter() - started
        self.tuning = tuning
        self.name = f"albert-onnx-{variant}" + (f"-{tuning}" if tuning else "")
        self.file_size = self.embedder.folder.variants[variant].size

    def run_ids(self, feeds):
        return self.embedder.encode_ids(feeds, batch_size=len(feeds["input_ids"]))  # one call, as the others make

    def embed(self, texts, batch_size=32):
        return self.embedder.encode(texts, batch_size=batch_size, normalize=False)


def optimum_int8_config() -> str:
    """The AutoQuantizationConfig a user of Optimum picks for this CPU: avx2's uint8 x uint8 is exact where
    avx512_vnni's uint8 x int8 saturates (CPUs without VNNI), so the widest the flags allow."""
    from albert_onnx.hardware import cpu_facts

    flags = cpu_facts()[1]
    return "avx512_vnni" if flags.get("avx512_vnni") else "avx512" if flags.get("avx512f") else "avx2"


class OptimumEngine(PaddedBatchEngine):
    """Optimum's ORTModelForFeatureExtraction, with its own O2 optimization, and dynamic quantization with the
    AutoQuantizationConfig made for this CPU (avx512_vnni, avx512 or avx2, each with its defaults)."""

    def __init__(self, checkpoint: Path, workdir: Path, mode: str, threads: int) -> None:
        from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTOptimizer, ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig, OptimizationConfig
        from transformers import AlbertTokenizerFast

        self.name = f"optimum-{mode}"
        exported = workdir / "optimum-fp32"
        if not exported.exists():
            ORTModelForFeatureExtraction.from_pretrained(checkpoint, export=True).save_pretrained(exported)
        target = exported
        if mode in ("o2", "int8"):
            target = workdir / "optimum-o2"
            if not target.exists():
                ORTOptimizer.from_pretrained(exported).optimize(OptimizationConfig(optimization_level=2), save_dir=target)
        if mode == "int8":
            # Optimum's documented path: quantize its fp32 export (its quantizer cannot read its own O2 graph).
            source, target = exported, workdir / f"optimum-int8-{optimum_int8_config()}"
            if not target.exists():
                quantizer = ORTQuantizer.from_pretrained(source, file_name=next(p.name for p in source.glob("*.onnx")))
                quantizer.quantize(getattr(AutoQuantizationConfig, optimum_int8_config())(is_static=False), save_dir=target)
        options = ort_options(threads)
        started = time.perf_counter()
        onnx_file = next(target.glob("*.onnx")).name
        self.model = ORTModelForFeatureExtraction.from_pretrained(target, file_name=onnx_file, session_options=options, provider="CPUExecutionProvider")
        self.tokenizer = AlbertTokenizerFast.from_pretrained(checkpoint)
        self.load_seconds = time.perf_counter() - started
        self.file_size = (target / onnx_file).stat().st_size

    def _forward(self, feeds):
        from albert_onnx.pooling import masked_mean

        return masked_mean(np.asarray(self.model(**feeds).last_hidden_state), feeds["attention_mask"])



class SentenceTransformersEngine(Engine):
    """sentence-transformers with backend='onnx' (mean pooling module added for a plain HF checkpoint)."""

    def __init__(self, checkpoint: Path, workdir: Path, threads: int) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = "sentence-transformers-onnx"
        saved = workdir / "sentence-transformers-onnx"
        kwargs = {"provider": "CPUExecutionProvider", "session_options": ort_options(threads)}
        if not saved.exists():  # its documented path: export on first load, then save_pretrained and reload
            SentenceTransformer(str(checkpoint), backend="onnx", device="cpu", model_kwargs=kwargs).save_pretrained(str(saved))
        started = time.perf_counter()
        self.model = SentenceTransformer(str(saved), backend="onnx", device="cpu", model_kwargs=kwargs)
        self.load_seconds = time.perf_counter() - started
        self.file_size = sum(p.stat().st_size for p in saved.rglob("*.onnx"))

    def run_ids(self, feeds):
        import torch

        features = {k: torch.from_numpy(v) for k, v in feeds.items()}
        return self.model.forward(features)["sentence_embedding"].numpy()

    def embed(self, texts, batch_size=32):
        return self.model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=False)
