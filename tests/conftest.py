"""Shared fixtures and helpers: tiny in-memory datasets, tiny main models and data files, made by
the tests, and the numerical checks several test files use."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from dynalay_env.data import ImageSplit, get_spec, random_splits
from dynalay_env.models import config_for
from main_model import DynaLayNet, save_main_model

TINY_WIDTHS = (4, 6, 8)


def make_splits(dataset: str, n_train: int = 48, n_test: int = 24, seed: int = 0):
    """Random uint8 images with labels for ``dataset``'s shape: train/holdout/test splits."""
    return random_splits(dataset, n_train, n_test, seed)


def make_model(dataset: str, seed: int = 0, **config_changes) -> DynaLayNet:
    """A small untrained main model (loop weights scaled up so loops take several iterations)."""
    torch.manual_seed(seed)
    model = DynaLayNet(config_for(get_spec(dataset), TINY_WIDTHS, **config_changes))
    with torch.no_grad():
        for block in model.blocks:
            block.loop_conv.weight.mul_(5.0)
    return model.eval()


@pytest.fixture
def splits_for():
    return make_splits


@pytest.fixture
def tiny_checkpoint(tmp_path: Path):
    def save(dataset: str, **config_changes) -> Path:
        return save_main_model(make_model(dataset, **config_changes), tmp_path / f"{dataset}.pt")

    return save


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own empty DynaLay cache: no test reads or writes ~/.cache."""
    monkeypatch.setenv("DYNALAY_CACHE", str(tmp_path_factory.mktemp("dynalay-cache")))


def split_of(dataset: str) -> ImageSplit:
    return make_splits(dataset)["holdout"]


def write_mnist_files(
    root: Path, n_train: int = 30, n_test: int = 10, dataset: str = "MNIST"
) -> None:
    """Tiny MNIST (or another set of the MNIST family, by its torchvision class name, e.g.
    ``FashionMNIST``) in torchvision's raw idx format, the real loading path reads it."""
    raw = root / dataset / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 2049, n) + labels.tobytes()
        )


def jacobian_norm_by_power_iteration(f, z: torch.Tensor, steps: int = 100) -> float:
    """Largest singular value of the Jacobian of ``f`` at ``z`` (power iteration on J^T J)."""
    vector = torch.randn_like(z)
    vector /= vector.norm()
    norm = 0.0
    for _ in range(steps):
        _, jv = torch.func.jvp(f, (z,), (vector,))
        _, vjp_fn = torch.func.vjp(f, z)
        (jtjv,) = vjp_fn(jv)
        norm = jv.norm().item()
        vector = jtjv / jtjv.norm()
    return norm


@pytest.fixture
def test_device() -> torch.device:
    """The device of the tests that take one: ``DYNALAY_TEST_DEVICE`` (default ``cpu``), e.g.
    ``cuda`` in bench/gpu_check.sh, so they can be run on a GPU as they are."""
    device = torch.device(os.environ.get("DYNALAY_TEST_DEVICE", "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.fail(f"DYNALAY_TEST_DEVICE={device} but torch sees no CUDA device")
    return device
