"""The corrupted Fashion-MNIST: seeded, per-image severity, read through the real loading path."""

from __future__ import annotations

import pytest
import torch
from conftest import write_mnist_files

from dynalay_env.data import load_splits
from dynalay_env.data.corruption import corrupt_images


def clean_images(count: int = 64) -> torch.Tensor:
    """Bright squares on black, so what the corruption adds and hides is easy to see."""
    images = torch.zeros(count, 1, 28, 28, dtype=torch.uint8)
    images[:, :, 8:20, 8:20] = 200
    return images


def test_corruption_is_seeded_and_grows_with_severity():
    images = clean_images()
    first, severity = corrupt_images(images, seed=3)
    again, severity_again = corrupt_images(images, seed=3)
    other, _ = corrupt_images(images, seed=4)
    assert torch.equal(first, again) and torch.equal(severity, severity_again)
    assert not torch.equal(first, other)
    assert first.dtype == torch.uint8 and first.shape == images.shape
    assert 0.0 <= float(severity.min()) and float(severity.max()) <= 1.0
    changed = (first.float() - images.float()).abs().flatten(1).mean(1)
    mild, severe = severity < 0.2, severity > 0.8
    assert mild.any() and severe.any()
    # the most severe images are changed far more than the mildest
    assert float(changed[severe].mean()) > 3 * float(changed[mild].mean())


def test_corruption_takes_3d_images_and_refuses_floats():
    corrupted, _ = corrupt_images(clean_images(8)[:, 0], seed=0)
    assert corrupted.shape == (8, 28, 28)
    with pytest.raises(ValueError, match="uint8 images"):
        corrupt_images(torch.rand(4, 1, 28, 28), seed=0)


def test_corrupted_dataset_is_the_clean_one_corrupted(tmp_path):
    write_mnist_files(tmp_path, n_train=40, n_test=12, dataset="FashionMNIST")
    clean = load_splits("FashionMNIST", tmp_path, holdout_size=10)
    corrupted = load_splits("CorruptedFashionMNIST", tmp_path, holdout_size=10)
    for split in ("train", "holdout", "test"):
        assert torch.equal(clean[split].indices, corrupted[split].indices)
        assert torch.equal(clean[split].labels, corrupted[split].labels)
    # the test split is the clean test images through corrupt_images with seed + 1
    expected, _ = corrupt_images(clean["test"].images, seed=1)
    assert torch.equal(corrupted["test"].images, expected)
    assert not torch.equal(corrupted["train"].images, clean["train"].images)
