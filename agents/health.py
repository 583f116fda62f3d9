"""A run's health checks: a diverging phase stops loudly, one that learned nothing says so.

The supervised steps are checked where they run (:mod:`main_model.divergence`); here is the rest
of what the alternating trainer (:mod:`agents.trainer`) needs:

- :class:`FiniteObservations`: an RL phase stops at the first env step whose observations are
  not finite (read on the host, where SB3 already has them: no device sync).
- :func:`check_finite_phase`: nothing a phase is about to save may be non-finite (the main
  model, the agent's networks, the observation statistics): the last guard before a checkpoint.
- :func:`divergence_advice`: what a :class:`~main_model.divergence.TrainingDiverged` of a run
  tells the user to try, naming the run's last verified phase.
- :func:`below_chance`: the straight pass's accuracy on the holdout against chance, after every
  phase that trained the main model (a warning in the run's log when it is no better).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecNormalize, unwrap_vec_normalize

from agents.config import TrainConfig
from agents.files import MODEL_FILE, PhaseRecord
from agents.sb3_logging import log
from main_model.divergence import TrainingDiverged
from main_model.paths import path_statistics
from main_model.train import Split, iterate_batches


class FiniteObservations(BaseCallback):
    """Raise :class:`TrainingDiverged` (with the rollout and the env step of the phase) at the
    first step whose observations are not finite: the main model answers some holdout sample
    with NaN or inf, and an agent (or VecNormalize's statistics) fed with them would be saved.

    The raw observations are checked, before VecNormalize's clipping would hide an inf.
    """

    def __init__(self) -> None:
        super().__init__()
        self._first_timestep, self._rollout = 0, 0

    def _on_training_start(self) -> None:
        self._first_timestep, self._rollout = self.num_timesteps, 0
        self._check(self._raw(self.model._last_obs), step=0)  # the phase's first reset

    def _on_rollout_start(self) -> None:
        self._rollout += 1

    def _on_step(self) -> bool:
        step = (self.num_timesteps - self._first_timestep) // self.training_env.num_envs
        self._check(self._raw(self.locals["new_obs"]), step)
        return True

    def _raw(self, seen: Any) -> np.ndarray:
        """The observations as the env gave them (``seen``: as the agent got them)."""
        normalizer = unwrap_vec_normalize(self.training_env)
        return np.asarray(seen if normalizer is None else normalizer.get_original_obs())

    def _check(self, observations: np.ndarray, step: int) -> None:
        finite = np.isfinite(observations)
        if finite.all():
            return
        slots = np.flatnonzero(~finite.reshape(len(finite), -1).all(axis=1))
        raise TrainingDiverged(
            f"the observations of {slots.size} of {len(finite)} env slots (slots "
            f"{slots[:8].tolist()}) are not finite: the main model's outputs on those holdout "
            "samples are not",
            step=step,
            rollout=self._rollout or None,  # None: the phase's first reset, before any rollout
        )


def check_finite_phase(
    model: torch.nn.Module, agent: BaseAlgorithm | None, normalizer: VecNormalize | None
) -> None:
    """Raise :class:`TrainingDiverged` when a tensor or statistic a phase is about to save is
    not finite; the steps are checked as they run, this is the guard that no path around them
    (a loaded checkpoint, an RL update) can put a NaN in a checkpoint."""
    named = [(f"main model {name}", t) for name, t in model.state_dict().items()]
    if agent is not None:
        named += [(f"agent {name}", t) for name, t in agent.policy.state_dict().items()]
    for name, tensor in named:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise TrainingDiverged(f"{name} is not finite at the end of the phase")
    if normalizer is not None:
        rms = normalizer.obs_rms
        if not (np.isfinite(rms.mean).all() and np.isfinite(rms.var).all()):
            raise TrainingDiverged("the observation statistics (VecNormalize) are not finite")


def divergence_advice(run_dir: Path, config: TrainConfig, last: PhaseRecord | None) -> str:
    """What a diverged run's message ends with: nothing of the phase was saved, which phase is
    intact, and what to try (a lower ``--lr``, the intact phase's main model, ``--resume``)."""
    lower_lr = f"a lower --lr (this run's: {config.learning_rate:g})"
    if last is None:
        return f"Nothing was saved. Start again with {lower_lr}."
    return (
        f"Nothing of this phase was saved; phase {last.phase}'s files are intact in "
        f"{last.folder}. Try a new run with {lower_lr}, starting from that phase's main model "
        f"(--checkpoint {last.path(MODEL_FILE)}); or, once the cause is fixed, continue this run "
        f"after phase {last.phase} with: python run_rl.py --resume {run_dir}"
    )


def chance_accuracy(labels: torch.Tensor) -> float:
    """The accuracy of always answering the most common label: what a model that learned
    nothing but the class shares gets (on balanced classes, about 1 / K)."""
    flat = labels.flatten().cpu()
    return float(torch.bincount(flat).max()) / max(flat.numel(), 1)


def below_chance(
    model: torch.nn.Module, holdout: Split, phase: str, learning_rate: float
) -> dict[str, Any] | None:
    """``{"phase", "accuracy", "chance"}``, and a warning in the run's log, when the straight
    pass of ``model`` (which every path starts from) is no more accurate on ``holdout`` than
    :func:`chance_accuracy`; None when it is. One evaluation-mode pass over the holdout."""
    statistics = path_statistics(model, iterate_batches(holdout, 256), actions=[0])
    accuracy, chance = statistics[0]["accuracy"], chance_accuracy(holdout.labels)
    if accuracy > chance:
        return None
    log.warning(
        "phase %s: the main model's straight pass is no better than chance on the holdout "
        "(accuracy %.1f%%; always answering its most common class: %.1f%%): it learned nothing; "
        "a lower --lr (this run's: %g) may help",
        phase,
        100 * accuracy,
        100 * chance,
        learning_rate,
    )
    return {"phase": phase, "accuracy": accuracy, "chance": chance}
