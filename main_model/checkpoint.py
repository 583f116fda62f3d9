"""Save and load a main model: one file with the weights and the config that rebuilds it.

Writes are atomic (:func:`main_model.io.atomic_save`), so a crash never leaves a half-written
checkpoint behind. Loading checks the format, its version and the
architecture, and fails with a :class:`CheckpointError` that names the file and the mismatch.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from main_model.io import atomic_save
from main_model.network import DynaLayConfig, DynaLayNet
from main_model.sequence import DynaLaySeqConfig, DynaLaySeqNet

FORMAT_NAME = "dynalay-main-model"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be used (corrupt, foreign, newer, mismatched)."""


def save_main_model(
    model: DynaLayNet, path: str | os.PathLike, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` (weights, buffers, config, :attr:`~DynaLayNet.provenance`) and optional
    JSON-like ``metadata`` to ``path``."""
    return atomic_save(main_model_payload(model, metadata), path)


def main_model_payload(model: DynaLayNet, metadata: dict[str, Any] | None = None) -> dict:
    """What a checkpoint file holds (CPU tensors, plain values): also embedded in other files
    (the deployable classifier's, :mod:`main_model.adaptive`)."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": metadata or {},
        "provenance": model.provenance,
        **model.checkpoint_fields(),  # the sequence network's architecture tag and vocabulary
    }


def state_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state (names, shapes, dtypes and values): equal digests, same model."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        value = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def read_payload(path: str | os.PathLike, what: str, remedy: str = "") -> Any:
    """The plain values and tensors ``torch.save`` wrote to ``path`` (on the CPU), read without
    running any code from the file (``weights_only``); a file torch cannot read that way raises
    a :class:`CheckpointError` in DynaLay's words: which file, that it is not ``what`` (``"a
    readable DynaLay checkpoint"``), why in one line, and ``remedy``."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        reason = _unreadable_reason(error)
        ending = f"; {remedy}" if remedy else ""
        raise CheckpointError(f"{path} is not {what} ({reason}){ending}") from error


def _unreadable_reason(error: Exception) -> str:
    """One line on why torch could not read a file, instead of its multi-paragraph text."""
    text = str(error)
    if "Weights only load failed" in text or "weights_only" in text:
        return (
            "it holds pickled Python objects, not plain weights: a Stable-Baselines3 agent, "
            "VecNormalize statistics or another program's file?"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return f"corrupt or truncated? torch says: {first[:200]}"


def read_main_model_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a checkpoint's payload without building the model."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"main-model checkpoint {path} does not exist")
    payload = read_payload(path, "a readable DynaLay checkpoint")
    check_main_model_payload(payload, path)
    return payload


def check_main_model_payload(payload: Any, path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` unless ``payload`` is a main model this DynaLay reads."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path} is not a DynaLay main-model checkpoint (no '{FORMAT_NAME}' format tag)"
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}, newer than the version "
            f"{FORMAT_VERSION} this DynaLay reads; upgrade DynaLay to load it"
        )


def load_main_model(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    expected_config: DynaLayConfig | None = None,
) -> tuple[DynaLayNet, dict[str, Any]]:
    """Rebuild the model saved at ``path``; returns ``(model in eval mode, metadata)``.

    ``expected_config``: when given, the checkpoint's architecture (channels, image size,
    classes, widths, strides) must match it, e.g. the dataset an environment runs on.
    """
    payload = read_main_model_file(path)
    model = main_model_from_payload(payload, path, expected_config)
    return model.to(device).eval(), dict(payload.get("metadata", {}))


def main_model_from_payload(
    payload: dict[str, Any],
    path: str | os.PathLike,
    expected_config: DynaLayConfig | None = None,
) -> DynaLayNet:
    """The model of a validated payload (:func:`read_main_model_file`), on the CPU, in training
    mode; ``path`` names the file in errors. See :func:`load_main_model`."""
    sequence = payload.get("architecture") == DynaLaySeqConfig.ARCHITECTURE
    try:
        if sequence:
            config = DynaLaySeqConfig.from_dict(payload["config"])
        else:
            # Checkpoints from before ``spectral_norm`` existed were trained with power iteration.
            config = DynaLayConfig.from_dict({"spectral_norm": "power", **payload["config"]})
    except (TypeError, ValueError, KeyError) as error:
        raise CheckpointError(f"{path} holds an invalid model config: {error}") from error
    if expected_config is not None:
        if type(expected_config) is not type(config):
            raise CheckpointError(
                f"{path} holds a {type(config).__name__} model, not the expected "
                f"{type(expected_config).__name__} one"
            )
        keys = (
            (*DynaLaySeqConfig.DATA_FIELDS, "widths")
            if sequence
            else ("in_channels", "image_size", "num_classes", "widths", "strides")
        )
        mismatches = [
            f"{key}: checkpoint {getattr(config, key)} != expected {getattr(expected_config, key)}"
            for key in keys
            if getattr(config, key) != getattr(expected_config, key)
        ]
        if mismatches:
            raise CheckpointError(
                f"{path} was trained for another architecture: " + "; ".join(mismatches)
            )
    if sequence:
        vocabulary = payload.get("vocabulary")
        if not isinstance(vocabulary, list) or len(vocabulary) != config.vocab_size:
            raise CheckpointError(
                f"{path}: its vocabulary does not match its model (a {config.vocab_size}-token "
                f"embedding); a sequence model is only usable with the vocabulary it learned"
            )
        model = DynaLaySeqNet(config, tuple(vocabulary))
    else:
        model = DynaLayNet(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as error:
        raise CheckpointError(
            f"{path}: weights do not match the architecture in its own config: {error}"
        ) from error
    model.provenance = dict(payload.get("provenance", {}))
    return model
