"""Datasets for DynaLay, looked up offline first, held on the device as one uint8 tensor.

Lookup order (DESIGN section 6): the user's ``data_dir``; the project's cache
(``$DYNALAY_CACHE`` or ``~/.cache/dynalay``, sub-folder ``data``); system copies (Debian's
``dataset-fashion-mnist`` installs ``/usr/share/datasets/fashion-mnist``); then torchvision's
download, only when ``download=True``. When nothing is found a :class:`DataNotFoundError` lists
every place looked at and the command that installs or downloads the data.

Splits: ``train`` (the main model learns on it), ``holdout`` (a fixed, seeded part of the
training set the main model never sees, for the agent) and ``test``.
"""

from __future__ import annotations

import gzip
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torchvision
from torch import Tensor

from main_model.adaptive import normalize_pixels

if TYPE_CHECKING:
    from dynalay_env.text import TextSpec, TextSplit

SPLITS = ("train", "holdout", "test")


@dataclass(frozen=True)
class DatasetSpec:
    """What DynaLay needs to know about a dataset.

    Attributes:
        name: DynaLay's name (also the env id's middle part), e.g. ``"CIFAR10"``.
        torchvision_class: the ``torchvision.datasets`` class that reads it.
        in_channels, image_size, num_classes: image and label shape.
        mean, std: per-channel normalisation of [0, 1] pixels.
        system_dirs: folders where the OS may install the raw files.
        install_hint: the command that makes the data available.
    """

    name: str
    torchvision_class: str
    in_channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    system_dirs: tuple[str, ...] = ()
    install_hint: str = ""


_DOWNLOAD_HINT = "python -m dynalay_env.pretrain --dataset {name} --download"
DATASETS: dict[str, DatasetSpec] = {
    "CIFAR10": DatasetSpec(
        "CIFAR10",
        "CIFAR10",
        3,
        32,
        10,
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        install_hint=_DOWNLOAD_HINT.format(name="CIFAR10"),
    ),
    "CIFAR100": DatasetSpec(
        "CIFAR100",
        "CIFAR100",
        3,
        32,
        100,
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        install_hint=_DOWNLOAD_HINT.format(name="CIFAR100"),
    ),
    "FashionMNIST": DatasetSpec(
        "FashionMNIST",
        "FashionMNIST",
        1,
        28,
        10,
        (0.2860,),
        (0.3530,),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        install_hint="apt-get install dataset-fashion-mnist   (or: "
        + _DOWNLOAD_HINT.format(name="FashionMNIST")
        + ")",
    ),
    "MNIST": DatasetSpec(
        "MNIST",
        "MNIST",
        1,
        28,
        10,
        (0.1307,),
        (0.3081,),
        install_hint=_DOWNLOAD_HINT.format(name="MNIST"),
    ),
}


class DataNotFoundError(FileNotFoundError):
    """No copy of a dataset was found; the message lists where we looked and what to run."""


def get_spec(name: str) -> DatasetSpec | TextSpec:
    """The spec of ``name`` (case-insensitive): a :class:`DatasetSpec` for the images, a
    :class:`~dynalay_env.text.TextSpec` for the text datasets; a clear error for unknown names."""
    from dynalay_env.text import TEXT_DATASETS, get_text_spec  # text.py imports this module

    for key, spec in DATASETS.items():
        if key.lower() == name.lower():
            return spec
    text = get_text_spec(name)
    if text is not None:
        return text
    raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS | TEXT_DATASETS)}")


def cache_dir() -> Path:
    """The project's cache: ``$DYNALAY_CACHE`` or ``~/.cache/dynalay``."""
    return Path(os.environ.get("DYNALAY_CACHE", Path.home() / ".cache" / "dynalay"))


