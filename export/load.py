"""Load an ALBERT checkpoint: a hub id, a local HF-layout folder, or a shipped size config (random weights)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pickle
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

import torch
import transformers
from transformers import AlbertConfig, AlbertModel
from transformers.activations import ACT2FN

from .errors import ExportError
from .locate import SHARD_INDEXES, WEIGHT_CHOICES, local_weights, locate_model, shipped_name
from .to_onnx import OPSET

TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])

# The fields that define the architecture. transformers fills a missing one with its own default (hidden_size
# 4096: albert-xxlarge), so a config of only {"model_type": "albert"} would build a model nobody asked for.
# name -> (smallest value, albert-base-v2's value for the message's example, largest value). The largest values
# are far past every published ALBERT (xxlarge: hidden 4096, intermediate 16384, 64 heads); past them a typo such
# as vocab_size=10**12 would only fail inside torch's allocator.
REQUIRED_SIZES: dict[str, tuple[int, int, int]] = {
    "vocab_size": (1, 30000, 1_000_000),
    "embedding_size": (1, 128, 16384),
    "hidden_size": (1, 768, 16384),
    "num_hidden_layers": (1, 12, 256),
    "num_attention_heads": (1, 12, 1024),
    "intermediate_size": (1, 3072, 65536),
    "type_vocab_size": (1, 2, 1024),
    # The fp32 graph is traced with 8-token inputs (to_onnx), so fewer positions cannot even be exported.
    "max_position_embeddings": (8, 512, 65536),
}
# The pooler head's tensors, as AlbertModel names them (both absent: a checkpoint saved without the head).
POOLER_KEYS = ("pooler.bias", "pooler.weight")
# The parts of AlbertModel, as transformers names a checkpoint's tensors for it (a head model's "albert." dropped). A
# tensor under them that the model has no place for means a config.json that does not match the weights (saved with
# num_hidden_groups=2, read with 1: the second group's weights were dropped and every gate passed); a head's tensors
# (predictions.*, classifier.*) are not the model's, and the integer buffers below are rebuilt, not loaded.
MODEL_PARTS = ("embeddings.", "encoder.", "pooler.")
BUFFERS = ("position_ids", "token_type_ids")
# Optional: every published ALBERT has these at the defaults transformers uses, so a missing one is no surprise.
OPTIONAL_SIZES: dict[str, tuple[int, int, int]] = {"num_hidden_groups": (1, 1, 256), "inner_group_num": (1, 1, 256)}
# name -> (low, high, low inclusive, albert-base-v2's value)
OPTIONAL_NUMBERS: dict[str, tuple[float, float, bool, float]] = {
    "layer_norm_eps": (0.0, 1.0, False, 1e-12),
    "initializer_range": (0.0, 10.0, False, 0.02),
    "hidden_dropout_prob": (0.0, 1.0, True, 0.0),
    "attention_probs_dropout_prob": (0.0, 1.0, True, 0.0),
}
# transformers activations whose torch ops have no ONNX export (opset OPSET): "xielu"'s aten::expm1 failed with
# UnsupportedOperatorError after dumping the traced graph (72 KB) to stderr. Every other ACT2FN value of
# transformers 4.57 was exported and compared with PyTorch (torch 2.13); one that fails anyway is one line
# (to_onnx.export_fp32), after torch's dump.
UNEXPORTABLE_ACTIVATIONS = ("xielu",)


@dataclass
class LoadedModel:
    """A PyTorch ALBERT in eval mode plus where it came from."""

    model: AlbertModel | None  # None once the export has no more use for it (its memory goes back)
    config: AlbertConfig
    source: str
    revision: str | None
    random_weights: bool
    seed: int | None
    weights_file: str | None
    # False for a checkpoint saved without ALBERT's pooler head (AlbertForMaskedLM, ...ForTokenClassification,
    # ...ForQuestionAnswering build theirs with add_pooling_layer=False): the folder then has no pooler_output.
    pooler: bool = True


def one_line(text: str, limit: int = 300) -> str:
    """``text`` with its whitespace collapsed, cut at ``limit`` characters: a library's message inside ours."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def is_offline_mode() -> bool:
    """Whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, as huggingface_hub reads it; read now, from the
    environment (transformers 5 dropped ``transformers.utils.is_offline_mode``)."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return value is not None and value.upper() in ("1", "ON", "YES", "TRUE")


def hub_failure(source: str, what: str, error: OSError, argument: str = "source") -> ExportError:
    """The ExportError for a hub download that failed (offline, no network, unknown id, gated repo); ``argument``: the
    option that named the id (``source``, or ``tokenizer`` for --tokenizer)."""
    reason = one_line(str(error).splitlines()[0] if str(error).strip() else type(error).__name__, 200)
    if is_offline_mode():
        fix = ("HF_HUB_OFFLINE is set and the Hugging Face cache has no copy: unset HF_HUB_OFFLINE and run once with "
               "network access, or pass a local folder")
    else:
        fix = "check the id and the network (run once online to fill the cache), or pass a local folder"
    return ExportError(f"{argument}={source!r} is not a local folder, and {what} could not be fetched from the Hugging Face hub "
                       f"({reason}); {fix}")


def read_json(path: Path) -> dict:
    """A JSON object from ``path``.

    Raises:
        ExportError: Not UTF-8, not JSON, or not an object, naming the file, the place and the fix.
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ExportError(f"{path}: not UTF-8 text (byte {error.start}); the file is damaged: restore it from the checkpoint's source") from None
    except json.JSONDecodeError as error:
        raise ExportError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
                          "the file is damaged: restore it from the checkpoint's source") from None
    except (ValueError, RecursionError) as error:  # an int of over 4300 digits; arrays nested too deep
        raise ExportError(f"{path}: not a JSON file this can read ({one_line(error, 100)}); the file is damaged: restore it "
                          "from the checkpoint's source") from None
    if not isinstance(raw, dict):
        raise ExportError(f"{path}: holds a JSON {type(raw).__name__}, not an object; restore it from the checkpoint's source")
    return raw


