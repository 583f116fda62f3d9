"""Benchmark: inference with the deployable classifier against the static paths it chooses among.

For every batch size in ``--batch-sizes`` (default 1, 64, 256), the wall time per image of three
ways of classifying the same images with the same main model, under ``torch.no_grad()`` in
evaluation mode:

- ``plain CNN``: the straight pass only (``DynaLayNet.straight``), what action NOP costs.
- ``loop-all``: the straight pass, then ``DynaLayNet.step`` with loop-n (every block looped to
  its fixed point) for every image: the most accurate static path.
- ``adaptive``: :class:`main_model.adaptive.AdaptiveClassifier` (the straight pass, the agent's
  observation and policy network, each action group batched, up to ``max_steps`` decisions).

and the FLOPs per image of each (counted per sample by the model, straight pass included, over
every image the benchmark uses). Its last lines are ``wall-clock ratio adaptive/loop-all at batch
<largest>: X`` and ``FLOPs ratio adaptive/loop-all: Y``: X near Y means the FLOPs the agent
saves are saved in time too; X well above Y means time goes to something the FLOP count does not
see (the agent, gathers and scatters of action groups, host syncs, small convolutions).

The classifier: ``--classifier FILE`` (written by ``run_rl.py export``), else exported here from
``--run-dir`` (default: the committed demo agent ``docs/results/demo/seed0/agent_beta_0.1``,
PPO with beta 0.1 on the shipped Fashion-MNIST model). Images: the test split of real
Fashion-MNIST when it is installed (``/usr/share/datasets/fashion-mnist``), else random images of
the classifier's shape (then the agent's choices, and the FLOPs ratio, are not representative);
``--images`` of them, cycled through in batches.

Timing: each setting first runs a warm-up (at least one batch), then is measured for
``--seconds`` of wall time in total, in ``--rounds`` chunks interleaved with the other settings of
the same batch size, so a burst of load from other processes on a shared machine hits all alike;
a chunk always finishes the batch in progress. The process's CPU time is printed beside the
wall time: on a shared machine the two differ by the time other processes held the core.
``--threads`` sets torch's intra-op threads (default 1). ``--profile`` also prints where the
adaptive classifier's time goes at the largest batch size (``torch.profiler``, CPU operators by
self time).

Run from the repository root: ``python bench/adaptive_inference.py [--classifier FILE |
--run-dir DIR] [--batch-sizes 1 64 256] [--images 2560] [--seconds 4] [--rounds 4]
[--threads 1] [--device cpu] [--profile]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from agents.deploy import classifier_from_run
from dynalay_env.data import DataNotFoundError, get_spec, load_splits, random_splits
from main_model.adaptive import AdaptiveClassifier
from main_model.distributed import resolve_device

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUN_DIR = ROOT / "docs" / "results" / "demo" / "seed0" / "agent_beta_0.1"
PLAIN, LOOP_ALL, ADAPTIVE = "plain CNN", "loop-all", "adaptive"


def load_classifier(args: argparse.Namespace) -> AdaptiveClassifier:
    """The exported classifier given, or one exported from ``--run-dir`` into a temporary file
    and read back (so the benchmark times exactly what ``AdaptiveClassifier.load`` gives)."""
    if args.classifier is not None:
        return AdaptiveClassifier.load(args.classifier)
    with tempfile.TemporaryDirectory() as folder:
        path = classifier_from_run(Path(args.run_dir)).save(Path(folder) / "dynalay.pt")
        return AdaptiveClassifier.load(path)


def load_images(classifier: AdaptiveClassifier, count: int) -> tuple[Tensor, str]:
    """(count, C, H, W) normalised test images (real ones when installed) and what they are."""
    config = classifier.model.config
    dataset = classifier.metadata.get("dataset")
    split = None
    if dataset is not None:
        try:
            split = load_splits(dataset)["test"]
            label = f"{dataset} test split"
        except DataNotFoundError:
            split = None
    if split is None:
        name = dataset or next(
            name
            for name in ("FashionMNIST", "CIFAR10", "CIFAR100")
            if (get_spec(name).in_channels, get_spec(name).image_size)
            == (config.in_channels, config.image_size)
        )
        split = random_splits(name, n_train=2, n_test=count)["test"]
        label = f"RANDOM images of {name}'s shape (the real data is not installed)"
    rows = torch.arange(count) % len(split)
    return split.normalized(rows), f"{label}, first {count} images"


@dataclass
class Timing:
    """Wall and CPU seconds spent on ``images`` images by one setting."""

    images: int = 0
    wall: float = 0.0
    cpu: float = 0.0

    def ms_per_image(self, clock: str = "wall") -> float:
        return 1000.0 * getattr(self, clock) / max(self.images, 1)


def static_name(action: int, n_blocks: int) -> str:
    return PLAIN if action == 0 else LOOP_ALL if action == n_blocks else f"loop-{action}"


def settings(classifier: AdaptiveClassifier) -> dict[str, Callable[[Tensor], Tensor]]:
    """Each setting as images -> (B,) int64 FLOPs per image (what it spent): every static path
    (NOP = the plain CNN, loop-1 .. loop-all), then the adaptive classifier."""
    model = classifier.model

    def static(action: int) -> Callable[[Tensor], Tensor]:
        def run(images: Tensor) -> Tensor:
            output = model.straight(images)
            if action == 0:
                return output.flops
            actions = torch.full((images.shape[0],), action, dtype=torch.long, device=images.device)
            return output.flops + model.step(output.state, actions).flops

        return run

    runs = {static_name(a, model.n_blocks): static(a) for a in range(model.n_actions)}
    runs[ADAPTIVE] = lambda images: classifier(images).flops
    return runs


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_chunk(
    run: Callable[[Tensor], Tensor], batches: list[Tensor], start: int, seconds: float, device
) -> tuple[Timing, int]:
    """Run batches from ``start`` (cycling) for ``seconds`` of wall time; at least one."""
    timing = Timing()
    wall, cpu = time.perf_counter(), time.process_time()
    deadline, index = wall + seconds, start
    while True:
        batch = batches[index % len(batches)]
        run(batch)
        synchronize(device)
        timing.images += batch.shape[0]
        index += 1
        if time.perf_counter() >= deadline:
            break
    timing.wall, timing.cpu = time.perf_counter() - wall, time.process_time() - cpu
    return timing, index


def measure(
    classifier: AdaptiveClassifier, images: Tensor, batch_size: int, args, device
) -> dict[str, Timing]:
    """Interleaved timings of every setting at ``batch_size``."""
    batches = list(images.split(batch_size))
    if batches[-1].shape[0] != batch_size and len(batches) > 1:
        batches.pop()  # every timed call has the batch size it is reported under
    runs = settings(classifier)
    totals = {name: Timing() for name in runs}
    cursor = dict.fromkeys(runs, 0)
    with torch.no_grad():
        for run in runs.values():
            run_chunk(run, batches, 0, args.warmup, device)
        for _ in range(args.rounds):
            for name, run in runs.items():
                chunk, cursor[name] = run_chunk(
                    run, batches, cursor[name], args.seconds / args.rounds, device
                )
                total = totals[name]
                total.images += chunk.images
                total.wall += chunk.wall
                total.cpu += chunk.cpu
    return totals


def flops_per_image(classifier: AdaptiveClassifier, images: Tensor) -> dict[str, float]:
    """Mean FLOPs per image of every setting over ``images`` (batches of 256)."""
    runs = settings(classifier)
    totals = dict.fromkeys(runs, 0)
    with torch.no_grad():
        for batch in images.split(256):
            for name, run in runs.items():
                totals[name] += int(run(batch).sum())
    return {name: total / images.shape[0] for name, total in totals.items()}


def first_action_shares(classifier: AdaptiveClassifier, images: Tensor) -> list[float]:
    """Share of the images whose first decision is each action."""
    with torch.no_grad():
        first = torch.cat([classifier(batch).actions[:, 0] for batch in images.split(256)])
    counts = torch.bincount(first.cpu(), minlength=classifier.model.n_actions)
    return (counts.double() / len(first)).tolist()


def profile(classifier: AdaptiveClassifier, images: Tensor, batch_size: int) -> None:
    """Print the adaptive classifier's CPU operators by self time at ``batch_size``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    batches = list(images.split(batch_size))[:8]
    with torch.no_grad():
        classifier(batches[0])
        with torch_profile(activities=[ProfilerActivity.CPU]) as profiler:
            for batch in batches:
                classifier(batch)
    print(f"== profile: adaptive classifier, {len(batches)} batches of {batch_size}")
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def load_average() -> str:
    if not hasattr(os, "getloadavg"):
        return "n/a"
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--classifier", default=None, help="a file written by run_rl.py export")
    source.add_argument("--run-dir", default=str(DEFAULT_RUN_DIR), help="a finished run")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--images", type=int, default=2560, help="test images cycled through")
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per setting")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved chunks per setting")
    parser.add_argument("--warmup", type=float, default=0.3, help="warm-up seconds per setting")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--profile", action="store_true", help="profile the adaptive classifier")
    args = parser.parse_args(argv)
    if min(args.batch_sizes) < 1 or args.images < max(args.batch_sizes) or args.rounds < 1:
        parser.error("--batch-sizes must be >= 1, --images >= the largest, --rounds >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    device = resolve_device(args.device)
    classifier = load_classifier(args).to(device)
    images, data_label = load_images(classifier, args.images)
    images = images.to(device)
    model, meta = classifier.model, classifier.metadata
    print("DynaLay adaptive inference benchmark")
    print(
        f"classifier: {args.classifier or args.run_dir}: main model widths "
        f"{'/'.join(map(str, model.config.widths))}, {meta.get('algo', '?')} agent, beta "
        f"{meta.get('beta', '?')}, max_steps {classifier.max_steps}, observation normalisation "
        f"{'on' if classifier.normalizer is not None else 'off'}"
    )
    print(f"data: {data_label}")
    print(
        f"device: {device}, torch threads: {torch.get_num_threads()}, CPU cores: {os.cpu_count()}, "
        f"load average: {load_average()}"
    )
    print(
        f"timing: {args.seconds:g} s per setting in {args.rounds} interleaved chunks after a "
        f"{args.warmup:g} s warm-up",
        flush=True,
    )
    flops = flops_per_image(classifier, images)
    plain = flops[PLAIN]
    shares = first_action_shares(classifier, images)
    statics = [static_name(a, model.n_blocks) for a in range(model.n_actions)]
    print(
        "the agent's first actions: "
        + ", ".join(f"{name} {share:.1%}" for name, share in zip(statics, shares, strict=True))
    )
    print(
        "FLOPs per image: "
        + ", ".join(f"{name} {value:,.0f} ({value / plain:.2f}x)" for name, value in flops.items())
    )
    results = {}
    for batch_size in sorted(set(args.batch_sizes)):
        results[batch_size] = measure(classifier, images, batch_size, args, device)
        timings = results[batch_size]
        print(
            f"batch {batch_size}: "
            + ", ".join(
                f"{name} {t.ms_per_image():.4f} ms/image (CPU {t.ms_per_image('cpu'):.4f})"
                for name, t in timings.items()
            )
            + f"; adaptive/loop-all {ratio(timings, ADAPTIVE, LOOP_ALL):.3f}, "
            f"plain/loop-all {ratio(timings, PLAIN, LOOP_ALL):.3f}",
            flush=True,
        )
    if args.profile:
        profile(classifier, images, max(args.batch_sizes))
    largest = max(results)
    print(f"total wall time: {time.perf_counter() - started:.1f} s, load average {load_average()}")
    timings = results[largest]
    print(
        f"CPU-time ratio adaptive/loop-all at batch {largest}: "
        f"{ratio(timings, ADAPTIVE, LOOP_ALL, 'cpu'):.3f}"
    )
    if classifier.max_steps == 1:
        # What the adaptive classifier would take if each image cost what its path costs in a
        # batch of that path alone: the gap to the measured ratio is the price of grouping
        # (smaller batches per path, gathers and scatters) and of the agent itself.
        predicted = sum(
            share * timings[name].ms_per_image()
            for name, share in zip(statics, shares, strict=True)
        )
        print(
            f"wall-clock ratio adaptive/loop-all at batch {largest} predicted from the static "
            f"paths' times and the agent's action shares: "
            f"{predicted / timings[LOOP_ALL].ms_per_image():.3f}"
        )
    print(f"FLOPs ratio plain/loop-all: {plain / flops[LOOP_ALL]:.3f}")
    print(
        f"wall-clock ratio adaptive/loop-all at batch {largest}: "
        f"{ratio(timings, ADAPTIVE, LOOP_ALL):.3f}"
    )
    print(f"FLOPs ratio adaptive/loop-all: {flops[ADAPTIVE] / flops[LOOP_ALL]:.3f}")


def ratio(timings: dict[str, Timing], numerator: str, denominator: str, clock="wall") -> float:
    return timings[numerator].ms_per_image(clock) / timings[denominator].ms_per_image(clock)


if __name__ == "__main__":
    sys.exit(main())
