"""The main model behind an environment: given, cached, shipped, or pre-trained on first use.

The env package only obtains a model; training it is :mod:`main_model.train`'s.

An environment id must give a meaningful env at once, so the main model comes from (in this
order) a ``model`` object, a ``checkpoint`` path, the cached pretrained checkpoint for the dataset
(``<cache>/models/<DATASET>.pt``, what ``python -m dynalay_env.pretrain`` writes), the trained
model shipped with the package (``dynalay_env/shipped/<DATASET>.pt``, Fashion-MNIST; its
provenance is the JSON beside it), or it is pre-trained on the dataset's ``train`` split on
first use. Never silently an untrained model, and never hours of pre-training unannounced: the
time is estimated from the first timed batches and printed, and a pre-training estimated over
``pretrain_limit_minutes`` (default 10, or ``$DYNALAY_PRETRAIN_LIMIT_MINUTES``) is refused with
:class:`~main_model.train.PretrainTooLongError`, which lists the ways out.

When ``widths`` is given, a cached or shipped model is used only if it has those widths.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from dynalay_env.data import DatasetSpec, ImageSplit, TextSpec, TextSplit, cache_dir
from main_model import DynaLayConfig, DynaLayNet, DynaLaySeqConfig, load_main_model, save_main_model
from main_model.train import PretrainTooLongError, pretrain_main_model

#: Widths of a main model pre-trained on first use (the thesis's network).
DEFAULT_WIDTHS = (64, 128, 256)
#: Hidden sizes of a text model's three LSTM layers pre-trained on first use.
DEFAULT_TEXT_WIDTHS = (64, 64, 64)
#: Trained main models that ship with the package, ``<DATASET>.pt`` and its provenance JSON.
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
PRETRAIN_LIMIT_VARIABLE = "DYNALAY_PRETRAIN_LIMIT_MINUTES"
DEFAULT_PRETRAIN_LIMIT_MINUTES = 10.0


def config_for(
    spec: DatasetSpec, widths: tuple[int, ...] = DEFAULT_WIDTHS, **changes
) -> DynaLayConfig:
    """The :class:`DynaLayConfig` for a dataset's image shape and classes."""
    return DynaLayConfig(
        in_channels=spec.in_channels,
        image_size=spec.image_size,
        num_classes=spec.num_classes,
        widths=tuple(widths),
        **changes,
    )


def model_config_for(
    split: ImageSplit | TextSplit, widths: tuple[int, ...] | None = None, **changes
) -> DynaLayConfig | DynaLaySeqConfig:
    """The config of a main model for ``split``'s data: :func:`config_for` for images; for text
    a :class:`~main_model.DynaLaySeqConfig` of its task, length, classes and vocabulary size
    (``strides`` must then be None: LSTM layers have none). ``widths``: the dataset's default
    when None."""
    widths = tuple(widths) if widths is not None else default_widths(split.spec)
    if isinstance(split, ImageSplit):
        return config_for(split.spec, widths, **changes)
    if changes.pop("strides", None) is not None:
        raise ValueError(f"strides do not apply to the LSTM layers of a {split.spec.name} model")
    return DynaLaySeqConfig(
        vocab_size=len(split.vocabulary),
        seq_len=split.seq_len,
        task=split.spec.task,
        num_classes=split.num_classes,
        widths=widths,
        **changes,
    )


def default_widths(spec: DatasetSpec | TextSpec) -> tuple[int, ...]:
    """Widths of a model pre-trained on first use: the thesis's CNN, or three LSTM layers."""
    return DEFAULT_TEXT_WIDTHS if isinstance(spec, TextSpec) else DEFAULT_WIDTHS


def cached_model_path(spec: DatasetSpec) -> Path:
    """Where the pretrained main model for ``spec`` is cached."""
    return cache_dir() / "models" / f"{spec.name}.pt"


def shipped_model_path(spec: DatasetSpec) -> Path | None:
    """The trained main model for ``spec`` shipped with the package, or None."""
    path = SHIPPED_DIR / f"{spec.name}.pt"
    return path if path.is_file() else None


