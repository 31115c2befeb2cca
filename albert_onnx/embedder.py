"""AlbertEmbedder: text -> sentence vectors, token vectors and static word vectors on ONNX Runtime."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from . import pooling as pool
from .model_folder import ModelFolder
from .session import GraphRunner, create_session, resolve_device
from .tokenizer import AlbertTokenizer

LONG_TEXT = ("truncate", "window")
_DEFAULT_VARIANT = {"cpu": "int8", "cuda": "fp16"}


@dataclass
class TokenEmbeddings:
    """Contextual vectors of one text: pieces (or words), their character spans, and one row each."""

    tokens: list[str]
    offsets: list[tuple[int, int]]
    vectors: np.ndarray


def _as_texts(texts: str | Iterable[str], argument: str = "texts") -> list[str]:
    if isinstance(texts, str):
        return [texts]  # one string is one text (documented), not a sequence of characters
    if isinstance(texts, (bytes, bytearray)) or texts is None or not isinstance(texts, Iterable):
        raise TypeError(f"{argument} must be a str or a list of str, got {type(texts).__name__}")
    items = list(texts)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"{argument}[{index}] is {type(item).__name__} ({item!r:.40}); every item must be str (decode bytes first)")
    return items


class AlbertEmbedder:
    """ALBERT embeddings from a model folder. Thread-safe: share one instance across threads.

    Create with :meth:`from_pretrained`.
    """

    def __init__(self, folder: ModelFolder, variant: str, device: str, runner: GraphRunner) -> None:
        self.folder = folder
        self.variant = variant
        self.device = device
        self._runner = runner
        self._tokenizer = AlbertTokenizer(folder.file(folder.tokenizer.file), folder.tokenizer.special_ids)

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
    ) -> "AlbertEmbedder":
        """Load a model folder written by ``albert-onnx export``.

        Args:
            folder: The model folder.
            variant: ``fp32``, ``fused``, ``int8``, ``fp16`` or ``auto`` (CPU: int8, CUDA: fp16).
            device: ``cpu``, ``cuda`` (CUDA or a clear error, never a silent CPU fallback) or ``auto``.
            threads: ONNX Runtime intra-op threads (None: one per physical core).
            verify: Check the graph's and tokenizer's size and sha256 against the manifest.
            io_binding: Force IOBinding on or off (default: on for CUDA).
            spin_wait: Idle ORT threads busy-wait for work (default, fastest alone); pass False when other
                sessions or PyTorch share the cores in this process.

        Returns:
            The embedder; ``.device`` and ``.variant`` say what was chosen.

        Raises:
            ModelFolderError: Bad folder, unknown variant, or a file that fails its check.
            RuntimeError: ``device='cuda'`` without a working CUDAExecutionProvider.
            ValueError: Bad argument values, or a variant that cannot run on the device.
        """
        model = ModelFolder.load(folder)
        resolved = resolve_device(device)
        if variant == "auto":
            variant = _DEFAULT_VARIANT[resolved] if _DEFAULT_VARIANT[resolved] in model.variants else "fused"
        path = model.variant_path(variant)
        if resolved not in model.variants[variant].devices:
            raise ValueError(
                f"variant={variant!r} runs on {list(model.variants[variant].devices)}, not device={resolved!r}; "
                f"pick another variant (the folder has {', '.join(model.variants)})"
            )
        if verify:
            model.verify(variant)
        session = create_session(path, resolved, threads, spin_wait)
        return cls(model, variant, resolved, GraphRunner(session, resolved, io_binding))

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

    def _check(self, batch_size: int, max_length: int, long_text: str, layer: int | None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: pass a positive int")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or not 3 <= max_length <= self.max_length:
            raise ValueError(f"max_length={max_length!r}: pass an int from 3 to {self.max_length} (the model's limit)")
        if long_text not in LONG_TEXT:
            raise ValueError(f"long_text={long_text!r}: choose 'truncate' or 'window'")
        if layer is not None:
            if "hidden_states" not in self.folder.manifest.outputs:
                raise ValueError(f"layer={layer!r} needs hidden states; re-export the folder with --hidden-states")
            count = self.folder.model.num_hidden_layers + 1
            if isinstance(layer, bool) or not isinstance(layer, int) or not -count <= layer < count:
                raise ValueError(f"layer={layer!r}: pass an int from {-count} to {count - 1} (0 is the embedding output)")

    def _sequences(self, texts: list[str], max_length: int, long_text: str):
        """Framed id sequences (one per window) with their owning text; warns once about truncation."""
        encodings = self._tokenizer.encode(texts)
        room = max_length - 2
        sequences, owners, spans = [], [], []
        truncated = 0
        for index, encoding in enumerate(encodings):
            ids = np.asarray(encoding.ids, dtype=np.int64)
            starts = range(0, max(len(ids), 1), room) if long_text == "window" else [0]
            truncated += long_text == "truncate" and len(ids) > room
            for start in starts:
                sequences.append(self._tokenizer.frame(ids[start : start + room]))
                owners.append(index)
                spans.append((start, min(start + room, len(ids))))
        if truncated:
            warnings.warn(
                f"{truncated} of {len(texts)} texts exceeded max_length={max_length} tokens and were truncated; "
                "pass long_text='window' to embed whole texts",
                stacklevel=3,
            )
        return encodings, sequences, owners, spans

    def _run_sorted(self, sequences: list[np.ndarray], batch_size: int, outputs: list[str]):
        """Run in length-sorted batches, each padded only to its own longest; yields (indices, feeds, results)."""
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            feeds = self._tokenizer.pad([sequences[i] for i in indices])
            yield indices, feeds, self._runner.run(feeds, outputs)

    # -- public API ---------------------------------------------------------------------------------

    def encode(
        self,
        texts: str | Sequence[str],
        *,
        batch_size: int = 32,
        pooling: str = "mean",
        normalize: bool = True,
        layer: int | None = None,
        max_length: int = 512,
        long_text: str = "truncate",
    ) -> np.ndarray:
        """Sentence vectors.

        Args:
            texts: A list of str; a single str is treated as one text.
            batch_size: Texts per ONNX Runtime call (sorted by length, padded per batch).
            pooling: ``mean`` (masked mean, computed in the graph), ``cls``, ``pooler`` or ``max``.
            normalize: L2-normalize each vector.
            layer: Hidden layer to pool (``-2``: second to last); needs a folder exported with --hidden-states.
            max_length: Tokens per sequence, [CLS]/[SEP] included (at most the model's 512).
            long_text: ``truncate`` (counted in one warning) or ``window`` (pool over consecutive windows).

        Returns:
            float32 array (len(texts), dim), in input order.

        Raises:
            TypeError: ``texts`` or one of its items is not str (the message names the index).
            ValueError: An argument is out of range.
        """
        items = _as_texts(texts)
        if pooling not in pool.POOLINGS:
            raise ValueError(f"pooling={pooling!r}: choose one of {', '.join(pool.POOLINGS)}")
        if pooling == "pooler" and layer is not None:
            raise ValueError("pooling='pooler' uses the pooler head on the last layer; drop layer= or pick another pooling")
        self._check(batch_size, max_length, long_text, layer)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        max_length = min(max_length, self.max_length)
        _, sequences, owners, _ = self._sequences(items, max_length, long_text)
        if layer is not None:
            output = "hidden_states"
        else:
            output = {"mean": "sentence_embedding", "pooler": "pooler_output"}.get(pooling, "last_hidden_state")
        window_vectors = np.zeros((len(sequences), self.dim), dtype=np.float32)
        for indices, feeds, (result,) in self._run_sorted(sequences, batch_size, [output]):
            mask = feeds["attention_mask"]
            if layer is not None:
                result = result[layer]
            if result.ndim == 2:
                window_vectors[indices] = result
            elif pooling == "cls":
                window_vectors[indices] = result[:, 0]
            elif pooling == "max":
                window_vectors[indices] = pool.masked_max(result, mask)
            else:
                window_vectors[indices] = pool.masked_mean(result, mask)
        owners_array = np.asarray(owners)
        vectors = np.zeros((len(items), self.dim), dtype=np.float32)
        counts = np.asarray([len(seq) for seq in sequences])
        if len(sequences) == len(items):
            vectors[owners_array] = window_vectors
        else:
            for index in range(len(items)):
                rows = np.flatnonzero(owners_array == index)
                vectors[index] = pool.combine_windows(window_vectors[rows], counts[rows], pooling)
        return pool.l2_normalize(vectors) if normalize else vectors

    def tokenize(self, texts: str | Sequence[str], *, max_length: int = 512) -> dict[str, np.ndarray]:
        """The graph's feeds for texts: ``[CLS] pieces [SEP]``, truncated to ``max_length``, padded to the longest.

        Args:
            texts: A list of str; a single str is treated as one text.
            max_length: Tokens per sequence, [CLS]/[SEP] included (at most the model's 512).

        Returns:
            ``input_ids``, ``attention_mask``, ``token_type_ids``: int64 (len(texts), longest), input order.

        Raises:
            TypeError: Non-str input (the message names the index).
            ValueError: No texts, or ``max_length`` out of range.
        """
        items = _as_texts(texts)
        self._check(1, max_length, "truncate", None)
        if not items:
            raise ValueError("texts is empty: pass at least one text to tokenize")
        _, sequences, _, _ = self._sequences(items, max_length, "truncate")
        return self._tokenizer.pad(sequences)

    def encode_ids(self, feeds: dict[str, np.ndarray], *, normalize: bool = False) -> np.ndarray:
        """Mean-pooled sentence vectors straight from token ids (e.g. the output of :meth:`tokenize`).

        Args:
            feeds: ``input_ids`` and ``attention_mask`` (int64, same 2-D shape); ``token_type_ids`` optional.
            normalize: L2-normalize each vector.

        Returns:
            float32 (batch, dim), row for row.

        Raises:
            ValueError: Missing or misshapen arrays.
        """
        ids, mask = feeds.get("input_ids"), feeds.get("attention_mask")
        if ids is None or mask is None:
            raise ValueError(f"feeds has {sorted(feeds)}; pass input_ids and attention_mask (see tokenize())")
        ids, mask = np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=np.int64)
        if ids.ndim != 2 or ids.shape != mask.shape or not 1 <= ids.shape[1] <= self.max_length:
            raise ValueError(f"input_ids {ids.shape} and attention_mask {mask.shape} must share one (batch, 1..{self.max_length}) shape")
        types = np.asarray(feeds.get("token_type_ids", np.zeros_like(ids)), dtype=np.int64)
        (vectors,) = self._runner.run({"input_ids": ids, "attention_mask": mask, "token_type_ids": types}, ["sentence_embedding"])
        vectors = vectors.astype(np.float32, copy=False)
        return pool.l2_normalize(vectors) if normalize else vectors

    def encode_tokens(
        self,
        texts: str | Sequence[str],
        *,
        batch_size: int = 32,
        layer: int | None = None,
        max_length: int = 512,
        long_text: str = "truncate",
        merge: str | None = None,
    ) -> list[TokenEmbeddings]:
        """Contextual vectors per token (SentencePiece piece), [CLS]/[SEP] left out.

        Args:
            texts: A list of str; a single str is treated as one text.
            batch_size: Sequences per ONNX Runtime call.
            layer: Hidden layer to read (needs --hidden-states); default the last.
            max_length: Tokens per sequence, [CLS]/[SEP] included.
            long_text: ``truncate`` or ``window`` (windows are run separately and their tokens concatenated).
            merge: ``None`` for pieces, ``"word"`` to average each whitespace-separated word's pieces.

        Returns:
            One :class:`TokenEmbeddings` per text, in input order.

        Raises:
            TypeError: Non-str input (the message names the index).
            ValueError: An argument is out of range.
        """
        items = _as_texts(texts)
        if merge not in (None, "word"):
            raise ValueError(f"merge={merge!r}: pass None (pieces) or 'word'")
        self._check(batch_size, max_length, long_text, layer)
        if not items:
            return []
        encodings, sequences, owners, spans = self._sequences(items, min(max_length, self.max_length), long_text)
        output = "last_hidden_state" if layer is None else "hidden_states"
        pieces: list[list[np.ndarray]] = [[] for _ in items]
        window_rows: dict[int, np.ndarray] = {}
        for indices, _, (result,) in self._run_sorted(sequences, batch_size, [output]):
            hidden = result if layer is None else result[layer]
            for row, index in enumerate(indices):
                count = spans[index][1] - spans[index][0]
                window_rows[index] = hidden[row, 1 : 1 + count]
        for index in range(len(sequences)):
            pieces[owners[index]].append(window_rows[index])
        results = []
        for text, encoding, chunks in zip(items, encodings, pieces):
            vectors = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, self.dim), np.float32)
            count = len(vectors)
            tokens, offsets = list(encoding.tokens[:count]), [tuple(o) for o in encoding.offsets[:count]]
            if merge == "word":
                word_ids = [w if w is not None else -1 - i for i, w in enumerate(encoding.word_ids[:count])]
                vectors, groups = pool.merge_pieces(vectors, word_ids)
                spans = [(offsets[g[0]][0], offsets[g[-1]][1]) for g in groups]
                # a piece's span includes the space its "▁" stands for; a word's span should not
                offsets = [(start + len(text[start:end]) - len(text[start:end].lstrip()), end) for start, end in spans]
                tokens = [text[start:end] for start, end in offsets]
            results.append(TokenEmbeddings(tokens, offsets, vectors))
        return results

    def word_vectors(self, words: str | Sequence[str], *, projected: bool = False, batch_size: int = 256) -> np.ndarray:
        """Static (context-free) word vectors from the graph's own embedding initializers.

        A word that splits into several pieces gets the mean of its pieces' rows. Rows come from the loaded
        variant: exact for fp32/fused, 8-bit for int8.

        Args:
            words: A list of str; a single str is one word.
            projected: False: rows of the E-wide (128) embedding matrix; True: projected to the hidden size.
            batch_size: Words per ONNX Runtime call.

        Returns:
            float32 (len(words), E) or (len(words), dim).

        Raises:
            TypeError: A non-str word (naming the index).
            ValueError: A word with no pieces (empty or whitespace), or longer than max_length pieces.
        """
        items = _as_texts(words, "words")
        width = self.dim if projected else self.folder.model.embedding_size
        if not items:
            return np.zeros((0, width), dtype=np.float32)
        encodings = self._tokenizer.encode(items)
        sequences = []
        for index, encoding in enumerate(encodings):
            if not encoding.ids or len(encoding.ids) > self.max_length:
                raise ValueError(f"words[{index}]={items[index]!r:.40} has {len(encoding.ids)} pieces; pass a word with 1 to {self.max_length}")
            sequences.append(np.asarray(encoding.ids, dtype=np.int64))
        output = "projected_word_embeddings" if projected else "word_embeddings"
        vectors = np.zeros((len(items), width), dtype=np.float32)
        for indices, feeds, (result,) in self._run_sorted(sequences, batch_size, [output]):
            vectors[indices] = pool.masked_mean(result, feeds["attention_mask"])
        return vectors

    def similarity(self, a: str | Sequence[str], b: str | Sequence[str], **encode_options) -> np.ndarray:
        """Cosine similarity matrix (len(a), len(b)) of the normalized sentence vectors."""
        encode_options["normalize"] = True
        return self.encode(a, **encode_options) @ self.encode(b, **encode_options).T
