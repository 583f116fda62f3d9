"""Shared fixtures: tiny in-memory datasets and tiny main models, made by the tests."""

from __future__ import annotations

from pathlib import Path

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
