"""The SB3 algorithms a run can use, their hyperparameters, and a saved agent read back.

- :data:`ALGORITHMS`: ``--algo`` name -> Stable-Baselines3 class (PPO, A2C, DQN).
- :func:`algo_hyperparams`: the algorithm's keyword arguments from ``hyperparams.yml`` (rl-zoo3
  style: ``default`` then per env id; ``normalize`` asks for VecNormalize).
- :func:`load_agent`: an ``agent.zip`` read back with nothing unpickled (every reader's way).
- :func:`load_saved_agent` / :func:`load_agent_policy`: a phase folder's (or a finished run's)
  agent and its observation normalisation, the one way the library reads them back for
  evaluation and export.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from gymnasium import spaces
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.agent_zip import read_agent_data, safe_custom_objects
from agents.config import HYPERPARAMS_FILE, TrainConfig, load_run_config
from agents.files import (
    AGENT_FILE,
    MODEL_FILE,
    NORMALIZE_FILE,
    UnsafeRunFile,
    final_checkpoints,
    refuse_pickles,
)
from agents.normalization import NormalizerState
from dynalay_env.core import observation_space
from main_model import load_main_model

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "dqn": DQN}


def algo_hyperparams(algo: str, env_id: str, conf: str | None = None) -> dict[str, Any]:
    """The algorithm's keyword arguments: ``default`` then the env's own, from the YAML file."""
    path = Path(conf) if conf else HYPERPARAMS_FILE
    with open(path) as handle:
        table = yaml.safe_load(handle) or {}
    per_algo = table.get(algo, {})
    return {**per_algo.get("default", {}), **per_algo.get(env_id, {})}


def spaces_for(
    model: Any, max_steps: int, changes: bool = False
) -> tuple[spaces.Box, spaces.Discrete]:
    """The observation and action spaces of an agent acting on ``model`` in episodes of at most
    ``max_steps`` decisions (``changes``: with the observation's change values, a run's
    ``observe_changes``): those of the env over it
    (:func:`dynalay_env.core.observation_space`)."""
    return observation_space(model, max_steps, changes), spaces.Discrete(model.n_actions)


def load_agent(
    path: Path,
    algo: str,
    algo_kwargs: Mapping[str, Any],
    *,
    env: VecEnv | None = None,
    agent_spaces: tuple[spaces.Space, spaces.Space] | None = None,
    device: Any = "cpu",
) -> BaseAlgorithm:
    """The one way the project reads an ``agent.zip``: nothing in it unpickled
    (:mod:`agents.agent_zip`).

    ``env``: the env the agent goes on learning in (its spaces are the agent's); else
    ``agent_spaces`` (:func:`spaces_for`) for an agent that only predicts. ``algo_kwargs``: the
    run's resolved algorithm arguments (``config.yaml``). Raises
    :class:`~agents.files.UnsafeRunFile` for a file that would need unpickling and
    :class:`~agents.agent_zip.AgentFileError` for one that does not fit the run.
    """
    path = Path(path)
    algorithm = ALGORITHMS[algo]
    if env is not None:
        agent_spaces = (env.observation_space, env.action_space)
    if agent_spaces is None:
        raise TypeError("load_agent needs the env or the agent's spaces")
    custom_objects = safe_custom_objects(
        path, read_agent_data(path), algorithm, algo_kwargs, *agent_spaces
    )
    try:
        return algorithm.load(path, env=env, device=device, custom_objects=custom_objects)
    except pickle.UnpicklingError as error:  # torch.load(weights_only=True) met an object
        # torch's text is paragraphs of advice to load it anyway; its one telling line is kept.
        refused = re.search(r"WeightsUnpickler error: ([^.\n]*)", str(error))
        raise UnsafeRunFile(
            f"{path} holds pickled objects besides tensors, which DynaLay does not load "
            f"(unpickling runs whatever code the file's author put in it): "
            f"{refused.group(1) if refused else 'not plain weights'}"
        ) from error


def load_saved_agent(
    folder: Path, config: TrainConfig, device: Any = "cpu", model: Any = None
) -> tuple[BaseAlgorithm, NormalizerState | None]:
    """The agent saved in phase folder ``folder`` of a run made with ``config``, and its
    observation statistics (None when the run did not normalise observations), for prediction.

    ``model``: the folder's main model when the caller has it already (else read from the
    folder), which with ``config.max_steps`` gives the agent's spaces. Raises
    :class:`~agents.files.UnsafeRunFile` for a folder with pickles (made before this version).
    """
    folder = Path(folder)
    refuse_pickles(folder)
    if model is None:
        model, _ = load_main_model(folder / MODEL_FILE)
    observations, actions = spaces_for(model, config.max_steps, config.observe_changes)
    agent = load_agent(
        folder / AGENT_FILE,
        config.algo,
        config.algo_kwargs,
        agent_spaces=(observations, actions),
        device=device,
    )
    stats_file = folder / NORMALIZE_FILE
    if not stats_file.is_file():
        return agent, None
    stats = NormalizerState.load(stats_file)
    stats.check_size(observations.shape[0], f"{folder / MODEL_FILE}'s observation")
    return agent, stats


def load_agent_policy(run_dir: Path, algo: str, device: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The finished run's agent as a deterministic policy (observations -> actions), its
    observation normalisation applied when it has one."""
    config = load_run_config(run_dir)
    if config.algo != algo:
        raise ValueError(f"{run_dir} trained a {config.algo} agent, not {algo}")
    agent, normalizer = load_saved_agent(final_checkpoints(run_dir), config, device)
    if normalizer is None:
        return lambda observations: agent.predict(observations, deterministic=True)[0]
    return lambda observations: agent.predict(
        normalizer.normalize_obs(observations), deterministic=True
    )[0]
