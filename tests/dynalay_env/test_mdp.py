"""The reward and its settings (dynalay_env.mdp): checks, hand-computed rewards, env keywords."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import make_model, make_splits

import dynalay_env  # noqa: F401  (registers the ids)
from agents.config import TrainConfig
from dynalay_env.core import DynaLayCore
from dynalay_env.env import DynaLayEnv
from dynalay_env.mdp import PENALTIES, MDPConfig, reward
from dynalay_env.vector_env import DynaLayVectorEnv


def test_defaults_are_the_thesis_and_written_once():
    assert MDPConfig() == MDPConfig(alpha=0.5, beta=0.3, max_steps=1, penalty="consecutive")
    defaults = TrainConfig()
    assert (defaults.alpha, defaults.beta, defaults.max_steps, defaults.penalty) == (
        0.5,
        0.3,
        1,
        "consecutive",
    )
    assert defaults.mdp == MDPConfig()
    assert PENALTIES == ("consecutive", "layer")


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"alpha": -0.1}, ValueError, r"alpha must be a finite number >= 0, got -0\.1"),
        ({"beta": float("nan")}, ValueError, "beta must be a finite number >= 0, got nan"),
        ({"beta": float("inf")}, ValueError, "beta must be a finite number >= 0, got inf"),
        ({"alpha": "0.5"}, TypeError, "alpha must be a number, got '0.5'"),
        ({"beta": True}, TypeError, "beta must be a number, got True"),
        ({"max_steps": 0}, ValueError, "max_steps must be >= 1, got 0"),
        ({"max_steps": 1.5}, TypeError, "max_steps must be an integer, got 1.5"),
        ({"penalty": "quadratic"}, ValueError, r"penalty must be one of \('consecutive'"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_error(settings, error, message):
    with pytest.raises(error, match=message):
        MDPConfig(**settings)


def test_settings_are_frozen_and_normalised():
    mdp = MDPConfig(alpha=1, beta=np.float32(0.25), max_steps=np.int64(3))
    assert (mdp.alpha, mdp.beta, mdp.max_steps) == (1.0, 0.25, 3)
    assert type(mdp.alpha) is float and type(mdp.max_steps) is int
    with pytest.raises(dataclasses.FrozenInstanceError):
        mdp.beta = 1.0  # type: ignore[misc]
    assert MDPConfig(**mdp.to_dict()) == mdp


def _reward(mdp: MDPConfig, looped, cost, count, actions, terminated, correct) -> list[float]:
    return reward(
        mdp,
        looped=torch.tensor(looped),
        cost=torch.tensor(cost, dtype=torch.float64),
        count=torch.tensor(count),
        actions=torch.tensor(actions),
        terminated=torch.tensor(terminated),
        correct=torch.tensor(correct),
    ).tolist()


def test_reward_against_hand_computed_values():
    # Slots: NOP answered right; NOP answered wrong; loop-2 a second time in a row (count 2),
    # episode goes on; loop-3 as the last decision, answered right (cost and answer together).
    looped = [False, False, True, True]
    cost = [0.0, 0.0, 0.5, 1.0]
    count = [0, 0, 2, 1]
    actions = [0, 0, 2, 3]
    terminated = [True, True, False, True]
    correct = [True, False, True, True]
    mdp = MDPConfig(alpha=0.5, beta=0.3)
    assert _reward(mdp, looped, cost, count, actions, terminated, correct) == pytest.approx(
        [0.5, 0.0, -0.3 * 0.5 * 2, 0.5 - 0.3 * 1.0 * 1], abs=1e-12
    )
    # penalty="layer": beta * cost * k instead of the consecutive count.
    layer = MDPConfig(alpha=0.5, beta=0.3, penalty="layer")
    assert _reward(layer, looped, cost, count, actions, terminated, correct) == pytest.approx(
        [0.5, 0.0, -0.3 * 0.5 * 2, 0.5 - 0.3 * 1.0 * 3], abs=1e-12
    )
    # A language model's answer: alpha times its share of positions right.
    shares = [0.25, 0.75, 0.0, 1.0]
    assert _reward(
        MDPConfig(alpha=2.0, beta=0.0), looped, cost, count, actions, terminated, shares
    )[:2] == pytest.approx([0.5, 1.5])


def test_env_keywords_build_the_config_and_mdp_is_accepted_whole():
    model, splits = make_model("MNIST"), make_splits("MNIST")
    env = DynaLayEnv(
        "MNIST", model=model, splits=splits, device="cpu", beta=0.7, max_steps=2, penalty="layer"
    )
    assert env.core.mdp == MDPConfig(beta=0.7, max_steps=2, penalty="layer")
    vector = DynaLayVectorEnv(
        3, "MNIST", model=model, splits=splits, device="cpu", mdp=MDPConfig(alpha=0.9)
    )
    assert vector.core.mdp == MDPConfig(alpha=0.9)
    with pytest.raises(ValueError, match="either as mdp=MDPConfig"):
        DynaLayEnv("MNIST", model=model, splits=splits, mdp=MDPConfig(), beta=0.1)
    with pytest.raises(ValueError, match="max_steps must be >= 1"):
        DynaLayEnv("MNIST", model=model, splits=splits, device="cpu", max_steps=0)
    with pytest.raises(TypeError, match="mdp must be an MDPConfig"):
        DynaLayCore(model, splits["test"], 2, mdp={"beta": 0.3})  # type: ignore[arg-type]
