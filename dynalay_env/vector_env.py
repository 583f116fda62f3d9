"""``DynaLayVectorEnv``: the native batched Gymnasium vector face of the core (N slots).

One model forward per step for all N slots, on the GPU when there is one. Same keyword
arguments as :class:`~dynalay_env.env.DynaLayEnv`, plus ``num_envs``, ``max_episode_steps`` and
``autoreset_mode`` (declared in ``metadata["autoreset_mode"]``):

- ``NEXT_STEP`` (Gymnasium's default): a finished slot returns its last observation; the next
  ``step`` ignores its action, resets it and returns reward 0, ``terminated = truncated = False``.
- ``SAME_STEP`` (used by the SB3 adapter): a finished slot is reset within the same step; its
  last observation and episode info are in ``infos["final_obs"]`` and ``infos["final_info"]``.
- ``DISABLED``: finished slots must be reset by ``reset(options={"reset_mask": mask})``.

Infos follow Gymnasium's batched layout: arrays of shape (N, ...) with boolean ``_key`` masks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from dynalay_env.build import build_core
from dynalay_env.mdp import MDPConfig


class DynaLayVectorEnv(VectorEnv):
    """N DynaLay episodes stepped as one batch; see the module docstring for autoreset."""

    metadata: dict[str, Any] = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        dataset: str = "CIFAR10",
        *,
        max_episode_steps: int | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        mdp: MDPConfig | None = None,
        alpha: float | None = None,
        beta: float | None = None,
        max_steps: int | None = None,
        penalty: str | None = None,
        shaping: str | None = None,
        observe_changes: bool | None = None,
        **kwargs: Any,
    ) -> None:
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}
        settings = MDPConfig.from_kwargs(
            mdp,
            alpha=alpha,
            beta=beta,
            max_steps=max_steps,
            penalty=penalty,
            shaping=shaping,
            observe_changes=observe_changes,
        )
        self.core = build_core(
            num_envs, dataset, mdp=settings, max_episode_steps=max_episode_steps, **kwargs
        )
        self.num_envs = num_envs
        self.single_observation_space = self.core.single_observation_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.single_action_space = spaces.Discrete(self.core.n_actions)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._needs_reset = np.ones(num_envs, dtype=bool)
        self._started = False

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset all slots, or those in ``options["reset_mask"]``.

        ``options["indices"]``: rows of the split to start on, one per slot being reset.
        """
        super().reset(seed=seed)
        options = options or {}
        mask = np.asarray(options.get("reset_mask", np.ones(self.num_envs, dtype=bool)))
        if mask.shape != (self.num_envs,) or mask.dtype != bool:
            raise ValueError(f"reset_mask must be a bool array of shape ({self.num_envs},)")
        if not self._started and not mask.all():
            raise ValueError("the first reset must reset every slot (no reset_mask)")
        slots = np.flatnonzero(mask)
        rows = options.get("indices")
        self.core.reset_slots(slots, self.np_random, None if rows is None else np.asarray(rows))
        self._needs_reset[slots] = False
        self._started = True
        index = self.core.episode_info()["dataset_index"]
        return self.core.observe(), {"dataset_index": index, "_dataset_index": mask.copy()}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = self.core.validate_actions(actions)
        infos: dict[str, Any] = {}
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            resetting = self._needs_reset.copy()
            result = self.core.step(actions, active=~resetting)
            self.core.reset_slots(np.flatnonzero(resetting), self.np_random)
        else:
            if self._needs_reset.any():
                raise RuntimeError(
                    f"slots {np.flatnonzero(self._needs_reset).tolist()} finished their episode: "
                    "reset them with reset(options={'reset_mask': mask}) before stepping"
                )
            result = self.core.step(actions)
        done = result.terminated | result.truncated
        episode = dict(result.episode)
        episode.update({f"_{key}": done.copy() for key in result.episode})
        observations = self.core.observe()
        if self.autoreset_mode == AutoresetMode.SAME_STEP and done.any():
            slots = np.flatnonzero(done)
            final_obs = np.full(self.num_envs, None, dtype=object)
            final_obs[slots] = _object_rows(observations[slots])
            infos.update(
                final_obs=final_obs, _final_obs=done.copy(), final_info=episode, _final_info=done
            )
            # Only the reset slots' observations change: the others are already in hand.
            observations[slots] = self.core.reset_and_observe(slots, self.np_random)
        else:
            if done.any():  # like SyncVectorEnv: keys appear only when some slot has them
                infos.update(episode)
            self._needs_reset = done
        return observations, result.reward, result.terminated, result.truncated, infos


def _object_rows(array: np.ndarray) -> np.ndarray:
    """(k,) object array whose items are the k rows of ``array`` (the layout of Gymnasium's
    ``final_obs``), built without a Python loop; assigning a list of rows instead would let
    numpy try to broadcast it as one 2-D array."""
    return np.fromiter(array, dtype=object, count=len(array))
