"""AlbertEmbedder: text -> sentence vectors, token vectors and static word vectors on ONNX Runtime."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
from tokenizers import Encoding

from . import arguments
from . import pooling as pool
from .arguments import LONG_TEXT
from .int8_kernel import u8s8_is_exact
from .model_folder import VARIANTS, ModelFolder, ModelFolderError
from .session import DEVICES, DeviceUnavailable, GraphRunner, create_session, cuda_missing_reason, cuda_options, resolve_device
from .tokenizer import MAX_TOKENIZER_BYTES, AlbertTokenizer, unpad, word_numbers, word_spans

logger = logging.getLogger("albert_onnx")
# Most tokens in one ONNX Runtime call, whatever batch_size says: b128 x s128, b32 x s512. A row's vector does not
# depend on its batch, so splitting changes no result, and memory stays bounded (batch_size=10**9 held 9.4 GB).
MAX_CALL_TOKENS = 16384
SIMILARITY_BLOCK = 1 << 22  # pairs similarity() scores at a time: 32 MiB of float64, a few such temporaries
# Protobuf's limit: no ONNX graph without external data is larger (xxlarge fp32 is 0.85 GiB)
MAX_GRAPH_BYTES = 2**31
_DEFAULT_VARIANT = {"cpu": "int8", "cuda": "fp16"}


def _dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x @ y.T`` (BLAS): a function of its own, so a test can stand in a product whose rounding moves with the shapes."""
    return x @ y.T


@dataclass
class TokenEmbeddings:
    """Contextual vectors of one text: pieces (or words), their character spans, and one row each."""

    tokens: list[str]
    offsets: list[tuple[int, int]]
    vectors: np.ndarray


class TruncationWarning(UserWarning):
    """Some texts had more than ``max_length`` tokens and were cut; ``truncated`` of ``total`` says how many."""

    def __init__(self, truncated: int, total: int, max_length: int, hint: str) -> None:
        super().__init__(f"{truncated} of {total} texts exceeded max_length={max_length} tokens and were truncated; {hint}")
        self.truncated, self.total, self.max_length, self.hint = truncated, total, max_length, hint

    def __reduce__(self):  # rebuilt from its four fields, so it survives pickling (Ray actors, warnings as errors)
        return type(self), (self.truncated, self.total, self.max_length, self.hint)


class PoolingWarning(UserWarning):
    """The variant's vectors for this pooling were further from PyTorch fp32 at export than its gate allows for mean
    pooling (see :meth:`ModelFolder.pooling_shortfall`); warned once per embedder and pooling."""


def _callers_level() -> int:
    """The ``stacklevel`` that makes a warning name the first line outside this module (the caller's), counted from
    the function that calls this one: ``AlbertEmbedder(...)`` and ``from_pretrained`` reach it through more frames."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    return level


def _warn_unless_passed(folder: ModelFolder, variant: str, u8s8: bool) -> None:
    """A warning when the variant failed its gate (written with --force) or was not validated where it runs, or when
    the uint8 x int8 twin that runs (``u8s8``) was not compared with the int8 graph at export."""
    level = _callers_level()
    check = folder.variants[variant].validation
    twin = folder.variants[variant].u8s8
    if u8s8 and twin is not None and twin.validation.status == "not-validated":
        # exported where uint8 x int8 saturates: the same levels, but no run showed this graph gives int8's vectors
        warnings.warn(f"{twin.file} of {folder.path}, the uint8 x int8 form of int8 that this CPU runs, was not compared "
                      f"with {folder.variants[variant].file} at export (the exporting CPU's uint8 x int8 product saturates, "
                      "so it was not run there); re-export the folder on a CPU with VNNI or AMX (this one will do) to "
                      "compare them", stacklevel=level)
    if check.status == "failed":
        warnings.warn(f"variant {variant!r} of {folder.path} FAILED its accuracy gate at export and was written only because of "
                      f"--force ({', '.join(f'{k}={v:.6g}' for k, v in check.metrics.items() if k in check.gates)}); its vectors may "
                      "be wrong: re-export it, or load another variant", stacklevel=level)
    elif check.status == "not-validated":
        warnings.warn(f"variant {variant!r} of {folder.path} was not validated: {check.reason}", stacklevel=level)


def _best_variant(folder: ModelFolder, device: str) -> str | None:
    """The device's best variant that ``folder`` has: int8 on CPU, fp16 on CUDA, else fused, else fp32."""
    for name in (_DEFAULT_VARIANT[device], "fused", "fp32"):
        if name in folder.variants and device in folder.variants[name].devices:
            return name
    return None


