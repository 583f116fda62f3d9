"""Per-path statistics of a main model: every static path's accuracy, loss, FLOPs, iterations.

A *path* is a static action: 0 = NOP (the straight pass, the plain CNN), k = loop blocks 1..k
(:func:`path_name`). :func:`path_statistics` runs each path over batches of a split;
:func:`per_sample` reduces a language model's per-position values to one per sample, as the
environment's reward and the training statistics count them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from main_model.network import DynaLayNet


def per_sample(values: Tensor) -> Tensor:
    """(B,) values per sample: ``values`` itself when (B,); for per-position values (B, T) (a
    language model's token losses or hits) their mean over the positions, float64 for hits."""
    if values.dim() == 1:
        return values
    return (
        values.flatten(1).to(torch.float64 if values.dtype == torch.bool else values.dtype).mean(1)
    )


def path_name(action: int) -> str:
    """``NOP`` for action 0, ``loop-k`` for action k (the static path's name in every report)."""
    return "NOP" if action == 0 else f"loop-{action}"


@torch.no_grad()
def evaluate_paths(model: DynaLayNet, batches: Iterable[tuple[Tensor, Tensor]]) -> dict[int, float]:
    """Accuracy of every static path (0 = NOP .. n = loop all) on ``batches``."""
    return {a: s["accuracy"] for a, s in path_statistics(model, batches).items()}


@torch.no_grad()
def path_statistics(
    model: DynaLayNet,
    batches: Iterable[tuple[Tensor, Tensor]],
    solver: str = "fpi",
    actions: Sequence[int] | None = None,
) -> dict[int, dict[str, float]]:
    """Per static path (0 = NOP .. n = loop all; ``actions``: only these): accuracy, mean CE
    loss, mean FLOPs per sample (the straight pass included) and mean loop iterations per
    looped block."""
    model.eval()
    n = model.n_actions
    paths = list(range(n)) if actions is None else list(actions)
    correct = torch.zeros(n, dtype=torch.float64)
    loss = torch.zeros(n, dtype=torch.float64)
    flops = torch.zeros(n, dtype=torch.float64)
    iterations = torch.zeros(n, dtype=torch.float64)
    total = 0
    for images, labels in batches:
        straight = model.straight(images)
        for action in paths:
            output = straight
            if action > 0:
                actions = torch.full((images.shape[0],), action, device=images.device)
                output = model.step(straight.state, actions, solver)
                flops[action] += float(output.flops.sum())
                looped = list(model.looped_blocks(action))
                iterations[action] += float(output.iterations[:, looped].double().mean(1).sum())
            logits = output.state.logits
            flops[action] += float(straight.flops.sum())
            # Per sample: the mean over its positions (one position per image; T for a
            # language model's windows, all of length T, so the sum over tokens / T).
            positions = labels[0].numel()
            correct[action] += float((logits.argmax(dim=1) == labels).sum()) / positions
            loss[action] += float(F.cross_entropy(logits, labels, reduction="sum")) / positions
        total += images.shape[0]
    total = max(total, 1)
    return {
        action: {
            "accuracy": float(correct[action]) / total,
            "loss": float(loss[action]) / total,
            "flops": float(flops[action]) / total,
            "iterations": float(iterations[action]) / total,
        }
        for action in paths
    }
