"""Fig. 4.4: models with FPI in the first 0..3 blocks (the others plain conv layers), trained
identically; test loss and accuracy of each model's all-FPI path over test batches of 100."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.report import plt
from main_model import load_main_model
from main_model.paths import path_statistics
from main_model.train import iterate_batches

from ..common import mean_std
from .pieces import Reproduction, finish, pm, verdict_of, yes

NAME = "fig4.4"


@torch.no_grad()
def batch_statistics(path: Path, action: int, split, device) -> dict[str, Any]:
    """Test loss and accuracy of one static path over consecutive batches of 100 images."""
    model, _ = load_main_model(path, device)
    losses, accuracies, flops, sizes = [], [], [], []
    for images, labels in iterate_batches(split, 100):
        stats = path_statistics(model, [(images, labels)], actions=[action])[action]
        losses.append(stats["loss"])
        accuracies.append(stats["accuracy"])
        flops.append(stats["flops"])
        sizes.append(len(labels))
    return {
        "loss": losses,
        "accuracy": accuracies,
        "batch_sizes": sizes,
        "relative_flops": float(np.average(flops, weights=sizes)) / model.straight_flops(),
    }


def claims(accuracy: Sequence[float], loss: Sequence[float]) -> dict[str, bool]:
    """On the mean test accuracy and loss of the models with FPI in the first 0, 1, ..., n
    blocks (in that order): accuracy never falls as FPI blocks are added; the all-FPI model is
    the most accurate and has the lowest loss."""
    last = len(accuracy) - 1
    return {
        "accuracy grows with every FPI block": all(
            b >= a for a, b in zip(accuracy, accuracy[1:], strict=False)
        ),
        "FPI in every block is best (accuracy and loss)": int(np.argmax(accuracy)) == last
        and int(np.argmin(loss)) == last,
    }


def run(rep: Reproduction) -> dict[str, Any]:
    """Fig. 4.4: FPI in the first 0, 1, 2, 3 blocks; boxplots over test batches of 100."""
    config = rep.config
    n_blocks = len(config.widths)
    models: dict[int, dict[int, dict[str, Any]]] = {m: {} for m in range(n_blocks + 1)}
    for seed in config.seeds:
        for m in range(n_blocks + 1):
            path = (
                rep.pretrained_model(seed)
                if m == n_blocks
                else rep.trained_model(rep.out / NAME / f"seed{seed}" / f"fpi{m}.pt", seed, m)
            )
            models[m][seed] = batch_statistics(path, m, rep.splits["test"], rep.device)
    pooled = {
        m: {key: [v for seed in runs.values() for v in seed[key]] for key in ("loss", "accuracy")}
        for m, runs in models.items()
    }
    seed_means = {
        m: {
            "accuracy": mean_std(
                [np.average(r["accuracy"], weights=r["batch_sizes"]) for r in runs.values()],
                count=True,
            ),
            "loss": mean_std(
                [np.average(r["loss"], weights=r["batch_sizes"]) for r in runs.values()],
                count=True,
            ),
            "relative_flops": mean_std([r["relative_flops"] for r in runs.values()], count=True),
        }
        for m, runs in models.items()
    }
    held = claims(
        [seed_means[m]["accuracy"]["mean"] for m in models],
        [seed_means[m]["loss"]["mean"] for m in models],
    )
    monotone, last_best = held.values()
    labels = ["no FPI"] + [f"FPI in 1..{m}" for m in range(1, n_blocks + 1)]
    payload = {"per_seed": models, "seed_means": seed_means, "labels": labels, "claims": held}
    md = [
        "## Fig. 4.4: FPI in the first 0, 1, 2, 3 blocks",
        "",
        "Thesis: the more layers use FPI the better the test loss and accuracy; Model 3 (FPI in "
        "every layer) is best. Evaluated on test batches of 100 samples.",
        "",
        f"Measured: four models per seed, trained identically ({config.epochs} epochs on "
        f"{config.train_size} images, Adam {config.learning_rate:g} cosine, batch "
        f"{config.batch_size}): straight loss plus a loop path drawn from loop-1..m (m = 0: "
        "the plain CNN); blocks after m always run straight, i.e. as plain conv layers. Each "
        "model answers with all its FPI blocks looped; boxes over the test batches of 100 of "
        f"every seed ({list(config.seeds)}):",
        "",
        "| model | test accuracy (%) | test loss | FLOPs (x plain CNN) |",
        "|---|---|---|---|",
        *(
            f"| {labels[m]} | {pm(s['accuracy'])} | {pm(s['loss'], 1.0, 3)} | "
            f"{pm(s['relative_flops'], 1.0)} |"
            for m, s in seed_means.items()
        ),
        "",
        f"Verdict: **{verdict_of(held)}**. Accuracy grows with every FPI block: "
        f"{yes(monotone)}; FPI everywhere best in accuracy and loss: {yes(last_best)}.",
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    left.boxplot([pooled[m]["loss"] for m in models], tick_labels=labels)
    left.set_ylabel("test loss (batch of 100)")
    right.boxplot([100 * np.asarray(pooled[m]["accuracy"]) for m in models], tick_labels=labels)
    right.set_ylabel("test accuracy (%, batch of 100)")
    fig.suptitle("Fig. 4.4 measured: FPI in the first m blocks")
    return finish(rep, NAME, payload, md, fig)
