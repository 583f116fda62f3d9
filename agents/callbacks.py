"""TensorBoard reporting of DynaLay episodes during RL phases (an SB3 callback)."""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback


class DynaLayMetricsCallback(BaseCallback):
    """Aggregate finished episodes' infos and record them at the end of every rollout.

    Keys (namespaced): ``dynalay/accuracy``, ``dynalay/mean_cost``, ``dynalay/mean_flops``,
    ``dynalay/episode_length``, ``dynalay/action_freq_<a>`` (share of decisions that chose a),
    ``dynalay/actions`` (histogram), ``fpi/iterations_block<l>``, ``fpi/residual_block<l>``.
    SB3 itself records ``rollout/ep_rew_mean`` (through VecMonitor) and ``time/fps``.
    """

    def __init__(self, n_actions: int, n_blocks: int) -> None:
        super().__init__()
        self.n_actions, self.n_blocks = n_actions, n_blocks
        self._clear()

    def _clear(self) -> None:
        self.correct: list[bool] = []
        self.cost: list[float] = []
        self.flops: list[int] = []
        self.length: list[int] = []
        self.actions: list[np.ndarray] = []
        self.iterations: list[np.ndarray] = []
        self.residuals: list[np.ndarray] = []

    def _on_step(self) -> bool:
        for info, done in zip(self.locals["infos"], self.locals["dones"], strict=True):
            if done and "correct" in info:
                self.correct.append(bool(info["correct"]))
                self.cost.append(float(info["total_cost"]))
                self.flops.append(int(info["flops"]))
                self.length.append(int(info["episode_steps"]))
                self.actions.append(np.asarray(info["actions"]))
                self.iterations.append(np.asarray(info["iterations"]))
                self.residuals.append(np.asarray(info["residuals"]))
        return True

    def _on_rollout_end(self) -> None:
        if not self.correct:
            return
        record = self.logger.record
        actions = np.concatenate(self.actions)
        frequencies = np.bincount(actions, minlength=self.n_actions) / max(actions.size, 1)
        record("dynalay/accuracy", float(np.mean(self.correct)))
        record("dynalay/mean_cost", float(np.mean(self.cost)))
        record("dynalay/mean_flops", float(np.mean(self.flops)))
        record("dynalay/episode_length", float(np.mean(self.length)))
        record("dynalay/episodes", len(self.correct))
        for action, share in enumerate(frequencies):
            record(f"dynalay/action_freq_{action}", float(share))
        record("dynalay/actions", torch.as_tensor(actions), exclude=("stdout", "log", "csv"))
        iterations, residuals = np.stack(self.iterations), np.stack(self.residuals)
        for block in range(self.n_blocks):
            record(f"fpi/iterations_block{block + 1}", float(iterations[:, block].mean()))
            record(f"fpi/residual_block{block + 1}", float(np.median(residuals[:, block])))
        self._clear()