def _shown(value: object) -> str:
    text = repr(value)
    return (text if len(text) <= 40 else text[:37] + "...") + ("" if isinstance(value, (int, float)) and not isinstance(value, bool) else f" ({type(value).__name__})")


def check_config(raw: dict, origin: str) -> None:
    """Check the architecture fields of an ALBERT config.json, and the fields transformers acts on while it loads the model
    (quantization_config, torch_dtype, pruned_heads), before transformers builds anything from it.

    Args:
        raw: The config as read, without transformers' defaults filled in.
        origin: The file, for the message.

    Raises:
        ExportError: One error listing every field that is missing, of the wrong type or out of range, each with its
            value and albert-base-v2's value as an example.
    """
    problems = []

    def integer(name: str, minimum: int, example: int, maximum: int, required: bool) -> int | None:
        if name not in raw:
            if required:
                problems.append(f"{name} is missing (albert-base-v2: {example})")
            return None
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{name}={_shown(value)} must be an integer >= {minimum} (albert-base-v2: {example})")
            return None
        if not minimum <= value <= maximum:
            problems.append(f"{name}={value} must be from {minimum} to {maximum} (albert-base-v2: {example})")
            return None
        return value

    sizes = {name: integer(name, low, example, high, True) for name, (low, example, high) in REQUIRED_SIZES.items()}
    groups = {name: integer(name, low, example, high, False) for name, (low, example, high) in OPTIONAL_SIZES.items()}
    hidden, heads, layers = sizes["hidden_size"], sizes["num_attention_heads"], sizes["num_hidden_layers"]
    if hidden is not None and heads is not None and hidden % heads:
        problems.append(f"hidden_size={hidden} must be divisible by num_attention_heads={heads} (albert-base-v2: 768 and 12)")
    if layers is not None and groups["num_hidden_groups"] is not None and groups["num_hidden_groups"] > layers:
        problems.append(f"num_hidden_groups={groups['num_hidden_groups']} must be <= num_hidden_layers={layers} (albert-base-v2: 1)")
    elif layers is not None and TRANSFORMERS_MAJOR < 5:
        # transformers 4.x hands each group a head mask of layers // groups entries and indexes it by inner layer:
        # an IndexError mid-export where a group holds more inner layers than that (transformers 5 has no head mask)
        per_group = layers // (groups["num_hidden_groups"] or 1)
        if (groups["inner_group_num"] or 1) > per_group:
            problems.append(f"inner_group_num={groups['inner_group_num']} is more than num_hidden_layers / num_hidden_groups = "
                            f"{per_group}, which transformers {transformers.__version__} cannot run (transformers 5 can)")
    pad = raw.get("pad_token_id")
    if pad is not None and sizes["vocab_size"] is not None and (isinstance(pad, bool) or not isinstance(pad, int)
                                                                 or not 0 <= pad < sizes["vocab_size"]):
        problems.append(f"pad_token_id={_shown(pad)} must be an id from 0 to vocab_size-1={sizes['vocab_size'] - 1} (albert-base-v2: 0)")

    act = raw.get("hidden_act")
    if "hidden_act" not in raw:
        problems.append("hidden_act is missing (albert-base-v2: 'gelu_new', v1 models: 'gelu')")
    elif not isinstance(act, str) or act not in ACT2FN:
        problems.append(f"hidden_act={_shown(act)} must be one of transformers' activations, e.g. 'gelu_new' (v2) or 'gelu' (v1)")
    elif act in UNEXPORTABLE_ACTIVATIONS:
        problems.append(f"hidden_act={act!r} has no ONNX export (opset {OPSET}) in torch; ALBERT's own are 'gelu_new' (v2) "
                        "and 'gelu' (v1)")
    position = raw.get("position_embedding_type", "absolute")
    if position != "absolute":
        problems.append(f"position_embedding_type={_shown(position)} must be 'absolute': the fused Attention has no relative positions")
    for name, (low, high, low_ok, example) in OPTIONAL_NUMBERS.items():
        if name not in raw:
            continue
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            problems.append(f"{name}={_shown(value)} must be a number (albert-base-v2: {example})")
        elif not (low <= value if low_ok else low < value) or value > high:
            problems.append(f"{name}={value} must be in {'[' if low_ok else '('}{low}, {high}] (albert-base-v2: {example})")
    # the distinct layers pruned_heads indexes; unknown while a group size is invalid (reported above)
    invalid_groups = any(name in raw and groups[name] is None for name in OPTIONAL_SIZES)
    distinct = None if invalid_groups else (groups["num_hidden_groups"] or 1) * (groups["inner_group_num"] or 1)
    problems += _loading_problems(raw, distinct, heads)
    if problems:
        raise ExportError(f"{origin} is not a usable ALBERT config: {'; '.join(problems)}; fix these fields in {origin}")


