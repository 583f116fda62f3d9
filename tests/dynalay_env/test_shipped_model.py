"""Where an env's main model comes from when the user gives none: the cache, the model shipped
with the package, or a pre-training that is announced with its estimated time, or refused."""

from __future__ import annotations

import time
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from conftest import make_splits, write_mnist_files

from agents.experiments.demo import demo_config
from agents.experiments.tradeoff import validate
from dynalay_env.data import get_spec
from dynalay_env.models import (
    PRETRAIN_LIMIT_VARIABLE,
    cached_model_path,
    obtain_main_model,
    resolve_pretrain_limit,
    shipped_model_path,
    shipped_model_provenance,
)
from main_model import load_main_model
from main_model.checkpoint import state_digest
from main_model.train import PretrainTooLongError

FASHION = get_spec("FashionMNIST")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def test_the_shipped_fashion_mnist_model_is_trained_and_documented():
    path = shipped_model_path(FASHION)
    assert path is not None, "dynalay_env/shipped/FashionMNIST.pt is missing from the package"
    provenance = shipped_model_provenance(FASHION)
    model, _ = load_main_model(path)
    assert provenance["state_digest"] == state_digest(model)
    assert provenance["command"].startswith("python -m dynalay_env.pretrain --dataset FashionMNIST")
    # The recorded config, read as a checkpoint's is (fields added since take the values the
    # model was trained with), is the shipped model's.
    assert type(model.config).from_dict(provenance["config"]) == model.config
    # Trained on the train split minus the default holdout, so the default env accepts it.
    assert model.provenance["dataset"] == "FashionMNIST"
    assert provenance["test"]["NOP"]["accuracy"] > 0.85
    assert provenance["test"]["NOP"]["relative_flops"] == 1.0


@pytest.mark.skipif(
    not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed"
)
def test_registered_id_on_an_empty_cache_uses_the_shipped_model_at_once(capfd):
    started = time.perf_counter()
    env = gym.make("dynalay_env:DynaLay-FashionMNIST-v0", device="cpu")
    observation, _ = env.reset(seed=0)
    assert time.perf_counter() - started < 60
    assert "using the shipped pretrained main model" in capfd.readouterr().err
    shipped, _ = load_main_model(shipped_model_path(FASHION))
    used = env.unwrapped.core.model.state_dict()
    for name, value in shipped.state_dict().items():
        if "weight_norm" not in name:  # re-estimated on first use
            assert torch.equal(value, used[name]), name
    assert env.observation_space.contains(observation)


def test_a_given_width_that_the_shipped_model_lacks_is_pretrained_not_swapped(capfd):
    splits = make_splits("FashionMNIST", n_train=400)
    with pytest.raises(PretrainTooLongError):
        obtain_main_model(
            FASHION,
            train_split=splits["train"],
            widths=(8, 8, 8),
            pretrain_limit_minutes=1e-6,
        )
    assert "does not have widths (8, 8, 8)" in capfd.readouterr().err


def test_pretraining_estimated_over_the_limit_is_refused_with_the_ways_out():
    splits = make_splits("MNIST", n_train=600)
    batches = -(-len(splits["train"]) // 64)  # timed after the first 2
    assert batches > 2
    with pytest.raises(PretrainTooLongError) as raised:
        gym.make(
            "DynaLay-MNIST-v0",
            splits=splits,
            device="cpu",
            pretrain_epochs=3,
            widths=(4, 4, 4),
            pretrain_limit_minutes=1e-6,
        )
    message = str(raised.value)
    assert f"{3 * batches} batches (3 epoch(s) of {batches})" in message
    assert "takes about" in message and "over the limit" in message
    for way_out in (
        "checkpoint=PATH",
        "widths=(16, 32, 64)",
        "python -m dynalay_env.pretrain --dataset MNIST --widths 4 4 4 --epochs 3",
        f"{PRETRAIN_LIMIT_VARIABLE}=M",
    ):
        assert way_out in message
    assert not cached_model_path(get_spec("MNIST")).exists()  # nothing half-done left behind


def test_pretraining_under_the_limit_says_how_long_it_takes_then_caches(capfd, monkeypatch):
    monkeypatch.setenv(PRETRAIN_LIMIT_VARIABLE, "30")
    splits = make_splits("MNIST", n_train=600)
    batches = -(-len(splits["train"]) // 64)
    gym.make("DynaLay-MNIST-v0", splits=splits, device="cpu", pretrain_epochs=1, widths=(4, 4, 4))
    err = capfd.readouterr().err
    expected = f"training {batches} batches (1 epoch(s) of {batches}) of a 4/4/4 MNIST main model"
    assert f"{expected} takes about" in err
    assert "cached the pretrained main model" in err


def test_the_limit_comes_from_the_keyword_then_the_environment(monkeypatch):
    monkeypatch.delenv(PRETRAIN_LIMIT_VARIABLE, raising=False)
    assert resolve_pretrain_limit() == 10.0
    monkeypatch.setenv(PRETRAIN_LIMIT_VARIABLE, "90")
    assert resolve_pretrain_limit() == 90.0
    assert resolve_pretrain_limit(5) == 5.0
    monkeypatch.setenv(PRETRAIN_LIMIT_VARIABLE, "an hour")
    with pytest.raises(ValueError, match="not a number of minutes"):
        resolve_pretrain_limit()
    with pytest.raises(ValueError, match="must be > 0"):
        resolve_pretrain_limit(0)


def test_the_demo_trains_its_baselines_with_the_settings_the_shipped_model_records():
    config = demo_config(out="unused")
    settings = shipped_model_provenance(FASHION)["settings"]
    assert config.dynalay_checkpoint == str(shipped_model_path(FASHION))
    assert (config.epochs, config.learning_rate, config.batch_size) == (
        settings["epochs"],
        settings["lr"],
        settings["batch_size"],
    )
    assert (config.train_size, config.seeds, config.data_seed) == (
        settings["train_size"],
        (settings["seed"],),
        settings["data_seed"],
    )
    assert (config.widths, config.strides) == ((16, 32, 64), (2, 2, 2))
    assert config.models == ("plain", "plain-2x")
    validate(config)  # the shipped model's shape is the baselines' shape


def test_pretrain_sets_other_model_fields_and_refuses_bad_ones(tmp_path: Path, capsys):
    from dynalay_env.pretrain import main as pretrain

    write_mnist_files(tmp_path / "data", n_train=80, n_test=10)
    output = tmp_path / "last.pt"
    flags = ["--dataset", "MNIST", "--data-dir", str(tmp_path / "data"), "--widths", "4", "4"]
    flags += ["--epochs", "1", "--holdout-size", "20", "--device", "cpu", "--output", str(output)]
    assert pretrain([*flags, "--set", "loop_order=output", "feedback=false"]) == 0
    model, _ = load_main_model(output)
    assert (model.config.loop_order, model.config.feedback) == ("output", False)
    assert list(model.looped_blocks(1)) == [1]  # loop-1 loops the last block
    with pytest.raises(SystemExit):
        pretrain([*flags, "--set", "loop_order=middle_out"])
    assert "loop_order must be one of" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pretrain([*flags, "--set", "widths=8"])
    assert "expected FIELD=VALUE with FIELD one of" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pretrain([*flags, "--set", "num_classes=3"])
    assert "come from the dataset" in capsys.readouterr().err
