"""Issue 19's episode options: the potential-based reward relative to NOP (MDPConfig.shaping) and
the observation of what the last loop changed (MDPConfig.observe_changes), against hand-computed
values, on the reward alone and through the core."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_model, make_splits

from agents.config import TrainConfig
from dynalay_env.core import DynaLayCore
from dynalay_env.env import DynaLayEnv
from dynalay_env.mdp import SHAPINGS, MDPConfig, reward
from main_model.observation import (
    CHANGE_FEATURES,
    change_features,
    first_observation,
    observation_layout,
)


def _reward(mdp, looped, cost, count, actions, terminated, correct, before) -> list[float]:
    return reward(
        mdp,
        looped=torch.tensor(looped),
        cost=torch.tensor(cost, dtype=torch.float64),
        count=torch.tensor(count),
        actions=torch.tensor(actions),
        terminated=torch.tensor(terminated),
        correct=torch.tensor(correct),
        correct_before=torch.tensor(before),
    ).tolist()


def test_defaults_keep_the_thesis_reward_and_observation():
    assert MDPConfig().shaping == "none" and MDPConfig().observe_changes is False
    assert SHAPINGS == ("none", "nop")
    defaults = TrainConfig()
    assert (defaults.shaping, defaults.observe_changes, defaults.bc_epochs) == ("none", False, 0)
    assert defaults.mdp == MDPConfig()
    # An old run directory's config.yaml has none of the new keys: it maps to the defaults.
    saved = {k: v for k, v in defaults.to_dict().items() if k not in ("shaping", "bc_tau")}
    assert TrainConfig.from_dict(saved).differences(defaults) == {}
    with pytest.raises(ValueError, match=r"shaping must be one of \('none', 'nop'\)"):
        MDPConfig(shaping="relative")
    with pytest.raises(TypeError, match="observe_changes must be True or False"):
        MDPConfig(observe_changes="yes")


def test_one_step_shaping_differs_from_the_default_by_a_state_only_term():
    # max_steps=1, four slots: NOP right, NOP wrong, loop-1 that fixes a wrong answer, loop-2
    # that breaks a right one. alpha=0.5, beta=0.3, costs 0.4 and 1.0.
    args = dict(
        looped=[False, False, True, True],
        cost=[0.0, 0.0, 0.4, 1.0],
        count=[0, 0, 1, 1],
        actions=[0, 0, 1, 2],
        terminated=[True, True, True, True],
        correct=[True, False, True, False],
        before=[True, False, False, True],
    )
    default = _reward(MDPConfig(), **args)
    shaped = _reward(MDPConfig(shaping="nop"), **args)
    assert default == pytest.approx([0.5, 0.0, 0.5 - 0.12, -0.3], abs=1e-12)
    # alpha * (correct after - correct before) - cost: NOP is worth 0 whatever the answer.
    assert shaped == pytest.approx([0.0, 0.0, 0.5 - 0.12, -0.5 - 0.3], abs=1e-12)
    # The difference is -alpha * correct(s0): the straight pass's, the same for every action.
    difference = np.subtract(shaped, default)
    assert difference == pytest.approx([-0.5 * c for c in args["before"]], abs=1e-12)


def test_multi_step_shaping_telescopes_to_minus_phi_of_the_first_state():
    # max_steps=3, one episode: wrong straight pass, loop-1 (fixes it, goes on), loop-1 again
    # (count 2, breaks it, goes on), NOP (answers wrong). alpha=1, beta=0.5, cost 0.2 per loop.
    mdp = MDPConfig(alpha=1.0, beta=0.5, max_steps=3)
    shaped_mdp = MDPConfig(alpha=1.0, beta=0.5, max_steps=3, shaping="nop")
    steps = [  # looped, cost, count, action, terminated, correct after, correct before
        (True, 0.2, 1, 1, False, True, False),
        (True, 0.2, 2, 1, False, False, True),
        (False, 0.0, 1, 0, True, False, False),
    ]
    default, shaped = [], []
    for looped, cost, count, action, ended, after, before in steps:
        args = dict(
            looped=[looped],
            cost=[cost],
            count=[count],
            actions=[action],
            terminated=[ended],
            correct=[after],
            before=[before],
        )
        default += _reward(mdp, **args)
        shaped += _reward(shaped_mdp, **args)
    assert default == pytest.approx([-0.1, -0.2, 0.0], abs=1e-12)
    assert shaped == pytest.approx([1.0 - 0.1, -1.0 - 0.2, 0.0], abs=1e-12)
    # The returns differ by -Phi(s0) = -alpha * correct(s0) = 0 (a wrong straight pass).
    assert sum(shaped) - sum(default) == pytest.approx(0.0, abs=1e-12)
    # An inactive slot (neither looped nor ended) gets nothing, shaped or not.
    inactive = dict(looped=[False], cost=[0.0], count=[0], actions=[0], terminated=[False])
    assert _reward(shaped_mdp, **inactive, correct=[True], before=[True]) == [0.0]
    with pytest.raises(ValueError, match="needs correct_before"):
        reward(
            shaped_mdp,
            **{k: torch.tensor(v) for k, v in inactive.items()},
            correct=torch.tensor([True]),
        )


def test_the_core_pays_the_shaped_reward():
    model, splits = make_model("MNIST"), make_splits("MNIST")
    rows = np.arange(6)
    actions = np.array([0, 1, 2, 3, 0, 3])
    rewards = {}
    for shaping in SHAPINGS:
        core = DynaLayCore(model, splits["test"], 6, mdp=MDPConfig(shaping=shaping))
        core.reset_slots(np.arange(6), np.random.default_rng(0), rows=rows)
        before = (core.state.logits.argmax(1) == core.split.labels[core.rows]).numpy()
        rewards[shaping] = core.step(actions).reward
    assert rewards["nop"] - rewards["none"] == pytest.approx(-0.5 * before, abs=1e-6)


def test_change_features_against_hand_computed_values():
    # Logits written as log-probabilities, so the softmaxes are these numbers.
    before = torch.log(torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]]))
    after = torch.log(torch.tensor([[0.2, 0.7, 0.1], [0.2, 0.5, 0.3]]))
    values = change_features(after, before)
    # Sample 0: prediction 0 -> 1 (changed), top 0.6 -> 0.7 (+0.1), TV 0.5*(0.4+0.4+0) = 0.4.
    # Sample 1: nothing changed.
    assert CHANGE_FEATURES == ("prediction_changed", "top_probability_change", "total_variation")
    assert values.numpy() == pytest.approx(np.array([[1.0, 0.1, 0.4], [0.0, 0.0, 0.0]]), abs=1e-6)
    # Per position (B, K, T): the mean over the T positions (one changed, one not).
    per_position = change_features(
        torch.stack([after[0], after[1]], dim=1)[None],
        torch.stack([before[0], after[1]], dim=1)[None],
    )
    assert per_position.numpy() == pytest.approx(np.array([[0.5, 0.05, 0.2]]), abs=1e-6)


def test_the_change_features_in_the_observation_of_env_and_first_state():
    model, splits = make_model("MNIST"), make_splits("MNIST")
    plain, with_changes = observation_layout(model), observation_layout(model, changes=True)
    assert with_changes["step_index"].stop == plain["step_index"].stop + 3
    assert with_changes["changes"] == slice(
        plain["previous_action"].start, plain["previous_action"].start + 3
    )
    env = DynaLayEnv(
        "MNIST", model=model, splits=splits, device="cpu", max_steps=3, observe_changes=True
    )
    assert env.observation_space.shape == (with_changes["step_index"].stop,)
    first, _ = env.reset(seed=0)
    assert env.observation_space.contains(first)
    assert first[with_changes["changes"]].tolist() == [0.0, 0.0, 0.0]
    core = env.core
    logits_before = core.state.logits.clone()
    observation, *_ = env.step(3)
    expected = change_features(core.state.logits, logits_before)[0]
    assert observation[with_changes["changes"]] == pytest.approx(expected.tolist(), abs=1e-6)
    assert env.observation_space.contains(observation)
    state = core.state
    assert first_observation(state, model.n_actions, changes=True)[
        0, with_changes["changes"]
    ].tolist() == [0.0, 0.0, 0.0]
    # Off (the registered ids): the observation the saved agents were trained on.
    default = DynaLayEnv("MNIST", model=model, splits=splits, device="cpu", max_steps=3)
    assert default.observation_space.shape == (plain["step_index"].stop,)
