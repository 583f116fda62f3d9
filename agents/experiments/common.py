"""What every study shares: its data splits, one way to build the trainer's config of its runs,
one mean ± std over seeds, one way to say what it is doing, and the few file helpers of its
reports."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.config import TrainConfig
from dynalay_env.data import load_splits
from dynalay_env.registry import dataset_of
from main_model.io import atomic_write


def experiment_splits(config: Any, device) -> dict[str, Any]:
    """The train/holdout/test splits of a study's config (anything with ``env``, ``data_dir``,
    ``holdout_size``, ``data_seed``, ``train_size`` and ``eval_size``: the table's and the
    reproduction's), the test split cut to ``eval_size``, on ``device``."""
    splits = load_splits(
        dataset_of(config.env),
        config.data_dir,
        config.holdout_size,
        config.data_seed,
        train_size=config.train_size,
    )
    if config.eval_size is not None and config.eval_size < len(splits["test"]):
        splits["test"] = splits["test"].subset(torch.arange(config.eval_size))
    return {name: split.to(device) for name, split in splits.items()}


def train_config_from(study: Any, names: Sequence[str], **values: Any) -> TrainConfig:
    """The :class:`~agents.config.TrainConfig` of one of a study's runs: the fields ``names``
    copied from the study's config ``study`` (each a setting of the same name and meaning in
    both), then ``values`` (what the run fixes: its algorithm, seed, checkpoint...; a value
    given for a copied field wins, e.g. the beta of one agent among several); every other field
    has the trainer's default."""
    trainer_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(names) - trainer_fields)
    if unknown:
        raise ValueError(f"{unknown} are not fields of TrainConfig")
    return TrainConfig(**{**{name: getattr(study, name) for name in names}, **values})


def sample_std(values: Any, axis: int | None = None) -> Any:
    """The sample standard deviation (``ddof=1``) along ``axis``: the spread the tables quote as
    "mean ± std over seeds"; 0 for a single value."""
    array = np.asarray(values, dtype=np.float64)
    count = array.size if axis is None else array.shape[axis]
    return array.std(axis=axis, ddof=1) if count > 1 else np.zeros_like(array.mean(axis=axis))


def mean_std(values: Sequence[float], count: bool = False) -> dict[str, float]:
    """``{"mean", "std"}`` of ``values`` (the std: :func:`sample_std`), and ``"n"`` with
    ``count``."""
    array = np.asarray(values, dtype=np.float64)
    stats: dict[str, Any] = {"mean": float(array.mean()), "std": float(sample_std(array))}
    if count:
        stats["n"] = int(array.size)
    return stats


def paired_interval(
    differences: np.ndarray, draws: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean of (N,) per-image paired differences and its ``level`` percentile-bootstrap
    interval: ``draws`` resamplings of the N images with replacement (seeded), the mean of
    each; returns ``(mean, low, high)``. Constant differences give a zero-width interval."""
    differences = np.asarray(differences, dtype=np.float64)
    if differences.ndim != 1 or len(differences) == 0:
        raise ValueError(
            f"paired differences must be a non-empty (N,) array, got {differences.shape}"
        )
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, len(differences), (draws, len(differences)))].mean(1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail]).tolist()
    return float(differences.mean()), float(low), float(high)


def say(study: str, message: str) -> None:
    """A study's progress line on stderr (``table: ...``, ``reproduce: ...``)."""
    print(f"{study}: {message}", file=sys.stderr, flush=True)


def write_text(path: Path, text: str) -> Path:
    """``text`` at ``path``, atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def json_scalar(value: Any) -> Any:
    """numpy scalars (verdicts computed with numpy) as the Python values JSON knows; a
    ``default=`` for :func:`json.dumps`."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
