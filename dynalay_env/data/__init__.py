"""Datasets for DynaLay, offline first: images (torchvision's) and text (IMDB, WikiText-2).

- :mod:`dynalay_env.data.splits`: what both share (split names, the seeded holdout,
  provenance and the holdout check, the cache folder, :class:`DataNotFoundError`);
- :mod:`dynalay_env.data.images`: :class:`DatasetSpec`, :data:`DATASETS`, :class:`ImageSplit`
  and the torchvision/system lookup;
- :mod:`dynalay_env.data.text`: :class:`TextSpec`, :data:`TEXT_DATASETS`, :class:`TextSplit`,
  tokenizers and the standard layouts' readers.

This package's names are the public API: :func:`get_spec` and :func:`load_splits` for any
dataset, and the names above. A new torchvision image set is one :data:`DATASETS` entry
(``images.py``); a new text set is a :data:`TEXT_DATASETS` entry and its reader (``text.py``).
"""

from __future__ import annotations

import os

from dynalay_env.data.images import (
    DATASETS,
    DEFAULT_IMAGE_HOLDOUT,
    DatasetSpec,
    ImageSplit,
    image_spec,
    load_image_splits,
    locate,
    random_splits,
    split_training_set,
)
from dynalay_env.data.splits import (
    SPLITS,
    DataNotFoundError,
    SplitOverlapError,
    cache_dir,
    carve_rows,
    check_holdout_unseen,
    trained_rows,
    training_provenance,
)
from dynalay_env.data.text import (
    TEXT_DATASETS,
    TextSpec,
    TextSplit,
    get_text_spec,
    load_text_splits,
)

__all__ = [
    "DATASETS",
    "DEFAULT_IMAGE_HOLDOUT",
    "SPLITS",
    "TEXT_DATASETS",
    "DataNotFoundError",
    "DatasetSpec",
    "ImageSplit",
    "SplitOverlapError",
    "TextSpec",
    "TextSplit",
    "cache_dir",
    "carve_rows",
    "check_holdout_unseen",
    "get_spec",
    "get_text_spec",
    "image_spec",
    "load_image_splits",
    "load_splits",
    "load_text_splits",
    "locate",
    "random_splits",
    "split_training_set",
    "trained_rows",
    "training_provenance",
]


def get_spec(name: str) -> DatasetSpec | TextSpec:
    """The spec of ``name`` (case-insensitive): a :class:`DatasetSpec` for the images, a
    :class:`TextSpec` for the text datasets; a clear error for unknown names."""
    spec = image_spec(name) or get_text_spec(name)
    if spec is None:
        raise ValueError(
            f"unknown dataset {name!r}; choose one of {sorted(DATASETS | TEXT_DATASETS)}"
        )
    return spec


def load_splits(
    name: str,
    data_dir: str | os.PathLike | None = None,
    holdout_size: int | None = None,
    seed: int = 0,
    download: bool = False,
    train_size: int | None = None,
    **text_options: int | None,
) -> dict[str, ImageSplit] | dict[str, TextSplit]:
    """Load ``train``, ``holdout`` and ``test`` splits of dataset ``name`` (on the CPU).

    The holdout is ``holdout_size`` training samples chosen by a permutation seeded with
    ``seed``; ``train_size`` keeps that many of the rest, chosen by another permutation with the
    same seed. The same arguments always give the same split. ``holdout_size=None``: the
    dataset's default (:data:`DEFAULT_IMAGE_HOLDOUT` images, or the text dataset's own). Text
    datasets are read by :func:`load_text_splits` (``text_options``: its ``seq_len`` and
    ``max_vocab``).
    """
    spec = get_spec(name)
    if isinstance(spec, TextSpec):
        return load_text_splits(
            spec.name, data_dir, holdout_size, seed, download, train_size, **text_options
        )
    return load_image_splits(spec, data_dir, holdout_size, seed, download, train_size)
