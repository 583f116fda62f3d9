"""Flags from a config's fields (agents/cli.py), and ``run_rl.py``'s training flags made that way
from :class:`TrainConfig`: each field one flag, as the README writes it, setting that field."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import pytest

import run_rl
from agents.cli import add_config_flags, arg, config_fields, config_from_flags, positive_int
from agents.config import TrainConfig


@dataclass(frozen=True)
class Example:
    size: int = arg(3, "how many", type=positive_int)
    rate: float = arg(0.1, "a rate", flag="--lr", type=float)
    names: tuple[str, ...] = arg(("a", "b"), "some names", choices=("a", "b", "c"))
    betas: tuple[float, ...] = arg((0.3, 1.0), "sorted", type=float, sort=True)
    limit: int | None = arg(None, "optional", type=int)
    hidden: tuple[float, ...] = arg((0.5,), cli=False)
    extra: dict = arg(factory=dict, cli=False)


def _parse(argv: list[str], cls: type = Example, **preset) -> object:
    parser = argparse.ArgumentParser()
    add_config_flags(parser, cls)
    return config_from_flags(cls, parser.parse_args(argv), **preset)


def test_flags_come_from_the_fields():
    assert _parse([]) == Example()
    given = _parse(["--size", "5", "--lr", "0.2", "--names", "c", "--betas", "1", "0.1"])
    assert given == Example(size=5, rate=0.2, names=("c",), betas=(0.1, 1.0))
    assert _parse(["--limit", "7"]).limit == 7
    # A flag given overrides a preset, which overrides the default.
    assert _parse(["--size", "9"], size=4, limit=2) == Example(size=9, limit=2)
    for bad in (["--size", "0"], ["--names", "d"], ["--hidden", "1"], ["--rate", "1"]):
        with pytest.raises(SystemExit):
            _parse(bad)
    assert Example().extra == {} and Example().extra is not Example().extra  # a factory's


def test_help_comes_from_the_field_docs_with_the_default():
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Example)
    text = parser.format_help()
    assert "how many (default: 3)" in text and "some names (default: ['a', 'b'])" in text
    assert "--lr" in text and "--rate" not in text and "--hidden" not in text


# ----- run_rl.py's training flags: TrainConfig's fields ------------------------------------------
#: The training flags as the README and docs/ write them; a renamed flag breaks their commands.
TRAINING_FLAGS = {
    "algo": "--algo",
    "env": "--env",
    "seed": "--seed",
    "data_seed": "--data-seed",
    "device": "--device",
    "num_envs": "--num-envs",
    "total_timesteps": "--total-timesteps",
    "rounds": "--rounds",
    "pretrain_epochs": "--pretrain-epochs",
    "agent_pretrain": "--no-agent-pretrain",
    "track_test": "--track-test",
    "recipe": "--recipe",
    "supervised_epochs": "--supervised-epochs",
    "exploration": "--exploration",
    "alpha": "--alpha",
    "beta": "--beta",
    "gamma_loss": "--gamma-loss",
    "max_steps": "--max-steps",
    "penalty": "--penalty",
    "shaping": "--shaping",
    "observe_changes": "--observe-changes",
    "bc_epochs": "--bc-epochs",
    "ent_coef_schedule": "--ent-coef-schedule",
    "bc_tau": "--bc-tau",
    "batch_size": "--batch-size",
    "learning_rate": "--lr",
    "widths": "--widths",
    "strides": "--strides",
    "holdout_size": "--holdout-size",
    "train_size": "--train-size",
    "eval_size": "--eval-size",
    "data_dir": "--data-dir",
    "download": "--download",
    "checkpoint": "--checkpoint",
    "logdir": "--logdir",
    "conf": "--conf",
}


def _train(argv: list[str]) -> TrainConfig:
    return config_from_flags(TrainConfig, run_rl.build_parser().parse_args(argv))


def test_every_field_is_declared_with_its_flag_or_without_one():
    for f in dataclasses.fields(TrainConfig):
        assert "cli" in f.metadata, f"{f.name}: declare it with agents.cli.arg (or cli=False)"
    flagged = {f.name: f.metadata.get("flag") or "--" + f.name.replace("_", "-")
               for f, _, _ in config_fields(TrainConfig)}  # fmt: skip
    assert flagged == TRAINING_FLAGS
    assert {f.name for f in dataclasses.fields(TrainConfig)} - set(flagged) == {"algo_kwargs"}
    options = {o for a in run_rl.build_parser()._actions for o in a.option_strings}
    assert options == {*TRAINING_FLAGS.values(), "--resume", "-h", "--help"}


def test_no_flags_give_the_default_config():
    assert _train([]) == TrainConfig()
    assert run_rl.build_parser().parse_args([]).resume is None


def _other_value(name: str) -> tuple[list[str], object]:
    """A command line's words for field ``name`` at a value other than its default, and that
    value as the field holds it."""
    default = getattr(TrainConfig(), name)
    (f, element, is_tuple) = next(c for c in config_fields(TrainConfig) if c[0].name == name)
    choices = f.metadata.get("choices")
    if element is bool:
        return [], not default
    if choices is not None:
        value = next(c for c in (choices() if callable(choices) else choices) if c != default)
        return [value], value
    if is_tuple:
        return ["3", "5", "7"], (3, 5, 7)
    if element is int:
        value = 7 if default is None else default + 3
        return [str(value)], value
    if element is float:
        return ["0.375"], 0.375
    return ["some/value"], "some/value"


@pytest.mark.parametrize("name", sorted(TRAINING_FLAGS))
def test_each_flag_sets_exactly_its_field(name):
    words, value = _other_value(name)
    config = _train([TRAINING_FLAGS[name], *words])
    assert getattr(config, name) == value and value != getattr(TrainConfig(), name)
    assert dataclasses.replace(config, **{name: getattr(TrainConfig(), name)}) == TrainConfig()


def test_the_flags_check_their_values(capsys):
    parser = run_rl.build_parser()
    for argv, message in (
        (["--total-timesteps", "-5"], "must be a positive integer, got -5"),
        (["--bc-epochs", "-1"], "must be >= 0, got -1"),
        (["--beta", "-0.1"], "must be >= 0, got -0.1"),
        (["--algo", "sac"], "invalid choice: 'sac'"),
        (["--shaping", "potential"], "invalid choice: 'potential'"),
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert message in capsys.readouterr().err, argv


def test_resume_refuses_a_changed_flag_by_the_name_it_was_given():
    saved = TrainConfig(beta=0.3)
    argv = ["--resume", "run", "--lr", "0.5", "--no-agent-pretrain", "--beta", "0.3"]
    conflicts = run_rl.resume_conflicts(run_rl.build_parser().parse_args(argv), saved)
    assert conflicts == ["--lr 0.5 (saved: 0.01)", "--no-agent-pretrain False (saved: True)"]
    argv = ["--resume", "run", "--observe-changes", "--strides", "1", "2", "2"]
    conflicts = run_rl.resume_conflicts(run_rl.build_parser().parse_args(argv), saved)
    assert conflicts == [
        "--observe-changes True (saved: False)",
        "--strides [1, 2, 2] (saved: None)",
    ]
    # A flag equal to the saved value, or one left out, is no conflict.
    same = ["--resume", "run", "--beta", "0.3", "--widths", "64", "128", "256"]
    assert run_rl.resume_conflicts(run_rl.build_parser().parse_args(same), saved) == []


def test_the_algo_flags_choices_are_the_algorithm_registry():
    from agents.algorithms import ALGORITHMS
    from agents.config import ALGORITHM_NAMES

    assert sorted(ALGORITHMS) == list(ALGORITHM_NAMES)
