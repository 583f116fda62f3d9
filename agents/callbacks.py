"""TensorBoard reporting of DynaLay episodes during RL phases (an SB3 callback)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from agents.vec_env import DynaLaySB3VecEnv, find_adapter

#: The final-info keys the callback keeps of every finished episode.
KEYS = ("correct", "total_cost", "flops", "episode_steps", "actions", "iterations", "residuals")


class DynaLayMetricsCallback(BaseCallback):
    """Aggregate finished episodes' infos and record them at the end of every rollout.

    Keys (namespaced): ``dynalay/accuracy``, ``dynalay/mean_cost``, ``dynalay/mean_flops``,
    ``dynalay/episode_length``, ``dynalay/action_freq_<a>`` (share of decisions that chose a),
    ``dynalay/actions`` (histogram), ``fpi/iterations_block<l>``, ``fpi/residual_block<l>``.
    SB3 itself records ``rollout/ep_rew_mean`` (through VecMonitor) and ``time/fps``.

    Every step's finished episodes are kept as one array per key. When the training env is
    (a wrapper of) :class:`~agents.vec_env.DynaLaySB3VecEnv` those arrays are the adapter's
    own (:attr:`~agents.vec_env.DynaLaySB3VecEnv.finished_episodes`), so a step costs a few
    numpy calls however many envs finished; with any other ``VecEnv`` they are gathered from
    the finished envs' info dicts.
    """

    def __init__(self, n_actions: int, n_blocks: int) -> None:
        super().__init__()
        self.n_actions, self.n_blocks = n_actions, n_blocks
        self._adapter: DynaLaySB3VecEnv | None = None
        self._clear()

    def _clear(self) -> None:
        self._episodes_per_step: list[dict[str, np.ndarray]] = []

    def _init_callback(self) -> None:
        self._adapter = find_adapter(self.training_env)

    def _on_step(self) -> bool:
        if self._adapter is None:
            episodes = _from_infos(self.locals["infos"], self.locals["dones"])
        elif self._adapter.finished_episodes:
            episodes = {key: self._adapter.finished_episodes[key] for key in KEYS}
            padded = episodes["actions"]
            episodes["actions"] = padded[padded >= 0]  # row by row, as the episodes' lists
        else:
            episodes = {}
        if episodes:
            self._episodes_per_step.append(episodes)
        return True

    def _on_rollout_end(self) -> None:
        if not self._episodes_per_step:
            return
        episodes = {
            key: np.concatenate([step[key] for step in self._episodes_per_step]) for key in KEYS
        }
        record = self.logger.record
        actions = episodes["actions"]
        frequencies = np.bincount(actions, minlength=self.n_actions) / max(actions.size, 1)
        record("dynalay/accuracy", float(np.mean(episodes["correct"])))
        record("dynalay/mean_cost", float(np.mean(episodes["total_cost"])))
        record("dynalay/mean_flops", float(np.mean(episodes["flops"])))
        record("dynalay/episode_length", float(np.mean(episodes["episode_steps"])))
        record("dynalay/episodes", len(episodes["correct"]))
        for action, share in enumerate(frequencies):
            record(f"dynalay/action_freq_{action}", float(share))
        record("dynalay/actions", torch.as_tensor(actions), exclude=("stdout", "log", "csv"))
        iterations, residuals = episodes["iterations"], episodes["residuals"]
        for block in range(self.n_blocks):
            record(f"fpi/iterations_block{block + 1}", float(iterations[:, block].mean()))
            record(f"fpi/residual_block{block + 1}", float(np.median(residuals[:, block])))
        self._clear()


def _from_infos(infos: list[dict[str, Any]], dones: np.ndarray) -> dict[str, np.ndarray]:
    """The :data:`KEYS` of the episodes that finished in a step, from any ``VecEnv``'s infos:
    one array per key, ``actions`` concatenated over the episodes; empty when none finished."""
    finished = [info for info, done in zip(infos, dones, strict=True) if done and "correct" in info]
    if not finished:
        return {}
    columns = {key: np.array([info[key] for info in finished]) for key in KEYS if key != "actions"}
    columns["actions"] = np.concatenate([np.asarray(info["actions"]) for info in finished])
    return columns


class LinearEntropySchedule(BaseCallback):
    """An actor-critic agent's entropy coefficient decayed linearly to 0 over one ``learn()``.

    SB3's PPO and A2C take ``ent_coef`` as a constant; their ``train()`` reads
    ``model.ent_coef`` at every update, so setting it at the end of each rollout (before that
    rollout's update) to ``initial x`` the share of the phase's steps left when the rollout
    began (1 for the first update) gives the schedule: exploration early in the phase, the
    greedy policy's preferences at its end. Counted per ``learn()`` call (SB3's own progress
    only moves at updates, so a phase resumed with ``reset_num_timesteps=False`` would start
    from the last one's end). ``initial`` is the run's ``ent_coef`` (not the agent's current
    one, which a phase ends near 0).
    """

    def __init__(self, initial: float) -> None:
        super().__init__()
        self.initial = float(initial)
        self._first = self._total = self._rollout_start = 0

    def _init_callback(self) -> None:
        if not hasattr(self.model, "ent_coef") or not isinstance(self.model.ent_coef, float):
            raise ValueError(
                "ent_coef_schedule='linear' needs an agent with a constant float ent_coef "
                f"(ppo, a2c); {type(self.model).__name__} has none"
            )
        self.model.ent_coef = self.initial

    def _on_training_start(self) -> None:
        self._first = self.model.num_timesteps  # SB3 has already added it to the total
        self._total = max(int(self.locals["total_timesteps"]) - self._first, 1)

    def _on_rollout_start(self) -> None:
        self._rollout_start = self.model.num_timesteps

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        remaining = 1.0 - (self._rollout_start - self._first) / self._total
        self.model.ent_coef = self.initial * max(remaining, 0.0)
        self.logger.record("train/ent_coef", self.model.ent_coef)
