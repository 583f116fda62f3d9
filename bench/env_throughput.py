"""Benchmark: DynaLay environment throughput, and the per-slot overhead of a step.

Two parts, run one after the other (``--part`` picks one).

**Throughput** (episodes completed per second). With ``max_steps=1`` every episode is one
decision: a reset (the straight pass of the main model on a new sample) and one step (the action:
0 = answer now, k = loop blocks 1..k). One episode = one input sample, so episodes per second =
samples per second. Actions are drawn uniformly at random over the ``n_blocks + 1`` actions.
Three ways of doing the same work are measured, for every N in ``--num-envs``, on the main model
of ``--widths`` (default the real 64/128/256) with its loop-conv weights scaled up 5x (like
``tests/conftest.py``'s ``make_model``), so the contraction sits at its bound and loops take
several iterations; the mean iterations per looped block are printed with the raw-model lines:

- ``vector``: the native vector env, ``gymnasium.make_vec("DynaLay-FashionMNIST-v0",
  num_envs=N, vectorization_mode="vector_entry_point", ...)``, autoreset mode as given
  (Gymnasium's default ``NextStep``: a slot that finished is reset by the *next* ``step`` call,
  whose action for it is ignored; so with ``max_steps=1`` the calls alternate between a decision
  step and a reset step, and the benchmark always makes them in such pairs, so the reset of
  every counted episode is timed too). Episodes are counted as the slots with
  ``terminated | truncated`` in each ``step`` result.
- ``dummy``: N single envs (``gymnasium.make``) in Stable-Baselines3's ``DummyVecEnv``, which
  steps them one after the other and resets a finished env inside the same ``step`` call.
  Episodes are counted as the ``dones`` of each ``step``.
- ``raw-model``: the main model alone, no env: per call, N random rows of the same split are
  normalised (``ImageSplit.normalized``), ``model.straight(images)`` runs, then
  ``model.step(state, actions)`` with uniformly random actions, under ``torch.no_grad()`` in eval
  mode (as the env runs it). Every call completes N episodes.

Its last lines are ``ratio vector/dummy at N=<largest N>: X`` and
``ratio vector/raw-model at N=<largest N>: Y``, then the targets X >= 10 and Y >= 0.8.

**Overhead per slot-step** (microseconds): what one ``step`` costs per slot beyond the main
model's own code, on a trivial main model (widths 4/4/4, ``--overhead-widths``, untrained, as
built) at N = 256, 1024 and 4096 (``--overhead-num-envs``). Definition, for S step calls::

    total     = time of the S step calls (for the SB3 stack: and of the callback's calls)
    network   = time inside DynaLayNet.straight() and DynaLayNet.step() during them
    state ops = time inside NetState.put_rows_() and NetState.pooled() called by the env
                (storing the straight pass of new samples in their slots, pooling the
                activations for the observation)
    overhead per slot-step = (total - network - state ops) / (S * N)

All three are measured on the very calls the env makes (a clock wraps those ``main_model``
methods; only the outermost timed call counts, so ``put_rows_`` inside ``step`` is network time;
on CUDA the clock synchronises around each call), so the model's share is subtracted exactly, not
estimated from a separate run. Why subtract it: even at widths 4/4/4 the network is not free at
28x28 pixels (tens of microseconds per slot on one CPU core, printed), and its state is 4 x 28 x
28 activations and as many injections in the first block, 33 kB per slot over the three blocks;
copying and pooling that is tensor work set by the model's size, done on the model's device like
the network's own, not per-slot Python. ``overhead`` is what the env and the SB3 stack add on
top, the part that Python loops over slots, per-slot dicts and host syncs make grow: drawing and
normalising samples, observations, rewards, info layouts, autoreset, the adapter, ``VecMonitor``,
``VecNormalize`` and the callback. The state ops are printed beside it: the stricter reading,
everything but the network (``total - network``), is overhead + state ops.

Time is this process's CPU time by default (``--clock wall`` for wall time): on a shared
machine wall time also counts the time other processes held the core, in proportion to how
long each setting ran; with one torch thread, CPU time is what the step would take on an idle
core. Both are printed.

Settings, measured interleaved for every N:

- ``vector env NextStep`` / ``vector env SameStep``: the bare ``DynaLayVectorEnv`` (via
  ``gymnasium.make_vec``) in both autoreset modes.
- ``SB3 stack``: the env as the trainer (``agents/trainer.py``) gives it to an algorithm:
  ``agents.vec_env.make_sb3_vec_env`` (SameStep vector env, SB3 adapter, ``VecMonitor``) wrapped
  in ``VecNormalize`` with the ``normalize`` arguments of PPO's hyperparameters for this env, and
  every step followed by ``DynaLayMetricsCallback.on_step`` (its ``on_rollout_end`` after every
  ``n_steps`` steps, PPO's rollout length). The algorithm's own work (policy forward, rollout
  buffer) is not counted.

Episodes (the defaults): ``max_steps=4`` with a time limit ``max_episode_steps=3``; actions are
NOP with probability 1/2, else a uniformly random loop, drawn before timing. So half the episodes
end at their first step, a quarter at their second, an eighth answer at their third and an eighth
are truncated there: about 57% of the slots finish in every step, 7% by truncation, and every
path of a step (running, answered and truncated slots, ``terminal_observation``,
``TimeLimit.truncated``) runs in every call. The lines ``overhead per slot-step, <setting>,
N=<N>: X us`` are printed for every setting and N, then the target line: the SB3 stack at N=4096
<= 5 us. ``--overhead-max-steps`` and ``--overhead-max-episode-steps`` (0: no time limit) change
the episode shape; ``--overhead-max-steps 1 --overhead-max-episode-steps 0`` is the trainer's
default, where every slot finishes in every step.

Shared by both parts: the data (the holdout split of real Fashion-MNIST when
``/usr/share/datasets/fashion-mnist`` exists, else random in-memory images made like
``tests/conftest.py``'s ``make_splits``), the device and the torch thread count.

Timing: every setting first runs a short warm-up (at least one call), then is measured for
``--seconds`` of wall time in total, split into ``--rounds`` chunks that are interleaved with the
other settings of the same N, so a burst of load from other processes on a shared machine hits
all alike. A chunk always finishes the call in progress (one ``DummyVecEnv`` step at N=256 can
take seconds) and rates are totals over the total measured time, so slow settings are counted
honestly, only over fewer calls. On CUDA the raw-model loop synchronises after each call (the env
does, by returning numpy arrays).

``--threads`` sets torch's intra-op threads for every setting (default 1: on a few shared cores,
more threads than free cores make the many small per-sample ops of the single envs wait on
descheduled OpenMP workers, tens of times slower; CPU time then also adds up several threads).

Run from the repository root: ``python bench/env_throughput.py [--part all|throughput|overhead]
[--quick] [--num-envs 1 16 64 256] [--overhead-num-envs 256 1024 4096] [--seconds 5] [--rounds 3]
[--clock cpu|wall] [--device auto] [--widths 64 128 256] [--overhead-widths 4 4 4]
[--overhead-max-steps 4] [--overhead-max-episode-steps 3] [--threads 1]``. ``--quick``: 1.5 s per
setting, throughput at N = 1 and 16 only.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from agents.algorithms import algo_hyperparams
from agents.callbacks import DynaLayMetricsCallback
from agents.vec_env import make_sb3_vec_env
from dynalay_env import ENV_IDS
from dynalay_env.data import (
    DataNotFoundError,
    ImageSplit,
    get_spec,
    load_splits,
    random_splits,
)
from dynalay_env.models import DEFAULT_WIDTHS, config_for
from main_model import DynaLayNet, NetState
from main_model.distributed import resolve_device

DATASET = "FashionMNIST"
ENV_ID = ENV_IDS[DATASET]
SPLIT = "holdout"
LOOP_WEIGHT_SCALE = 5.0
TARGET_VECTOR_OVER_DUMMY = 10.0
TARGET_VECTOR_OVER_RAW = 0.8
OVERHEAD_WIDTHS = (4, 4, 4)
OVERHEAD_NUM_ENVS = (256, 1024, 4096)
#: Episode shape of the overhead part: see the module docstring.
OVERHEAD_MAX_STEPS, OVERHEAD_MAX_EPISODE_STEPS, NOP_PROBABILITY = 4, 3, 0.5
#: Distinct action arrays the overhead part cycles through (drawn before timing).
ACTION_ARRAYS = 64
TARGET_OVERHEAD_US = 5.0
#: The algorithm whose hyperparameters (``normalize``, ``n_steps``) the SB3 stack follows.
ALGO = "ppo"
CLOCKS = ("cpu", "wall")


# ----- setup -------------------------------------------------------------------------------------
def load_data() -> tuple[dict[str, ImageSplit], str]:
    """The real Fashion-MNIST splits when a system copy exists, else random ones; and a label."""
    system_dir = Path(get_spec(DATASET).system_dirs[0])
    if system_dir.is_dir():
        try:
            return load_splits(DATASET), f"real Fashion-MNIST ({system_dir})"
        except DataNotFoundError:
            pass
    return random_splits(
        DATASET, 6000, 1000
    ), "random in-memory images (no Fashion-MNIST copy found)"


def make_model(
    widths: tuple[int, ...], device: torch.device, seed: int = 0, loop_scale: float = 1.0
) -> DynaLayNet:
    """An untrained main model; ``loop_scale`` > 1 scales the loop weights up (as the tests do)
    so the contraction sits at its bound and loops iterate several times."""
    torch.manual_seed(seed)
    model = DynaLayNet(config_for(get_spec(DATASET), widths))
    with torch.no_grad():
        for block in model.blocks:
            block.loop_conv.weight.mul_(loop_scale)
    return model.to(device).eval().requires_grad_(False)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (a no-op on the CPU), so clocks measure finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Times:
    """Seconds of wall-clock time and of this process's CPU time."""

    wall: float = 0.0
    cpu: float = 0.0

    @classmethod
    def now(cls) -> Times:
        return cls(time.perf_counter(), time.process_time())

    def __add__(self, other: Times) -> Times:
        return Times(self.wall + other.wall, self.cpu + other.cpu)

    def __sub__(self, other: Times) -> Times:
        return Times(self.wall - other.wall, self.cpu - other.cpu)

    def of(self, clock: str) -> float:
        """The seconds of ``clock`` (``cpu`` or ``wall``)."""
        return self.wall if clock == "wall" else self.cpu


