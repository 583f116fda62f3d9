"""Alternating-run arms compared over seeds (Fig. 4.2 and Section 4.0.5): per-epoch test curves,
final numbers, and whether the first arm beats the second."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agents.report import plt, scalars_from_events

from ..common import mean_std
from .pieces import Reproduction, pm


def tracked_curves(run_dir: Path) -> dict[str, list[float]]:
    """Test accuracy and loss after every supervised epoch (``--track-test``) of a run."""
    epochs, accuracy = scalars_from_events(run_dir / "tb", "test/accuracy")
    _, loss = scalars_from_events(run_dir / "tb", "test/loss")
    return {"epochs": epochs, "accuracy": accuracy, "loss": loss}


def first_arm_better(first: list[float], other: list[float]) -> tuple[bool, int]:
    """Whether the first arm ends more accurate than the other, in the mean over seeds and on
    most seeds (``first``, ``other``: final accuracy per seed, same seeds); and on how many
    seeds it wins."""
    wins = sum(a > b for a, b in zip(first, other, strict=True))
    return bool(np.mean(first) > np.mean(other) and wins > len(first) / 2), wins


def compare_arms(
    rep: Reproduction, name: str, arms: dict[str, str], claim: str
) -> tuple[dict[str, Any], list[str], Any, bool]:
    """Per-epoch test curves and final summaries of alternating-run arms over seeds.

    ``arms``: label -> arm. The verdict is on the first arm against the second (the thesis's
    comparison); every further arm is compared with the first too, in the table's text.
    """
    seeds = rep.config.seeds
    curves: dict[str, dict[int, Any]] = {label: {} for label in arms}
    finals: dict[str, list[dict[str, Any]]] = {label: [] for label in arms}
    for label, arm in arms.items():
        for seed in seeds:
            run_dir, summary = rep.alternating_run(arm, seed)
            curves[label][seed] = tracked_curves(run_dir)
            finals[label].append(summary)
    stats = {
        label: {
            "main_model_epochs": rep.warmup_epochs(arms[label])
            + len(curves[label][seeds[0]]["epochs"]),
            "accuracy": mean_std([s["accuracy"] for s in summaries], count=True),
            "relative_flops": mean_std([s["relative_flops"] for s in summaries], count=True),
            "last_test_loss": mean_std([curves[label][s]["loss"][-1] for s in seeds], count=True),
        }
        for label, summaries in finals.items()
    }
    first, *others = list(arms)
    accuracy = {label: [s["accuracy"] for s in summaries] for label, summaries in finals.items()}
    compared = {other: first_arm_better(accuracy[first], accuracy[other]) for other in others}
    wins = {other: won for other, (_, won) in compared.items()}
    better = compared[others[0]][0]
    payload = {"arms": arms, "curves": curves, "final": stats, f"seeds won by {first}": wins}
    md = [
        "| arm | main-model epochs | final test accuracy (%) | FLOPs (x plain CNN) | "
        "last tracked test loss |",
        "|---|---|---|---|---|",
        *(
            f"| {label} | {s['main_model_epochs']} | {pm(s['accuracy'])} | "
            f"{pm(s['relative_flops'], 1.0)} | {pm(s['last_test_loss'], 1.0, 3)} |"
            for label, s in stats.items()
        ),
        "",
        *(f"{first} beats {other} on {wins[other]} of {len(seeds)} seeds." for other in others),
        f"Verdict: **{'reproduced' if better else 'not reproduced'}** ({claim}).",
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    for color, label in zip(colors, arms, strict=False):
        warmup = rep.warmup_epochs(arms[label])
        for index, curve in enumerate(curves[label].values()):
            tag = label if index == 0 else None
            epochs = warmup + np.asarray(curve["epochs"])
            left.plot(epochs, 100 * np.asarray(curve["accuracy"]), "o-", color=color, label=tag)
            right.plot(epochs, curve["loss"], "o-", color=color, label=tag, alpha=0.8)
    for axis, ylabel in ((left, "test accuracy (%)"), (right, "test loss")):
        axis.set_xlabel("main-model training epochs (pre-training included)")
        axis.set_ylabel(ylabel)
    left.legend()
    fig.suptitle(f"{name}: after every supervised epoch of the rounds, one line per seed")
    return payload, md, fig, better
