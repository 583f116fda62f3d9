"""``run_rl.py demo`` (``make demo``): the point of DynaLay in minutes. PPO agents on the
Fashion-MNIST model shipped with the package, side by side with plain CNNs (1x and 2x FLOPs)
trained here with exactly the settings the shipped model records, loop-all, the confidence
threshold and the full-information router (what the agents could learn from their observation);
the agents' paired differences from the threshold and the 2x plain CNN with their intervals; a
table (:mod:`agents.experiments.tradeoff`) with one seed.

    python run_rl.py demo [--betas 0.03 0.1 0.3] [--total-timesteps 50000] [--out runs/demo]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.cli import add_config_flags, arg, config_from_flags, non_negative_float, positive_int
from agents.files import RunFileError
from dynalay_env.data import DataNotFoundError, get_spec
from dynalay_env.models import SHIPPED_DIR, shipped_model_path, shipped_model_provenance

from .cli import SettingsMismatch
from .tradeoff import TableConfig, run_table


@dataclass(frozen=True)
class DemoConfig:
    """What ``run_rl.py demo`` lets one change; the rest is the shipped model's record."""

    betas: tuple[float, ...] = arg(
        (0.03, 0.1, 0.3), "one PPO agent per beta", type=non_negative_float
    )
    total_timesteps: int = arg(50000, "env steps per agent", type=positive_int)
    device: str = arg("auto", "auto (GPU when there is one), cpu, cuda")
    out: str = arg("runs/demo", "results directory")


def demo_config(
    out: str = "runs/demo",
    betas: Sequence[float] = (0.03, 0.1, 0.3),
    total_timesteps: int = 50000,
    device: str = "auto",
) -> TableConfig:
    """The table for ``make demo``: the Fashion-MNIST model shipped with the package against a
    plain CNN and one about 2x wider in FLOPs, trained here with exactly the settings the shipped
    model records (same images, epochs, batch, schedule, seed), and PPO agents trained here on
    the shipped model."""
    spec = get_spec("FashionMNIST")
    checkpoint, provenance = shipped_model_path(spec), shipped_model_provenance(spec)
    if checkpoint is None or provenance is None:
        raise FileNotFoundError(
            f"no shipped FashionMNIST model in {SHIPPED_DIR}; reinstall the package, or make one "
            "with `python -m dynalay_env.pretrain --dataset FashionMNIST --output "
            f"{SHIPPED_DIR / 'FashionMNIST.pt'}`"
        )
    settings, model = provenance["settings"], provenance["config"]
    return TableConfig(
        env="DynaLay-FashionMNIST-v0",
        seeds=(settings["seed"],),
        epochs=settings["epochs"],
        train_size=settings["train_size"],
        widths=tuple(model["widths"]),
        strides=tuple(model["strides"]),
        models=("plain", "plain-2x"),
        dynalay_checkpoint=str(checkpoint),
        batch_size=settings["batch_size"],
        learning_rate=settings["lr"],
        betas=tuple(sorted(betas)),
        total_timesteps=total_timesteps,
        holdout_size=settings["holdout_size"],
        data_seed=settings["data_seed"],
        device=device,
        out=out,
    )


def demo_report(summary: dict[str, Any]) -> str:
    """The agents side by side with the plain CNN, loop-all and the confidence threshold, and
    whether each agent is at least as accurate as the separately trained plain CNN."""
    rows = summary["rows"]
    plain = rows["plain"]
    loops = [n for n in rows if n.startswith("DynaLay static loop-")]
    loop_all = max(loops, key=lambda name: int(name.rsplit("-", 1)[1]))
    shown = [n for n, r in rows.items() if r["kind"] == "separately trained"]
    shown += ["DynaLay static NOP (plain CNN)", loop_all]
    shown += [n for n, r in rows.items() if r["kind"] in ("threshold", "router", "agent")]
    lines = [
        f"{'':44s} {'test acc':>9s} {'FLOPs':>7s} {'ms/image':>9s}",
    ]
    for name in shown:
        row = rows[name]
        label = {"plain": "plain CNN (trained here, same budget)"}.get(name, name)
        wall = row.get("ms_per_sample", {}).get("mean")
        lines.append(
            f"{label:44s} {100 * row['accuracy']['mean']:8.2f}% "
            f"{row['relative_flops']['mean']:6.2f}x {'' if wall is None else f'{wall:9.3f}'}"
        )
    lines.append("")
    for name, row in rows.items():
        if row["kind"] == "agent":
            gain = 100 * (row["accuracy"]["mean"] - plain["accuracy"]["mean"])
            verdict = "yes" if gain >= 0 else "NO"
            lines.append(
                f"{name}: {gain:+.2f} points over the plain CNN at "
                f"{row['relative_flops']['mean']:.2f}x its FLOPs -> at least as accurate: {verdict}"
            )
    for comparison in summary.get("significance", []):
        if comparison["policy"].startswith("DynaLay agent"):
            cells = comparison["per_seed"]
            intervals = ", ".join(
                f"{100 * c['mean']:+.2f} [{100 * c['low']:+.2f}, {100 * c['high']:+.2f}]"
                for c in cells
            )
            lines.append(
                f"{comparison['policy']} minus {comparison['rival']}: {intervals} points "
                f"(95% paired bootstrap CI) -> {comparison['verdict']}"
            )
    return "\n".join(lines)


def demo_main(argv: list[str]) -> int:
    """``run_rl.py demo``: the demo's table, then its report."""
    parser = argparse.ArgumentParser(
        prog="run_rl.py demo",
        description="The point of DynaLay in minutes: PPO agents trained on the Fashion-MNIST "
        "model shipped with the package, side by side with plain CNNs (1x and 2x FLOPs) trained "
        "here with its images, epochs and schedule, loop-all and the confidence threshold (test "
        "accuracy, FLOPs, wall time), and the Pareto plot. Resumable like `table`.",
    )
    add_config_flags(parser, DemoConfig)
    args = config_from_flags(DemoConfig, parser.parse_args(argv))
    started = time.perf_counter()
    try:
        config = demo_config(args.out, args.betas, args.total_timesteps, args.device)
        summary = run_table(config)
    except SettingsMismatch as error:
        parser.error(str(error))
    except (DataNotFoundError, FileNotFoundError, RunFileError) as error:
        print(f"run_rl.py: {error}", file=sys.stderr)
        return 2
    print(demo_report(summary))
    print(
        f"\nPareto plot: {Path(args.out) / 'tradeoff.png'}; every number: "
        f"{Path(args.out) / 'tradeoff.md'} ({time.perf_counter() - started:.0f} s)"
    )
    return 0