class ModelClock:
    """Time spent inside the main model's code while the env runs (see the module docstring).

    ``network``: ``DynaLayNet.straight`` and ``DynaLayNet.step``, wrapped on the model object
    (instance attributes shadow the class's). ``state_ops``: ``NetState.put_rows_`` and
    ``NetState.pooled``, wrapped on the class (the env's states are made anew every step) until
    :meth:`close`. Only the outermost timed call counts: ``step`` calls ``put_rows_`` itself.
    """

    STATE_OPS = ("put_rows_", "pooled")

    def __init__(self, model: DynaLayNet, device: torch.device) -> None:
        self.network, self.state_ops = Times(), Times()
        self.device = device
        self._busy = False
        for name in ("straight", "step"):
            setattr(model, name, self._timed(getattr(model, name), "network"))
        self._originals = {name: NetState.__dict__[name] for name in self.STATE_OPS}
        for name, method in self._originals.items():
            setattr(NetState, name, self._timed(method, "state_ops"))

    def _timed(self, method: Callable[..., Any], kind: str) -> Callable[..., Any]:
        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._busy:
                return method(*args, **kwargs)
            self._busy = True
            synchronize(self.device)
            start = Times.now()
            try:
                return method(*args, **kwargs)
            finally:
                synchronize(self.device)
                setattr(self, kind, getattr(self, kind) + (Times.now() - start))
                self._busy = False

        return timed

    def reading(self) -> tuple[Times, Times]:
        """(network, state ops) so far."""
        return self.network, self.state_ops

    def close(self) -> None:
        """Put the original ``NetState`` methods back."""
        for name, method in self._originals.items():
            setattr(NetState, name, method)


