"""SB3 ``VecEnv`` adapter for the native batched :class:`~dynalay_env.DynaLayVectorEnv`.

Stable-Baselines3 does not accept a Gymnasium ``VectorEnv``; this adapter follows SB3's own
conventions instead: ``reset()`` returns only observations, episodes reset in the same step,
and each finished env's info dict holds ``terminal_observation`` (its last observation) and
``TimeLimit.truncated``. Wrap it in ``VecMonitor`` for episode statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from dynalay_env import DynaLayVectorEnv


class DynaLaySB3VecEnv(VecEnv):
    """Expose a :class:`DynaLayVectorEnv` (autoreset ``SAME_STEP``) as an SB3 ``VecEnv``."""

    def __init__(self, vector_env: DynaLayVectorEnv) -> None:
        if vector_env.autoreset_mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                "the SB3 adapter needs a vector env built with autoreset_mode=SAME_STEP "
                f"(SB3 resets finished episodes within the step), got {vector_env.autoreset_mode}"
            )
        self.vector_env = vector_env
        super().__init__(
            vector_env.num_envs,
            vector_env.single_observation_space,
            vector_env.single_action_space,
        )
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        # One batched env has one random stream: the first seed given to seed() drives it.
        seed = self._seeds[0]
        observations, infos = self.vector_env.reset(seed=seed, options=self._options[0] or None)
        self.reset_infos = [
            {"dataset_index": int(infos["dataset_index"][i])} for i in range(self.num_envs)
        ]
        self._reset_seeds()
        self._reset_options()
        return observations

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_async() must be called before step_wait()")
        observations, rewards, terminated, truncated, infos = self.vector_env.step(self._actions)
        self._actions = None
        dones = terminated | truncated
        per_env: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            final_info = infos["final_info"]
            keys = [key for key in final_info if not key.startswith("_")]
            for slot in np.flatnonzero(dones):
                info = {key: _item(final_info[key][slot]) for key in keys}
                info["actions"] = info["actions"][info["actions"] >= 0]  # as the single env
                info["terminal_observation"] = infos["final_obs"][slot]
                info["TimeLimit.truncated"] = bool(truncated[slot] and not terminated[slot])
                per_env[slot] = info
        return observations, rewards.astype(np.float32), dones, per_env

    def close(self) -> None:
        self.vector_env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.vector_env, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.vector_env, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs
    ) -> list[Any]:
        result = getattr(self.vector_env, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]


def make_sb3_vec_env(env_id: str, num_envs: int, **env_kwargs: Any) -> VecMonitor:
    """``gymnasium.make_vec`` with SAME_STEP autoreset, adapted to SB3 and wrapped in VecMonitor.

    ``env_kwargs`` are those of :func:`dynalay_env.build.build_core`.
    """
    vector_env = gym.make_vec(
        env_id,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        autoreset_mode=AutoresetMode.SAME_STEP,
        **env_kwargs,
    )
    return VecMonitor(DynaLaySB3VecEnv(vector_env))


def _item(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
