"""Load an ALBERT checkpoint: a hub id, a local HF-layout folder, or a shipped size config (random weights)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from transformers import AlbertConfig, AlbertModel

from .errors import ExportError

SHIPPED_SIZES = tuple(
    sorted(p.name[: -len(".json")] for p in resources.files(__package__).joinpath("configs").iterdir() if p.name.endswith(".json"))
)


@dataclass
class LoadedModel:
    """A PyTorch ALBERT in eval mode plus where it came from."""

    model: AlbertModel
    config: AlbertConfig
    source: str
    revision: str | None
    random_weights: bool
    seed: int | None
    weights_file: str | None


def _shipped_name(source: str) -> str | None:
    """The shipped size config that ``source`` names (``albert-base-v2`` or ``albert/albert-base-v2``), if any."""
    name = source.split("/")[-1]
    return name if name in SHIPPED_SIZES and source in (name, f"albert/{name}") else None


def _read_config(source: str, revision: str | None) -> AlbertConfig:
    local = Path(source)
    shipped = _shipped_name(source)
    if local.is_dir():
        config_path = local / "config.json"
        if not config_path.is_file():
            raise ExportError(f"source={source!r}: folder has no config.json; pass a Hugging Face ALBERT folder or hub id")
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    elif local.exists():
        raise ExportError(f"source={source!r} is a file; pass the checkpoint folder that holds config.json")
    elif shipped is not None:
        # The published configs ship with the package, so a size can be named with no download.
        raw = json.loads(resources.files(__package__).joinpath("configs", f"{shipped}.json").read_text(encoding="utf-8"))
    else:
        from transformers import AutoConfig  # the hub path: what users with internet get

        raw = AutoConfig.from_pretrained(source, revision=revision, trust_remote_code=False).to_dict()
    model_type = raw.get("model_type")
    if model_type != "albert":
        raise ExportError(
            f"source={source!r} is a {model_type!r} checkpoint, not ALBERT (model_type must be 'albert'); "
            "albert-onnx exports ALBERT models only"
        )
    config = AlbertConfig.from_dict(raw)
    # Eager attention: ONNX Runtime's Attention fusion matches the eager graph, not SDPA's.
    config._attn_implementation = "eager"
    return config


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


def load_albert(source: str, *, revision: str | None = None, random_weights: bool = False, seed: int = 0) -> LoadedModel:
    """Load an ALBERT model for export.

    Args:
        source: Hub id (``albert/albert-base-v2``), local folder in HF layout, or a shipped size name
            (``albert-large-v2``; random weights only).
        revision: Hub revision (branch, tag or commit); ignored for local folders.
        random_weights: Build from the config with seeded random weights instead of loading weights.
        seed: Seed for ``random_weights``.

    Returns:
        The loaded model in eval mode and its provenance.

    Raises:
        ExportError: The source is not ALBERT, has no weights (and ``random_weights`` is off), or is malformed.
    """
    config = _read_config(source, revision)
    local = Path(source)
    if random_weights:
        torch.manual_seed(seed)
        model = AlbertModel(config, add_pooling_layer=True)
        randomize_weights(model, seed)
        return LoadedModel(model.eval(), config, source, revision, True, seed, None)

    if local.is_dir():
        if (local / "model.safetensors").is_file():
            weights, use_safetensors = "model.safetensors", True
        elif (local / "pytorch_model.bin").is_file():
            weights, use_safetensors = "pytorch_model.bin", False  # transformers loads .bin with weights_only=True
        else:
            raise ExportError(
                f"source={source!r} has no model.safetensors or pytorch_model.bin; "
                "add the weights, or pass --random-weights to export the architecture with seeded random weights"
            )
    elif _shipped_name(source) == source:
        raise ExportError(
            f"source={source!r} is a size name with no weights; pass --random-weights, or the hub id albert/{source}"
        )
    else:
        weights, use_safetensors = None, None  # hub: transformers prefers safetensors when the repo has them
    model = AlbertModel.from_pretrained(
        source,
        config=config,
        revision=None if local.is_dir() else revision,
        use_safetensors=use_safetensors,
        trust_remote_code=False,
        attn_implementation="eager",
    )
    return LoadedModel(model.eval(), config, source, revision, False, None, weights)