def _loading_problems(raw: dict, layers: int | None, heads: int | None) -> list[str]:
    """The fields of ``raw`` besides the sizes that transformers acts on while it builds or loads the model, and would
    fail on with a traceback (or a wrong model): quantization_config, torch_dtype (or dtype) and pruned_heads.

    Args:
        raw: The config as read.
        layers: The distinct layers, num_hidden_groups x inner_group_num (None: a group size is invalid).
        heads: num_attention_heads (None: missing or invalid).
    """
    problems = []
    # transformers hands it to a quantizer (bitsandbytes, GPTQ, ...) that needs its own packages and GPU kernels, and fails
    # on a null or a string; the export reads float weights and quantizes the graph itself (int8)
    if raw.get("quantization_config") is not None:
        problems.append(f"quantization_config={_shown(raw['quantization_config'])} marks a quantized checkpoint, which the export "
                        "cannot read: export from the unquantized checkpoint")
    elif "quantization_config" in raw and TRANSFORMERS_MAJOR < 5:  # transformers 5 reads a null as no quantization
        problems.append("quantization_config=null, which transformers cannot read: delete the field")
    for name in ("torch_dtype", "dtype"):
        value = raw.get(name)
        # transformers turns a string into getattr(torch, value): an AttributeError for a name torch lacks
        if isinstance(value, str) and not isinstance(getattr(torch, value, None), torch.dtype):
            problems.append(f"{name}={value!r} is not a torch dtype name: use the dtype the weights were saved in, e.g. 'float32' "
                            "(or delete the field)")
    pruned = raw.get("pruned_heads")
    if pruned is not None and layers is not None and heads is not None:
        # transformers prunes while it builds the model: an index out of range was an IndexError (a negative head one
        # silently pruned a head from the end), a layer with every head pruned a RuntimeError mid-export
        problem = _pruned_heads_problem(pruned, layers, heads)
        if problem is not None:
            problems.append(f"pruned_heads={_shown(pruned)}: {problem} (it maps a layer index, 0 to {layers - 1} for "
                            f"num_hidden_groups x inner_group_num layers, to the heads removed, 0 to {heads - 1}, leaving each layer "
                            "one; albert-base-v2: {})")
    return problems


