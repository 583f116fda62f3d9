"""The main model behind an environment: given, cached, shipped, or pre-trained on first use.

An environment id must give a meaningful env at once, so the main model comes from (in this
order) a ``model`` object, a ``checkpoint`` path, the cached pretrained checkpoint for the dataset
(``<cache>/models/<DATASET>.pt``, what ``python -m dynalay_env.pretrain`` writes), the trained
model shipped with the package (``dynalay_env/shipped/<DATASET>.pt``, Fashion-MNIST; its
provenance is the JSON beside it), or it is pre-trained on the dataset's ``train`` split on
first use. Never silently an untrained model, and never hours of pre-training unannounced: the
time is estimated from the first timed batches and printed, and a pre-training estimated over
``pretrain_limit_minutes`` (default 10, or ``$DYNALAY_PRETRAIN_LIMIT_MINUTES``) is refused with
:class:`PretrainTooLongError`, which lists the ways out.

When ``widths`` is given, a cached or shipped model is used only if it has those widths.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from dynalay_env.data import DatasetSpec, ImageSplit, cache_dir, training_provenance
from dynalay_env.text import TextSpec, TextSplit
from main_model import (
    DynaLayConfig,
    DynaLayNet,
    DynaLaySeqConfig,
    DynaLaySeqNet,
    distributed,
    load_main_model,
    save_main_model,
)
from main_model.train import EpochStats, Recipe, evaluate_paths, fit, get_recipe, path_name

#: Widths of a main model pre-trained on first use (the thesis's network).
DEFAULT_WIDTHS = (64, 128, 256)
#: Hidden sizes of a text model's three LSTM layers pre-trained on first use.
DEFAULT_TEXT_WIDTHS = (64, 64, 64)
#: Trained main models that ship with the package, ``<DATASET>.pt`` and its provenance JSON.
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
PRETRAIN_LIMIT_VARIABLE = "DYNALAY_PRETRAIN_LIMIT_MINUTES"
DEFAULT_PRETRAIN_LIMIT_MINUTES = 10.0
#: Batches timed, after a first warm-up batch, before a pre-training's duration is estimated.
_TIMED_BATCHES = 1


class PretrainTooLongError(RuntimeError):
    """Pre-training a main model on first use was estimated to take longer than allowed."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is the GPU when there is one, else the CPU; anything else is taken as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'auto'")
    return resolved


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


def new_main_model(
    config: DynaLayConfig | DynaLaySeqConfig, split: ImageSplit | TextSplit
) -> DynaLayNet | DynaLaySeqNet:
    """An untrained main model of ``config`` for ``split``'s data (with its vocabulary)."""
    if isinstance(config, DynaLaySeqConfig):
        return DynaLaySeqNet(config, split.vocabulary)
    return DynaLayNet(config)


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


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def iterate_batches(
    split: ImageSplit, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[Tensor, Tensor]]:
    """Shuffled (when ``generator`` is given) batches of normalised images and labels."""
    order = (
        torch.randperm(len(split), generator=generator)
        if generator is not None
        else torch.arange(len(split))
    )
    order = order.to(split.device)
    for start in range(0, len(split), batch_size):
        rows = order[start : start + batch_size]
        yield split.normalized(rows), split.labels[rows]


def train_main_model(
    train_split: ImageSplit,
    *,
    epochs: int,
    config: DynaLayConfig | None = None,
    batch_size: int = 64,
    learning_rate: float = 1e-2,
    recipe: str | Recipe = "dynalay",
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    time_limit_s: float | None = None,
) -> tuple[DynaLayNet, list[EpochStats]]:
    """Train a main model from scratch on ``train_split`` with ``recipe`` (see
    :mod:`main_model.train`; ``plain`` gives the plain-CNN baseline), Adam with cosine decay.

    ``time_limit_s``: after the first few batches the whole run's duration is estimated (and
    printed when ``progress``); over this limit, :class:`PretrainTooLongError` is raised then.

    Under torchrun (:mod:`main_model.distributed`) every process calls this with the same
    arguments: ``batch_size`` is the global batch, each process trains on its share of it
    through DDP, and all end with the same weights (pass ``progress`` on rank 0 only).

    Returns the model (in eval mode, recording its training rows in ``provenance``, see
    :func:`~dynalay_env.data.training_provenance`) and one :class:`EpochStats` per epoch.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    torch.manual_seed(seed)
    device = torch.device(device)
    model = new_main_model(config or model_config_for(train_split), train_split).to(device)
    split = train_split.to(device)
    distributed.check_batches(len(split), batch_size)  # several processes: a global batch each
    generator = torch.Generator().manual_seed(seed)
    batches_per_epoch = -(-len(split) // batch_size)
    bar = tqdm(
        total=epochs * batches_per_epoch,
        desc=f"train {split.spec.name} main model ({recipe.name}, {epochs} epochs)",
        disable=not progress,
        file=sys.stderr,
    )

    total_batches = epochs * batches_per_epoch
    batch_ends: list[float] = []

    def advance(loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        if len(batch_ends) <= _TIMED_BATCHES and total_batches > _TIMED_BATCHES + 1:
            batch_ends.append(time.perf_counter())
            if len(batch_ends) == _TIMED_BATCHES + 1:  # the first batch is warm-up: not timed
                per_batch = (batch_ends[-1] - batch_ends[0]) / _TIMED_BATCHES
                check_duration(per_batch, total_batches)

    def check_duration(per_batch: float, total: int) -> None:
        estimate = per_batch * total
        summary = (
            f"training {total} batches ({epochs} epoch(s) of {batches_per_epoch}) of a "
            f"{'/'.join(map(str, model.config.widths))} {split.spec.name} main model takes about "
            f"{format_duration(estimate)} here ({per_batch:.2f} s per batch on {device.type})"
        )
        if time_limit_s is not None and estimate > time_limit_s:
            raise PretrainTooLongError(
                f"{summary}, over the limit of {format_duration(time_limit_s)}."
            )
        if progress:
            bar.write(f"DynaLay: {summary}", file=sys.stderr)

    with bar:
        history = fit(
            model,
            lambda epoch: iterate_batches(split, batch_size, generator),
            epochs=epochs,
            batches_per_epoch=batches_per_epoch,
            recipe=recipe,
            learning_rate=learning_rate,
            seed=seed,
            on_batch=advance,
        )
    model.provenance = {
        **training_provenance(train_split),
        "recipe": recipe.name,
        "epochs": epochs,
    }
    return model.eval(), history


def pretrain_main_model(
    train_split: ImageSplit,
    *,
    eval_split: ImageSplit | None = None,
    progress: bool = True,
    **training,
) -> DynaLayNet:
    """:func:`train_main_model` (``training`` are its keyword arguments), returning the model.

    ``eval_split``: when given, the accuracy of every static path on it is printed at the end.
    """
    model, _ = train_main_model(train_split, progress=progress, **training)
    if eval_split is not None and progress:
        device = next(model.parameters()).device
        accuracy = evaluate_paths(model, iterate_batches(eval_split.to(device), 256))
        summary = ", ".join(f"{path_name(a)} {acc:.3f}" for a, acc in accuracy.items())
        print(f"main model accuracy on {eval_split.spec.name} per path: {summary}", file=sys.stderr)
    return model


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