@dataclass(frozen=True)
class Context:
    """What every setting of a part shares: the model, the data, the device and env options."""

    model: DynaLayNet
    splits: dict[str, ImageSplit]
    device: torch.device
    autoreset_mode: AutoresetMode
    seed: int = 0
    env_options: dict[str, Any] = field(default_factory=dict)

    def env_kwargs(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "splits": self.splits,
            "device": str(self.device),
            **self.env_options,
        }


# ----- the settings ------------------------------------------------------------------------------
class Runner:
    """One setting: ``call()`` does one unit of work and returns the episodes it completed.

    ``steps_per_call``: ``step`` calls of the env (or model passes) that one unit makes.
    """

    name: str = ""
    steps_per_call: int = 1

    def call(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the setting holds."""


#: Draws the next (N,) actions of a setting.
Actions = Callable[[], np.ndarray]


def uniform_actions(rng: np.random.Generator, n_actions: int, size: int) -> Actions:
    """Every action equally likely, drawn at every call (the throughput part)."""
    return lambda: rng.integers(0, n_actions, size=size)


def mixed_actions(rng: np.random.Generator, n_actions: int, size: int) -> Actions:
    """NOP with probability ``NOP_PROBABILITY``, else a uniformly random loop (overhead part).

    ``ACTION_ARRAYS`` arrays drawn up front and cycled through, so the timing does not count
    drawing them.
    """
    arrays = []
    for _ in range(ACTION_ARRAYS):
        loops = rng.integers(1, n_actions, size=size)
        arrays.append(np.where(rng.random(size) < NOP_PROBABILITY, 0, loops))
    cycle: Iterator[np.ndarray] = itertools.cycle(arrays)
    return lambda: next(cycle)


class VectorRunner(Runner):
    """The native vector env; ``pair_resets``: make NextStep's reset step part of every call."""

    def __init__(
        self,
        context: Context,
        num_envs: int,
        draw: Callable[[np.random.Generator, int, int], Actions] = uniform_actions,
        pair_resets: bool = True,
        name: str = "vector",
    ) -> None:
        self.name = name
        self.env = gym.make_vec(
            ENV_ID,
            num_envs=num_envs,
            vectorization_mode="vector_entry_point",
            autoreset_mode=context.autoreset_mode,
            **context.env_kwargs(),
        )
        self.env.reset(seed=context.seed)
        n_actions = int(self.env.single_action_space.n)
        self.actions = draw(np.random.default_rng(context.seed), n_actions, num_envs)
        # NextStep with max_steps=1: a decision step, then a step that only resets the slots.
        # One unit makes both, so every timed episode has its reset timed too.
        next_step = context.autoreset_mode == AutoresetMode.NEXT_STEP
        self.steps_per_call = 2 if next_step and pair_resets else 1

    def call(self) -> int:
        episodes = 0
        for _ in range(self.steps_per_call):
            _, _, terminated, truncated, _ = self.env.step(self.actions())
            episodes += int(np.count_nonzero(terminated | truncated))
        return episodes

    def close(self) -> None:
        self.env.close()


class DummyRunner(Runner):
    name = "dummy"

    def __init__(self, context: Context, num_envs: int) -> None:
        def make_env() -> gym.Env:
            return gym.make(ENV_ID, **context.env_kwargs())

        self.env = DummyVecEnv([make_env] * num_envs)
        self.env.seed(context.seed)
        self.env.reset()
        n_actions = int(self.env.action_space.n)
        self.actions = uniform_actions(np.random.default_rng(context.seed), n_actions, num_envs)

    def call(self) -> int:
        _, _, dones, _ = self.env.step(self.actions())
        return int(np.count_nonzero(dones))

    def close(self) -> None:
        self.env.close()


class RawModelRunner(Runner):
    """The env's work without the env: sample, normalise, straight pass, one random action."""

    name = "raw-model"

    def __init__(self, context: Context, num_envs: int) -> None:
        self.model, self.device = context.model, context.device
        self.split = context.splits[SPLIT].to(context.device)
        self.rng = np.random.default_rng(context.seed)
        self.num_envs = num_envs
        n = self.model.n_blocks
        self.iteration_sum = torch.zeros(n, dtype=torch.long)
        self.looped_count = torch.zeros(n, dtype=torch.long)

    @torch.no_grad()
    def call(self) -> int:
        rows = torch.as_tensor(self.rng.integers(0, len(self.split), self.num_envs))
        actions = torch.as_tensor(self.rng.integers(0, self.model.n_actions, self.num_envs))
        output = self.model.straight(self.split.normalized(rows.to(self.device)))
        result = self.model.step(output.state, actions.to(self.device))
        synchronize(self.device)
        looped = actions.unsqueeze(1) > torch.arange(self.model.n_blocks)
        self.iteration_sum += (result.iterations.cpu() * looped).sum(dim=0)
        self.looped_count += looped.sum(dim=0)
        return self.num_envs

    def mean_iterations(self) -> str:
        means = self.iteration_sum / self.looped_count.clamp_min(1)
        return "/".join(f"{value:.1f}" for value in means.tolist())


class SB3StackRunner(Runner):
    """The env as the trainer hands it to PPO, plus the metrics callback the trainer adds."""

    name = "SB3 stack"

    def __init__(self, context: Context, num_envs: int) -> None:
        hyperparams = algo_hyperparams(ALGO, ENV_ID)
        monitored = make_sb3_vec_env(ENV_ID, num_envs, **context.env_kwargs())
        self.env = VecNormalize(monitored, **hyperparams.get("normalize", {}))
        self.env.seed(context.seed)
        self.env.reset()
        core = monitored.venv.vector_env.unwrapped.core
        self.callback = DynaLayMetricsCallback(core.n_actions, core.n_blocks)
        # What init_callback(algorithm) would take from PPO; the logger writes nowhere.
        stand_in = SimpleNamespace(num_timesteps=0, get_env=lambda: self.env)
        stand_in.logger = Logger(folder=None, output_formats=[])
        self.callback.init_callback(stand_in)  # type: ignore[arg-type]
        self.rollout_steps = int(hyperparams.get("n_steps", 1))
        self.actions = mixed_actions(np.random.default_rng(context.seed), core.n_actions, num_envs)
        self.steps = 0

    def call(self) -> int:
        _, _, dones, infos = self.env.step(self.actions())
        self.callback.update_locals({"infos": infos, "dones": dones})
        self.callback.on_step()
        self.steps += 1
        if self.steps % self.rollout_steps == 0:
            self.callback.on_rollout_end()
        return int(np.count_nonzero(dones))

    def close(self) -> None:
        self.env.close()


# ----- measurement -------------------------------------------------------------------------------
@dataclass
class Measurement:
    """Episodes, step calls and times (the model's shares too) over the timed chunks."""

    name: str
    num_envs: int
    episodes: int = 0
    calls: int = 0
    total: Times = field(default_factory=Times)
    network: Times = field(default_factory=Times)
    state_ops: Times = field(default_factory=Times)
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.episodes / self.total.wall if self.total.wall > 0 else 0.0

    def per_slot_step_us(self, times: Times, clock: str) -> float:
        return 1e6 * times.of(clock) / max(self.calls * self.num_envs, 1)

    @property
    def overhead(self) -> Times:
        return self.total - self.network - self.state_ops

    def line(self) -> str:
        per_call = 1000.0 * self.total.wall / max(self.calls, 1)
        text = (
            f"{self.name:<9} N={self.num_envs:<4d} {self.rate:10.1f} episodes/s  "
            f"({self.episodes} episodes, {self.calls} step calls, {self.total.wall:.2f} s, "
            f"{per_call:.1f} ms/call)"
        )
        return text + "".join(f"  {note}" for note in self.notes)

    def overhead_detail(self, clock: str) -> str:
        other = CLOCKS[1 - CLOCKS.index(clock)]
        finished = self.episodes / max(self.calls * self.num_envs, 1)
        parts = [self.total, self.network, self.state_ops, self.overhead]
        total, network, state, overhead = (self.per_slot_step_us(t, clock) for t in parts)
        return (
            f"  {self.name:<20} N={self.num_envs:<4d} per slot-step ({clock}): total "
            f"{total:7.2f} = network {network:7.2f} + state ops {state:5.2f} + overhead "
            f"{overhead:5.2f} us  [{other}: total {self.per_slot_step_us(self.total, other):.2f}, "
            f"overhead {self.per_slot_step_us(self.overhead, other):.2f} us]  ({self.calls} step "
            f"calls, {finished:.0%} of the slots finished per step)"
        )

    def overhead_line(self, clock: str) -> str:
        value = self.per_slot_step_us(self.overhead, clock)
        return f"overhead per slot-step, {self.name}, N={self.num_envs}: {value:.2f} us"


def run_for(
    runner: Runner,
    budget: float,
    measurement: Measurement | None = None,
    clock: ModelClock | None = None,
) -> None:
    """Call ``runner`` until ``budget`` wall seconds have passed (at least once); record if asked.

    ``clock``: the model clock whose growth meanwhile is the model's share of the chunk.
    """
    episodes, calls = 0, 0
    model_start = clock.reading() if clock else (Times(), Times())
    start = Times.now()
    while True:
        episodes += runner.call()
        calls += runner.steps_per_call
        elapsed = Times.now() - start
        if elapsed.wall >= budget:
            break
    if measurement is not None:
        measurement.episodes += episodes
        measurement.calls += calls
        measurement.total += elapsed
        if clock is not None:
            network, state_ops = clock.reading()
            measurement.network += network - model_start[0]
            measurement.state_ops += state_ops - model_start[1]


def measure_interleaved(
    runners: list[Runner],
    num_envs: int,
    args: argparse.Namespace,
    clock: ModelClock | None = None,
) -> list[Measurement]:
    """Warm every runner up, then give each ``args.seconds`` in ``args.rounds`` round-robin chunks.

    The runners run one at a time, so one ``clock`` on a model they share attributes its time
    to whichever runner is running.
    """
    for runner in runners:
        run_for(runner, args.warmup)
    measurements = [Measurement(runner.name, num_envs) for runner in runners]
    for _ in range(args.rounds):
        for runner, measurement in zip(runners, measurements, strict=True):
            run_for(runner, args.seconds / args.rounds, measurement, clock)
    return measurements


def build_runners(factories: list[Callable[[int], Runner]], num_envs: int) -> list[Runner]:
    """Build every setting for ``num_envs``, printing how long each took."""
    runners = []
    for factory in factories:
        started = time.perf_counter()
        runners.append(factory(num_envs))
        setup = time.perf_counter() - started
        print(f"  built {runners[-1].name} N={num_envs} in {setup:.1f} s", flush=True)
    return runners


def throughput_size(context: Context, num_envs: int, args: argparse.Namespace) -> list[Measurement]:
    """Build the three throughput settings for ``num_envs``, measure, print and return them."""
    factories: list[Callable[[int], Runner]] = [
        functools.partial(VectorRunner, context),
        functools.partial(DummyRunner, context),
        functools.partial(RawModelRunner, context),
    ]
    runners = build_runners(factories, num_envs)
    measurements = measure_interleaved(runners, num_envs, args)
    raw = runners[-1]
    assert isinstance(raw, RawModelRunner)
    measurements[-1].notes.append(f"mean FPI iterations per looped block {raw.mean_iterations()}")
    for runner in runners:
        runner.close()
    for measurement in measurements:
        print(measurement.line(), flush=True)
    return measurements


def overhead_size(
    contexts: dict[AutoresetMode, Context],
    clock: ModelClock,
    num_envs: int,
    args: argparse.Namespace,
) -> list[Measurement]:
    """Build the bare vector envs and the SB3 stack for ``num_envs``; measure and print them."""
    factories: list[Callable[[int], Runner]] = [
        functools.partial(
            VectorRunner,
            contexts[mode],
            draw=mixed_actions,
            pair_resets=False,
            name=f"vector env {mode.value}",
        )
        for mode in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP)
    ]
    factories.append(functools.partial(SB3StackRunner, contexts[AutoresetMode.SAME_STEP]))
    runners = build_runners(factories, num_envs)
    measurements = measure_interleaved(runners, num_envs, args, clock)
    for runner in runners:
        runner.close()
    for measurement in measurements:
        print(measurement.overhead_detail(args.clock), flush=True)
    return measurements