def _pruned_heads_problem(pruned: object, layers: int, heads: int) -> str | None:
    """What is wrong with a config's ``pruned_heads`` (a JSON object of layer index strings to head index lists), or None."""
    if not isinstance(pruned, dict):
        return f"a {type(pruned).__name__}, not an object"
    for key, listed in pruned.items():
        # JSON keys are strings; transformers reads them with int(), which takes " 1", "01" and "-1" (the last layer) too
        if not (key.isascii() and key.isdecimal() and str(int(key)) == key and int(key) < layers):
            return f"layer {key!r} is not an index from 0 to {layers - 1}"
        if not isinstance(listed, list) or any(isinstance(h, bool) or not isinstance(h, int) or not 0 <= h < heads for h in listed):
            return f"layer {key!r} lists {_shown(listed)}, not head indexes from 0 to {heads - 1}"
        if len(set(listed)) != len(listed):
            return f"layer {key!r} lists a head twice"
        if len(listed) >= heads:
            return f"layer {key!r} would lose all its {heads} heads"
    return None


def build_config(raw: dict, origin: str) -> AlbertConfig:
    """``AlbertConfig.from_dict(raw)``, its errors named.

    Raises:
        ExportError: transformers refused a field (``id2label={"x": ...}``, ``num_labels="two"``, ``problem_type``): its
            ValueError or TypeError names the value, not the field or the file; this names both.
    """
    try:
        return AlbertConfig.from_dict(raw)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as error:
        # the culprit: the one field without which the config builds (none where two fields are wrong)
        culprits = [key for key in raw if _builds({k: v for k, v in raw.items() if k != key})]
        field = f"the field {culprits[0]}={_shown(raw[culprits[0]])}" if len(culprits) == 1 else "a field"
        raise ExportError(f"{origin}: transformers cannot read {field}: {one_line(error, 160)}; fix it in {origin}, or restore the "
                          "file from the checkpoint's source") from None


def _builds(raw: dict) -> bool:
    """Whether transformers builds an AlbertConfig from ``raw``."""
    try:
        AlbertConfig.from_dict(raw)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError):
        return False
    return True


def read_config(source: str, revision: str | None) -> tuple[AlbertConfig, str]:
    """The source's ALBERT config (a folder's config.json, a shipped size's, or the hub's) and where it is.

    Raises:
        ExportError: Not found or not fetched, not ALBERT, or a missing or invalid architecture field.
    """
    where = locate_model(source)
    if where == "folder":
        config_path = Path(source) / "config.json"
        raw, origin = read_json(config_path), str(config_path)
    elif where == "shipped":
        # The published configs ship with the package, so a size can be named with no download.
        shipped = shipped_name(source)
        raw = json.loads(resources.files(__package__).joinpath("configs", f"{shipped}.json").read_text(encoding="utf-8"))
        origin = f"the shipped config {shipped}.json"
    else:
        try:
            # The raw config.json (what users with internet get), without transformers' defaults filled in.
            raw, _ = AlbertConfig.get_config_dict(source, revision=revision)
        except OSError as error:
            raise hub_failure(source, "its config.json", error) from error
        origin = f"{source}'s config.json (hub)"
    model_type = raw.get("model_type")
    if model_type != "albert":
        what = "has no model_type" if model_type is None else f"is a {model_type!r} checkpoint, not ALBERT"
        raise ExportError(f"source={source!r} {what} (model_type must be 'albert'); albert-onnx exports ALBERT models only")
    check_config(raw, origin)
    config = build_config(raw, origin)
    # outputs as a ModelOutput (a config's return_dict=false or torchscript=true would make tuples, which the
    # export and the reference read by name), and the feed-forward in one piece (chunking traces the example's
    # length into the graph); none of them changes the arithmetic
    config.return_dict, config.torchscript, config.chunk_size_feed_forward = True, False, 0
    # Eager attention: ONNX Runtime's Attention fusion matches the eager graph, not SDPA's.
    config._attn_implementation = "eager"
    return config, where


