"""SB3 ``VecEnv`` adapter for the native batched :class:`~dynalay_env.DynaLayVectorEnv`.

Stable-Baselines3 does not accept a Gymnasium ``VectorEnv``; this adapter follows SB3's own
conventions instead: ``reset()`` returns only observations, episodes reset in the same step,
and each finished env's info dict holds ``TimeLimit.truncated`` and ``terminal_observation`` (its
last observation; see :class:`DynaLaySB3VecEnv` for which finished envs get it). Wrap it in
``VecMonitor`` for episode statistics (:func:`make_sb3_vec_env` does).

SB3's ``VecEnv`` API wants one info dict per env every step. A finished env gets a fresh dict,
filled from columns that numpy converted in bulk: wrappers write into finished envs' dicts
(``VecMonitor`` adds ``episode``, ``VecNormalize`` replaces ``terminal_observation``). Every env
whose episode goes on gets the same empty, read-only dict (:data:`RUNNING_INFO`): nothing in SB3
writes into those, and a write by anything else raises instead of showing up in every env.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from dynalay_env import DynaLayVectorEnv


class _ReadOnlyInfo(dict):
    """An empty info dict that refuses changes, so that one object can serve many envs."""

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "this info dict is shared by every env whose episode goes on; it cannot be "
            "changed (copy it with dict(info) first)"
        )

    __setitem__ = __delitem__ = __ior__ = _refuse  # type: ignore[assignment]
    update = setdefault = pop = popitem = clear = _refuse  # type: ignore[assignment]


#: The info of every env whose episode goes on in a step: empty, shared and read-only.
RUNNING_INFO: dict[str, Any] = _ReadOnlyInfo()

#: Which finished envs get ``terminal_observation`` (see :class:`DynaLaySB3VecEnv`).
TERMINAL_OBSERVATIONS = ("all", "truncated")


class DynaLaySB3VecEnv(VecEnv):
    """Expose a :class:`DynaLayVectorEnv` (autoreset ``SAME_STEP``) as an SB3 ``VecEnv``.

    A finished env's info is the single env's final info (``prediction``, ``label``,
    ``correct``... as Python scalars and arrays, ``actions`` without padding) plus
    ``TimeLimit.truncated`` and ``terminal_observation``; a running env's info is empty
    (:data:`RUNNING_INFO`).

    ``terminal_observations``: which finished envs get ``terminal_observation``. ``all`` (the
    default) is SB3's ``VecEnv`` convention (``DummyVecEnv`` does it). ``truncated``: only envs
    cut by a time limit, the only ones whose last observation an SB3 algorithm uses: on-policy
    algorithms bootstrap a truncated episode's value from it and read it nowhere else;
    off-policy ones store it as the next observation of the transition, whose target value is
    multiplied by ``1 - done = 0`` when the episode terminated. It saves ``VecNormalize`` a copy
    and a normalisation per finished env (it normalises every ``terminal_observation`` one env
    at a time), which at thousands of envs costs more than the rest of the step.
    """

    def __init__(self, vector_env: DynaLayVectorEnv, terminal_observations: str = "all") -> None:
        if vector_env.autoreset_mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                "the SB3 adapter needs a vector env built with autoreset_mode=SAME_STEP "
                f"(SB3 resets finished episodes within the step), got {vector_env.autoreset_mode}"
            )
        if terminal_observations not in TERMINAL_OBSERVATIONS:
            raise ValueError(
                f"terminal_observations must be one of {TERMINAL_OBSERVATIONS}, "
                f"got {terminal_observations!r}"
            )
        self.vector_env = vector_env
        self.terminal_observations = terminal_observations
        #: The final infos of the envs that finished in the last step, one array per key
        #: over those envs in the vector env's layout (``actions`` padded with -1); empty when
        #: none finished. For readers that want them batched, like the metrics callback.
        self.finished_episodes: dict[str, np.ndarray] = {}
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
        per_env: list[dict[str, Any]] = [RUNNING_INFO] * self.num_envs
        self.finished_episodes = {}
        if dones.any():
            slots = np.flatnonzero(dones)
            final_info = infos["final_info"]
            self.finished_episodes = {
                key: values[slots] for key, values in final_info.items() if not key.startswith("_")
            }
            time_limit = truncated[slots] & ~terminated[slots]
            finished = self._final_infos(infos["final_obs"][slots], time_limit)
            for slot, info in zip(slots.tolist(), finished, strict=True):
                per_env[slot] = info
        return observations, rewards.astype(np.float32), dones, per_env

    def _final_infos(self, final_obs: np.ndarray, time_limit: np.ndarray) -> list[dict[str, Any]]:
        """Fresh info dicts of the envs in :attr:`finished_episodes`, whose last observations
        are ``final_obs`` and which a time limit cut where ``time_limit``.

        Built column by column: numpy converts each column at once (``tolist()`` gives the
        Python scalars the single env returns; a 2-D column gives one row per env) and one loop
        per key stores it into copies of a dict that already has every key (no resizing):
        about 40% cheaper than ``dict(zip(keys, values))`` per env.
        """
        columns: dict[str, list[Any]] = {}
        for key, rows in self.finished_episodes.items():
            if key == "actions":
                columns[key] = _without_padding(rows)
            else:
                columns[key] = rows.tolist() if rows.ndim == 1 else list(rows)
        if self.terminal_observations == "all":
            columns["terminal_observation"] = final_obs.tolist()
        columns["TimeLimit.truncated"] = time_limit.tolist()
        template = dict.fromkeys(columns)
        finished = [template.copy() for _ in range(len(time_limit))]
        for key, column in columns.items():
            for info, value in zip(finished, column, strict=True):
                info[key] = value
        if self.terminal_observations == "truncated":
            for index in np.flatnonzero(time_limit).tolist():
                finished[index]["terminal_observation"] = final_obs[index]
        return finished

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


class BatchedVecMonitor(VecMonitor):
    """SB3's ``VecMonitor``, visiting only the envs that finished.

    The same ``info["episode"] = {"r", "l", "t", *info_keywords}`` (numpy scalars, as SB3's),
    counters and results file. SB3's walks all N envs every step, copies each finished env's
    info dict before adding ``episode`` and reads the clock once per finished env; this one
    writes ``episode`` into the dict it got, which is safe because SB3 ``VecEnv``s hand out
    fresh dicts every step (:class:`DynaLaySB3VecEnv` builds them, ``DummyVecEnv`` deep-copies
    its own), and reads the clock once per step (``t`` is the same for every episode that
    ended in that step).
    """

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        self.episode_returns += rewards
        self.episode_lengths += 1
        slots = np.flatnonzero(dones)
        if slots.size:
            elapsed = round(time.time() - self.t_start, 6)
            returns, lengths = self.episode_returns[slots], self.episode_lengths[slots]
            for slot, episode_return, episode_length in zip(
                slots.tolist(), returns, lengths, strict=True
            ):
                info = infos[slot]
                episode = {"r": episode_return, "l": episode_length, "t": elapsed}
                for key in self.info_keywords:
                    episode[key] = info[key]
                info["episode"] = episode
                if self.results_writer:
                    self.results_writer.write_row(episode)
            self.episode_count += slots.size
            self.episode_returns[slots] = 0
            self.episode_lengths[slots] = 0
        return obs, rewards, dones, list(infos)


def find_adapter(env: VecEnv | None) -> DynaLaySB3VecEnv | None:
    """The :class:`DynaLaySB3VecEnv` under ``env``'s layers of ``VecEnvWrapper``, or None."""
    while isinstance(env, VecEnvWrapper):
        env = env.venv
    return env if isinstance(env, DynaLaySB3VecEnv) else None


def make_sb3_vec_env(env_id: str, num_envs: int, **env_kwargs: Any) -> VecMonitor:
    """``gymnasium.make_vec`` with SAME_STEP autoreset, adapted to SB3 and wrapped in VecMonitor.

    The env SB3 algorithms train on: ``terminal_observation`` only where a time limit cut the
    episode (see :class:`DynaLaySB3VecEnv`). ``env_kwargs`` are the env's (``## Arguments`` of
    :class:`dynalay_env.env.DynaLayEnv`; the reward's settings loose or as one ``mdp=``).
    """
    vector_env = gym.make_vec(
        env_id,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        autoreset_mode=AutoresetMode.SAME_STEP,
        **env_kwargs,
    )
    return BatchedVecMonitor(DynaLaySB3VecEnv(vector_env, terminal_observations="truncated"))


def _without_padding(actions: np.ndarray) -> list[np.ndarray]:
    """The rows of (k, max_steps) action histories without their -1 padding, as the single env
    gives them; decisions fill a row from the left, so a row's actions are a prefix of it.

    Rows are cut in groups of equal length (at most ``max_steps`` numpy calls), not one by one.
    """
    lengths = np.count_nonzero(actions >= 0, axis=1)
    groups = np.unique(lengths).tolist()
    if len(groups) == 1:
        return list(actions[:, : groups[0]])
    rows: list[Any] = [None] * len(actions)
    for length in groups:
        where = np.flatnonzero(lengths == length)
        for index, row in zip(where.tolist(), actions[where, :length], strict=True):
            rows[index] = row
    return rows
