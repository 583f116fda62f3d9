"""The main model behind an environment: given, cached, or pre-trained on first use.

An environment id must give a meaningful env, so the main model comes from (in this order) a
``model`` object, a ``checkpoint`` path, the cached pretrained checkpoint for the dataset
(``<cache>/models/<DATASET>.pt``), or it is pre-trained on the dataset's ``train`` split on first
use, with a progress bar and the cache path printed. Never silently an untrained model.

Run ``python -m dynalay_env.pretrain --dataset FashionMNIST`` to pre-train and cache explicitly.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from dynalay_env.data import DatasetSpec, ImageSplit, cache_dir, training_provenance
from main_model import DynaLayConfig, DynaLayNet, load_main_model, save_main_model
from main_model.train import EpochStats, evaluate_paths, fit

DEFAULT_WIDTHS = (64, 128, 256)


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


def cached_model_path(spec: DatasetSpec) -> Path:
    """Where the pretrained main model for ``spec`` is cached."""
    return cache_dir() / "models" / f"{spec.name}.pt"


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
    recipe: str = "dynalay",
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[DynaLayNet, list[EpochStats]]:
    """Train a main model from scratch on ``train_split`` with ``recipe`` (see
    :mod:`main_model.train`; ``plain`` gives the plain-CNN baseline), Adam with cosine decay.

    Returns the model (in eval mode, recording its training rows in ``provenance``, see
    :func:`~dynalay_env.data.training_provenance`) and one :class:`EpochStats` per epoch.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    torch.manual_seed(seed)
    device = torch.device(device)
    model = DynaLayNet(config or config_for(train_split.spec)).to(device)
    split = train_split.to(device)
    generator = torch.Generator().manual_seed(seed)
    batches_per_epoch = -(-len(split) // batch_size)
    bar = tqdm(
        total=epochs * batches_per_epoch,
        desc=f"train {split.spec.name} main model ({recipe}, {epochs} epochs)",
        disable=not progress,
        file=sys.stderr,
    )

    def advance(loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

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
    model.provenance = {**training_provenance(train_split), "recipe": recipe, "epochs": epochs}
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
        summary = ", ".join(
            f"{'NOP' if a == 0 else f'loop-{a}'} {acc:.3f}" for a, acc in accuracy.items()
        )
        print(f"main model accuracy on {eval_split.spec.name} per path: {summary}", file=sys.stderr)
    return model


def obtain_main_model(
    spec: DatasetSpec,
    *,
    model: DynaLayNet | None = None,
    checkpoint: str | os.PathLike | None = None,
    train_split: ImageSplit | None = None,
    pretrain_epochs: int = 20,
    widths: tuple[int, ...] = DEFAULT_WIDTHS,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> DynaLayNet:
    """The main model for an environment on ``spec``; see the module docstring for the order."""
    if model is not None:
        return model
    if checkpoint is not None:
        loaded, _ = load_main_model(checkpoint, device)
        return loaded
    path = cached_model_path(spec)
    if path.is_file():
        loaded, _ = load_main_model(path, device)
        if progress:
            print(f"DynaLay: using the cached pretrained main model {path}", file=sys.stderr)
        return loaded
    if train_split is None:
        raise ValueError(
            f"no main model for {spec.name}: pass checkpoint=..., or model=..., or data to "
            f"pre-train one (python -m dynalay_env.pretrain --dataset {spec.name})"
        )
    print(
        f"DynaLay: no pretrained main model for {spec.name} at {path}; pre-training one on its "
        f"train split for {pretrain_epochs} epoch(s) (done once, then cached there)",
        file=sys.stderr,
    )
    trained = pretrain_main_model(
        train_split,
        epochs=pretrain_epochs,
        config=config_for(spec, widths),
        device=device,
        progress=progress,
    )
    save_main_model(trained, path, metadata={"dataset": spec.name, "epochs": pretrain_epochs})
    print(f"DynaLay: cached the pretrained main model at {path}", file=sys.stderr)
    return trained
