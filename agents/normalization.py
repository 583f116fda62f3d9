"""VecNormalize's statistics as plain data: what a run directory's ``vecnormalize.json`` holds.

SB3 saves a ``VecNormalize`` by pickling it, and reading a pickle runs whatever code is in it;
:class:`NormalizerState` keeps exactly what the wrapper needs to go on (its running mean and
variance of observations and of returns, and its settings), written as JSON through
:func:`main_model.io.write_json_atomic` and read back with checks:

- :meth:`NormalizerState.wrap`: a ``VecNormalize`` over a new env that continues from the
  statistics (the trainer, between phases);
- :meth:`NormalizerState.normalize_obs`: the frozen normalisation alone (evaluation, export).

JSON numbers are Python floats written with ``repr``, which reads back to the same float64: the
statistics come back bit for bit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from agents.files import RunFileError
from main_model.io import write_json_atomic

__all__ = ["NORMALIZER_FORMAT", "NormalizerError", "NormalizerState"]

NORMALIZER_FORMAT = "dynalay-vecnormalize"
#: VecNormalize's settings, saved beside the statistics: name -> type.
SETTINGS: dict[str, type] = {
    "training": bool,
    "norm_obs": bool,
    "norm_reward": bool,
    "clip_obs": float,
    "clip_reward": float,
    "gamma": float,
    "epsilon": float,
}


class NormalizerError(RunFileError):
    """A ``vecnormalize.json`` that cannot be used; the message names the file and the fault."""


@dataclass(frozen=True)
class RunningStats:
    """One ``RunningMeanStd``: ``mean`` and ``var`` float64 of the statistic's shape ((D,) for
    observations, () for returns), and ``count``, the (fractional) number of samples seen."""

    mean: np.ndarray
    var: np.ndarray
    count: float

    @classmethod
    def of(cls, running: RunningMeanStd) -> RunningStats:
        return cls(
            np.asarray(running.mean, dtype=np.float64),
            np.asarray(running.var, dtype=np.float64),
            float(running.count),
        )

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "count": self.count}

    def restore(self, running: RunningMeanStd) -> None:
        """Put these statistics into ``running`` (a fresh one of the same shape)."""
        running.mean = self.mean.copy()
        running.var = self.var.copy()
        running.count = self.count


@dataclass(frozen=True)
class NormalizerState:
    """What a ``VecNormalize`` over a flat (Box) observation needs to continue.

    ``obs_rms``: the running statistics of the (D,) observations; ``ret_rms``: of the
    discounted returns (used when ``norm_reward``); ``settings``: :data:`SETTINGS`.
    """

    obs_rms: RunningStats
    ret_rms: RunningStats
    settings: dict[str, Any]

    @property
    def norm_obs(self) -> bool:
        return self.settings["norm_obs"]

    @property
    def clip_obs(self) -> float:
        return self.settings["clip_obs"]

    @property
    def epsilon(self) -> float:
        return self.settings["epsilon"]

    @classmethod
    def of(cls, wrapper: VecNormalize) -> NormalizerState:
        """The state of ``wrapper`` (a ``VecNormalize`` over a Box observation)."""
        if not isinstance(wrapper.obs_rms, RunningMeanStd):
            raise TypeError(
                "only a VecNormalize over a flat (Box) observation can be saved, not one with "
                f"per-key statistics ({type(wrapper.obs_rms).__name__})"
            )
        settings = {name: kind(getattr(wrapper, name)) for name, kind in SETTINGS.items()}
        return cls(RunningStats.of(wrapper.obs_rms), RunningStats.of(wrapper.ret_rms), settings)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": NORMALIZER_FORMAT,
            "obs_rms": self.obs_rms.to_json(),
            "ret_rms": self.ret_rms.to_json(),
            **self.settings,
        }

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(self.to_json(), path)

    @classmethod
    def load(cls, path: str | Path) -> NormalizerState:
        """Read a ``vecnormalize.json``; raises :class:`NormalizerError` saying what is wrong."""
        path = Path(path)
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise NormalizerError(f"{path} is not readable JSON: {error}") from error
        if not isinstance(payload, dict) or payload.get("format") != NORMALIZER_FORMAT:
            raise NormalizerError(
                f'{path} is not DynaLay\'s observation statistics (no "format": '
                f'"{NORMALIZER_FORMAT}")'
            )
        try:
            obs_rms = _running(payload["obs_rms"], 1)
            ret_rms = _running(payload["ret_rms"], 0)
            settings = {name: _setting(payload[name], kind) for name, kind in SETTINGS.items()}
        except (KeyError, TypeError, ValueError) as error:
            raise NormalizerError(f"{path} is malformed: {error!r}") from error
        return cls(obs_rms, ret_rms, settings)

    def check_size(self, size: int, source: str) -> None:
        """Raise :class:`NormalizerError` unless the statistics are of (``size``,) observations."""
        if self.obs_rms.mean.shape != (size,):
            raise NormalizerError(
                f"the observation statistics are of {self.obs_rms.mean.shape[0]}-dimensional "
                f"observations, but {source} gives {size}: they belong to another model"
            )

    def wrap(self, venv: VecEnv) -> VecNormalize:
        """A ``VecNormalize`` over ``venv`` that continues from these statistics, as
        ``VecNormalize.load`` of the pickle did (running returns start at zero)."""
        self.check_size(int(np.prod(venv.observation_space.shape)), "the env")
        wrapper = VecNormalize(venv, **self.settings)
        self.obs_rms.restore(wrapper.obs_rms)
        self.ret_rms.restore(wrapper.ret_rms)
        return wrapper

    def normalize_obs(self, observations: np.ndarray) -> np.ndarray:
        """(N, D) observations as the agent saw them: ``VecNormalize.normalize_obs`` with the
        statistics frozen (float32, clipped to +-``clip_obs``; unchanged when not
        ``norm_obs``)."""
        if not self.norm_obs:
            return np.array(observations, copy=True)
        scaled = (observations - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + self.epsilon)
        return np.clip(scaled, -self.clip_obs, self.clip_obs).astype(np.float32)


def _running(entry: Any, ndim: int) -> RunningStats:
    if not isinstance(entry, dict):
        raise TypeError(f"running statistics must be an object, got {type(entry).__name__}")
    mean = _array(entry["mean"], ndim)
    var = _array(entry["var"], ndim)
    if mean.shape != var.shape:
        raise ValueError(f"mean {mean.shape} and var {var.shape} differ in shape")
    return RunningStats(mean, var, _setting(entry["count"], float))


def _array(values: Any, ndim: int) -> np.ndarray:
    """float64 array of ``ndim`` dimensions from JSON numbers (no other objects accepted)."""
    array = np.asarray(values)
    if array.ndim != ndim or array.dtype.kind not in "fi":
        raise ValueError(f"expected {ndim}-dimensional numbers, got {str(values)[:80]}")
    return array.astype(np.float64)


def _setting(value: Any, kind: type) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)