def randomize_weights(model: AlbertModel, seed: int) -> None:
    """Give every parameter seeded random values, biases and LayerNorm included.

    transformers' own init leaves biases at 0 and LayerNorm at 1; the TorchScript exporter then merges those
    identical constants and the graph no longer has the shape a real checkpoint gives, so fusion results
    would not carry over. Non-trivial values everywhere keep the graph honest.
    """
    generator = torch.Generator().manual_seed(seed)
    std = model.config.initializer_range
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            if "LayerNorm.weight" in name:
                param.copy_(1.0 + 0.02 * noise)
            else:
                param.copy_(std * noise)


def _causes(error: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        chain.append(error)
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return chain


def weights_failure(path: Path | str, error: Exception) -> ExportError:
    """The ExportError for a weights file that transformers could not load, naming the file, the reason and the fix."""
    from safetensors import SafetensorError

    chain = _causes(error)
    refused = [e for e in chain if isinstance(e, pickle.UnpicklingError)]
    damaged = [e for e in chain if isinstance(e, SafetensorError)]
    if refused:
        return ExportError(f"{path}: torch.load(weights_only=True) refused it ({one_line(refused[-1], 160)}): it holds Python "
                           "objects besides tensors (possibly malicious) or is damaged; do not load it with weights_only=False: "
                           "get the weights as model.safetensors from a source you trust")
    if damaged:
        return ExportError(f"{path}: not a valid safetensors file ({one_line(damaged[-1], 160)}); the file is damaged or "
                           "truncated: download it again")
    return ExportError(f"{path}: could not be loaded ({one_line(error, 200)}); check the file, or download the checkpoint again")


def _check_not_lfs_pointer(path: Path) -> None:
    """A Git LFS pointer (a clone without git-lfs) is a 130-byte text file named like the weights."""
    with path.open("rb") as handle:
        head = handle.read(40)
    if head.startswith(b"version https://git-lfs"):
        raise ExportError(f"{path} is a Git LFS pointer, not the weights; run `git lfs pull` in {path.parent} (install git-lfs first)")




def shard_files(index: Path) -> list[str]:
    """The shard file names a sharded checkpoint's index (``model.safetensors.index.json``) lists, sorted.

    Raises:
        ExportError: The index is not JSON, has no ``weight_map`` of tensor names to plain file names in its folder.
    """
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(name, str) for name in weight_map.values()):
        raise ExportError(f"{index}: has no weight_map of tensor names to shard files; the file is damaged: restore it from the "
                          "checkpoint's source")
    shards = sorted(set(weight_map.values()))
    for name in shards:  # transformers joins these to the folder: "../x" would read outside the checkpoint
        if Path(name).name != name or name in ("", ".", "..") or "\\" in name:
            raise ExportError(f"{index}: weight_map names {name!r}, not a file in the checkpoint folder; the index is damaged: "
                              "restore it from the checkpoint's source")
    return shards


def weight_files(folder: Path, name: str) -> list[Path]:
    """The files holding the weights: ``name`` itself, or each shard its index lists.

    Raises:
        ExportError: A damaged index, or shards it lists that the folder lacks.
    """
    if name not in SHARD_INDEXES:
        return [folder / name]
    shards = shard_files(folder / name)
    missing = [shard for shard in shards if not (folder / shard).is_file()]
    if missing:
        raise ExportError(f"{folder / name} lists {len(shards)} shard files and {len(missing)} of them are not in {folder} "
                          f"(e.g. {missing[0]!r}); download the whole checkpoint")
    return [folder / shard for shard in shards]


def hub_weights(source: str, revision: str | None) -> Path:
    """The local path of a hub repository's weights file (or shard index, its shards beside it): from the Hugging Face
    cache, or downloaded into it.

    Raises:
        ExportError: The hub cannot be reached (or HF_HUB_OFFLINE is set) and the cache has no copy, the id is
            unknown, or the repository has no weights file.
    """
    from transformers.utils import cached_file

    def fetch(name: str) -> str | None:
        try:
            return cached_file(source, name, revision=revision, _raise_exceptions_for_missing_entries=False,
                               _raise_exceptions_for_connection_errors=False)
        except OSError as error:
            raise hub_failure(source, "its weights", error) from error

    for name in WEIGHT_CHOICES:
        found = fetch(name)
        if found is None:
            continue
        if name in SHARD_INDEXES:  # the shards land in the same snapshot folder as the index
            missing = [shard for shard in shard_files(Path(found)) if fetch(shard) is None]
            if missing:
                raise ExportError(f"source={source!r}: {len(missing)} shards its {name} lists could not be fetched from the Hugging "
                                  f"Face hub or found in its cache (e.g. {missing[0]}); check the network (run once online to fill "
                                  "the cache), or pass a local folder with the whole checkpoint")
        return Path(found)
    if is_offline_mode():
        raise ExportError(f"source={source!r}: HF_HUB_OFFLINE is set and the Hugging Face cache has no {' or '.join(WEIGHT_CHOICES)} "
                          "of it; unset HF_HUB_OFFLINE and run once with network access, pass a local folder, or pass "
                          "--random-weights to export the architecture only")
    raise ExportError(f"source={source!r}: none of {', '.join(WEIGHT_CHOICES)} could be found on the Hugging Face hub or in its cache "
                      "(no network, or the repository has no such file); check the id and the network, or pass a local folder")


