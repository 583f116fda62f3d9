"""Benchmark: DynaLay environment throughput, in episodes completed per second.

With ``max_steps=1`` (the default) every episode is one decision: a reset (the straight pass of
the main model on a new sample) and one step (the action: 0 = answer now, k = loop blocks 1..k).
One episode = one input sample, so episodes per second = samples per second. Actions are drawn
uniformly at random over the ``n_blocks + 1`` actions. Three ways of doing the same work are
measured, for every N in ``--num-envs``:

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

All three share one main model object, one data split (the holdout split of real Fashion-MNIST
when ``/usr/share/datasets/fashion-mnist`` exists, else random in-memory images made like
``tests/conftest.py``'s ``make_splits``), the device and the torch thread count. The model is
*untrained*, with its loop-conv weights scaled up 5x (like ``tests/conftest.py``'s
``make_model``) so the contraction sits at its bound and loops take several iterations; the mean
iterations per looped block are printed with the raw-model lines.

Timing: every setting first runs a short warm-up (at least one call), then is measured for
``--seconds`` of wall time in total, split into ``--rounds`` chunks that are interleaved with the
other two settings of the same N (vector, dummy, raw-model, vector, ...), so a burst of load from
other processes on a shared machine hits all three alike. A chunk always finishes the call in
progress (one ``DummyVecEnv`` step at N=256 can take seconds) and the rate is the total episodes
over the total measured time, so slow settings are counted honestly, only over fewer calls. On
CUDA the raw-model loop synchronises after each call (the env does, by returning numpy arrays).

``--threads`` sets torch's intra-op threads for every setting (default 1: on a few shared cores,
more threads than free cores make the many small per-sample ops of the single envs wait on
descheduled OpenMP workers, tens of times slower).

The last lines are ``ratio vector/dummy at N=<largest N>: X`` and
``ratio vector/raw-model at N=<largest N>: Y``, then the targets X >= 10 and Y >= 0.8.

Run from the repository root: ``python bench/env_throughput.py [--num-envs 1 16 64 256]
[--seconds 5] [--rounds 3] [--device auto] [--widths 64 128 256] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import DummyVecEnv

from dynalay_env import ENV_IDS
from dynalay_env.data import (
    DataNotFoundError,
    ImageSplit,
    get_spec,
    load_splits,
    random_splits,
)
from dynalay_env.models import DEFAULT_WIDTHS, config_for, resolve_device
from main_model import DynaLayNet

DATASET = "FashionMNIST"
ENV_ID = ENV_IDS[DATASET]
SPLIT = "holdout"
LOOP_WEIGHT_SCALE = 5.0
TARGET_VECTOR_OVER_DUMMY = 10.0
TARGET_VECTOR_OVER_RAW = 0.8


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


def make_model(widths: tuple[int, ...], device: torch.device, seed: int = 0) -> DynaLayNet:
    """An untrained main model whose loops iterate (loop weights scaled up, as in the tests)."""
    torch.manual_seed(seed)
    model = DynaLayNet(config_for(get_spec(DATASET), widths))
    with torch.no_grad():
        for block in model.blocks:
            block.loop_conv.weight.mul_(LOOP_WEIGHT_SCALE)
    return model.to(device).eval().requires_grad_(False)


@dataclass(frozen=True)
class Context:
    """What every setting shares: the model, the data, the device and the env options."""

    model: DynaLayNet
    splits: dict[str, ImageSplit]
    device: torch.device
    autoreset_mode: AutoresetMode
    seed: int = 0

    def env_kwargs(self) -> dict:
        return {"model": self.model, "splits": self.splits, "device": str(self.device)}


# ----- the three settings ------------------------------------------------------------------------
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


class VectorRunner(Runner):
    name = "vector"

    def __init__(self, context: Context, num_envs: int) -> None:
        self.env = gym.make_vec(
            ENV_ID,
            num_envs=num_envs,
            vectorization_mode="vector_entry_point",
            autoreset_mode=context.autoreset_mode,
            **context.env_kwargs(),
        )
        self.env.reset(seed=context.seed)
        self.rng = np.random.default_rng(context.seed)
        self.num_envs, self.n_actions = num_envs, int(self.env.single_action_space.n)
        # NextStep with max_steps=1: a decision step, then a step that only resets the slots.
        # One unit makes both, so every timed episode has its reset timed too.
        next_step = context.autoreset_mode == AutoresetMode.NEXT_STEP
        self.steps_per_call = 2 if next_step else 1

    def call(self) -> int:
        episodes = 0
        for _ in range(self.steps_per_call):
            actions = self.rng.integers(0, self.n_actions, size=self.num_envs)
            _, _, terminated, truncated, _ = self.env.step(actions)
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
        self.rng = np.random.default_rng(context.seed)
        self.num_envs, self.n_actions = num_envs, int(self.env.action_space.n)

    def call(self) -> int:
        actions = self.rng.integers(0, self.n_actions, size=self.num_envs)
        _, _, dones, _ = self.env.step(actions)
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
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        looped = actions.unsqueeze(1) > torch.arange(self.model.n_blocks)
        self.iteration_sum += (result.iterations.cpu() * looped).sum(dim=0)
        self.looped_count += looped.sum(dim=0)
        return self.num_envs

    def mean_iterations(self) -> str:
        means = self.iteration_sum / self.looped_count.clamp_min(1)
        return "/".join(f"{value:.1f}" for value in means.tolist())


# ----- measurement -------------------------------------------------------------------------------
@dataclass
class Measurement:
    """Episodes, step calls and seconds accumulated over the timed chunks of one setting."""

    name: str
    num_envs: int
    episodes: int = 0
    calls: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.episodes / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        per_call = 1000.0 * self.seconds / max(self.calls, 1)
        text = (
            f"{self.name:<9} N={self.num_envs:<4d} {self.rate:10.1f} episodes/s  "
            f"({self.episodes} episodes, {self.calls} step calls, {self.seconds:.2f} s, "
            f"{per_call:.1f} ms/call)"
        )
        return text + "".join(f"  {note}" for note in self.notes)


def run_for(runner: Runner, budget: float, measurement: Measurement | None = None) -> None:
    """Call ``runner`` until ``budget`` seconds have passed (at least once); record if asked."""
    episodes, calls = 0, 0
    start = time.perf_counter()
    while True:
        episodes += runner.call()
        calls += runner.steps_per_call
        elapsed = time.perf_counter() - start
        if elapsed >= budget:
            break
    if measurement is not None:
        measurement.episodes += episodes
        measurement.calls += calls
        measurement.seconds += elapsed


def measure_interleaved(
    runners: list[Runner], num_envs: int, seconds: float, rounds: int, warmup: float
) -> list[Measurement]:
    """Warm every runner up, then give each ``seconds`` in ``rounds`` round-robin chunks."""
    for runner in runners:
        run_for(runner, warmup)
    measurements = [Measurement(runner.name, num_envs) for runner in runners]
    for _ in range(rounds):
        for runner, measurement in zip(runners, measurements, strict=True):
            run_for(runner, seconds / rounds, measurement)
    return measurements


def benchmark_size(context: Context, num_envs: int, args: argparse.Namespace) -> list[Measurement]:
    """Build the three settings for ``num_envs``, measure them, print and return the results."""
    factories: list[Callable[[Context, int], Runner]] = [VectorRunner, DummyRunner, RawModelRunner]
    runners = []
    for factory in factories:
        started = time.perf_counter()
        runners.append(factory(context, num_envs))
        setup = time.perf_counter() - started
        print(f"  built {runners[-1].name} N={num_envs} in {setup:.1f} s", flush=True)
    measurements = measure_interleaved(runners, num_envs, args.seconds, args.rounds, args.warmup)
    raw = runners[-1]
    assert isinstance(raw, RawModelRunner)
    measurements[-1].notes.append(f"mean FPI iterations per looped block {raw.mean_iterations()}")
    for runner in runners:
        runner.close()
    for measurement in measurements:
        print(measurement.line(), flush=True)
    return measurements


# ----- report ------------------------------------------------------------------------------------
def header(args: argparse.Namespace, context: Context, data_label: str) -> list[str]:
    widths = tuple(args.widths)
    setting = "the real setting" if widths == DEFAULT_WIDTHS else "NOT the default 64/128/256"
    load = "n/a"
    if hasattr(os, "getloadavg"):
        load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    split = context.splits[SPLIT]
    return [
        f"DynaLay env throughput: {ENV_ID}, max_steps=1, uniformly random actions over "
        f"{context.model.n_actions}",
        f"data: {data_label}, {SPLIT} split of {len(split)} samples",
        f"main model: UNTRAINED, widths {'/'.join(map(str, widths))} ({setting}), loop weights "
        f"x{LOOP_WEIGHT_SCALE:g} so loops iterate; "
        f"{sum(p.numel() for p in context.model.parameters())} parameters",
        f"device: {context.device}, torch threads: {torch.get_num_threads()}, "
        f"CPU cores: {os.cpu_count()}, load average: {load}",
        f"vector env autoreset: {context.autoreset_mode.value}; {args.seconds:g} s per setting "
        f"in {args.rounds} interleaved chunks after a {args.warmup:g} s warm-up",
    ]


def ratio(numerator: Measurement, denominator: Measurement) -> float:
    return numerator.rate / denominator.rate if denominator.rate > 0 else float("inf")


def summary(results: dict[int, list[Measurement]]) -> list[str]:
    """The two ratio lines at the largest N and the targets line."""
    largest = max(results)
    vector, dummy, raw = results[largest]
    over_dummy, over_raw = ratio(vector, dummy), ratio(vector, raw)

    def verdict(value: float, target: float) -> str:
        return "met" if value >= target else "NOT met"

    return [
        f"ratio vector/dummy at N={largest}: {over_dummy:.2f}",
        f"ratio vector/raw-model at N={largest}: {over_raw:.2f}",
        f"targets: X >= {TARGET_VECTOR_OVER_DUMMY:g} "
        f"({verdict(over_dummy, TARGET_VECTOR_OVER_DUMMY)}), "
        f"Y >= {TARGET_VECTOR_OVER_RAW:g} ({verdict(over_raw, TARGET_VECTOR_OVER_RAW)})",
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per setting")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved chunks per setting")
    parser.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds per setting")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--widths", type=int, nargs="+", default=list(DEFAULT_WIDTHS))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--autoreset-mode",
        default=AutoresetMode.NEXT_STEP.value,
        choices=[AutoresetMode.NEXT_STEP.value, AutoresetMode.SAME_STEP.value],
        help="autoreset mode of the vector env",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.num_envs) < 1 or args.seconds <= 0 or args.rounds < 1:
        parser.error("--num-envs must be >= 1, --seconds > 0 and --rounds >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    device = resolve_device(args.device)
    splits, data_label = load_data()
    context = Context(
        model=make_model(tuple(args.widths), device, args.seed),
        splits=splits,
        device=device,
        autoreset_mode=AutoresetMode(args.autoreset_mode),
        seed=args.seed,
    )
    for line in header(args, context, data_label):
        print(line, flush=True)
    results = {n: benchmark_size(context, n, args) for n in sorted(set(args.num_envs))}
    print(f"total wall time: {time.perf_counter() - started:.1f} s")
    for line in summary(results):
        print(line)


if __name__ == "__main__":
    main()
