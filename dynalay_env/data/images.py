"""Image datasets (torchvision's), looked up offline first, held on the device as one uint8 tensor.

Lookup order (DESIGN section 6): the user's ``data_dir``; the project's cache
(``$DYNALAY_CACHE`` or ``~/.cache/dynalay``, sub-folder ``data``); system copies (Debian's
``dataset-fashion-mnist`` installs ``/usr/share/datasets/fashion-mnist``); then torchvision's
download, only when ``download=True``. When nothing is found a
:class:`~dynalay_env.data.splits.DataNotFoundError` lists every place looked at and the command
that installs or downloads the data.

Splits: ``train`` (the main model learns on it), ``holdout`` (a fixed, seeded part of the
training set the main model never sees, for the agent; :func:`~dynalay_env.data.splits.
carve_rows`) and ``test``. A new torchvision dataset is one :data:`DATASETS` entry.
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import Tensor

from dynalay_env.data.corruption import corrupt_images
from dynalay_env.data.splits import DataNotFoundError, cache_dir, carve_rows, training_provenance
from main_model.pixels import normalize_pixels


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
        corruption_seed: when set, every image is occluded and cluttered at a severity of
            its own (:func:`dynalay_env.data.corruption.corrupt_images`, seeded: the training set
            with this seed, the test set with seed + 1), the same for every model.
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
    corruption_seed: int | None = None


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
    # Fashion-MNIST with occluders, clutter and noise of a severity drawn per image: where
    # loops (lateral recurrence) are expected to pay, and difficulty varies image by image.
    "CorruptedFashionMNIST": DatasetSpec(
        "CorruptedFashionMNIST",
        "FashionMNIST",
        1,
        28,
        10,
        (0.3347,),  # measured on the corrupted training images
        (0.3329,),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        install_hint="apt-get install dataset-fashion-mnist   (or: "
        + _DOWNLOAD_HINT.format(name="FashionMNIST")
        + ")",
        corruption_seed=0,
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

    def training_provenance(self) -> dict:
        """What a main model trained on this split records (:func:`training_provenance`)."""
        return training_provenance(self)

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


def image_spec(name: str) -> DatasetSpec | None:
    """The :class:`DatasetSpec` of ``name`` (case-insensitive), or None for other datasets."""
    for key, spec in DATASETS.items():
        if key.lower() == name.lower():
            return spec
    return None


def load_image_splits(
    spec: DatasetSpec,
    data_dir: str | os.PathLike | None = None,
    holdout_size: int | None = None,
    seed: int = 0,
    download: bool = False,
    train_size: int | None = None,
) -> dict[str, ImageSplit]:
    """``train``, ``holdout`` and ``test`` splits of image dataset ``spec`` (on the CPU); see
    :func:`dynalay_env.data.load_splits` (``holdout_size=None``: :data:`DEFAULT_IMAGE_HOLDOUT`)."""
    holdout_size = DEFAULT_IMAGE_HOLDOUT if holdout_size is None else holdout_size
    train_set, test_set, _ = locate(spec, data_dir, download)
    train_images, train_labels = _to_tensors(train_set)
    test_images, test_labels = _to_tensors(test_set)
    if spec.corruption_seed is not None:
        train_images, _ = corrupt_images(train_images, spec.corruption_seed)
        test_images, _ = corrupt_images(test_images, spec.corruption_seed + 1)
    return split_training_set(
        spec, train_images, train_labels, test_images, test_labels, holdout_size, seed, train_size
    )


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
    :func:`dynalay_env.data.load_splits`."""
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
    spec = image_spec(name)
    if spec is None:
        raise ValueError(
            f"random splits are made for image datasets {sorted(DATASETS)}, not {name!r}"
        )
    generator = torch.Generator().manual_seed(seed)
    shape = (spec.in_channels, spec.image_size, spec.image_size)

    def images(n: int) -> Tensor:
        return torch.randint(0, 256, (n, *shape), generator=generator, dtype=torch.uint8)

    def labels(n: int) -> Tensor:
        return torch.randint(0, spec.num_classes, (n,), generator=generator)

    return split_training_set(
        spec, images(n_train), labels(n_train), images(n_test), labels(n_test), n_train // 2, seed
    )