def load_albert(source: str, *, revision: str | None = None, random_weights: bool = False, seed: int = 0,
                config: tuple[AlbertConfig, str] | None = None) -> LoadedModel:
    """Load an ALBERT model for export.

    Args:
        source: Hub id (``albert/albert-base-v2``), local folder in HF layout, or a shipped size name
            (``albert-large-v2``; random weights only).
        revision: Hub revision (branch, tag or commit); ignored for local folders.
        random_weights: Build from the config with seeded random weights instead of loading weights.
        seed: Seed for ``random_weights``.
        config: What :func:`read_config` returned for this source and revision, if the caller has read it already.

    Returns:
        The loaded model in eval mode and its provenance.

    Raises:
        ExportError: The source is missing, unreachable, not ALBERT, has a config with missing or invalid
            architecture fields, has no weights (and ``random_weights`` is off), or a weights file (or shard)
            that is damaged, unsafe to unpickle, or does not fit the config; one line naming the file and the fix.

    A sharded checkpoint (``model.safetensors.index.json``) loads like a whole one. A checkpoint without the pooler
    head (both ``pooler`` tensors absent) loads without it: ``LoadedModel.pooler`` is False.
    """
    config, where = config or read_config(source, revision)
    local = Path(source)
    if random_weights:
        torch.manual_seed(seed)
        try:
            model = AlbertModel(config, add_pooling_layer=True)
        except RuntimeError as error:
            if "can't allocate memory" not in str(error) and "not enough memory" not in str(error):
                raise
            raise ExportError(f"source={source!r}: its config.json sizes need more memory than this machine has "
                              f"({one_line(error, 160)}); check vocab_size, hidden_size and intermediate_size") from None
        randomize_weights(model, seed)
        return LoadedModel(model.eval(), config, source, revision, True, seed, None)

    weights = local_weights(source, where)
    if weights is None:
        # Fetch (or find in the cache) the weights file first, then load from its snapshot folder: offline with an
        # empty cache, transformers' from_pretrained(hub id) fails with an AttributeError that names nothing.
        fetched = hub_weights(source, revision)
        local, weights = fetched.parent, fetched.name
    use_safetensors = weights.startswith("model.safetensors")  # transformers loads .bin with weights_only=True
    files = weight_files(local, weights)
    for path in files:
        _check_not_lfs_pointer(path)
        if path.suffix == ".safetensors":
            _check_safetensors_format(path)
    from safetensors import SafetensorError

    try:
        # transformers' own size-mismatch error differs by version (4.x: "size mismatch for ..." in a RuntimeError;
        # 5.x: a report in the log, then "You set `ignore_mismatched_sizes` to `False`"), and a tensor the file lacks
        # is only a log line (the model keeps its random init). So let it load, then read what it reports.
        # A checkpoint without the pooler head is built without one, so transformers does not warn that it "should
        # probably TRAIN this model" beside the export's own note.
        stored = _stored_names(local / weights)
        with _quiet_loading_report():
            model, info = AlbertModel.from_pretrained(
                str(local),
                config=config,
                add_pooling_layer=stored is None or bool(set(POOLER_KEYS) & stored),
                use_safetensors=use_safetensors,
                trust_remote_code=False,
                attn_implementation="eager",
                ignore_mismatched_sizes=True,
                output_loading_info=True,
            )
    except (OSError, pickle.UnpicklingError, SafetensorError) as error:
        raise weights_failure(_damaged_file(files) or local / weights, error) from error
    except Exception as error:
        # torch.load on a damaged .bin, which transformers 5 (and 4.57 for a shard) lets through with whatever it
        # raised: EOFError for an empty file, KeyError or IndexError for junk, RuntimeError for a truncated zip. A file
        # that fails to load alone is named; if each loads alone, the error is not the files' and goes on as it is.
        damaged = _damaged_file(files)
        if damaged is not None:
            raise weights_failure(damaged, error) from error
        integer = _integer_weight(files)  # loads alone, but a weight stored as integers cannot become a parameter
        if integer is None:
            raise
        path, name, dtype = integer
        raise ExportError(f"{path}: tensor {name} is stored as {dtype}, but ALBERT's weights are floating point (float32, "
                          "float16 or bfloat16); the checkpoint is damaged or was not saved from an ALBERT model: use an intact "
                          "copy of it") from error
    # entries are names (4.x) or (name, file's shape, model's shape) (5.x)
    mismatched = sorted(entry if isinstance(entry, str) else entry[0] for entry in info.get("mismatched_keys") or ())
    if mismatched:
        raise ExportError(f"{local / weights}: the weights do not fit config.json ({len(mismatched)} tensors have other shapes, "
                          f"e.g. {mismatched[0]}); use the config.json that came with these weights")
    names = (key.removeprefix("albert.") for key in info.get("unexpected_keys") or ())
    unexpected = sorted(name for name in names if name.startswith(MODEL_PARTS) and name.split(".")[-1] not in BUFFERS)
    if unexpected:
        raise ExportError(f"{local / weights}: holds {len(unexpected)} tensors of the ALBERT model that config.json has no place for "
                          f"(e.g. {', '.join(unexpected[:2])}), which would be left out; the config.json does not match these "
                          "weights: use the config.json saved with them")
    # transformers 4.57 leaves a tensor that a shard index lists but its shard lacks on the meta device, unreported
    meta = {name for name, tensor in model.state_dict().items() if tensor.is_meta}
    missing = sorted(set(info.get("missing_keys") or ()) | meta)
    if set(POOLER_KEYS) <= set(missing):
        # both pooler tensors absent: a checkpoint of a model without the head (not counted as damage below). Drop the
        # randomly initialised head, so no graph can output it (AlbertModel skips a None pooler).
        model.pooler = None
        missing = [name for name in missing if name not in POOLER_KEYS]
    pooler = model.pooler is not None
    if missing:
        raise ExportError(f"{local / weights}: the weights lack {len(missing)} tensors of the ALBERT model config.json describes "
                          f"(e.g. {missing[0]}), which would keep random values; use the checkpoint's complete weights file "
                          "and the config.json that came with it")
    # transformers 5 keeps a checkpoint's own dtype (4.57 loads into float32): an fp16 checkpoint gave an fp16
    # "model_fp32.onnx" that failed its gate. Widening fp16/bf16 to fp32 is exact.
    model = model.float()
    _check_finite(model, local / weights)
    return LoadedModel(model.eval(), config, source, revision, False, None, weights, pooler)


