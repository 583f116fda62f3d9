"""``DynaLayEnv``: the single-episode Gymnasium face of the batched core (one slot).

See :mod:`dynalay_env.core` for the MDP (actions, reward, observation layout) and
:func:`dynalay_env.build.build_core` for the constructor's keyword arguments.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dynalay_env.build import build_core


class DynaLayEnv(gym.Env):
    """One input sample per episode: answer now (action 0) or loop blocks 1..k first (action k).

    ``reset(options={"index": i})`` starts on row ``i`` of the split instead of a drawn sample.
    ``step`` returns Python ``float``/``bool``; ``info`` is ``{}`` mid-episode and at the end
    holds ``prediction, label, correct, total_cost, flops, actions, iterations, episode_steps,
    dataset_index`` (see :meth:`dynalay_env.core.DynaLayCore.episode_info`). On
    ``DynaLay-WikiText2-v0`` ``prediction`` and ``label`` are the window's T tokens, ``correct``
    is the share of them predicted right and ``nll`` and ``perplexity`` are added.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, dataset: str = "CIFAR10", **kwargs: Any) -> None:
        self.core = build_core(1, dataset, **kwargs)
        self.observation_space = self.core.single_observation_space
        self.action_space = spaces.Discrete(self.core.n_actions)
        self._episode_over = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        rows = None if not options or "index" not in options else np.array([options["index"]])
        self.core.reset_slots(np.array([0]), self.np_random, rows)
        self._episode_over = False
        info = {"dataset_index": int(self.core.episode_info()["dataset_index"][0])}
        return self.core.observe()[0], info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._episode_over:
            raise RuntimeError("the episode is over: call reset() before step()")
        if np.ndim(action) != 0:
            raise ValueError(f"action must be a single integer, got shape {np.shape(action)}")
        result = self.core.step(np.array([action]))
        terminated, truncated = bool(result.terminated[0]), bool(result.truncated[0])
        info: dict[str, Any] = {}
        if terminated or truncated:
            self._episode_over = True
            info = {key: _scalar(value[0]) for key, value in result.episode.items()}
            info["actions"] = info["actions"][info["actions"] >= 0]
        return self.core.observe()[0], float(result.reward[0]), terminated, truncated, info


def _scalar(value: np.ndarray) -> Any:
    """Per-slot numpy values as Python scalars (arrays stay arrays)."""
    return value.item() if np.ndim(value) == 0 else value
