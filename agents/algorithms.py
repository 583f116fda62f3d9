"""The SB3 algorithms a run can use, their hyperparameters, and a saved agent read back.

- :data:`ALGORITHMS`: ``--algo`` name -> Stable-Baselines3 class (PPO, A2C, DQN).
- :func:`algo_hyperparams`: the algorithm's keyword arguments from ``hyperparams.yml`` (rl-zoo3
  style: ``default`` then per env id; ``normalize`` asks for VecNormalize).
- :func:`load_saved_agent` / :func:`load_agent_policy`: a phase folder's (or a finished run's)
  agent and its observation normalisation, the one way the library reads them back for
  evaluation and export.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecNormalize

from agents.files import AGENT_FILE, NORMALIZE_FILE, final_checkpoints

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "dqn": DQN}
HYPERPARAMS_FILE = Path(__file__).with_name("hyperparams.yml")


def algo_hyperparams(algo: str, env_id: str, conf: str | None = None) -> dict[str, Any]:
    """The algorithm's keyword arguments: ``default`` then the env's own, from the YAML file."""
    path = Path(conf) if conf else HYPERPARAMS_FILE
    with open(path) as handle:
        table = yaml.safe_load(handle) or {}
    per_algo = table.get(algo, {})
    return {**per_algo.get("default", {}), **per_algo.get(env_id, {})}


def load_saved_agent(
    folder: Path, algo: str, device: Any = "cpu"
) -> tuple[BaseAlgorithm, VecNormalize | None]:
    """The agent saved in phase folder ``folder`` and its VecNormalize statistics (None when the
    run did not normalise observations), the statistics frozen (``training = False``)."""
    folder = Path(folder)
    agent = ALGORITHMS[algo].load(folder / AGENT_FILE, device=device)
    stats_file = folder / NORMALIZE_FILE
    if not stats_file.is_file():
        return agent, None
    with open(stats_file, "rb") as handle:
        # VecNormalize pickles without its venv; normalize_obs needs only the statistics.
        normalizer: VecNormalize = pickle.load(handle)
    normalizer.training = False
    return agent, normalizer


def load_agent_policy(run_dir: Path, algo: str, device: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The finished run's agent as a deterministic policy (observations -> actions), its
    observation normalisation applied when it has one."""
    agent, normalizer = load_saved_agent(final_checkpoints(run_dir), algo, device)
    if normalizer is None:
        return lambda observations: agent.predict(observations, deterministic=True)[0]
    return lambda observations: agent.predict(
        normalizer.normalize_obs(observations), deterministic=True
    )[0]