# ----- report ------------------------------------------------------------------------------------
def load_average() -> str:
    if not hasattr(os, "getloadavg"):
        return "n/a"
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def model_line(model: DynaLayNet, widths: tuple[int, ...], loop_scale: float) -> str:
    setting = "the real setting" if widths == DEFAULT_WIDTHS else "NOT the default 64/128/256"
    loops = f"loop weights x{loop_scale:g} so loops iterate" if loop_scale != 1 else "as built"
    return (
        f"main model: UNTRAINED, widths {'/'.join(map(str, widths))} ({setting}), {loops}; "
        f"{sum(p.numel() for p in model.parameters())} parameters"
    )


def header(args: argparse.Namespace, splits: dict[str, ImageSplit], data_label: str) -> list[str]:
    return [
        f"DynaLay env benchmark: {ENV_ID}",
        f"data: {data_label}, {SPLIT} split of {len(splits[SPLIT])} samples",
        f"device: {args.device}, torch threads: {torch.get_num_threads()}, "
        f"CPU cores: {os.cpu_count()}, load average: {load_average()}",
        f"timing: {args.seconds:g} s per setting in {args.rounds} interleaved chunks after a "
        f"{args.warmup:g} s warm-up",
    ]


def ratio(numerator: Measurement, denominator: Measurement) -> float:
    return numerator.rate / denominator.rate if denominator.rate > 0 else float("inf")


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def throughput_summary(results: dict[int, list[Measurement]]) -> list[str]:
    """The two ratio lines at the largest N and the targets line."""
    largest = max(results)
    vector, dummy, raw = results[largest]
    over_dummy, over_raw = ratio(vector, dummy), ratio(vector, raw)
    return [
        f"ratio vector/dummy at N={largest}: {over_dummy:.2f}",
        f"ratio vector/raw-model at N={largest}: {over_raw:.2f}",
        f"targets: X >= {TARGET_VECTOR_OVER_DUMMY:g} "
        f"({verdict(over_dummy >= TARGET_VECTOR_OVER_DUMMY)}), "
        f"Y >= {TARGET_VECTOR_OVER_RAW:g} ({verdict(over_raw >= TARGET_VECTOR_OVER_RAW)})",
    ]