def no_variant_for(folder: ModelFolder, variant: str, device: str) -> str | None:
    """Why ``variant`` (``auto``: any) of ``folder`` cannot run on ``device``, or None when it can."""
    if variant == "auto":
        if _best_variant(folder, device) is not None:
            return None
        has = ", ".join(f"{name} for {'/'.join(entry.devices)}" for name, entry in folder.variants.items())
        return f"no variant of {folder.path} runs on {device} (it has {has})"
    if variant not in folder.variants:
        folder.variant_path(variant)  # raises ModelFolderError naming the variants the folder has
    if device not in folder.variants[variant].devices:
        return f"variant={variant!r} runs on {list(folder.variants[variant].devices)}, not device={device!r}"
    return None


def resolve_variant(folder: ModelFolder, variant: str, device: str) -> str:
    """The graph ``variant`` names on ``device`` (``auto``: the device's best the folder has); the rule that
    :meth:`AlbertEmbedder.from_pretrained` and the Ray job both apply.

    Raises:
        ModelFolderError: The folder lacks the variant, or (``auto``) has none for the device.
        ValueError: The variant does not run on the device.
    """
    why = no_variant_for(folder, variant, device)
    if why is not None:
        raise (ModelFolderError if variant == "auto" else ValueError)(f"{why}; pick another variant or device, or re-export the "
                                                                      "folder with a variant for this device")
    return _best_variant(folder, device) if variant == "auto" else variant