def shipped_model_provenance(spec: DatasetSpec) -> dict | None:
    """How the shipped model for ``spec`` was made (command, seed, per-path test accuracy...)."""
    path = SHIPPED_DIR / f"{spec.name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def resolve_pretrain_limit(limit: float | None = None) -> float:
    """The pre-training time allowed on first use: ``limit``, else the environment variable
    ``DYNALAY_PRETRAIN_LIMIT_MINUTES``, else 10 minutes."""
    if limit is None:
        text = os.environ.get(PRETRAIN_LIMIT_VARIABLE, "")
        try:
            limit = float(text) if text else DEFAULT_PRETRAIN_LIMIT_MINUTES
        except ValueError:
            raise ValueError(
                f"${PRETRAIN_LIMIT_VARIABLE}={text!r} is not a number of minutes"
            ) from None
    if limit <= 0:
        raise ValueError(f"the pre-training limit must be > 0 minutes, got {limit}")
    return float(limit)


def _stored_model(
    path: Path, widths: tuple[int, ...] | None, device: torch.device | str
) -> DynaLayNet | None:
    """The model saved at ``path`` when it has ``widths`` (any when None), else None."""
    loaded, _ = load_main_model(path, device)
    return loaded if widths is None or loaded.config.widths == tuple(widths) else None


def obtain_main_model(
    spec: DatasetSpec,
    *,
    model: DynaLayNet | None = None,
    checkpoint: str | os.PathLike | None = None,
    train_split: ImageSplit | None = None,
    pretrain_epochs: int = 20,
    widths: tuple[int, ...] | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    pretrain_limit_minutes: float | None = None,
) -> DynaLayNet:
    """The main model for an environment on ``spec``; see the module docstring for the order.

    Raises:
        PretrainTooLongError: nothing cached or shipped fits and pre-training one was estimated
            over the limit (the message lists the ways out).
    """
    if model is not None:
        return model
    if checkpoint is not None:
        loaded, _ = load_main_model(checkpoint, device)
        return loaded
    widths = None if widths is None else tuple(widths)
    say = print if progress else lambda *args, **kwargs: None
    for kind, path in (("cached", cached_model_path(spec)), ("shipped", shipped_model_path(spec))):
        if path is not None and path.is_file():
            stored = _stored_model(path, widths, device)
            if stored is not None:
                say(f"DynaLay: using the {kind} pretrained main model {path}", file=sys.stderr)
                return stored
            say(f"DynaLay: the {kind} model {path} does not have widths {widths}", file=sys.stderr)
    path = cached_model_path(spec)
    if train_split is None:
        raise ValueError(
            f"no main model for {spec.name}: pass checkpoint=..., or model=..., or data to "
            f"pre-train one (python -m dynalay_env.pretrain --dataset {spec.name})"
        )
    widths = widths or default_widths(spec)
    limit = resolve_pretrain_limit(pretrain_limit_minutes)
    say(
        f"DynaLay: no trained {spec.name} main model with widths {widths} is cached ({path}) or "
        f"shipped; pre-training one on its train split for {pretrain_epochs} epoch(s) (done once, "
        f"then cached there)",
        file=sys.stderr,
    )
    try:
        trained = pretrain_main_model(
            train_split,
            epochs=pretrain_epochs,
            config=model_config_for(train_split, widths),
            device=device,
            progress=progress,
            time_limit_s=60 * limit,
        )
    except PretrainTooLongError as error:
        raise PretrainTooLongError(
            f"DynaLay: {error} Ways out: pass checkpoint=PATH (a trained main model); or smaller "
            f"widths=(16, 32, 64) and/or fewer pretrain_epochs=N; or pre-train once, with no "
            f"limit, by running `python -m dynalay_env.pretrain --dataset {spec.name} "
            f"--widths {' '.join(map(str, widths))} --epochs {pretrain_epochs}` (later calls use "
            f"its cached model); or raise the limit with pretrain_limit_minutes=M or "
            f"{PRETRAIN_LIMIT_VARIABLE}=M (now {limit:g} minutes)."
        ) from None
    save_main_model(trained, path, metadata={"dataset": spec.name, "epochs": pretrain_epochs})
    say(f"DynaLay: cached the pretrained main model at {path}", file=sys.stderr)
    return trained