@dataclass
class ImageSplit:
    """One split of a dataset, in memory.

    Attributes:
        images: (N, C, H, W) uint8 pixels.
        labels: (N,) int64 class indices.
        indices: (N,) int64 index of each sample in the torchvision split it came from.
        spec: the dataset's :class:`DatasetSpec`.
    """

    images: Tensor
    labels: Tensor
    indices: Tensor
    spec: DatasetSpec

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        expected = (self.spec.in_channels, self.spec.image_size, self.spec.image_size)
        if self.images.dtype != torch.uint8 or tuple(self.images.shape[1:]) != expected:
            raise ValueError(
                f"{self.spec.name} images must be uint8 of shape (N, {expected[0]}, {expected[1]}, "
                f"{expected[2]}), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.shape != (n,) or self.indices.shape != (n,):
            raise ValueError(f"labels and indices must have shape ({n},)")
        if n == 0:
            raise ValueError(f"the {self.spec.name} split is empty")
        self._mean = torch.tensor(self.spec.mean).view(1, -1, 1, 1)
        self._std = torch.tensor(self.spec.std).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: str | torch.device) -> ImageSplit:
        """A copy on ``device`` (images stay uint8 there; normalisation is done per batch)."""
        return ImageSplit(
            self.images.to(device), self.labels.to(device), self.indices.to(device), self.spec
        )

    def normalized(self, rows: Tensor | slice) -> Tensor:
        """(B, C, H, W) float32 normalised images of ``rows`` (positions in this split)."""
        # index_select is several times faster than advanced indexing for a row tensor.
        selected = (
            self.images.index_select(0, rows.to(self.images.device))
            if isinstance(rows, Tensor)
            and not rows.is_floating_point()
            and rows.dtype != torch.bool
            else self.images[rows]
        )
        return normalize_pixels(selected, self._mean, self._std)

    def subset(self, rows: Tensor) -> ImageSplit:
        """The samples at ``rows`` (positions in this split)."""
        return ImageSplit(self.images[rows], self.labels[rows], self.indices[rows], self.spec)

    def model_mismatch(self, model) -> str | None:
        """Why ``model`` (a :class:`~main_model.DynaLayNet`) cannot run on this split, or None."""
        config, spec = model.config, self.spec
        expected = (spec.in_channels, spec.image_size, spec.num_classes)
        channels, size = getattr(config, "in_channels", None), getattr(config, "image_size", None)
        if (channels, size, config.num_classes) == expected:
            return None
        return (
            f"main model expects {channels}x{size}x{size} "
            f"images and {config.num_classes} classes, but the {spec.name} data has "
            f"{spec.in_channels}x{spec.image_size}x{spec.image_size} and "
            f"{spec.num_classes}; use a checkpoint trained on {spec.name}"
        )


def _stage_system_copy(spec: DatasetSpec, system_dir: Path, target_root: Path) -> Path | None:
    """Make an MNIST-format system copy (``*.gz`` idx files) readable by torchvision.

    torchvision expects ``<root>/<Class>/raw/<file>`` uncompressed; system packages ship the
    gzipped files in one folder. We decompress them once into the cache.
    """
    names = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    sources = []
    for name in names:
        plain, packed = system_dir / name, system_dir / f"{name}.gz"
        if plain.is_file():
            sources.append((plain, False))
        elif packed.is_file():
            sources.append((packed, True))
        else:
            return None
    raw = target_root / spec.torchvision_class / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, (source, packed) in zip(names, sources, strict=True):
        target = raw / name
        if target.is_file():
            continue
        temporary = raw / f".{name}.tmp"
        with gzip.open(source, "rb") if packed else open(source, "rb") as src:
            with open(temporary, "wb") as dst:
                shutil.copyfileobj(src, dst)
        temporary.replace(target)
    return target_root


def _open_torchvision(spec: DatasetSpec, root: Path, train: bool, download: bool):
    dataset_class = getattr(torchvision.datasets, spec.torchvision_class)
    return dataset_class(root=str(root), train=train, download=download)


def _to_tensors(dataset) -> tuple[Tensor, Tensor]:
    """(N, C, H, W) uint8 images and (N,) int64 labels of a torchvision CIFAR/MNIST dataset."""
    data = dataset.data
    if isinstance(data, np.ndarray):  # CIFAR: (N, H, W, C) numpy
        images = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
    else:  # MNIST family: (N, H, W) tensor
        images = data.unsqueeze(1).contiguous()
    labels = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.long)
    return images.to(torch.uint8), labels