class AlbertEmbedder:
    """ALBERT embeddings from a model folder. Thread-safe: share one instance across threads.

    Every ONNX Runtime call holds sequences of one exact length (no padding), so a text's vector is the same
    alone, in any batch and in any order. ``AlbertEmbedder(folder, ...)`` and ``AlbertEmbedder.from_pretrained(folder,
    ...)`` are the same. After loading, ``.device`` and ``.variant`` say what was chosen, ``.device_reason`` why
    ``auto`` chose the CPU (None otherwise), ``.graph`` which file runs (int8: ``model_int8_u8s8.onnx`` where this CPU
    multiplies uint8 x int8 exactly, see :mod:`albert_onnx.int8_kernel`).
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        variant: str = "auto",
        device: str = "auto",
        threads: int | None = None,
        verify: bool = True,
        io_binding: bool | None = None,
        spin_wait: bool = True,
        device_id: int | None = None,
        provider_options: Mapping[str, str | int | float | bool] | None = None,
    ) -> None:
        """Load a model folder written by ``albert-onnx export``.

        Args:
            folder: The model folder.
            variant: ``fp32``, ``fused``, ``int8``, ``fp16`` or ``auto`` (CPU: int8, CUDA: fp16).
            device: ``cpu``; ``cuda`` (CUDA or a clear error, never a silent CPU fallback); or ``auto``: CUDA when
                a CUDA session really comes up, else CPU, with the reason on ``.device_reason`` and in a log line.
                ``auto`` with ``device_id`` or ``provider_options`` given means ``cuda``.
            threads: ONNX Runtime intra-op threads (None: one per physical core).
            verify: Check the graph's and tokenizer's size and sha256 against the manifest.
            io_binding: Force IOBinding on or off (None: on for CUDA).
            spin_wait: Idle ORT threads busy-wait for work (default, fastest alone); pass False when other
                sessions or PyTorch share the cores in this process.
            device_id: The GPU to run on (CUDA only; None: GPU 0). Passing it, even 0, says CUDA is meant.
            provider_options: More CUDAExecutionProvider options, passed through (``gpu_mem_limit`` in bytes,
                ``arena_extend_strategy``, ``cudnn_conv_algo_search``, ``sdpa_kernel``, ...); ONNX Runtime checks them.

        Raises:
            ModelFolderError: Bad folder, a variant it lacks, or a file that fails its checks.
            DeviceUnavailable: ``device='cuda'`` and the CUDA session did not come up (a RuntimeError).
            TypeError: An argument of the wrong type (``threads="2"``, ``verify="no"``).
            ValueError: An argument out of range, a variant that cannot run on the device, or CUDA options
                with ``device='cpu'``.
        """
        arguments.path("folder", folder)  # a str or PathLike; the str itself goes on: "" is not "."
        variant = arguments.choice("variant", variant, ("auto", *VARIANTS))
        device = arguments.choice("device", device, DEVICES)
        threads = arguments.threads(threads)
        verify = arguments.flag("verify", verify)
        io_binding = arguments.optional_flag("io_binding", io_binding)
        spin_wait = arguments.flag("spin_wait", spin_wait)
        options = cuda_options(0 if device_id is None else device_id, provider_options)
        # Passed at all (device_id=0 and provider_options={} too) says CUDA is meant: comparing with the defaults
        # let `--device-id 0` run quietly on the CPU.
        cuda_given = device_id is not None or provider_options is not None
        if device == "cpu" and cuda_given:
            raise ValueError(f"device_id={device_id!r} / provider_options={provider_options!r:.80} are CUDA settings but device='cpu'; "
                             "drop them, or pass device='cuda' or 'auto'")
        if device == "auto" and cuda_given:
            device = "cuda"  # CUDA settings say CUDA is meant: a bad option or a missing GPU is an error, not a CPU run
            reason = cuda_missing_reason()
            if reason is not None:
                raise DeviceUnavailable(f"device_id / provider_options are CUDA settings, so device='auto' means cuda, but {reason}; "
                                        "drop them to run on the CPU, or pass device='cpu'")
        resolve_device(device)
        model = ModelFolder.load(folder)
        settings = (threads, verify, io_binding, spin_wait, options)
        self.device_reason: str | None = None
        if device != "auto":
            self._open(model, variant, device, *settings)
            return
        reason = cuda_missing_reason() or no_variant_for(model, variant, "cuda")
        if reason is None:
            try:
                self._open(model, variant, "cuda", *settings)
                return
            except DeviceUnavailable as error:
                reason = str(error)
                logger.warning("device='auto' runs on cpu, not cuda: %s", reason)
        else:  # a CPU-only install or folder is normal: DEBUG (the CLI prints INFO on stdout, where --output - goes)
            logger.debug("device='auto' runs on cpu: %s", reason)
        why_not_cpu = no_variant_for(model, variant, "cpu")
        if why_not_cpu is not None:
            raise (ModelFolderError if variant == "auto" else ValueError)(f"{why_not_cpu}, and device='auto' cannot use cuda: {reason}")
        self._open(model, variant, "cpu", *settings)
        self.device_reason = reason

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        *,
        variant: str = "auto",
        device: str = "auto",
        threads: int | None = None,
        verify: bool = True,
        io_binding: bool | None = None,
        spin_wait: bool = True,
        device_id: int | None = None,
        provider_options: Mapping[str, str | int | float | bool] | None = None,
    ) -> "AlbertEmbedder":
        """``AlbertEmbedder(folder, ...)``, under the name transformers and Optimum users reach for; the same
        arguments (spelled out again so that help() and type checkers show them)."""
        return cls(folder, variant=variant, device=device, threads=threads, verify=verify, io_binding=io_binding,
                   spin_wait=spin_wait, device_id=device_id, provider_options=provider_options)

    def _open(self, model: ModelFolder, variant: str, device: str, threads: int | None, verify: bool,
              io_binding: bool | None, spin_wait: bool, options: dict[str, str]) -> None:
        """Load ``variant`` (or the device's best) of ``model`` on exactly ``device``; raises as the constructor.
        Nothing is set on ``self`` until all is loaded (``auto`` tries CUDA first, then the CPU)."""
        variant = resolve_variant(model, variant, device)
        model.check_int8_gemm(variant)
        # int8: the uint8 x int8 twin where this CPU computes that product exactly (VNNI, AMX: much faster), else
        # uint8 x uint8 (int8_kernel.py); the same levels either way, so the same vectors
        u8s8 = variant == "int8" and model.variants[variant].u8s8 is not None and u8s8_is_exact()
        if variant == "int8" and model.variants[variant].u8s8 is None and u8s8_is_exact():
            logger.warning("%s has no uint8 x int8 twin (exported before 2026-12-02), so int8 runs uint8 x uint8, which is "
                           "slower here than uint8 x int8 (VNNI/AMX); re-export the folder to run the faster one", model.path)
        graph = model.variant_path(variant, u8s8)
        entry = model.variants[variant]
        loaded = entry.u8s8.entry if u8s8 else entry.entry
        if verify:  # the int8 graph not loaded here is checked too: a folder is whole on every CPU or on none
            for other in (entry.entry, *([entry.u8s8.entry] if entry.u8s8 else [])):
                if other is not loaded:
                    model.check_file(other)
        # the graph and the tokenizer are read once each and built from the bytes checked (see ModelFolder.read_file)
        data = model.read_file(loaded, verify, most=MAX_GRAPH_BYTES)
        session = create_session(graph, device, threads, spin_wait, options if device == "cuda" else None, data=data)
        del data  # parsed into the session, which keeps no copy of the bytes (create_session)
        model.check_session(variant, [node.name for node in session.get_outputs()], session.get_modelmeta().custom_metadata_map, u8s8)
        _warn_unless_passed(model, variant, u8s8)
        logger.debug("loaded %s (%s on %s, verify=%s)", graph, variant, device, verify)
        tokenizer = AlbertTokenizer(model.path / model.tokenizer.file, model.tokenizer, model.model.vocab_size,
                                    data=model.read_file(model.tokenizer.entry, verify, most=MAX_TOKENIZER_BYTES))
        runner = GraphRunner(session, device, io_binding, int(options["device_id"]))
        self.folder, self.variant, self.device = model, variant, device
        self.graph = graph  # the .onnx file running: int8 runs its uint8 x int8 twin where that product is exact here
        self._runner = runner
        self._tokenizer = tokenizer  # built from the bytes checked above, as the session is
        self._poolings_checked: set[str] = set()  # the poolings encode() has looked up pooling_shortfall for

    def __copy__(self) -> "AlbertEmbedder":
        """A shallow copy shares the session, which is thread-safe (as copy.copy did before pickling was refused)."""
        copied = object.__new__(type(self))
        copied.__dict__.update(self.__dict__)
        return copied

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        # pickle and copy.deepcopy would reach the ONNX Runtime session, whose own TypeError names neither this class nor
        # the way out (and pickle protocol 0 aborted the process): an embedder is loaded where it runs, from the folder
        raise TypeError(f"an AlbertEmbedder holds an ONNX Runtime session, which cannot be pickled or deep-copied; load one in each "
                        f"process with AlbertEmbedder.from_pretrained({str(self.folder.path)!r}), or share this one across "
                        "threads (it is thread-safe); for corpora, `albert-onnx embed --engine ray` loads one per actor")

    @property
    def dim(self) -> int:
        """Size of a sentence or token vector (hidden size)."""
        return self.folder.model.hidden_size

    @property
    def max_length(self) -> int:
        """Most tokens per sequence the model takes, [CLS] and [SEP] included."""
        return self.folder.tokenizer.max_length

    @property
    def providers(self) -> list[str]:
        """Execution providers of the live session, as ONNX Runtime reports them."""
        return self._runner.session.get_providers()

    # -- shared machinery -------------------------------------------------------------------------

    def _options(self, batch_size: object, max_length: object, long_text: object, layer: object) -> tuple[int, int, int | None]:
        """Check the options every text method shares; returns batch_size, max_length (None: the model's) and layer
        as Python ints (a NumPy integer is taken: uint8 arithmetic on it would wrap)."""
        batch_size = arguments.count("batch_size", batch_size)
        arguments.choice("long_text", long_text, LONG_TEXT)
        if layer is not None:
            count = self.folder.model.num_hidden_layers + 1
            layer = arguments.count("layer", layer, -count, count - 1)
            if "hidden_states" not in self.folder.manifest.outputs:
                raise ValueError(f"layer={layer!r} needs hidden states; re-export the folder with --hidden-states")
        max_length = self.max_length if max_length is None else arguments.count("max_length", max_length, 3, self.max_length)
        return batch_size, max_length, layer

    def _sequences(self, texts: list[str], max_length: int, long_text: str,
                   hint: str = "pass long_text='window' to embed whole texts") -> tuple[list[Encoding], list[np.ndarray], list[int]]:
        """Framed id sequences (one per window) with their owning text; one :class:`TruncationWarning` counts the
        texts that were cut (``hint`` says what to do instead)."""
        room = max_length - 2
        # truncate keeps room pieces: tokenize only enough of each text to know them (a 10 MB text stays cheap)
        encodings = self._tokenizer.encode(texts, limit=room if long_text == "truncate" else None)
        sequences, owners = [], []
        truncated = 0
        for index, encoding in enumerate(encodings):
            ids = np.asarray(encoding.ids, dtype=np.int64)
            starts = range(0, max(len(ids), 1), room) if long_text == "window" else [0]
            truncated += long_text == "truncate" and len(ids) > room
            for start in starts:
                sequences.append(self._tokenizer.frame(ids[start : start + room]))
                owners.append(index)
        if truncated:
            warnings.warn(TruncationWarning(truncated, len(texts), max_length, hint), stacklevel=_callers_level())
        return encodings, sequences, owners

    def _run_grouped(self, sequences: list[np.ndarray], batch_size: int, outputs: list[str],
                     types: list[np.ndarray] | None = None) -> Iterator[tuple[list[int], list[np.ndarray]]]:
        """Run the sequences in calls of one exact length each (at most batch_size rows); yields (indices, results).

        Why one length per call: padding can change a row's float rounding (masked attention and pooling over
        a longer sequence; int8 rounding can amplify it), so a text's vector would depend on its batch-mates.
        Without padding each row's math is the same alone or batched: ONNX Runtime's CPU kernels are row-wise
        and the int8 activation scales are per token (measured: bit-identical on fp32, fused and int8).
        """
        by_length: dict[int, list[int]] = {}
        for index, sequence in enumerate(sequences):
            by_length.setdefault(len(sequence), []).append(index)
        for length in sorted(by_length):
            group = by_length[length]
            rows = max(1, min(batch_size, MAX_CALL_TOKENS // length))  # memory grows with rows x length: bound it
            for start in range(0, len(group), rows):
                indices = group[start : start + rows]
                ids = np.stack([sequences[i] for i in indices])
                kinds = np.zeros_like(ids) if types is None else np.stack([types[i] for i in indices])
                feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": kinds}
                yield indices, self._runner.run(feeds, outputs)

    # -- public API ---------------------------------------------------------------------------------

    def encode(
        self,
        texts: str | Sequence[str],
        *,
        batch_size: int = 32,
        pooling: str = "mean",
        normalize: bool = True,
        layer: int | None = None,
        max_length: int | None = None,
        long_text: str = "truncate",
    ) -> np.ndarray:
        """Sentence vectors.

        Args:
            texts: A str (one text) or an ordered sequence of str.
            batch_size: Most sequences per ONNX Runtime call (each call holds one sequence length, and at most
                ``MAX_CALL_TOKENS`` tokens).
            pooling: ``mean`` (over every token, [CLS]/[SEP] included), ``cls``, ``pooler`` or ``max``.
            normalize: L2-normalize each vector.
            layer: Hidden layer to pool (``-2``: second to last); needs a folder exported with --hidden-states.
            max_length: Tokens per sequence, [CLS]/[SEP] included (None: the model's limit, 512).
            long_text: ``truncate`` (counted in one warning) or ``window`` (pool over consecutive windows).

        Returns:
            float32 array (len(texts), dim), in input order.

        Raises:
            TypeError: ``texts`` is not a str or a sequence of str (naming the index), or an argument's type.
            ValueError: An argument out of range, or a text that is not valid Unicode (naming the index).
        """
        items = arguments.texts(texts)
        arguments.choice("pooling", pooling, pool.POOLINGS)
        normalize = arguments.flag("normalize", normalize)
        batch_size, max_length, layer = self._options(batch_size, max_length, long_text, layer)
        if pooling == "pooler" and layer is not None:
            raise ValueError("pooling='pooler' uses the pooler head on the last layer; drop layer= or pick another pooling")
        self.folder.check_pooling(pooling, f"pooling={pooling!r}")
        if pooling not in self._poolings_checked:  # once per embedder and pooling: a loop over batches warns once
            shortfall = self.folder.pooling_shortfall(self.variant, pooling)
            if shortfall is not None:
                warnings.warn(PoolingWarning(shortfall), stacklevel=_callers_level())
            # only once the warning is out: a filter that makes it an error raises it on every call, not the first alone
            self._poolings_checked.add(pooling)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        _, sequences, owners = self._sequences(items, max_length, long_text)
        output = "hidden_states" if layer is not None else "pooler_output" if pooling == "pooler" else "last_hidden_state"
        window_vectors = np.zeros((len(sequences), self.dim), dtype=np.float32)
        for indices, (result,) in self._run_grouped(sequences, batch_size, [output]):
            hidden = result if layer is None else result[layer]
            window_vectors[indices] = hidden if hidden.ndim == 2 else pool.pool_rows(hidden, pooling)
        owners_array = np.asarray(owners)
        vectors = np.zeros((len(items), self.dim), dtype=np.float32)
        counts = np.asarray([len(seq) for seq in sequences])
        if len(sequences) == len(items):
            vectors[owners_array] = window_vectors
        else:  # each text's windows in order, grouped once: a scan of all windows per text is quadratic
            # (measured for combining alone, 100k texts: 3.4 s scanning, 0.9 s grouped)
            order = np.argsort(owners_array, kind="stable")
            ends = np.cumsum(np.bincount(owners_array, minlength=len(items)))
            for index, rows in enumerate(np.split(order, ends[:-1])):
                vectors[index] = pool.combine_windows(window_vectors[rows], counts[rows], pooling)
        return pool.l2_normalize(vectors) if normalize else vectors

    def tokenize(self, texts: str | Sequence[str], *, max_length: int | None = None) -> dict[str, np.ndarray]:
        """The graph's feeds for texts: ``[CLS] pieces [SEP]``, truncated to ``max_length``, right-padded.

        Args:
            texts: A str (one text) or an ordered sequence of str.
            max_length: Tokens per sequence, [CLS]/[SEP] included (None: the model's limit, 512).

        Returns:
            ``input_ids``, ``attention_mask``, ``token_type_ids``: int64 (len(texts), longest), input order.

        Raises:
            TypeError: ``texts`` is not a str or a sequence of str (naming the index).
            ValueError: No texts, a text that is not valid Unicode, or ``max_length`` out of range.
        """
        items = arguments.texts(texts)
        _, max_length, _ = self._options(1, max_length, "truncate", None)
        if not items:
            raise ValueError("texts is empty: pass at least one text to tokenize")
        _, sequences, _ = self._sequences(items, max_length, "truncate", hint="encode(..., long_text='window') embeds whole texts")
        return self._tokenizer.pad(sequences)

    def encode_ids(self, feeds: Mapping[str, np.ndarray], *, normalize: bool = False, batch_size: int = 32) -> np.ndarray:
        """Mean-pooled sentence vectors straight from token ids (e.g. the output of :meth:`tokenize`).

        Each row's padding is stripped (right or left padding), so a row's vector does not depend on the
        batch's width or on the other rows: it equals ``encode`` of the same ids.

        Args:
            feeds: ``input_ids`` and ``attention_mask`` (integer arrays of one (rows, 1..max_length) shape, mask
                rows 1s then 0s or 0s then 1s); ``token_type_ids`` optional.
            normalize: L2-normalize each vector.
            batch_size: Most rows per ONNX Runtime call.

        Returns:
            float32 (rows, dim), row for row; (0, dim) for a batch of no rows.

        Raises:
            TypeError: ``feeds`` is not a mapping, or an array is not of an integer dtype.
            ValueError: A missing key, mismatched shapes, an id or type out of range, or a mask that is not 0/1
                padding (holes, an all-0 row), naming the array, row and column.
        """
        normalize = arguments.flag("normalize", normalize)
        batch_size = arguments.count("batch_size", batch_size)
        model = self.folder.model
        ids, mask, types = arguments.token_feeds(feeds, model.vocab_size, model.type_vocab_size, self.max_length)
        vectors = np.zeros((len(ids), self.dim), dtype=np.float32)
        if not len(ids):
            return vectors  # ONNX Runtime must not see a 0-row batch: the int8 graph dies of SIGFPE on one
        rows, row_types = unpad(ids, mask, types)
        for indices, (hidden,) in self._run_grouped(rows, batch_size, ["last_hidden_state"], row_types):
            vectors[indices] = pool.pool_rows(hidden, "mean")
        return pool.l2_normalize(vectors) if normalize else vectors

    def encode_tokens(
        self,
        texts: str | Sequence[str],
        *,
        batch_size: int = 32,
        layer: int | None = None,
        max_length: int | None = None,
        long_text: str = "truncate",
        merge: str | None = None,
    ) -> list[TokenEmbeddings]:
        """Contextual vectors per token (SentencePiece piece), [CLS]/[SEP] left out.

        Args:
            texts: A str (one text) or an ordered sequence of str.
            batch_size: Most sequences per ONNX Runtime call.
            layer: Hidden layer to read (needs --hidden-states); default the last.
            max_length: Tokens per sequence, [CLS]/[SEP] included (None: the model's limit).
            long_text: ``truncate`` or ``window`` (windows are run separately and their tokens concatenated).
            merge: ``None`` for pieces, ``"word"`` to average each whitespace-separated word's pieces.

        Returns:
            One :class:`TokenEmbeddings` per text, in input order.

        Raises:
            TypeError: ``texts`` is not a str or a sequence of str (naming the index), or an argument's type.
            ValueError: An argument out of range, or a text that is not valid Unicode.
        """
        items = arguments.texts(texts)
        arguments.optional_choice("merge", merge, ("word",))
        batch_size, max_length, layer = self._options(batch_size, max_length, long_text, layer)
        if not items:
            return []
        encodings, sequences, owners = self._sequences(items, max_length, long_text)
        output = "last_hidden_state" if layer is None else "hidden_states"
        window_rows: dict[int, np.ndarray] = {}
        for indices, (result,) in self._run_grouped(sequences, batch_size, [output]):
            hidden = result if layer is None else result[layer]
            for row, index in enumerate(indices):
                window_rows[index] = hidden[row, 1:-1]  # no padding: every row is [CLS] pieces [SEP]
        pieces: list[list[np.ndarray]] = [[] for _ in items]
        for index in range(len(sequences)):
            pieces[owners[index]].append(window_rows[index])
        results = []
        for text, encoding, chunks in zip(items, encodings, pieces):
            vectors = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, self.dim), np.float32)
            count = len(vectors)
            tokens, offsets = list(encoding.tokens[:count]), [tuple(o) for o in encoding.offsets[:count]]
            if merge == "word":
                vectors, groups = pool.merge_pieces(vectors, word_numbers(text, offsets))
                offsets = word_spans(text, offsets, groups, complete=count == len(encoding.ids))
                tokens = [text[start:end] for start, end in offsets]
            results.append(TokenEmbeddings(tokens, offsets, vectors))
        return results

    def word_vectors(self, words: str | Sequence[str], *, projected: bool = False, batch_size: int = 256) -> np.ndarray:
        """Static (context-free) word vectors from the graph's own embedding initializers.

        A word that splits into several pieces gets the mean of its pieces' rows. Rows come from the loaded
        variant: exact for fp32/fused, 8-bit for int8.

        Args:
            words: A str (one word) or an ordered sequence of str.
            projected: False: rows of the E-wide (128) embedding matrix; True: projected to the hidden size.
            batch_size: Most words per ONNX Runtime call.

        Returns:
            float32 (len(words), E) or (len(words), dim).

        Raises:
            TypeError: ``words`` is not a str or a sequence of str (naming the index), or an argument's type.
            ValueError: A word with no pieces (empty or whitespace) or more than max_length pieces.
        """
        items = arguments.texts(words, "words")
        projected = arguments.flag("projected", projected)
        batch_size = arguments.count("batch_size", batch_size)
        width = self.dim if projected else self.folder.model.embedding_size
        if not items:
            return np.zeros((0, width), dtype=np.float32)
        sequences = []
        for index, encoding in enumerate(self._tokenizer.encode(items, limit=self.max_length)):
            if not encoding.ids or len(encoding.ids) > self.max_length:
                # limit= tokenized only the start of a longer word: its count is a lower bound
                pieces = f"more than {self.max_length}" if encoding.ids else "no"
                raise ValueError(f"words[{index}]={items[index][:40]!r} has {pieces} pieces; pass a word of 1 to {self.max_length} pieces")
            sequences.append(np.asarray(encoding.ids, dtype=np.int64))
        output = "projected_word_embeddings" if projected else "word_embeddings"
        vectors = np.zeros((len(items), width), dtype=np.float32)
        for indices, (result,) in self._run_grouped(sequences, batch_size, [output]):
            vectors[indices] = pool.pool_rows(result, "mean")
        return vectors

    def similarity(
        self,
        a: str | Sequence[str],
        b: str | Sequence[str],
        *,
        batch_size: int = 32,
        pooling: str = "mean",
        layer: int | None = None,
        max_length: int | None = None,
        long_text: str = "truncate",
    ) -> np.ndarray:
        """Cosine similarity matrix (len(a), len(b)) of the normalized sentence vectors.

        A pair's score does not depend on the other texts in ``a`` and ``b``, and lies in [-1, 1].

        Args:
            a, b: Texts, as for :meth:`encode`.
            batch_size, pooling, layer, max_length, long_text: As for :meth:`encode`.

        Returns:
            float32 (len(a), len(b)).

        Raises:
            TypeError, ValueError: As :meth:`encode`, naming ``a`` or ``b``.
        """
        first, second = arguments.texts(a, "a"), arguments.texts(b, "b")
        options = dict(batch_size=batch_size, pooling=pooling, layer=layer, max_length=max_length, long_text=long_text)
        x, y = (self.encode(texts, **options) for texts in (first, second))
        # A BLAS product sums in an order set by the shapes: in float32 a pair's score moved by up to 5e-7 with the
        # other texts. In float64 (where float32 products are exact) its error is under 1e-13 for unit vectors, so
        # its float32 rounding is the exact sum's, except within that distance of a float32 rounding boundary. Those
        # few pairs are summed again, each alone, in numpy's fixed pairwise order: the same value in any batch, and
        # within the margin, so a pair summed one way in one batch and the other way in another rounds the same.
        scores, margin, wide = np.empty((len(x), len(y)), dtype=np.float32), 1e-12, y.astype(np.float64)
        rows = max(1, SIMILARITY_BLOCK // max(1, len(y)))
        for start in range(0, len(x), rows):
            block_x = x[start : start + rows].astype(np.float64)
            block = _dot(block_x, wide)
            near_i, near_j = np.nonzero(np.float32(block - margin) != np.float32(block + margin))
            for at in range(0, len(near_i), 4096):  # 4096 pairs at a time: (4096, dim) float64 products
                i, j = near_i[at : at + 4096], near_j[at : at + 4096]
                block[i, j] = (block_x[i] * wide[j]).sum(axis=1)
            # clipped: normalized float32 vectors have norms within 1e-7 of 1, and arccos(1.0000001) is NaN
            scores[start : start + rows] = np.clip(block, -1.0, 1.0, out=block)
        return scores