def overhead_summary(results: dict[int, list[Measurement]], clock: str) -> list[str]:
    """One line per setting and N, then the target line for the SB3 stack at the largest N."""
    lines = [m.overhead_line(clock) for n in sorted(results) for m in results[n]]
    largest = max(results)
    stack = next(m for m in results[largest] if m.name == SB3StackRunner.name)
    met = stack.per_slot_step_us(stack.overhead, clock) <= TARGET_OVERHEAD_US
    lines.append(
        f"target: overhead per slot-step ({clock} time) of the SB3 stack at N={largest} <= "
        f"{TARGET_OVERHEAD_US:g} us ({verdict(met)})"
    )
    return lines


def run_throughput(
    args: argparse.Namespace, device: torch.device, splits: dict[str, ImageSplit]
) -> list[str]:
    context = Context(
        model=make_model(tuple(args.widths), device, args.seed, LOOP_WEIGHT_SCALE),
        splits=splits,
        device=device,
        autoreset_mode=AutoresetMode(args.autoreset_mode),
        seed=args.seed,
    )
    print(f"== throughput: max_steps=1, uniformly random actions over {context.model.n_actions}")
    print(model_line(context.model, tuple(args.widths), LOOP_WEIGHT_SCALE))
    print(f"vector env autoreset: {context.autoreset_mode.value}", flush=True)
    results = {n: throughput_size(context, n, args) for n in sorted(set(args.num_envs))}
    return throughput_summary(results)