def locate(spec: DatasetSpec, data_dir: str | os.PathLike | None, download: bool = False):
    """Open the torchvision train and test sets from the first place that has them.

    Returns ``(train_dataset, test_dataset, root)``; raises :class:`DataNotFoundError`.
    """
    looked: list[str] = []
    candidates: list[Path] = []
    if data_dir is not None:
        candidates.append(Path(data_dir))
    cache = cache_dir() / "data"
    candidates.append(cache)
    for root in candidates:
        try:
            return (
                _open_torchvision(spec, root, True, False),
                _open_torchvision(spec, root, False, False),
                root,
            )
        except RuntimeError:
            looked.append(f"{root} (torchvision layout of {spec.torchvision_class})")
    for system_dir in spec.system_dirs:
        staged = _stage_system_copy(spec, Path(system_dir), cache)
        if staged is None:
            looked.append(f"{system_dir} (system package)")
            continue
        return (
            _open_torchvision(spec, staged, True, False),
            _open_torchvision(spec, staged, False, False),
            Path(system_dir),
        )
    if download:
        root = Path(data_dir) if data_dir is not None else cache
        try:
            return (
                _open_torchvision(spec, root, True, True),
                _open_torchvision(spec, root, False, True),
                root,
            )
        except Exception as error:  # network errors come in many types
            looked.append(f"torchvision download into {root} failed: {error}")
    else:
        looked.append("torchvision download (not attempted: download=False)")
    raise DataNotFoundError(
        f"{spec.name} data not found. Looked in:\n  - "
        + "\n  - ".join(looked)
        + f"\nTo get it: {spec.install_hint}\n"
        f"or pass data_dir=/path/holding/the/torchvision/{spec.torchvision_class}/files."
    )


#: Training images kept unseen for the agent when no holdout size is given (a text dataset's
#: default is its ``TextSpec.holdout_size``).
DEFAULT_IMAGE_HOLDOUT = 5000


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
    datasets are read by :func:`dynalay_env.text.load_text_splits` (``text_options``: its
    ``seq_len`` and ``max_vocab``).
    """
    spec = get_spec(name)
    if not isinstance(spec, DatasetSpec):
        from dynalay_env.text import load_text_splits

        return load_text_splits(
            spec.name, data_dir, holdout_size, seed, download, train_size, **text_options
        )
    holdout_size = DEFAULT_IMAGE_HOLDOUT if holdout_size is None else holdout_size
    train_set, test_set, _ = locate(spec, data_dir, download)
    train_images, train_labels = _to_tensors(train_set)
    test_images, test_labels = _to_tensors(test_set)
    return split_training_set(
        spec, train_images, train_labels, test_images, test_labels, holdout_size, seed, train_size
    )


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


def split_training_set(
    spec: DatasetSpec,
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    holdout_size: int,
    seed: int = 0,
    train_size: int | None = None,
) -> dict[str, ImageSplit]:
    """Carve a seeded ``holdout`` out of the training set (:func:`carve_rows`); see
    :func:`load_splits`."""
    holdout_rows, train_rows = carve_rows(
        train_images.shape[0], holdout_size, seed, train_size, spec.name
    )
    test_indices = torch.arange(test_images.shape[0])
    return {
        "train": ImageSplit(train_images[train_rows], train_labels[train_rows], train_rows, spec),
        "holdout": ImageSplit(
            train_images[holdout_rows], train_labels[holdout_rows], holdout_rows, spec
        ),
        "test": ImageSplit(test_images, test_labels, test_indices, spec),
    }


def random_splits(
    name: str, n_train: int = 48, n_test: int = 24, seed: int = 0
) -> dict[str, ImageSplit]:
    """Random uint8 images and labels of dataset ``name``'s shape, split like the real one
    (half the training samples are the holdout). For tests and benchmarks without data files.
    """
    spec = get_spec(name)
    generator = torch.Generator().manual_seed(seed)
    shape = (spec.in_channels, spec.image_size, spec.image_size)

    def images(n: int) -> Tensor:
        return torch.randint(0, 256, (n, *shape), generator=generator, dtype=torch.uint8)

    def labels(n: int) -> Tensor:
        return torch.randint(0, spec.num_classes, (n,), generator=generator)

    return split_training_set(
        spec, images(n_train), labels(n_train), images(n_test), labels(n_test), n_train // 2, seed
    )


def training_provenance(train_split: ImageSplit) -> dict:
    """What a main model trained on ``train_split`` records in its checkpoint.

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


def check_holdout_unseen(provenance: dict, holdout: ImageSplit, model_name: str) -> None:
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
