"""The studies' shared pieces: one mean ± std, their commands' flags (from their configs'
fields: agents/cli.py, tested in tests/agents/test_cli.py), the guard against a results
directory made with other settings."""

from __future__ import annotations

import argparse
import json

import pytest

from agents.cli import add_config_flags, config_from_flags
from agents.experiments.cli import SettingsMismatch, refuse_other_settings
from agents.experiments.common import mean_std, sample_std
from agents.experiments.thesis import QUICK, ReproduceConfig
from agents.experiments.tradeoff import TableConfig


def test_mean_std_is_the_sample_std_over_seeds():
    assert mean_std([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0}  # ddof=1 (ddof=0: 0.816)
    assert mean_std([0.5]) == {"mean": 0.5, "std": 0.0}
    assert mean_std([1.0, 3.0], count=True) == {"mean": 2.0, "std": pytest.approx(2**0.5), "n": 2}
    assert sample_std([[1.0, 10.0], [3.0, 10.0]], axis=0).tolist() == [pytest.approx(2**0.5), 0.0]
    assert sample_std([[1.0, 2.0]], axis=0).tolist() == [0.0, 0.0]  # one seed


def _parse(argv: list[str], cls: type, **preset) -> object:
    parser = argparse.ArgumentParser()
    add_config_flags(parser, cls)
    return config_from_flags(cls, parser.parse_args(argv), **preset)


def test_the_commands_keep_their_flags():
    parser = argparse.ArgumentParser()
    add_config_flags(parser, TableConfig)
    table = " ".join(parser.format_help().split())
    for flag in ("--env", "--seeds", "--epochs", "--train-size", "--widths", "--strides",
                 "--models", "--dynalay-checkpoint", "--batch-size", "--lr", "--betas",
                 "--total-timesteps", "--num-envs", "--holdout-size", "--data-seed",
                 "--eval-size", "--data-dir", "--device", "--out"):  # fmt: skip
        assert f"{flag} " in table, flag
    assert "--taus" not in table and "--learning-rate" not in table
    # The README's reproduce commands: --quick gives way to a flag given.
    config = _parse(["--epochs", "2"], ReproduceConfig, **QUICK)
    assert config.epochs == 2 and config.train_size == QUICK["train_size"]


def test_other_settings_are_refused_naming_each_difference(tmp_path):
    path = tmp_path / "out" / "settings.json"
    refuse_other_settings(path, {"epochs": 3, "widths": (1, 2), "out": "a"}, "table", "go")
    assert json.loads(path.read_text()) == {"epochs": 3, "widths": [1, 2], "out": "a"}
    refuse_other_settings(path, {"epochs": 3, "widths": [1, 2], "out": "b"}, "t", "go", ("out",))
    with pytest.raises(SettingsMismatch) as error:
        refuse_other_settings(path, {"epochs": 2, "widths": (1, 2), "out": "a"}, "table", "go")
    assert str(error.value) == (
        f"{path.parent} holds a table made with other settings (epochs: 3 there, 2 now); go"
    )
    assert error.value.differences == {"epochs": (3, 2)}
    with pytest.raises(SettingsMismatch, match="new: None there, 1 now"):
        refuse_other_settings(path, {"epochs": 3, "widths": (1, 2), "out": "a", "new": 1}, "t", "")
    # A saved file read as today's settings (a field added since, with its old value).
    refuse_other_settings(
        path,
        {"epochs": 3, "widths": [1, 2], "out": "a", "new": 1},
        "t",
        "",
        read=lambda s: {**s, "new": 1},
    )
