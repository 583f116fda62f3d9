"""Tests of the DynaLay environments: MDP values, seeding, faces, autoreset, data lookup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import make_model, make_splits, write_mnist_files
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

import dynalay_env
from agents import DynaLaySB3VecEnv
from agents.callbacks import DynaLayMetricsCallback
from agents.vec_env import BatchedVecMonitor
from dynalay_env import ENV_IDS, DataNotFoundError
from dynalay_env.data import load_splits
from dynalay_env.env import DynaLayEnv

REPO = Path(__file__).resolve().parents[2]


def make_env(dataset="CIFAR10", model=None, **kwargs):
    kwargs.setdefault("splits", make_splits(dataset))
    return gym.make(ENV_IDS[dataset], model=model or make_model(dataset), device="cpu", **kwargs)


def make_vec(num_envs, dataset="CIFAR10", model=None, **kwargs):
    kwargs.setdefault("splits", make_splits(dataset))
    return gym.make_vec(
        ENV_IDS[dataset],
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        model=model or make_model(dataset),
        device="cpu",
        **kwargs,
    )


# ----- checkers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", sorted(ENV_IDS))
def test_every_registered_id_passes_gymnasium_and_sb3_checkers(dataset, tiny_checkpoint):
    env = gym.make(
        ENV_IDS[dataset],
        splits=make_splits(dataset),
        checkpoint=tiny_checkpoint(dataset),
        device="cpu",
        max_steps=3,
    )
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env, warn=False)
    assert env.action_space == gym.spaces.Discrete(4)


def test_vector_env_declares_its_autoreset_mode():
    for mode in AutoresetMode:
        env = make_vec(2, autoreset_mode=mode)
        assert env.metadata["autoreset_mode"] == mode
    assert make_vec(2).metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP


# ----- rewards, costs, consecutive counts -------------------------------------------------------
def test_rewards_equal_hand_computed_values_when_every_loop_runs_max_iter():
    # tol is unreachable, so each looped block runs exactly max_iter = 3 iterations and the cost
    # of loop-3 is the most expensive possible step: cost 1 exactly.
    model = make_model("CIFAR10", tol=1e-30, max_iter=3)
    env = make_env(model=model, max_steps=4, alpha=0.5, beta=0.3)
    env.reset(seed=0)
    rewards = [env.step(3)[1] for _ in range(3)]
    assert rewards == pytest.approx([-0.3 * 1 * 1, -0.3 * 1 * 2, -0.3 * 1 * 3], abs=1e-6)

    blocks = model.blocks
    injections = blocks[1].inject_flops + blocks[2].inject_flops
    # a looped block: 3 iterations plus its loop's setup (the feedback's projection, if any)
    looped = [3 * b.iteration_flops + b.loop_setup_flops for b in blocks]
    loop_1 = injections + looped[0] + model.head_flops
    loop_3 = injections + sum(looped) + model.head_flops
    _, reward, terminated, _, info = env.step(1)  # a new k: the count restarts at 1
    assert terminated  # max_steps = 4 decisions reached: the answer is forced
    assert reward == pytest.approx(-0.3 * loop_1 / loop_3 + 0.5 * info["correct"], abs=1e-6)
    assert info["total_cost"] == pytest.approx(3.0 + loop_1 / loop_3)
    assert info["flops"] == model.straight_flops() + 3 * loop_3 + loop_1
    assert info["actions"].tolist() == [3, 3, 3, 1]
    assert info["iterations"].tolist() == [12, 9, 9]
    assert info["episode_steps"] == 4


def test_layer_penalty_multiplies_the_cost_by_the_chosen_k_not_the_repeat_count():
    # As above, every loop runs max_iter = 3 iterations, so costs are exact FLOP ratios.
    model = make_model("CIFAR10", tol=1e-30, max_iter=3)
    env = make_env(model=model, max_steps=4, alpha=0.5, beta=0.3, penalty="layer")
    env.reset(seed=0)
    blocks = model.blocks
    injections = blocks[1].inject_flops + blocks[2].inject_flops
    looped = [3 * b.iteration_flops + b.loop_setup_flops for b in blocks]
    loop_2 = injections + looped[0] + looped[1] + model.head_flops
    loop_3 = injections + sum(looped) + model.head_flops
    rewards = [env.step(a)[1] for a in (3, 3, 2)]
    # loop-3 twice: cost 1, times k = 3 both times (no growth with repetition); then loop-2.
    assert rewards == pytest.approx([-0.9, -0.9, -0.3 * 2 * loop_2 / loop_3], abs=1e-6)
    _, reward, terminated, _, info = env.step(0)
    assert terminated and reward == pytest.approx(0.5 * info["correct"], abs=1e-6)
    with pytest.raises(ValueError, match="penalty must be one of"):
        make_env(model=model, penalty="quadratic")


def test_rewards_match_an_independent_run_of_the_model():
    model = make_model("FashionMNIST")
    splits = make_splits("FashionMNIST")
    env = make_env("FashionMNIST", model=model, splits=splits, max_steps=5, beta=0.7)
    row, actions = 5, [2, 2, 1, 1, 0]
    env.reset(options={"index": row})
    observed = [env.step(a) for a in actions]

    split = splits["holdout"]
    with torch.no_grad():
        state = model.straight(split.normalized(torch.tensor([row]))).state
        expected, previous, count = [], None, 0
        for action in actions[:-1]:
            output = model.step(state, torch.tensor([action]))
            state = output.state
            count = count + 1 if action == previous else 1
            previous = action
            cost = output.flops.item() / model.max_step_flops()
            expected.append(-0.7 * cost * count)
        correct = state.logits.argmax().item() == split.labels[row].item()
    expected.append(0.5 * correct)
    assert [step[1] for step in observed] == pytest.approx(expected, abs=1e-6)
    assert [step[2] for step in observed] == [False, False, False, False, True]
    layout = env.unwrapped.core.observation_layout
    last_obs = observed[-2][0]
    assert last_obs[layout["previous_action"]].tolist() == [0, 1, 0, 0]
    assert last_obs[layout["consecutive_count"]].item() == 2
    assert last_obs[layout["step_index"]].item() == 4
    probabilities = torch.softmax(state.logits[0], 0).numpy()
    assert last_obs[layout["class_probabilities"]] == pytest.approx(probabilities, abs=1e-6)
    assert (last_obs[layout["residuals"]][:1] < model.config.tol).all()


def test_nop_answers_at_once_with_alpha_times_correct():
    env = make_env(alpha=0.9)
    obs, _ = env.reset(seed=3)
    layout = env.unwrapped.core.observation_layout
    assert obs[layout["residuals"]].tolist() == [1.0, 1.0, 1.0]  # straight pass
    assert obs[layout["previous_action"]].tolist() == [0, 0, 0, 0]
    _, reward, terminated, truncated, info = env.step(0)
    assert terminated and not truncated
    assert reward == (0.9 if info["correct"] else 0.0)
    assert info["total_cost"] == 0.0 and info["actions"].tolist() == [0]
    assert info["correct"] == (info["prediction"] == info["label"])


# ----- seeding ----------------------------------------------------------------------------------
def rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    trace = [obs]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        trace += [obs, reward, terminated, truncated, sorted(info)]
        if terminated or truncated:
            obs, _ = env.reset()
            trace.append(obs)
    return trace


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y


def test_same_seed_same_trajectory_single_env():
    actions = [1, 2, 0, 3, 3, 0, 1]
    first = rollout(make_env(max_steps=3), 7, actions)
    second = rollout(make_env(max_steps=3), 7, actions)
    assert_same(first, second)
    other = rollout(make_env(max_steps=3), 8, actions)
    assert not np.array_equal(first[0], other[0])


def test_same_seed_same_trajectory_vector_env():
    def run(seed):
        env = make_vec(4, max_steps=2)
        trace = list(env.reset(seed=seed))
        for action in ([1, 2, 3, 0], [0, 1, 1, 2], [3, 3, 0, 1]):
            obs, reward, terminated, truncated, info = env.step(np.array(action))
            trace += [obs, reward, terminated, truncated, info.get("flops"), info.get("_flops")]
        return trace

    first, second = run(11), run(11)
    for x, y in zip(first, second, strict=True):
        if isinstance(x, dict):
            assert x.keys() == y.keys()
        elif x is None:
            assert y is None
        else:
            np.testing.assert_array_equal(x, y)


# ----- vector env against single envs -----------------------------------------------------------
def test_vector_env_matches_n_single_envs_fed_the_same_samples_and_actions():
    model, splits = make_model("CIFAR10"), make_splits("CIFAR10")
    rows = [3, 0, 7, 5]
    script = [[2, 1, 0, 3], [2, 0, 0, 3], [0, 0, 0, 1]]
    vector = make_vec(4, model=model, splits=splits, max_steps=3)
    obs, _ = vector.reset(seed=0, options={"indices": rows})
    singles = [make_env(model=model, splits=splits, max_steps=3) for _ in rows]
    single_obs = [
        env.reset(options={"index": row})[0] for env, row in zip(singles, rows, strict=True)
    ]
    np.testing.assert_allclose(obs, np.stack(single_obs), atol=1e-6)
    done = np.zeros(4, dtype=bool)
    for actions in script:
        obs, reward, terminated, truncated, info = vector.step(np.array(actions))
        for slot, env in enumerate(singles):
            if done[slot]:
                continue
            s_obs, s_reward, s_term, s_trunc, s_info = env.step(actions[slot])
            np.testing.assert_allclose(obs[slot], s_obs, atol=1e-5)
            assert reward[slot] == pytest.approx(s_reward, abs=1e-6)
            assert (terminated[slot], truncated[slot]) == (s_term, s_trunc)
            assert info["_flops"][slot] == s_term
            if s_term:
                assert info["flops"][slot] == s_info["flops"]
                assert info["prediction"][slot] == s_info["prediction"]
                assert info["actions"][slot][: s_info["episode_steps"]].tolist() == (
                    s_info["actions"].tolist()
                )
                np.testing.assert_array_equal(info["iterations"][slot], s_info["iterations"])
        done |= terminated
    assert done.all()


def test_vector_env_with_one_slot_matches_the_single_env_step_for_step():
    model, splits = make_model("MNIST"), make_splits("MNIST")
    actions = [1, 1, 0, 2, 3, 3, 0, 0, 2]
    single = rollout(make_env("MNIST", model=model, splits=splits, max_steps=2), 5, actions)
    vector = make_vec(
        1, "MNIST", model=model, splits=splits, max_steps=2, autoreset_mode="SameStep"
    )
    obs, _ = vector.reset(seed=5)
    trace = [obs[0]]
    for action in actions:
        obs, reward, terminated, truncated, info = vector.step(np.array([action]))
        if terminated[0] or truncated[0]:
            trace += [info["final_obs"][0], float(reward[0]), bool(terminated[0]), False]
            trace += [sorted(k for k in info["final_info"] if not k.startswith("_")), obs[0]]
        else:
            trace += [
                obs[0],
                float(reward[0]),
                False,
                False,
                [],
            ]
    assert len(trace) == len(single)
    for x, y in zip(trace, single, strict=True):
        if isinstance(y, np.ndarray):
            np.testing.assert_allclose(x, y, atol=1e-6)
        elif isinstance(y, float):
            assert x == pytest.approx(y, abs=1e-6)
        else:
            assert x == y


# ----- autoreset --------------------------------------------------------------------------------
def test_next_step_autoreset_ignores_the_action_and_returns_zero_reward():
    env = make_vec(2, max_steps=1)
    env.reset(seed=0)
    obs, reward, terminated, _, info = env.step(np.array([0, 2]))
    assert terminated.tolist() == [True, True] and info["_correct"].tolist() == [True, True]
    obs, reward, terminated, truncated, info = env.step(np.array([3, 3]))
    assert reward.tolist() == [0.0, 0.0]
    assert not terminated.any() and not truncated.any()
    layout = env.unwrapped.core.observation_layout
    assert obs[:, layout["step_index"]].tolist() == [[0.0], [0.0]]  # fresh episodes
    assert "correct" not in info


def test_same_step_autoreset_returns_the_reset_obs_and_the_final_obs_in_infos():
    env = make_vec(3, max_steps=2, autoreset_mode=AutoresetMode.SAME_STEP)
    env.reset(seed=0)
    layout = env.unwrapped.core.observation_layout
    obs, _, terminated, _, info = env.step(np.array([0, 1, 2]))
    assert terminated.tolist() == [True, False, False]
    assert info["_final_obs"].tolist() == [True, False, False]
    assert obs[0, layout["step_index"]].item() == 0.0  # already a new episode
    assert info["final_obs"][0][layout["previous_action"]].tolist() == [1, 0, 0, 0]
    assert info["final_info"]["_flops"].tolist() == [True, False, False]


def test_disabled_autoreset_requires_an_explicit_reset_mask():
    env = make_vec(2, max_steps=1, autoreset_mode=AutoresetMode.DISABLED)
    env.reset(seed=0)
    env.step(np.array([0, 1]))
    with pytest.raises(RuntimeError, match=r"slots \[0, 1\] finished.*reset_mask"):
        env.step(np.array([0, 0]))
    env.reset(options={"reset_mask": np.array([True, True])})
    env.step(np.array([0, 0]))


# ----- SB3 adapter ------------------------------------------------------------------------------
def test_sb3_adapter_terminal_observation_is_the_last_observation_of_the_episode():
    model, splits = make_model("CIFAR10"), make_splits("CIFAR10")
    vector = make_vec(
        2, model=model, splits=splits, max_steps=3, autoreset_mode=AutoresetMode.SAME_STEP
    )
    adapter = DynaLaySB3VecEnv(vector)
    adapter.seed(4)
    adapter.reset()
    rows = vector.unwrapped.core.rows.tolist()
    obs, rewards, dones, infos = adapter.step(np.array([2, 1]))
    assert not dones.any() and infos == [{}, {}]
    obs, rewards, dones, infos = adapter.step(np.array([1, 0]))
    assert dones.tolist() == [False, True]
    reference = make_env(model=model, splits=splits, max_steps=3)
    reference.reset(options={"index": rows[1]})
    reference.step(1)
    last_obs, last_reward, *_ = reference.step(0)
    np.testing.assert_allclose(infos[1]["terminal_observation"], last_obs, atol=1e-6)
    assert rewards[1] == pytest.approx(last_reward)
    assert infos[1]["TimeLimit.truncated"] is False
    assert infos[1]["actions"].tolist() == [1, 0]
    assert not np.allclose(obs[1], last_obs)  # the returned obs starts the next episode


def sb3_adapter(num_envs, model, splits, terminal_observations="all", seed=3):
    """An adapter over a SameStep vector env whose episodes end in all three ways."""
    vector = make_vec(
        num_envs,
        "MNIST",
        model=model,
        splits=splits,
        max_steps=3,
        max_episode_steps=2,
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    adapter = DynaLaySB3VecEnv(vector, terminal_observations=terminal_observations)
    adapter.seed(seed)
    adapter.reset()
    return adapter


@pytest.mark.parametrize("terminal_observations", ["all", "truncated"])
def test_sb3_adapter_infos_at_many_slots_equal_the_single_envs(terminal_observations):
    # Finished slots' infos are built column by column and running slots share one read-only
    # dict: every finished slot must still get exactly the single env's final info (values and
    # Python types), with terminal_observation (all finished slots, or only truncated ones) and
    # TimeLimit.truncated; and the SameStep observations (reset slots patched in) must equal a
    # fresh observation of every slot.
    model, splits = make_model("MNIST"), make_splits("MNIST")
    n = 8
    adapter = sb3_adapter(n, model, splits, terminal_observations)
    core = adapter.vector_env.unwrapped.core
    single = DynaLayEnv(
        "MNIST", model=model, splits=splits, device="cpu", max_steps=3, max_episode_steps=2
    )
    episode_rows, histories = core.rows.tolist(), [[] for _ in range(n)]
    rng = np.random.default_rng(0)
    ends = {"terminated": 0, "truncated": 0, "running": 0}
    for _ in range(6):
        actions = rng.integers(0, 4, n)
        obs, rewards, dones, infos = adapter.step(actions)
        np.testing.assert_array_equal(obs, core.observe())
        for slot in range(n):
            histories[slot].append(int(actions[slot]))
            if not dones[slot]:
                ends["running"] += 1
                assert infos[slot] == {}
                with pytest.raises(TypeError, match="shared"):
                    infos[slot]["episode"] = {}
                continue
            single.reset(options={"index": episode_rows[slot]})
            for action in histories[slot]:
                last_obs, reward, terminated, truncated, expected = single.step(action)
            assert rewards[slot] == pytest.approx(reward, abs=1e-6)
            time_limit = truncated and not terminated
            ends["truncated" if time_limit else "terminated"] += 1
            expected["TimeLimit.truncated"] = time_limit
            if terminal_observations == "all" or time_limit:
                expected["terminal_observation"] = last_obs
            info = infos[slot]
            assert sorted(info) == sorted(expected)
            for key, value in expected.items():
                if isinstance(value, np.ndarray):
                    assert info[key].dtype == value.dtype, key
                    np.testing.assert_allclose(info[key], value, atol=1e-5, err_msg=key)
                else:
                    assert type(info[key]) is type(value) and info[key] == value, key
            episode_rows[slot], histories[slot] = int(core.rows[slot]), []
    assert min(ends.values()) > 0, ends  # every kind of slot was checked


def test_batched_vec_monitor_records_what_sb3s_vec_monitor_records():
    model, splits = make_model("MNIST"), make_splits("MNIST")
    ours = BatchedVecMonitor(sb3_adapter(6, model, splits), info_keywords=("correct",))
    theirs = VecMonitor(sb3_adapter(6, model, splits), info_keywords=("correct",))
    rng = np.random.default_rng(1)
    for _ in range(5):
        actions = rng.integers(0, 4, 6)
        *_, dones, our_infos = ours.step(actions)
        *_, their_dones, their_infos = theirs.step(actions)
        np.testing.assert_array_equal(dones, their_dones)
        for our, their in zip(our_infos, their_infos, strict=True):
            assert sorted(our) == sorted(their)
            if "episode" in their:
                for key in ("r", "l", "correct"):
                    assert our["episode"][key] == their["episode"][key]
                    assert type(our["episode"][key]) is type(their["episode"][key])
    assert ours.episode_count == theirs.episode_count > 0


@pytest.mark.parametrize("source", ["adapter", "infos"])
def test_metrics_callback_records_the_episodes_that_finished(source):
    # "adapter": the callback reads the adapter's batched arrays; "infos": it does not find
    # the adapter (as with any other VecEnv) and gathers the finished envs' info dicts.
    model, splits = make_model("MNIST"), make_splits("MNIST")
    env = BatchedVecMonitor(sb3_adapter(6, model, splits))
    callback = DynaLayMetricsCallback(n_actions=4, n_blocks=3)
    logger = Logger(folder=None, output_formats=[])
    training_env = env
    if source == "infos":  # any other VecEnv: the callback reads the infos it is given
        training_env = DummyVecEnv([lambda: make_env("MNIST", model=model, splits=splits)])
    stand_in = SimpleNamespace(num_timesteps=0, get_env=lambda: training_env, logger=logger)
    callback.init_callback(stand_in)
    assert (callback._adapter is not None) == (source == "adapter")
    rng = np.random.default_rng(2)
    finished = []
    for _ in range(6):
        *_, dones, infos = env.step(rng.integers(0, 4, 6))
        callback.update_locals({"infos": infos, "dones": dones})
        callback.on_step()
        finished += [info for info, done in zip(infos, dones, strict=True) if done]
    callback.on_rollout_end()
    recorded = logger.name_to_value
    assert recorded["dynalay/episodes"] == len(finished) > 0
    assert recorded["dynalay/accuracy"] == pytest.approx(np.mean([i["correct"] for i in finished]))
    assert recorded["dynalay/mean_cost"] == pytest.approx(
        np.mean([i["total_cost"] for i in finished])
    )
    actions = np.concatenate([i["actions"] for i in finished])
    for action in range(4):
        share = np.mean(actions == action)
        assert recorded[f"dynalay/action_freq_{action}"] == pytest.approx(share)
    residuals = np.array([i["residuals"] for i in finished])
    assert recorded["fpi/residual_block2"] == pytest.approx(np.median(residuals[:, 1]))
    assert recorded["fpi/iterations_block3"] == pytest.approx(
        np.mean([i["iterations"][2] for i in finished])
    )


def test_sb3_adapter_requires_same_step_autoreset():
    with pytest.raises(ValueError, match="SAME_STEP"):
        DynaLaySB3VecEnv(make_vec(2))


# ----- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize("action", [4, -1, 1.5])
def test_out_of_range_action_raises_a_clear_error(action):
    env = make_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions must be"):
        env.step(action)


def test_wrongly_shaped_actions_raise_a_clear_error():
    env = make_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="single integer"):
        env.step(np.array([1, 2]))
    vector = make_vec(3)
    vector.reset(seed=0)
    with pytest.raises(ValueError, match=r"expected 3 action\(s\) of shape \(3,\)"):
        vector.step(np.array([1, 2]))
    with pytest.raises(ValueError, match=r"actions must be in \[0, 3\]"):
        vector.step(np.array([1, 2, 9]))


def test_step_before_reset_and_after_the_end_raise_clear_errors():
    env = make_env()
    with pytest.raises(RuntimeError, match="reset"):
        env.unwrapped.step(0)
    env.reset(seed=0)
    env.step(0)
    with pytest.raises(RuntimeError, match="episode is over"):
        env.unwrapped.step(0)


def test_missing_data_raises_a_clear_error(tmp_path):
    with pytest.raises(DataNotFoundError) as error:
        gym.make("DynaLay-CIFAR10-v0", data_dir=tmp_path / "nothing", device="cpu")
    message = str(error.value)
    assert str(tmp_path / "nothing") in message
    assert os.environ["DYNALAY_CACHE"] in message
    assert "dynalay_env.pretrain --dataset CIFAR10 --download" in message
    assert isinstance(error.value, FileNotFoundError)


def test_model_and_data_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match="use a checkpoint trained on CIFAR10"):
        make_env("CIFAR10", model=make_model("MNIST"))


# ----- real loading path, registration, pretraining ---------------------------------------------
def test_make_with_module_prefix_works_without_a_prior_import(tmp_path, tiny_checkpoint):
    write_mnist_files(tmp_path / "data")
    script = (
        "import gymnasium as gym, sys\n"
        "assert 'dynalay_env' not in sys.modules\n"
        f"env = gym.make('dynalay_env:DynaLay-MNIST-v0', data_dir=r'{tmp_path / 'data'}',\n"
        f"               checkpoint=r'{tiny_checkpoint('MNIST')}', holdout_size=10, device='cpu')\n"
        "obs, info = env.reset(seed=0)\n"
        "print(obs.shape, env.unwrapped.core.split.spec.name, len(env.unwrapped.core.split))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["(37,)", "MNIST", "10"]


def test_holdout_is_seeded_and_disjoint_from_train(tmp_path):
    write_mnist_files(tmp_path)
    first = load_splits("MNIST", tmp_path, holdout_size=8, seed=1)
    again = load_splits("MNIST", tmp_path, holdout_size=8, seed=1)
    assert torch.equal(first["holdout"].indices, again["holdout"].indices)
    assert set(first["holdout"].indices.tolist()).isdisjoint(first["train"].indices.tolist())
    assert len(first["train"]) + len(first["holdout"]) == 30 and len(first["test"]) == 10
    other = load_splits("MNIST", tmp_path, holdout_size=8, seed=2)
    assert not torch.equal(first["holdout"].indices, other["holdout"].indices)


def test_first_use_pretrains_caches_and_then_reuses_the_main_model(capfd):
    splits = make_splits("MNIST", n_train=40)
    env = gym.make(
        "DynaLay-MNIST-v0", splits=splits, device="cpu", pretrain_epochs=1, widths=(2, 2, 2)
    )
    cached = Path(os.environ["DYNALAY_CACHE"]) / "models" / "MNIST.pt"
    err = capfd.readouterr().err
    assert cached.is_file()
    assert f"cached the pretrained main model at {cached}" in err
    assert "train MNIST main model (dynalay, 1 epochs)" in err  # the progress bar
    again = gym.make("DynaLay-MNIST-v0", splits=splits, device="cpu")
    assert "using the cached pretrained main model" in capfd.readouterr().err
    first_weights = env.unwrapped.core.model.state_dict()
    for name, value in again.unwrapped.core.model.state_dict().items():
        assert torch.equal(value, first_weights[name]), name


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_fashion_mnist_is_found_in_the_debian_package_without_download(tiny_checkpoint):
    env = gym.make(
        "DynaLay-FashionMNIST-v0", checkpoint=tiny_checkpoint("FashionMNIST"), device="cpu"
    )
    core = env.unwrapped.core
    assert len(core.split) == 5000 and core.split.spec.name == "FashionMNIST"
    env.reset(seed=0)
    assert env.step(0)[2]


def test_sequential_mode_walks_the_split_in_order():
    splits = make_splits("CIFAR10")
    env = make_vec(3, splits=splits, split="test", sequential=True)
    _, info = env.reset(seed=0)
    assert info["dataset_index"].tolist() == [0, 1, 2]
    env.step(np.array([0, 0, 0]))
    env.step(np.array([0, 0, 0]))  # NEXT_STEP: the finished slots restart on rows 3, 4, 5
    assert env.unwrapped.core.rows.tolist() == [3, 4, 5]


def test_package_registers_all_ids():
    for env_id in ENV_IDS.values():
        spec = gym.spec(env_id)
        assert spec.vector_entry_point == "dynalay_env.vector_env:DynaLayVectorEnv"
    assert dynalay_env.ENV_IDS["CIFAR10"] == "DynaLay-CIFAR10-v0"


def test_a_main_model_trained_on_the_holdout_is_refused_and_a_disjoint_one_accepted():
    from dynalay_env.build import build_core
    from dynalay_env.data import SplitOverlapError, training_provenance

    splits = make_splits("MNIST")
    model = make_model("MNIST")
    model.provenance = training_provenance(splits["train"])
    core = build_core(2, "MNIST", model=model, splits=splits, device="cpu", progress=False)
    assert core.num_slots == 2
    model.provenance = training_provenance(splits["holdout"].subset(torch.arange(3)))
    with pytest.raises(SplitOverlapError, match=r"the given main model was trained on 3 of the 24"):
        build_core(2, "MNIST", model=model, splits=splits, device="cpu", progress=False)
    # The test split is not the holdout: nothing to check there.
    build_core(2, "MNIST", model=model, splits=splits, split="test", device="cpu", progress=False)
