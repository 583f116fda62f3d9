"""What the image and the text datasets share: split names, the holdout, provenance, errors.

- :func:`carve_rows`: the seeded holdout (and ``train_size`` subset) carved out of a training
  set, the same rule for images and text.
- :func:`training_provenance` / :func:`trained_rows`: what a main model trained on a split
  records of it (which rows it saw), and :func:`check_holdout_unseen`, which refuses a holdout
  the model trained on (:class:`SplitOverlapError`).
- :func:`cache_dir`: the project's cache; :class:`DataNotFoundError`: no copy of a dataset.

Both :mod:`dynalay_env.data.images` and :mod:`dynalay_env.data.text` import this module, never
each other.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

#: The splits of every dataset: the main model's, the agent's (unseen by the main model), test.
SPLITS = ("train", "holdout", "test")


class DataNotFoundError(FileNotFoundError):
    """No copy of a dataset was found; the message lists where we looked and what to run."""


def cache_dir() -> Path:
    """The project's cache: ``$DYNALAY_CACHE`` or ``~/.cache/dynalay``."""
    return Path(os.environ.get("DYNALAY_CACHE", Path.home() / ".cache" / "dynalay"))


def carve_rows(
    n: int, holdout_size: int, seed: int, train_size: int | None = None, what: str = "the data"
) -> tuple[Tensor, Tensor]:
    """(holdout rows, train rows) of a training set of ``n`` samples, for images and text alike.

    The holdout is ``holdout_size`` rows of a permutation seeded with ``seed`` (sorted); the
    train rows are the rest (sorted), or ``train_size`` of them chosen by another permutation
    with the same seed. ``what`` names the data in the error for a bad ``holdout_size``.
    """
    if not 0 < holdout_size < n:
        raise ValueError(f"holdout_size must be in [1, {n - 1}] for {what}, got {holdout_size}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    holdout_rows, train_rows = (
        order[:holdout_size].sort().values,
        order[holdout_size:].sort().values,
    )
    if train_size is not None and train_size < len(train_rows):
        keep = torch.randperm(len(train_rows), generator=torch.Generator().manual_seed(seed))
        train_rows = train_rows[keep[:train_size]]
    return holdout_rows, train_rows


def training_provenance(train_split: Any) -> dict:
    """What a main model trained on ``train_split`` (an image or a text split) records in its
    checkpoint.

    ``train_rows`` marks, bit by bit (``numpy.packbits``), which images of the dataset's
    torchvision training set it saw: 7.5 KB for Fashion-MNIST's 60,000, exact for any holdout
    seed or training subset.
    """
    seen = np.zeros(int(train_split.indices.max()) + 1, dtype=bool)
    seen[train_split.indices.cpu().numpy()] = True
    return {
        "dataset": train_split.spec.name,
        "train_rows": torch.from_numpy(np.packbits(seen)),
        "n_train_rows": int(seen.sum()),
    }


def trained_rows(provenance: dict) -> np.ndarray:
    """Indices into the torchvision training set that a model with ``provenance`` saw."""
    return np.flatnonzero(np.unpackbits(provenance["train_rows"].numpy()))


class SplitOverlapError(ValueError):
    """A main model was trained on images that an agent would use as its unseen holdout."""


def check_holdout_unseen(provenance: dict, holdout: Any, model_name: str) -> None:
    """Refuse a holdout that holds images the main model trained on.

    The agent learns on the holdout because there the main model makes the mistakes it makes
    on new images; on training images every path is right and the agent learns nothing.
    Models without a record (trained elsewhere) cannot be checked: a warning says so.
    """
    if "train_rows" not in provenance:
        warnings.warn(
            f"{model_name} does not record which images it was trained on; DynaLay cannot "
            f"check that the {holdout.spec.name} holdout ({len(holdout)} images) is unseen by it",
            stacklevel=2,
        )
        return
    if provenance.get("dataset") != holdout.spec.name:
        raise SplitOverlapError(
            f"{model_name} was trained on {provenance.get('dataset')}, not {holdout.spec.name}"
        )
    overlap = np.intersect1d(trained_rows(provenance), holdout.indices.cpu().numpy())
    if overlap.size:
        raise SplitOverlapError(
            f"{model_name} was trained on {overlap.size} of the {len(holdout)} images of this "
            f"{holdout.spec.name} holdout (training-set indices {overlap[:5].tolist()}...): the "
            f"agent would learn on images the model already knows. Use the holdout the model "
            f"was trained beside (the same holdout_size and data seed as when it was trained) "
            f"or a model trained without these images."
        )
