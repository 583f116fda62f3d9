"""The studies' shared pieces: one mean ± std, their commands' flags (from their configs'
fields: agents/cli.py, tested in tests/agents/test_cli.py), the guard against a results
directory made with other settings, and the one way their runs' TrainConfigs are built (each
committed run's config.yaml is what today's builder gives for the saved settings)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

import pytest

from agents.algorithms import algo_hyperparams
from agents.cli import add_config_flags, config_from_flags
from agents.config import TrainConfig, load_run_config
from agents.experiments import tradeoff
from agents.experiments.cli import SettingsMismatch, refuse_other_settings
from agents.experiments.common import mean_std, sample_std, train_config_from
from agents.experiments.thesis import QUICK, ReproduceConfig, Reproduction
from agents.experiments.thesis.config import CONFIG_FILE as REPRODUCE_CONFIG
from agents.experiments.tradeoff import TableConfig

REPO = Path(__file__).resolve().parents[2]


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


def test_a_train_config_copies_the_named_fields_and_sets_the_rest():
    study = ReproduceConfig(total_timesteps=123, beta=0.7, max_steps=(1, 2))
    config = train_config_from(study, ("env", "total_timesteps", "beta"), seed=4, beta=0.2)
    assert config == TrainConfig(env=study.env, total_timesteps=123, seed=4, beta=0.2)
    assert config.max_steps == TrainConfig().max_steps  # not named: the trainer's default
    with pytest.raises(ValueError, match="betas"):
        train_config_from(study, ("env", "betas"))


def _saved_settings(cls: type, path: Path, read=None) -> tuple[object, set[str]]:
    """A study's config from its saved settings (``read``: as the study reads them), and the
    saved keys that are not fields of ``cls``."""
    saved = json.loads(path.read_text())
    saved = read(saved) if read is not None else saved
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in names}
    return cls(**values), set(saved) - names


def _as_the_trainer_saves(config: TrainConfig) -> TrainConfig:
    """``config`` as AlternatingTrainer writes it to config.yaml: the algorithm's kwargs
    resolved from the hyperparameter file."""
    assert config.algo_kwargs == {}
    kwargs = {**algo_hyperparams(config.algo, config.env, config.conf), **config.algo_kwargs}
    return dataclasses.replace(config, algo_kwargs=kwargs)


def _assert_same_run(built: TrainConfig, run_dir: Path) -> None:
    saved = load_run_config(run_dir)
    built = _as_the_trainer_saves(built)
    assert built.differences(saved) == {}, run_dir  # what a resume checks
    assert built == saved and built.to_dict() == saved.to_dict(), run_dir


def test_the_table_agents_configs_are_the_committed_ones(tmp_path, monkeypatch):
    config, extra = _saved_settings(
        TableConfig, REPO / "docs/results/tradeoff/table_config.json", tradeoff._read_settings
    )
    assert extra == {"model_config"} and config.out == "docs/results/tradeoff"
    tradeoff.check_settings(config, REPO / config.out, None)  # the table's guard accepts it
    checked = 0
    for seed in (0, 1, 2):
        out_dir = Path(config.out) / f"seed{seed}"
        for beta in config.betas:
            built = tradeoff.table_agent_config(config, seed, beta, out_dir)
            _assert_same_run(built, REPO / out_dir / f"agent_beta_{beta:g}")
            checked += 1
    assert checked == 12
    assert built.checkpoint == "docs/results/tradeoff/seed2/dynalay.pt"

    # train_agents trains each agent with that config.
    trained: list[tuple[TrainConfig, Path]] = []

    class Recorder:
        def __init__(self, train_config: TrainConfig, run_dir: Path) -> None:
            trained.append((train_config, run_dir))

        def run(self) -> None:
            pass

    monkeypatch.setattr(tradeoff, "AlternatingTrainer", Recorder)
    tradeoff.train_agents(config, 1, tmp_path)
    assert trained == [
        (tradeoff.table_agent_config(config, 1, b, tmp_path), tmp_path / f"agent_beta_{b:g}")
        for b in config.betas
    ]


def test_the_reproductions_run_configs_are_the_committed_ones(monkeypatch):
    out = REPO / "docs/results/reproduction"
    config, extra = _saved_settings(ReproduceConfig, out / REPRODUCE_CONFIG)
    assert extra == set() and config.out == "docs/results/reproduction"
    monkeypatch.chdir(REPO)  # the run configs name paths under config.out, as run
    rep = Reproduction(config)  # the reproduction's guard accepts its saved settings
    checked = 0
    for seed in config.seeds:
        for arm in rep.ARMS:
            run_dir, built = rep.alternating_config(arm, seed)
            _assert_same_run(built, run_dir)
            checked += 1
        for agent_dir in sorted((out / "agents" / f"seed{seed}").iterdir()):
            beta, steps, penalty = re.fullmatch(
                r"beta(.+)_steps(\d+)_(\w+)", agent_dir.name
            ).groups()
            run_dir, built = rep.frozen_agent_config(seed, float(beta), int(steps), penalty)
            assert REPO / run_dir == agent_dir
            _assert_same_run(built, run_dir)
            checked += 1
    assert checked == 3 * (4 + 10)
    assert built.checkpoint == "docs/results/reproduction/models/seed2.pt"