def run_overhead(
    args: argparse.Namespace, device: torch.device, splits: dict[str, ImageSplit]
) -> list[str]:
    model = make_model(tuple(args.overhead_widths), device, args.seed)
    max_steps, time_limit = args.overhead_max_steps, args.overhead_max_episode_steps or None
    options = {"max_steps": max_steps, "max_episode_steps": time_limit}
    contexts = {
        mode: Context(model, splits, device, mode, args.seed, options)
        for mode in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP)
    }
    print(
        f"== overhead per slot-step: max_steps={max_steps}, "
        f"max_episode_steps={time_limit}, NOP with probability "
        f"{NOP_PROBABILITY:g} else a random loop; SB3 stack as for {ALGO}: "
        f"VecNormalize({algo_hyperparams(ALGO, ENV_ID).get('normalize')})"
    )
    print(model_line(model, tuple(args.overhead_widths), 1.0), flush=True)
    clock = ModelClock(model, device)
    try:
        sizes = sorted(set(args.overhead_num_envs))
        results = {n: overhead_size(contexts, clock, n, args) for n in sizes}
    finally:
        clock.close()
    if clock.network.wall <= 0:
        raise RuntimeError("the model clock saw no call: the env does not use the timed model")
    return overhead_summary(results, args.clock)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", default="all", choices=["all", "throughput", "overhead"])
    parser.add_argument("--quick", action="store_true", help="short timings, fewer sizes")
    parser.add_argument("--num-envs", type=int, nargs="+", default=None)
    parser.add_argument("--overhead-num-envs", type=int, nargs="+", default=list(OVERHEAD_NUM_ENVS))
    parser.add_argument("--seconds", type=float, default=None, help="timed seconds per setting")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved chunks per setting")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds per setting")
    parser.add_argument(
        "--clock", default="cpu", choices=CLOCKS, help="time the overhead lines report"
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--widths", type=int, nargs="+", default=list(DEFAULT_WIDTHS))
    parser.add_argument("--overhead-widths", type=int, nargs="+", default=list(OVERHEAD_WIDTHS))
    parser.add_argument("--overhead-max-steps", type=int, default=OVERHEAD_MAX_STEPS)
    parser.add_argument(
        "--overhead-max-episode-steps",
        type=int,
        default=OVERHEAD_MAX_EPISODE_STEPS,
        help="time limit of the overhead part's episodes (0: none)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--autoreset-mode",
        default=AutoresetMode.NEXT_STEP.value,
        choices=[AutoresetMode.NEXT_STEP.value, AutoresetMode.SAME_STEP.value],
        help="autoreset mode of the vector env (throughput part)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.num_envs is None:
        args.num_envs = [1, 16] if args.quick else [1, 16, 64, 256]
    if args.seconds is None:
        args.seconds = 1.5 if args.quick else 5.0
    if args.warmup is None:
        args.warmup = 0.2 if args.quick else 0.5
    if min(args.num_envs + args.overhead_num_envs) < 1 or args.seconds <= 0 or args.rounds < 1:
        parser.error("--num-envs must be >= 1, --seconds > 0 and --rounds >= 1")
    if args.overhead_max_steps < 1 or args.overhead_max_episode_steps < 0:
        parser.error("--overhead-max-steps must be >= 1, --overhead-max-episode-steps >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    device = resolve_device(args.device)
    args.device = str(device)
    splits, data_label = load_data()
    for line in header(args, splits, data_label):
        print(line, flush=True)
    summary = []
    if args.part in ("all", "throughput"):
        summary += run_throughput(args, device, splits)
    if args.part in ("all", "overhead"):
        summary += run_overhead(args, device, splits)
    print(f"total wall time: {time.perf_counter() - started:.1f} s")
    for line in summary:
        print(line)


if __name__ == "__main__":
    main()
