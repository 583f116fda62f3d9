"""What a DynaLay training step costs against a plain one, measured side by side in one run.

    python bench/train_step.py                       # the default config at both widths
    python bench/train_step.py --operators conv3x3 conv1x1 dwsep lowrank --backwards ift jfb
    python bench/train_step.py --operators conv1x1 --backwards jfb --set feedback=true \
        loop_readout=residual          # any other DynaLayConfig field, the same for every row

For each width setting (16/32/64 on 28x28 images with strides 2/2/2, the Fashion-MNIST model;
64/128/256 on 32x32x3 with strides 1/2/2, the thesis's CIFAR-size maps 32/16/8) it times
training steps (batch 64, random images, AdamW, :func:`main_model.train.train_epoch` on one
batch) of the ``plain`` recipe (straight path only) and of the ``dynalay`` recipe (straight
path + one uniformly drawn loop path per sample), interleaved so that both see the same machine
load, and reports medians. Shares of the DynaLay step: ``backward`` (``loss.backward()``, as
train_epoch measures it) and ``bound`` (computing every block's contractive loop weight with
its gradient, forward and backward, timed on its own). The ratio lines are what the issue
"Loops worth their FLOPs" targets (at most 2x at 16/32/64).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from main_model import DynaLayConfig, DynaLayNet
from main_model.distributed import resolve_device
from main_model.recipes import RECIPES, recipe_actions
from main_model.train import train_epoch

SETTINGS = {
    "16 32 64": dict(in_channels=1, image_size=28, widths=(16, 32, 64), strides=(2, 2, 2)),
    "64 128 256": dict(in_channels=3, image_size=32, widths=(64, 128, 256), strides=(1, 2, 2)),
}


def timed_step(model, optimizer, batch, recipe, generator) -> tuple[float, float]:
    """(seconds, backward seconds) of one training step on ``batch``."""
    choose = recipe_actions(recipe, model.n_actions, generator)
    stats = train_epoch(
        model,
        optimizer,
        [batch],
        choose,
        recipe=recipe,
    )
    return stats.seconds, stats.backward_seconds


def bound_seconds(model: DynaLayNet) -> float:
    """Forward and backward of every block's contractive loop weight (train mode)."""
    model.train()
    device = next(model.parameters()).device
    synchronize(device)
    started = time.perf_counter()
    weights = model.loop_weights()
    flat = [w for ws in weights for w in (ws if isinstance(ws, tuple) else (ws,))]
    sum(w.sum() for w in flat).backward()
    model.zero_grad(set_to_none=True)
    synchronize(device)
    return time.perf_counter() - started


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    setting: str,
    config_changes: dict,
    repeats: int,
    device: torch.device,
    seed: int = 0,
    loop_share: float = 1.0,
) -> dict:
    torch.manual_seed(seed)
    config = DynaLayConfig(**SETTINGS[setting], **config_changes)
    images = torch.randn(64, config.in_channels, config.image_size, config.image_size)
    labels = torch.randint(0, config.num_classes, (64,))
    batch = (images.to(device), labels.to(device))
    models = {name: DynaLayNet(config).to(device) for name in ("plain", "dynalay")}
    optimizers = {n: torch.optim.AdamW(m.parameters(), lr=1e-3) for n, m in models.items()}
    generator = torch.Generator().manual_seed(seed)
    times = {name: [] for name in models}
    backward = []
    bounds = []
    for repeat in range(repeats + 1):  # the first round warms up
        for name, model in models.items():
            recipe = RECIPES[name]
            if name == "dynalay" and loop_share < 1.0:
                recipe = dataclasses.replace(recipe, loop_share=loop_share)
            seconds, back = timed_step(model, optimizers[name], batch, recipe, generator)
            if repeat:
                times[name].append(seconds)
                if name == "dynalay":
                    backward.append(back)
        if repeat:
            bounds.append(bound_seconds(models["dynalay"]))
    plain, dynalay = (statistics.median(times[n]) for n in ("plain", "dynalay"))
    return {
        "plain_ms": 1e3 * plain,
        "dynalay_ms": 1e3 * dynalay,
        "ratio": dynalay / plain,
        "backward_share": statistics.median(backward) / dynalay,
        "bound_share": statistics.median(bounds) / dynalay,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--operators", nargs="+", default=None, help="loop operators to compare")
    parser.add_argument("--backwards", nargs="+", default=None, help="ift, phantom, jfb")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument(
        "--loop-shares",
        type=float,
        nargs="+",
        default=[1.0],
        help="Recipe.loop_share of the dynalay rows (the share of each batch that loops)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="FIELD=VALUE", help="other DynaLayConfig fields"
    )
    args = parser.parse_args()
    try:
        extra = DynaLayConfig.parse_changes(args.set)
    except ValueError as error:
        parser.error(f"--set {error}")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    default = DynaLayConfig()
    operators = args.operators or [default.loop_operator]
    backwards = args.backwards or [default.backward]
    print(
        f"batch 64, {args.repeats} interleaved repeats (medians), on {device} "
        f"({args.threads} CPU thread(s))"
    )
    for setting in args.settings:
        for operator in operators:
            for backward in backwards:
                # The thesis-size conv3x3's FFT bound takes seconds a step: fewer repeats.
                heavy = setting == "64 128 256" and operator == "conv3x3"
                repeats = min(args.repeats, 2) if heavy else args.repeats
                for share in args.loop_shares:
                    changes = dict(extra, loop_operator=operator, backward=backward)
                    result = measure(setting, changes, repeats, device, loop_share=share)
                    settings = [operator, backward, *args.set]
                    settings += [f"loop_share={share:g}"] if share < 1.0 else []
                    default_row = (operator, backward) == (default.loop_operator, default.backward)
                    plain_row = default_row and not args.set and share == 1.0
                    tag = "" if plain_row else f" [{', '.join(settings)}]"
                    print(
                        f"training step time ratio dynalay/plain at widths {setting}: "
                        f"{result['ratio']:.2f}{tag} (plain {result['plain_ms']:.0f} ms, dynalay "
                        f"{result['dynalay_ms']:.0f} ms; backward "
                        f"{result['backward_share']:.0%}, bound {result['bound_share']:.0%} "
                        "of the dynalay step)",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
