"""Fig. 4.2: pre-training on vs off: test accuracy and loss of the agent's paths after every
supervised epoch of the alternating rounds, per seed."""

from __future__ import annotations

from typing import Any

from .arms import compare_arms
from .pieces import Reproduction, finish

NAME = "fig4.2"
#: label -> alternating-run arm; the verdict is on the first against the second.
ARMS = {
    "pre-trained": "pretrained",
    "not pre-trained": "no-pretrain",
    "not pre-trained, equal budget": "no-pretrain-equal-budget",
}
CLAIM = "the pre-trained model ends more accurate on most seeds"


def run(rep: Reproduction) -> dict[str, Any]:
    """Fig. 4.2: the alternating rounds after the warm-up vs from an untrained model."""
    payload, table, fig, _ = compare_arms(rep, "Fig. 4.2", ARMS, CLAIM)
    config = rep.config
    md = [
        "## Fig. 4.2: pre-training on vs off",
        "",
        "Thesis (CIFAR-10, 100 epochs): with a 20-epoch warm-up the model's test accuracy and "
        "loss are better throughout than without it.",
        "",
        f"Measured: {config.rounds} alternating rounds (PPO, beta {config.beta:g}, "
        f"{config.total_timesteps} env steps per RL phase, {config.supervised_epochs} supervised "
        f"epoch(s) per round) from the model pre-trained for {config.epochs} epochs vs from its "
        f"initialisation; test accuracy and loss of the agent's paths on {config.track_test} "
        "test images after every supervised epoch (the curves), final numbers on the test split. "
        "As in the thesis the pre-trained arm has trained for the warm-up's epochs more; the "
        "third arm gives the untrained start as many more rounds, so both train the main model "
        "for the same number of epochs (the verdict is on the thesis's comparison).",
        "",
        *table,
    ]
    return finish(rep, NAME, payload, md, fig)
