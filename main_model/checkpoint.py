"""Save and load a main model: one file with the weights and the config that rebuilds it.

Writes are atomic (a temporary file in the same directory, then ``os.replace``), so a crash
never leaves a half-written checkpoint behind. Loading checks the format, its version and the
architecture, and fails with a :class:`CheckpointError` that names the file and the mismatch.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from main_model.network import DynaLayConfig, DynaLayNet
from main_model.sequence import DynaLaySeqConfig, DynaLaySeqNet

FORMAT_NAME = "dynalay-main-model"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be used (corrupt, foreign, newer, mismatched)."""


def _new_file_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_NEW_FILE_MODE = _new_file_mode()


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(temporary_path)``, fsync it, then move it onto ``path`` in one step.

    The temporary file sits in ``path``'s folder and keeps its suffix (SB3 and matplotlib pick
    formats by it); on any failure it is removed and ``path`` is left as it was. The project's
    one atomic writer: everything that must never be seen half-written goes through it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:  # durable before it becomes visible under its name
            os.fsync(handle.fileno())
        os.chmod(tmp, _NEW_FILE_MODE)  # mkstemp makes it private; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


def fsync_directory(folder: str | os.PathLike) -> None:
    """Make the renames and deletions in ``folder`` durable, not just the files' contents.

    A renamed file's bytes are on disk after its own fsync, but its new name is an entry of the
    folder; without this, a power loss can bring back the old name. Best effort: platforms that
    cannot open or fsync a folder (Windows) skip it.
    """
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` through :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_json_atomic(payload: Any, path: str | os.PathLike) -> Path:
    """``payload`` as indented JSON at ``path``, through :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2)))


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


def read_main_model_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a checkpoint's payload without building the model."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"main-model checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"{path} is not a readable DynaLay checkpoint (corrupt or truncated?): {error}"
        ) from error
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
