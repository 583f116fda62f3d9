"""An SB3 ``agent.zip`` read without unpickling anything.

Stable-Baselines3 saves an agent as a zip: its tensors in ``.pth`` files (``torch.load``'ed
with ``weights_only=True``, which unpickles no objects) and its other attributes in the JSON
entry ``data``, where every value that is not plain JSON (the spaces, the policy and buffer
classes, the schedules, the last observations...) is cloudpickled, and unpickled on ``load``
unless ``custom_objects`` supplies it. Unpickling runs whatever code the file's author put in
it. :func:`safe_custom_objects` reads ``data`` first and supplies every pickled entry an agent
of this project has, built from the project's own objects (spaces from the env, classes from
SB3, schedules as the constants recorded beside them in plain text); any other pickled entry is
refused (:class:`~agents.files.UnsafeRunFile`) before SB3 is called. So SB3's ``load`` (through
:func:`agents.algorithms.load_agent`) unpickles nothing.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
import zipfile
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import ReplayBuffer, RolloutBuffer
from stable_baselines3.common.utils import FloatSchedule, LinearSchedule
from torch import nn

from agents.files import RunFileError, UnsafeRunFile

__all__ = ["AgentFileError", "read_agent_data", "safe_custom_objects"]

SERIALIZED = ":serialized:"  # SB3's marker of a cloudpickled value in ``data``
TYPE = ":type:"  # beside it: ``str(type(value))``, plain text
#: The classes a saved ``policy_kwargs`` may name (SB3 records them as ``str(cls)``).
POLICY_KWARG_CLASSES: dict[str, dict[str, type]] = {
    "optimizer_class": {
        str(c): c
        for c in (torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.SGD)
    },
    "activation_fn": {
        str(c): c for c in (nn.ReLU, nn.Tanh, nn.ELU, nn.LeakyReLU, nn.GELU, nn.SiLU)
    },
}
CONSTANT = re.compile(r"^ConstantSchedule\(val=([^()]+)\)$")


class AgentFileError(RunFileError):
    """An ``agent.zip`` that does not fit the run (or is not an SB3 agent); the message says
    which entry and why."""


def read_agent_data(path: Path) -> dict[str, Any]:
    """The zip's ``data`` entry as JSON, nothing in it unpickled."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("data").decode())
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise AgentFileError(f"{path} is not a Stable-Baselines3 agent file: {error}") from error


def safe_custom_objects(
    path: Path,
    data: Mapping[str, Any],
    algorithm: type[BaseAlgorithm],
    algo_kwargs: Mapping[str, Any],
    observation_space: spaces.Space,
    action_space: spaces.Space,
) -> dict[str, Any]:
    """A value for every cloudpickled entry of ``data`` (SB3's ``custom_objects``).

    ``algo_kwargs``: the run's resolved algorithm arguments (``config.yaml``), for the one entry
    that records nothing readable (DQN's ``train_freq``). Raises
    :class:`~agents.files.UnsafeRunFile` for a pickled entry this project never writes, and
    :class:`AgentFileError` when a recorded entry does not match what is supplied.
    """
    path = Path(path)
    makers: dict[str, Callable[[dict[str, Any]], Any]] = {
        "observation_space": lambda e: _space(path, "observation_space", e, observation_space),
        "action_space": lambda e: _space(path, "action_space", e, action_space),
        "policy_class": lambda e: _class(
            path, "policy_class", e, _policy_class(algorithm, algo_kwargs)
        ),
        # _setup_model builds the buffer itself when the class is None; the recorded class
        # must be the one it builds for a flat observation.
        "rollout_buffer_class": lambda e: _class(path, "rollout_buffer_class", e, RolloutBuffer),
        "replay_buffer_class": lambda e: _class(path, "replay_buffer_class", e, ReplayBuffer),
        "lr_schedule": lambda e: FloatSchedule(_constant(path, "lr_schedule", e)),
        "clip_range": lambda e: _constant(path, "clip_range", e),  # PPO wraps it in a schedule
        # _setup_model rebuilds it from the plain exploration_* entries; the same here.
        "exploration_schedule": lambda e: LinearSchedule(
            data["exploration_initial_eps"],
            data["exploration_final_eps"],
            data["exploration_fraction"],
        ),
        # _setup_model converts an int or (int, unit) into a TrainFreq.
        "train_freq": lambda e: _train_freq(algorithm, algo_kwargs),
        "policy_kwargs": lambda e: _policy_kwargs(path, e),
        # Training state an agent read back starts afresh: the trainer resets the env (and so
        # these) before every RL phase, and episode statistics count that phase's episodes.
        "_last_obs": lambda e: None,
        "_last_original_obs": lambda e: None,
        "_last_episode_starts": lambda e: None,
        "ep_info_buffer": lambda e: deque(maxlen=int(data.get("_stats_window_size", 100))),
        "ep_success_buffer": lambda e: deque(maxlen=int(data.get("_stats_window_size", 100))),
    }
    supplied: dict[str, Any] = {}
    for key, entry in data.items():
        if not (isinstance(entry, dict) and SERIALIZED in entry):
            continue
        if key not in makers:
            raise UnsafeRunFile(
                f"{path}: its data entry {key!r} is a pickled {entry.get(TYPE, 'object')}, which "
                "DynaLay does not unpickle (unpickling runs whatever code the file's author put "
                f"in it); the agents DynaLay saves pickle only {sorted(makers)}, which it "
                "supplies itself. This file was not made by DynaLay as it is: do not use it"
            )
        supplied[key] = makers[key](entry)
    for key in ("observation_space", "action_space", "policy_class"):
        if key not in supplied:  # SB3 cannot load without them; never taken from the file
            raise AgentFileError(f"{path}: its data has no pickled {key} entry")
    return supplied