def _check_safetensors_format(path: Path) -> None:
    """Refuse a safetensors file whose metadata says it was saved by TensorFlow or Flax, or by nothing transformers knows.

    transformers hands a "tf" or "flax" file to its TensorFlow or Flax loader (a ModuleNotFoundError without them) and
    refuses any other format with a message that names no file. No metadata, "pt" and "mlx" load as PyTorch tensors.

    Raises:
        ExportError: Such a file, or a damaged one, named.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
    except (OSError, SafetensorError) as error:
        raise weights_failure(path, error) from error
    found = None if metadata is None else metadata.get("format")
    # transformers 5 loads any other metadata as PyTorch tensors (it checks the format only when it saves)
    if metadata is None or found in ("pt", "mlx") or (TRANSFORMERS_MAJOR >= 5 and found not in ("tf", "flax")):
        return
    if found in ("tf", "flax"):
        framework = "TensorFlow" if found == "tf" else "Flax"
        raise ExportError(f"{path}: a {framework}-saved safetensors file (its metadata says format={found!r}), which the export cannot "
                          f"read; convert it to PyTorch safetensors (load it with transformers' from_{found}=True and save_pretrained), "
                          "or pass the checkpoint's PyTorch weights")
    says = f"says format={found!r}" if "format" in metadata else "names no format"
    raise ExportError(f"{path}: its metadata {says}, none of the formats transformers loads ('pt', 'tf', 'flax', 'mlx'); the file "
                      "was not saved by save_pretrained: save the weights again with it, or download the checkpoint again")


@contextlib.contextmanager
def _quiet_loading_report() -> Iterator[None]:
    """Hold back transformers' warnings while it loads weights: the tensors it left unused, missing or of other shapes, a
    paragraph that tells users "This IS expected if ..." above the export's own one-line refusal of the same tensors
    (load_albert reads them from the loading info and refuses those that matter). Errors still show.

    A filter, not a level: transformers 4.57 logs the tensor-parallel plan of every layer when this logger's level is
    WARNING or higher.
    """
    logger = logging.getLogger("transformers.modeling_utils")

    def errors_only(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR

    logger.addFilter(errors_only)
    try:
        yield
    finally:
        logger.removeFilter(errors_only)


def _stored_names(path: Path) -> set[str] | None:
    """The tensor names a weights file holds, as AlbertModel names them (a head model's ``albert.`` prefix dropped):
    from a shard index's weight_map, a safetensors header or a zip-format pytorch_model.bin (mapped, not read); None
    where only loading the file would tell (a legacy-format or damaged .bin).

    Raises:
        SafetensorError, OSError: A damaged or unreadable safetensors file (reported as load_albert reports them).
    """
    if path.name in SHARD_INDEXES:
        names = read_json(path)["weight_map"]  # checked by shard_files
    elif path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            names = list(handle.keys())
    else:
        try:  # a zip-format .bin maps lazily: its names without reading its tensors
            stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # legacy format or damaged: the load right after reads (or reports) it in full
            return None
        if not isinstance(stored, dict):  # not a state dict: the load right after reports it
            return None
        names = [name for name in stored if isinstance(name, str)]
    return {name.removeprefix("albert.") for name in names}


def _damaged_file(files: list[Path]) -> Path | None:
    """The first of ``files`` (the weights file, or a checkpoint's shards) that fails to load alone; None if each loads.

    Only a probe after loading them together failed: that error, not this one, is what the user is told.
    """
    from safetensors.torch import load_file

    for path in files:
        try:
            load_file(path) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # any failure to load it alone marks this file; the caller reports the load's error
            return path
    return None


def _integer_weight(files: list[Path]) -> tuple[Path, str, str] | None:
    """The first tensor of ``files`` that is not floating point, other than the integer buffers a checkpoint may keep
    (``position_ids``, ``token_type_ids``): (file, name, dtype), or None.

    Raises:
        ExportError: A pytorch_model.bin (or shard) that holds no state dict: a bare tensor, a list, other values.
    """
    from safetensors import safe_open

    for path in files:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as handle:
                dtypes = {name: handle.get_slice(name).get_dtype() for name in handle.keys()}
            found = {name: dtype for name, dtype in dtypes.items() if not dtype.startswith(("F", "BF"))}
        else:
            tensors = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(tensors, dict) or not all(isinstance(tensor, torch.Tensor) for tensor in tensors.values()):
                # a bare tensor or a list (torch.save(model.parameters())): transformers' load failed on it with a message
                # that names no file
                what = "a dict with values other than tensors" if isinstance(tensors, dict) else f"a {type(tensors).__name__}"
                raise ExportError(f"{path}: holds {what}, not a state dict of tensor names to tensors; the file was not saved from a "
                                  "model's weights: save them with save_pretrained (or torch.save(model.state_dict())), or use the "
                                  "checkpoint's own weights file")
            found = {name: str(tensor.dtype).removeprefix("torch.") for name, tensor in tensors.items() if not tensor.is_floating_point()}
        for name, dtype in found.items():
            if not name.endswith(("position_ids", "token_type_ids")):
                return path, name, dtype
    return None


def _check_finite(model: AlbertModel, path: Path) -> None:
    """Refuse weights holding NaN or infinity: the gates only reach the embedding rows the validation texts use, so
    such a row passed every gate and gave NaN vectors for every text with that token.

    Raises:
        ExportError: A tensor holds a non-finite value (naming it, and the row for the word embeddings).
    """
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = (~torch.isfinite(tensor)).nonzero()[0].tolist()
            raise ExportError(f"{path}: tensor {name} holds NaN or infinity (first at index {bad}); the checkpoint is damaged: "
                              "use an intact copy of it")