def _recorded_type(path: Path, key: str, entry: Mapping[str, Any], expected: type) -> None:
    wanted = str(expected)
    if entry.get(TYPE) != wanted:
        raise AgentFileError(
            f"{path}: its {key} is recorded as {entry.get(TYPE)}, where DynaLay's agents have "
            f"{wanted}; this agent was not saved by this project's training"
        )


def _space(path: Path, key: str, entry: Mapping[str, Any], space: spaces.Space) -> spaces.Space:
    """``space`` (a copy) after checking the recorded type, shape and size against it."""
    _recorded_type(path, key, entry, type(space))
    recorded = entry.get("_shape")
    if recorded is not None and tuple(recorded) != tuple(space.shape):
        raise AgentFileError(
            f"{path}: the agent's {key} has shape {tuple(recorded)}, but the run's main model "
            f"and settings give {tuple(space.shape)}: it belongs to another model"
        )
    if isinstance(space, spaces.Discrete) and entry.get("n") not in (None, str(int(space.n))):
        raise AgentFileError(
            f"{path}: the agent chooses among {entry['n']} actions, the main model has {space.n}"
        )
    return copy.deepcopy(space)  # the agent seeds its own spaces; the env's stay untouched


def _class(path: Path, key: str, entry: Mapping[str, Any], cls: type) -> type:
    """``cls``, after checking that the recorded class is it (its module and, where recorded,
    its ``__init__``'s qualified name, which names the class)."""
    module = entry.get("__module__")
    init = entry.get("__init__")
    own_init = cls.__dict__.get("__init__")
    named = (
        own_init is None or init is None or init.startswith(f"<function {own_init.__qualname__} ")
    )
    if module != cls.__module__ or not named:
        raise AgentFileError(
            f"{path}: its {key} is not {cls.__module__}.{cls.__qualname__} (recorded: module "
            f"{module}, {init}); DynaLay loads agents with the algorithm's MlpPolicy and SB3's "
            "own buffers only"
        )
    return cls


def _policy_class(algorithm: type[BaseAlgorithm], algo_kwargs: Mapping[str, Any]) -> type:
    name = algo_kwargs.get("policy", "MlpPolicy")
    aliases = algorithm.policy_aliases
    if name not in aliases:
        raise AgentFileError(
            f"the run's policy {name!r} is not one of {algorithm.__name__}'s {sorted(aliases)}"
        )
    return aliases[name]


def _constant(path: Path, key: str, entry: Mapping[str, Any]) -> float:
    """The constant of a recorded ``FloatSchedule(ConstantSchedule(val=X))``, read as text."""
    _recorded_type(path, key, entry, FloatSchedule)
    recorded = str(entry.get("value_schedule", ""))
    match = CONSTANT.match(recorded)
    if match is None:
        raise AgentFileError(
            f"{path}: its {key} is {recorded or 'unrecorded'}, not a constant; DynaLay reads "
            "back constant schedules only (a number in the hyperparameters, not a schedule)"
        )
    try:
        return float(match.group(1))
    except ValueError as error:
        raise AgentFileError(f"{path}: its {key} constant is not a number: {error}") from error


def _train_freq(algorithm: type[BaseAlgorithm], algo_kwargs: Mapping[str, Any]) -> Any:
    if "train_freq" in algo_kwargs:
        return algo_kwargs["train_freq"]
    return inspect.signature(algorithm.__init__).parameters["train_freq"].default


def _policy_kwargs(path: Path, entry: Mapping[str, Any]) -> dict[str, Any]:
    """The recorded ``policy_kwargs`` (SB3 writes its plain items beside the pickle and the
    others as ``str()``), their class names mapped back to :data:`POLICY_KWARG_CLASSES`."""
    _recorded_type(path, "policy_kwargs", entry, dict)
    kwargs: dict[str, Any] = {}
    for name, value in entry.items():
        if name in (TYPE, SERIALIZED):
            continue
        if name in POLICY_KWARG_CLASSES:
            known = POLICY_KWARG_CLASSES[name]
            if value not in known:
                raise AgentFileError(
                    f"{path}: its policy_kwargs {name} is {value}, not one of {sorted(known)}"
                )
            value = known[value]
        kwargs[name] = value
    return kwargs
